//! Scaling a live simulated cluster under continuous writes, driven by the operator's own scale
//! decision (`ha_operator::scaling`): 3 → 5 → 2, 2 → 1 refused with its message (with embedded
//! NATS a cluster does not cross between 1 and more pods), then 2 → 3 at once: the pod added back
//! at ordinal 2 starts on a new volume, so its nats-server must join as a new server (a new
//! generation of its name), never as the removed peer with a blank store. The simulation plays the
//! StatefulSet (start or stop one pod per step, roll pods to a new template) and the operator's
//! calls (`/status`, `/cluster/peers`, `DELETE /cluster/peers/{name}`). After every step, with the
//! writer paused: no acknowledged write lost, every node holds the same rows, a JetStream meta
//! leader, the stream and (after a snapshot) the snapshot bucket with the configured replicas.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ha_e2e::client::{credentials, get, sql, stream_info};
use ha_e2e::cluster::SimCluster;
use ha_e2e::pod::exec;
use ha_operator::crd::HaCluster;
use ha_operator::node_client::NodeReport;
use ha_operator::observed::{Observed, PodView};
use ha_operator::scaling::{self, Meta, Scale};
use ha_testkit::until;

const CLUSTER: &str = r#"
apiVersion: ha.sqlite.dev/v1alpha1
kind: HaCluster
metadata:
  name: sales
  namespace: shop
spec:
  replicas: 3
  replication:
    maxAge: 1h
"#;

/// The snapshot bucket's stream (`<stream>_SNAPSHOTS` in the object store).
const SNAPSHOT_BUCKET: &str = "OBJ_ha_replication_SNAPSHOTS";

const READY: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(180);

/// What the operator would observe: each pod's readiness and `/status`.
fn observe(sim: &SimCluster) -> Observed {
    let name = sim.cluster.metadata.name.clone().unwrap_or_default();
    let mut seen = Observed::new(
        (0..sim.pods.len())
            .map(|i| PodView {
                name: format!("{name}-{i}"),
                ordinal: i as i32,
                ready: get(sim, i, "/readyz").is_ok(),
                ..PodView::default()
            })
            .collect(),
    );
    for i in 0..sim.pods.len() {
        let report = get(sim, i, "/status").map(|s| {
            let r = &s["replication"];
            NodeReport {
                ready: s["ready"] == true,
                applied_seq: r["applied_seq"].as_u64(),
                stream_last_seq: r["stream_last_seq"].as_u64(),
                lag: r["lag_messages"].as_u64(),
                caught_up: r["caught_up"] == true,
                gap: None,
                backup: None,
            }
        });
        seen.reports
            .insert(format!("{name}-{i}"), report.map_err(|e| format!("{e:#}")));
    }
    seen
}

/// The stream's and the snapshot bucket's replica state, as the operator reads it.
fn streams(sim: &SimCluster) -> Result<Vec<scaling::StreamState>, String> {
    let j = get(sim, 0, "/cluster/streams").map_err(|e| format!("{e:#}"))?;
    serde_json::from_value(j["streams"].clone()).map_err(|e| e.to_string())
}

/// The servers of departed pod `pod` the meta group lists: its name, or a generation of it
/// (`<pod>-g<generation>`).
fn servers_of(pod: &str, meta: &Result<Meta, String>) -> Vec<String> {
    let generation = format!("{pod}-g");
    meta.iter()
        .flat_map(|m| &m.peers)
        .filter(|p| p.name == pod || p.name.starts_with(&generation))
        .map(|p| p.name.clone())
        .collect()
}

/// Pod `i`'s nats-server's name in the JetStream cluster, as the node says it.
fn server_name(sim: &SimCluster, i: usize) -> Result<String> {
    let j = get(sim, i, "/cluster/peers")?;
    Ok(j["self"].as_str().context("self")?.to_string())
}

fn meta(sim: &SimCluster) -> Result<Meta, String> {
    let j = get(sim, 0, "/cluster/peers").map_err(|e| format!("{e:#}"))?;
    serde_json::from_value(j).map_err(|e| e.to_string())
}

/// Plays operator and StatefulSet until the cluster runs `desired` pods, whole. Returns the
/// sizes it went through.
fn scale(sim: &mut SimCluster, base: &HaCluster, desired: i32) -> Result<Vec<i32>> {
    let name = base.metadata.name.clone().unwrap_or_default();
    let mut sizes = vec![sim.pods.len() as i32];
    // A change the operator refuses is refused at once (it waits for nothing).
    let (seen, members) = (observe(sim), meta(sim));
    let first = scaling::decide(&scaling::Inputs {
        cluster: &name,
        desired,
        live: Some(sim.pods.len() as i32),
        embedded: true,
        seen: &seen,
        streams: None,
        meta: Some(&members),
        departed: &[],
        rolling: false,
    });
    if let Scale::Refused { reason, .. } = &first.scale {
        bail!("refused: {reason}");
    }
    until(STEP, &format!("scaling to {desired}"), || {
        let live = sim.pods.len() as i32;
        let seen = observe(sim);
        let members = meta(sim);
        let replicas = streams(sim);
        // Departed pods still in the meta group: remove each of their servers, by its real
        // name (the operator's cleanup).
        let departed = scaling::departed_in_meta(&name, live, Some(&members));
        for d in &departed {
            for server in servers_of(d, &members) {
                sim.curl_method(
                    "DELETE",
                    &format!("http://{}:8080/cluster/peers/{server}", sim.pod_dns(0)),
                )?;
            }
        }
        // A pending rolling update: one pod at a time, only while the others are caught up.
        let outdated = sim.outdated();
        if let Some(&next) = outdated.last() {
            let others_ok = seen
                .pods
                .iter()
                .filter(|p| p.ordinal as usize != next)
                .all(|p| seen.caught_up(p).is_ok());
            if others_ok {
                sim.roll(next)?;
            }
            return Ok(None);
        }
        let d = scaling::decide(&scaling::Inputs {
            cluster: &name,
            desired,
            live: Some(live),
            embedded: true,
            seen: &seen,
            streams: Some(&replicas),
            meta: Some(&members),
            departed: &departed,
            rolling: false,
        });
        if d.scale == Scale::Steady && departed.is_empty() {
            return Ok(Some(()));
        }
        if d.replicas != live {
            eprintln!("{}", d.message().unwrap_or_default());
            sim.apply(scaling::at_step(base, d.replicas))?;
            sizes.push(d.replicas);
        } else if let Some(why) = d.message() {
            // What the step waits for, so a timeout says it.
            bail!("{why}");
        }
        Ok(None)
    })?;
    Ok(sizes)
}

/// The checks after a step, with no write in flight.
fn check(sim: &SimCluster, acked: i64, replicas: i64) -> Result<()> {
    let n = sim.pods.len();
    let rows = until(READY, "every node to hold the same rows", || {
        let first = sql(sim, &sim.pod_dns(0), "SELECT id FROM log ORDER BY id")?;
        for i in 1..n {
            let other = sql(sim, &sim.pod_dns(i), "SELECT id FROM log ORDER BY id")?;
            if other["rows"] != first["rows"] {
                return Ok(None);
            }
        }
        Ok(Some(first["rows"].as_array().cloned().unwrap_or_default()))
    })?;
    let ids: Vec<i64> = rows.iter().filter_map(|r| r[0].as_i64()).collect();
    let missing: Vec<i64> = (1..=acked).filter(|id| !ids.contains(id)).collect();
    if !missing.is_empty() {
        bail!("acknowledged writes lost on {n} nodes: {missing:?}");
    }
    let m = meta(sim).map_err(anyhow::Error::msg)?;
    if m.leader.as_deref().is_none_or(str::is_empty) {
        bail!("no JetStream meta leader: {m:?}");
    }
    let got = until(READY, &format!("an R{replicas} stream"), || {
        let r = stream_info(sim, 0, "ha_replication")?["replicas"]
            .as_i64()
            .context("replicas")?;
        Ok((r == replicas).then_some(r))
    })?;
    // The snapshot bucket follows the cluster size at the next snapshot (the operator's
    // schedule takes one; here pod 0 does).
    let bucket = until(READY, &format!("an R{replicas} snapshot bucket"), || {
        sim.curl(
            &format!("http://{}:8080/snapshot", sim.pod_dns(0)),
            Some("{}"),
        )?;
        let r = stream_info(sim, 0, SNAPSHOT_BUCKET)?["replicas"]
            .as_i64()
            .context("replicas")?;
        Ok((r == replicas).then_some(r))
    })?;
    eprintln!(
        "{n} nodes: {} rows, all {acked} acknowledged writes, R{got} stream, R{bucket} snapshot bucket",
        ids.len()
    );
    Ok(())
}

#[test]
fn scaling_under_writes_keeps_quorum_and_every_acknowledged_write() {
    let cluster: HaCluster = serde_yaml::from_str(CLUSTER).expect("cluster yaml");
    let prefix = format!("s{}", std::process::id() % 10_000);
    let mut sim = SimCluster::start(cluster.clone(), "shop", credentials(), Vec::new(), &prefix)
        .expect("start the simulation");
    if let Err(e) = scenario(&mut sim, &cluster) {
        panic!("{e:#}\n\npod logs:\n{}", sim.logs());
    }
}

fn scenario(sim: &mut SimCluster, cluster: &HaCluster) -> Result<()> {
    for i in 0..3 {
        sim.wait_ready(i, READY)?;
    }
    let svc = sim.service_dns();
    until(READY, "the table", || {
        Ok(sql(
            sim,
            &svc,
            "CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY)",
        )
        .ok()
        .filter(|j| j.get("error").is_none()))
    })?;

    // The writer: one insert at a time through the Service, retried until acknowledged; `gate`
    // is held by the checks so that no write is in flight while they compare nodes.
    let gate = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let writer = {
        let (gate, stop, acked) = (gate.clone(), stop.clone(), acked.clone());
        let client = sim.client.clone();
        let token = sim.token().unwrap_or_default();
        let url = format!("http://{svc}:8080/");
        std::thread::spawn(move || -> Result<()> {
            let auth = format!("Authorization: Bearer {token}");
            while !stop.load(Ordering::Acquire) {
                let _held = gate.lock().map_err(|_| anyhow::anyhow!("gate poisoned"))?;
                let id = acked.load(Ordering::Acquire) + 1;
                let body =
                    serde_json::json!({ "sql": format!("INSERT OR REPLACE INTO log(id) VALUES ({id})") })
                        .to_string();
                until(STEP, &format!("insert {id} acknowledged"), || {
                    let out = exec(
                        &client,
                        "curl",
                        &[
                            "-sS",
                            "-m",
                            "10",
                            "-f",
                            "-H",
                            &auth,
                            "--data-binary",
                            &body,
                            &url,
                        ],
                    );
                    Ok(out.ok().filter(|o| !o.contains("\"error\"")))
                })?;
                acked.store(id, Ordering::Release);
            }
            Ok(())
        })
    };
    let checked = |sim: &SimCluster, replicas: i64| -> Result<()> {
        let _held = gate.lock().map_err(|_| anyhow::anyhow!("gate poisoned"))?;
        check(sim, acked.load(Ordering::Acquire), replicas)
    };

    let run = (|| -> Result<()> {
        checked(sim, 3)?;
        let mut target = cluster.clone();
        target.spec.replicas = 5;
        assert_eq!(scale(sim, &target, 5)?, [3, 4, 5], "one pod per step up");
        checked(sim, 3)?;
        let first = server_name(sim, 2)?;
        target.spec.replicas = 2;
        assert_eq!(
            scale(sim, &target, 2)?,
            [5, 4, 3, 2],
            "one pod per step down"
        );
        checked(sim, 2)?;
        // 2 → 1 is refused, and says what to do instead.
        target.spec.replicas = 1;
        let refused = scale(sim, &target, 1).expect_err("2 → 1 must be refused");
        let msg = format!("{refused:#}");
        assert!(msg.contains("create a new HaCluster"), "{msg}");
        assert_eq!(sim.pods.len(), 2, "a refused change leaves the pods alone");
        checked(sim, 2)?;
        // 2 → 3 right away: the removed peer's ordinal comes back under a new server name.
        target.spec.replicas = 3;
        assert_eq!(
            scale(sim, &target, 3)?,
            [2, 3],
            "the removed ordinal comes back"
        );
        checked(sim, 3)?;
        // On a new volume it is a new server: a blank store never takes over the identity of
        // the removed peer (Raft expects a returning member to hold what it acknowledged).
        let second = server_name(sim, 2)?;
        assert_ne!(second, first, "pod 2 on a new volume joins as a new server");
        let listed = meta(sim).map_err(anyhow::Error::msg)?;
        assert!(
            listed.peers.iter().any(|p| p.name == second)
                && !listed.peers.iter().any(|p| p.name == first),
            "{second} in the meta group, {first} gone: {listed:?}"
        );
        Ok(())
    })();
    stop.store(true, Ordering::Release);
    let wrote = writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?;
    run?;
    wrote?;
    assert!(acked.load(Ordering::Acquire) > 0, "the writer wrote");
    Ok(())
}
