//! Owns what the simulation tests do as a client of a simulated cluster: the fixed credentials
//! they render with, SQL and GETs over HTTP from the client namespace, acknowledged inserts, and
//! JetStream's own view of the stream (nats-py).
//! Must not reach a pod but through the simulated network (`SimCluster::curl`, `exec`).
//! See `cluster` for the simulation and e2e/tests for the scenarios.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ha_operator::render::Credentials;
use serde_json::Value as Json;

use crate::cluster::SimCluster;
use crate::pod::exec;
use crate::repo_root;
use ha_testkit::until;

/// Fixed credentials (the operator would generate random ones), the same in every test.
pub fn credentials() -> Credentials {
    Credentials {
        pg_user: "ha".into(),
        pg_password: "e2e-pg-secret".into(),
        nats_user: "ha-nats".into(),
        nats_password: "e2e-nats-secret".into(),
        nats_cluster_user: "ha-route".into(),
        nats_cluster_password: "e2e-route-secret".into(),
        http_token: "e2e-token".into(),
    }
}

/// `POST /` with one statement through `host` (a pod's or the Service's name).
pub fn sql(sim: &SimCluster, host: &str, sql: &str) -> Result<Json> {
    let body = serde_json::json!({ "sql": sql }).to_string();
    let out = sim.curl(&format!("http://{host}:8080/"), Some(&body))?;
    serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))
}

/// `GET path` on pod `i`, as JSON.
pub fn get(sim: &SimCluster, i: usize, path: &str) -> Result<Json> {
    let out = sim.curl(&format!("http://{}:8080{path}", sim.pod_dns(i)), None)?;
    serde_json::from_str(&out).with_context(|| format!("{path}: not JSON: {out}"))
}

/// Inserts rows `from..to` of `items` through `host`, each retried until acknowledged: right
/// after a pod dies JetStream may be electing a stream leader and the node answers 503 (nothing
/// committed). The upsert keeps a retry after an ambiguous failure (a timeout) from failing on
/// its own row.
pub fn insert(
    sim: &SimCluster,
    host: &str,
    from: i64,
    to: i64,
    tag: &str,
    timeout: Duration,
) -> Result<()> {
    for id in from..to {
        let statement = format!("INSERT OR REPLACE INTO items(id, v) VALUES ({id}, '{tag}-{id}')");
        until(
            timeout,
            &format!("insert {id} via {host} acknowledged"),
            || {
                let j = sql(sim, host, &statement)?;
                if j.get("error").is_some() {
                    bail!("insert {id} via {host}: {j}");
                }
                Ok(Some(()))
            },
        )?;
    }
    Ok(())
}

/// JetStream's view of a stream or KV/object-store bucket's stream `stream`, asked through pod
/// `pod`'s nats-server from the client namespace with nats-py: `{"replicas", "leader",
/// "peers": [[name, current], …]}`.
pub fn stream_info(sim: &SimCluster, pod: usize, stream: &str) -> Result<Json> {
    let c = credentials();
    let script = format!(
        r#"
import asyncio, json, nats
async def main():
    nc = await nats.connect("nats://{host}:4222", user={user:?}, password={pw:?}, connect_timeout=5)
    info = await nc.jetstream().stream_info({stream:?})
    print(json.dumps({{"replicas": info.config.num_replicas,
                      "leader": info.cluster.leader if info.cluster else None,
                      "peers": [[r.name, r.current] for r in (info.cluster.replicas or [])] if info.cluster else []}}))
    await nc.close()
asyncio.run(main())
"#,
        host = sim.pod_dns(pod),
        user = c.nats_user,
        pw = c.nats_password,
    );
    let python = repo_root().join(".tools/bin/python");
    let out = exec(
        &sim.client,
        python.to_str().context("path")?,
        &["-c", &script],
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("stream info: {out}"))
}
