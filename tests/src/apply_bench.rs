//! Owns the apply-throughput benchmark of `ha-bench-repl`: how fast a node applies a backlog of
//! replicated change sets with no interceptor, with a trivial `before` script, and with one
//! that hands back the change set (converted both ways), side by side in one run.
//! Must not assert anything: it prints Markdown rows for docs/benchmarks.md.
//! Invariant: every variant applies the same backlog from the same stream (a fresh node and
//! database each time, variants alternating so that machine noise spreads over all of them).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::cluster::NatsProcess;
use crate::{NodeSpec, TestNode, eventually_every};

/// The database file every benchmark node serves (its name makes the subject).
const DB: &str = "apply.db";
const SUBJECT: &str = "ha_replication.apply_db";

/// The variants: a label and the script text (none for no interceptor).
const VARIANTS: [(&str, Option<&str>); 3] = [
    ("none", None),
    ("`fn before(cs) { true }`", Some("fn before(cs) { true }\n")),
    (
        "`fn before(cs) { cs }` (the set comes back and is converted again)",
        Some("fn before(cs) { cs }\n"),
    ),
];

/// Publishes `count` single-row INSERT change sets (after one CREATE TABLE) and lets fresh
/// nodes apply them, `rounds` times per variant. Returns the Markdown table.
pub async fn run(count: u64, rounds: usize) -> Result<Vec<String>> {
    let nats = NatsProcess::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "ha_replication".into(),
        subjects: vec!["ha_replication".into(), "ha_replication.>".into()],
        max_age: Duration::from_secs(24 * 3600),
        ..Default::default()
    })
    .await?;
    publish_backlog(&js, count).await?;
    let dir = tempfile::tempdir()?;
    let mut script_paths = Vec::new();
    for (i, (_, text)) in VARIANTS.iter().enumerate() {
        script_paths.push(match text {
            Some(t) => {
                let p = dir.path().join(format!("v{i}.rhai"));
                std::fs::write(&p, t)?;
                Some(p.display().to_string())
            }
            None => None,
        });
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    let mut k = 0;
    for _ in 0..rounds {
        for (v, script) in script_paths.iter().enumerate() {
            k += 1;
            let node_dir = dir.path().join(format!("n{k}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut args = vec![
                format!("file:{DB}"),
                "--name".into(),
                format!("apply{k}"),
                "--nats-port".into(),
                "0".into(),
                "--replication-url".into(),
                nats.url(),
                "--log-level".into(),
                "warn".into(),
                "--pg-port".into(),
                "0".into(),
            ];
            if let Some(s) = script {
                args.extend(["--interceptor".into(), s.clone()]);
            }
            let node = TestNode::start_spec(NodeSpec::new(&args).dir(&node_dir)).await?;
            rates[v].push(catch_up_rate(&node, count + 1).await?);
        }
    }
    let base = mean(&rates[0]);
    let runs: Vec<String> = (1..=rounds).map(|r| format!("run {r} /s")).collect();
    let mut out = vec![
        format!(
            "| interceptor | change sets | {} | mean /s | vs none |",
            runs.join(" | ")
        ),
        format!("|---|---:|{}---:|---:|", "---:|".repeat(rounds)),
    ];
    for (v, (label, _)) in VARIANTS.iter().enumerate() {
        let m = mean(&rates[v]);
        let each: Vec<String> = rates[v].iter().map(|r| format!("{r:.0}")).collect();
        out.push(format!(
            "| {label} | {count} | {} | {m:.0} | {:.0} % |",
            each.join(" | "),
            100.0 * m / base
        ));
    }
    Ok(out)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One CREATE TABLE, then `count` change sets of one INSERT each, as another node would send
/// them (distinct transaction identities), with up to 512 publishes in flight.
async fn publish_backlog(js: &async_nats::jetstream::Context, count: u64) -> Result<()> {
    let header = |ts: u64, changes: serde_json::Value| {
        json!({
            "node": "bench", "process_id": 1, "filename": DB, "timestamp_ns": ts,
            "ha_format": 1, "changes": changes,
        })
    };
    let create = header(
        1,
        json!([{"operation": "SQL",
                "command": "CREATE TABLE IF NOT EXISTS w(id INTEGER PRIMARY KEY, v TEXT, n INTEGER)"}]),
    );
    js.publish(SUBJECT, serde_json::to_vec(&create)?.into())
        .await?
        .await?;
    let mut acks = Vec::with_capacity(512);
    for i in 1..=count {
        let cs = header(
            1 + i,
            json!([{"database": "main", "table": "w", "columns": ["id", "v", "n"],
                    "pk_columns": ["id"], "operation": "INSERT", "new_rowid": i,
                    "new_values": [i, format!("row {i} of the apply benchmark, about sixty bytes"), i * 7]}]),
        );
        acks.push(js.publish(SUBJECT, serde_json::to_vec(&cs)?.into()).await?);
        if acks.len() == 512 {
            for a in acks.drain(..) {
                a.await?;
            }
        }
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

/// Change sets per second `node` applies from its first observed position until `last`.
async fn catch_up_rate(node: &TestNode, last: u64) -> Result<f64> {
    let applied = || async {
        let j: serde_json::Value = node
            .client
            .get(node.url("/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        j["replication"]["applied_seq"].as_u64()
    };
    let first = eventually_every(
        Duration::from_millis(2),
        Duration::from_secs(600),
        "the node's /status",
        &applied,
    )
    .await?;
    let t0 = Instant::now();
    let caught_up = eventually_every(
        Duration::from_millis(10),
        Duration::from_secs(600),
        "the node to catch up",
        || async {
            if applied().await.is_some_and(|s| s >= last) {
                return Some(Ok(t0.elapsed().as_secs_f64()));
            }
            let q = node
                .rows("SELECT count(*) FROM _ha_quarantine")
                .await
                .ok()
                .and_then(|r| r[0][0].as_u64());
            q.is_some_and(|q| q > 0).then(|| {
                Err(anyhow::anyhow!(
                    "the node quarantined change sets:\n{}",
                    node.log_text()
                ))
            })
        },
    )
    .await?;
    let secs = caught_up?;
    if last.saturating_sub(first) < last / 2 {
        bail!("the node applied {first} of {last} before it could be observed");
    }
    Ok((last - first) as f64 / secs)
}
