//! The local pod simulation end to end: a 3-replica HaCluster rendered by the operator's own
//! `render` runs as processes in network namespaces (see e2e/src). It proves the generated objects
//! form a working cluster: the NATS cluster forms with an R3 stream; psql and curl work through the
//! client Service's name; a write on pod 0 is read on pod 2; pod 1 killed and restarted on its
//! volume catches up; scaling to 5 starts pods that bootstrap from the latest snapshot and the
//! stream; a partitioned pod leaves the others writable and converges after healing.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ha_e2e::client::{credentials, insert, sql, stream_info};
use ha_e2e::cluster::SimCluster;
use ha_e2e::pod::exec;
use ha_operator::crd::HaCluster;
use ha_testkit::until;
use serde_json::Value as Json;

const CLUSTER: &str = r#"
apiVersion: ha.sqlite.dev/v1alpha1
kind: HaCluster
metadata:
  name: orders
  namespace: shop
spec:
  replicas: 3
  replication:
    maxAge: 1h
"#;

const READY: Duration = Duration::from_secs(120);
const CONVERGE: Duration = Duration::from_secs(60);

/// Rows of `SELECT id, v FROM items ORDER BY id` on pod `i`, straight from the pod.
fn items_on(sim: &SimCluster, i: usize) -> Result<Vec<Json>> {
    let j = sql(sim, &sim.pod_dns(i), "SELECT id, v FROM items ORDER BY id")?;
    Ok(j["rows"].as_array().cloned().unwrap_or_default())
}

/// Every listed pod holds exactly `expected` rows, identical everywhere.
fn converged(sim: &SimCluster, pods: &[usize], expected: usize) -> Result<()> {
    until(
        CONVERGE,
        &format!("pods {pods:?} to hold {expected} identical rows"),
        || {
            let first = items_on(sim, pods[0])?;
            if first.len() != expected {
                bail!("pod {} has {} rows", pods[0], first.len());
            }
            for &p in &pods[1..] {
                let rows = items_on(sim, p)?;
                if rows != first {
                    bail!(
                        "pod {p} has {} rows, differing from pod {}",
                        rows.len(),
                        pods[0]
                    );
                }
            }
            Ok(Some(()))
        },
    )
}

#[test]
fn rendered_cluster_forms_replicates_heals_and_scales() {
    let cluster: HaCluster = serde_yaml::from_str(CLUSTER).expect("cluster yaml");
    let prefix = format!("e{}", std::process::id() % 10_000);
    let mut sim = SimCluster::start(cluster.clone(), "shop", credentials(), Vec::new(), &prefix)
        .expect("start the simulation");
    if let Err(e) = scenario(&mut sim, cluster) {
        panic!("{e:#}\n\npod logs:\n{}", sim.logs());
    }
}

fn scenario(sim: &mut SimCluster, cluster: HaCluster) -> Result<()> {
    for i in 0..3 {
        sim.wait_ready(i, READY)?;
    }

    // The three embedded nats-servers form one JetStream cluster holding an R3 stream.
    let info = until(READY, "an R3 stream with two current followers", || {
        let info = stream_info(sim, 0, "ha_replication")?;
        let peers = info["peers"].as_array().cloned().unwrap_or_default();
        let current = peers.iter().filter(|p| p[1] == Json::Bool(true)).count();
        Ok((info["replicas"] == 3 && current == 2).then_some(info))
    })?;
    assert!(info["leader"].is_string(), "stream leader: {info}");

    // curl and psql through the client Service's DNS name.
    let svc = sim.service_dns();
    let created = sql(
        sim,
        &svc,
        "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT)",
    )?;
    assert!(
        created.get("error").is_none(),
        "create via Service: {created}"
    );
    insert(sim, &svc, 1, 11, "svc", CONVERGE)?;
    let count = sim.psql(&svc, "SELECT count(*) FROM items")?;
    assert_eq!(count, "10", "psql through the Service");

    // A write on pod 0 is read on pod 2.
    insert(sim, &sim.pod_dns(0), 11, 21, "pod0", CONVERGE)?;
    converged(sim, &[0, 2], 20)?;
    let on_two = sim.psql(&sim.pod_dns(2), "SELECT v FROM items WHERE id = 20")?;
    assert_eq!(on_two, "pod0-20");

    // Pod 1 killed; writes go on; restarted on the same volume it catches up.
    sim.pods[1].kill();
    insert(sim, &sim.pod_dns(0), 21, 41, "while-down", CONVERGE)?;
    sim.pods[1].restart()?;
    sim.wait_ready(1, READY)?;
    converged(sim, &[0, 1, 2], 40)?;

    // A snapshot, more writes, then scale to 5: the new pods restore the snapshot and read the
    // stream after it.
    let snap = sim.curl(
        &format!("http://{}:8080/snapshot", sim.pod_dns(0)),
        Some(""),
    )?;
    let snap: Json = serde_json::from_str(&snap)?;
    assert!(snap["seq"].as_u64().unwrap_or(0) > 0, "snapshot: {snap}");
    insert(sim, &sim.pod_dns(2), 41, 51, "after-snapshot", CONVERGE)?;
    let mut bigger = cluster.clone();
    bigger.spec.replicas = 5;
    sim.apply(bigger)?;
    for i in 3..5 {
        sim.wait_ready(i, READY)?;
    }
    converged(sim, &[0, 1, 2, 3, 4], 50)?;
    for i in 3..5 {
        let log = sim.pods[i].log_text();
        assert!(
            log.contains("from the latest snapshot"),
            "pod {i} did not bootstrap from the snapshot:\n{log}"
        );
    }

    // Pod 4 isolated: the others stay writable; after healing pod 4 converges.
    sim.partition(4)?;
    insert(sim, &sim.pod_dns(0), 51, 61, "partitioned", CONVERGE)?;
    insert(sim, &sim.pod_dns(3), 61, 71, "partitioned", CONVERGE)?;
    converged(sim, &[0, 1, 2, 3], 70)?;
    let isolated = items_on_local(sim, 4)?;
    assert_eq!(
        isolated, 50,
        "the isolated pod cannot have seen the new writes"
    );
    sim.heal(4)?;
    converged(sim, &[0, 1, 2, 3, 4], 70)?;
    Ok(())
}

/// Row count on pod `i` asked from inside the pod's own namespace (works while it is isolated).
fn items_on_local(sim: &SimCluster, i: usize) -> Result<usize> {
    let host = &sim.pods[i].host;
    let body = serde_json::json!({ "sql": "SELECT count(*) FROM items" }).to_string();
    let auth = format!("Authorization: Bearer {}", sim.token().unwrap_or_default());
    let out = exec(
        host,
        "curl",
        &[
            "-sS",
            "-m",
            "5",
            "-f",
            "-H",
            &auth,
            "--data-binary",
            &body,
            &format!("http://{}:8080/", host.addr),
        ],
    )?;
    let j: Json = serde_json::from_str(&out)?;
    j["rows"][0][0]
        .as_u64()
        .map(|n| n as usize)
        .with_context(|| format!("count: {j}"))
}
