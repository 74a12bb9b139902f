//! `ha-bench-repl`: replication on a local 3-node cluster (embedded nats-servers clustered by
//! routes, stream replicas 3), printed beside its ceiling measured in the same run.
//! 1. Replicated single-row INSERTs through HTTP on node 1 at concurrency 1, 16 and 64, next to
//!    raw JetStream publishes (publish + wait for the ack) of the same message to the same R3
//!    stream at the same concurrency: to a subject no node consumes (the log alone), and to the
//!    replicated subject (the log and its delivery to the three nodes, which recognise the copy
//!    of a transaction they already have and skip it).
//! 2. Replication lag (commit acknowledged on node 1 → row visible on node 2) at a steady 500
//!    and 2,000 writes/s: p50, p99, max.
//! 3. Apply throughput of one node catching up a backlog, with no interceptor and with trivial
//!    interceptor scripts (see `ha_tests::apply_bench`).
//!
//! 4. `--sync-compare`: only part 1, once with the embedded servers syncing before every
//!    acknowledgement (`--nats-sync always`, the default) and once lazily (`--nats-sync 2m`,
//!    nats-server's own default), each on a fresh cluster.
//! 5. `--load C`: only replicated INSERTs on node 1 at concurrency `C`, for a profiler.
//!
//! Usage: `ha-bench-repl [--seconds N] [--apply-only] [--apply-count N] [--sync-compare] [--load C]`
//! (release build). Prints Markdown; asserts nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ha_tests::bench::{Sample, http_load};
use ha_tests::{NodeSpec, TestNode, free_port};
use serde_json::json;
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<()> {
    let apply_count = std::env::args()
        .skip_while(|a| a != "--apply-count")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000u64);
    if std::env::args().any(|a| a == "--apply-only") {
        println!(
            "{}",
            ha_tests::apply_bench::run(apply_count, 2).await?.join("\n")
        );
        return Ok(());
    }
    let dur = ha_tests::bench::seconds_arg(5);
    if std::env::args().any(|a| a == "--sync-compare") {
        let mut out = vec![
            "| --nats-sync | what | concurrency | ops/s | p50 ms | p99 ms |".to_string(),
            "|---|---|---:|---:|---:|---:|".to_string(),
        ];
        for sync in ["always", "2m"] {
            let dir = tempfile::tempdir()?;
            let (nodes, nats) = start_cluster(dir.path(), sync).await?;
            for row in write_rates(&nodes, nats[0], dur).await? {
                out.push(format!("| {sync} {row}"));
            }
        }
        println!("{}", out.join("\n"));
        return Ok(());
    }
    if let Some(conc) = std::env::args()
        .skip_while(|a| a != "--load")
        .nth(1)
        .and_then(|s| s.parse::<usize>().ok())
    {
        return load_only(conc, dur).await;
    }
    let dir = tempfile::tempdir()?;
    let (nodes, nats) = start_cluster(dir.path(), "always").await?;
    let mut out = vec![
        "| what | concurrency | ops/s | p50 ms | p99 ms |".to_string(),
        "|---|---:|---:|---:|---:|".to_string(),
    ];
    out.extend(write_rates(&nodes, nats[0], dur).await?);
    out.push(String::new());
    out.push(
        "| steady load on node 1 | writes/s reached | lag p50 ms | lag p99 ms | lag max ms |"
            .into(),
    );
    out.push("|---|---:|---:|---:|---:|".into());
    let mut next_id = 1i64;
    for rate in [500u64, 2000] {
        let (reached, lag) = lag_run(&nodes[0], &nodes[1], rate, dur, &mut next_id).await?;
        out.push(format!(
            "| {rate} writes/s | {reached:.0} | {:.3} | {:.3} | {:.3} |",
            lag.pct(0.5),
            lag.pct(0.99),
            lag.max()
        ));
    }
    // The cluster stops before the apply benchmark starts its own processes.
    drop(nodes);
    out.push(String::new());
    out.extend(ha_tests::apply_bench::run(apply_count, 2).await?);
    println!("{}", out.join("\n"));
    Ok(())
}

/// `--load C`: only replicated INSERTs on node 1 at concurrency `C`, for profiling (`perf record
/// -a` around it); prints the processes' ids first and the rate last.
async fn load_only(conc: usize, dur: Duration) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (nodes, _) = start_cluster(dir.path(), "always").await?;
    let pids: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.pid())
        .map(|p| p.to_string())
        .collect();
    eprintln!("node pids: {}", pids.join(" "));
    let s = http_load(nodes[0].url("/"), conc, dur, |w, i| {
        json!({"sql": "INSERT INTO w(v, at) VALUES (?, ?)",
               "params": [format!("worker {w} row {i} ......................................................"), i]})
    })
    .await?;
    println!(
        "replicated INSERT via HTTP (node 1, R3), concurrency {conc}: {:.0}/s, p50 {:.3} ms, p99 {:.3} ms",
        s.per_second(),
        s.pct(0.5),
        s.pct(0.99)
    );
    Ok(())
}

/// The user and password of the benchmark cluster's NATS (clients and routes).
const NATS_USER: &str = "bench";
const NATS_PASS: &str = "bench-pass";

/// Three nodes in `dir`, embedded nats-servers clustered by routes, R3, `--nats-sync sync`;
/// returns them ready, with their NATS client ports.
async fn start_cluster(dir: &std::path::Path, sync: &str) -> Result<(Vec<TestNode>, Vec<u16>)> {
    let nats: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = routes_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for i in 0..3 {
        let d = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&d)?;
        let spec = NodeSpec::new(&[
            "--name".to_string(),
            format!("n{i}"),
            "--log-level".into(),
            "warn".into(),
            "--nats-port".into(),
            nats[i].to_string(),
            "--nats-cluster-name".into(),
            "bench".into(),
            "--nats-cluster-port".into(),
            routes_ports[i].to_string(),
            "--nats-routes".into(),
            routes.clone(),
            "--replicas".into(),
            "3".into(),
            "--nats-user".into(),
            NATS_USER.into(),
            "--nats-pass".into(),
            NATS_PASS.into(),
            "--nats-sync".into(),
            sync.into(),
            "file:bench.db".into(),
        ])
        .dir(&d);
        nodes.push(TestNode::start_spec(spec).await?);
    }
    for n in &nodes {
        ha_tests::eventually(Duration::from_secs(60), "node ready", || async {
            let r = n.client.get(n.url("/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await?;
    }
    // Create the tables on node 1 and wait until node 2 has them.
    nodes[0]
        .sql("CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT, at INTEGER)")
        .await?;
    nodes[0]
        .sql("CREATE TABLE lag(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    ha_tests::eventually(Duration::from_secs(30), "schema on node 2", || async {
        nodes[1].rows("SELECT count(*) FROM lag").await.ok()
    })
    .await?;
    Ok((nodes, nats))
}

/// Part 1: replicated INSERTs through HTTP on node 1 beside raw publishes, at concurrency 1,
/// 16 and 64; one Markdown row each (`| what | concurrency | ops/s | p50 | p99 |`).
async fn write_rates(nodes: &[TestNode], nats_port: u16, dur: Duration) -> Result<Vec<String>> {
    let mut out = Vec::new();
    // A real replicated message, to publish raw at the same size.
    nodes[0]
        .sql("INSERT INTO w(v, at) VALUES ('a typical row of about one hundred bytes, padded to make it so: ........', 1)")
        .await?;
    let client =
        async_nats::ConnectOptions::with_user_and_password(NATS_USER.into(), NATS_PASS.into())
            .connect(format!("127.0.0.1:{nats_port}"))
            .await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("ha_replication").await?;
    let sample = stream
        .get_last_raw_message_by_subject(REPLICATED_SUBJECT)
        .await
        .context("reading a replicated message")?;
    let payload = sample.payload.clone();
    for conc in [1usize, 16, 64] {
        let s = http_load(nodes[0].url("/"), conc, dur, |w, i| {
            json!({"sql": "INSERT INTO w(v, at) VALUES (?, ?)",
                   "params": [format!("worker {w} row {i} ......................................................"), i]})
        })
        .await?;
        out.push(format!(
            "| replicated INSERT via HTTP (node 1, R3) | {conc} | {:.0} | {:.3} | {:.3} |",
            s.per_second(),
            s.pct(0.5),
            s.pct(0.99)
        ));
        for (subject, label) in [
            (RAW_SUBJECT, "raw JetStream publish+ack"),
            (
                REPLICATED_SUBJECT,
                "raw publish+ack to the replicated subject",
            ),
        ] {
            let s = raw_publishes(&js, subject, payload.clone(), conc, dur).await?;
            out.push(format!(
                "| {label}, {} B (R3) | {conc} | {:.0} | {:.3} | {:.3} |",
                payload.len(),
                s.per_second(),
                s.pct(0.5),
                s.pct(0.99)
            ));
        }
    }
    Ok(out)
}

/// A subject of the stream that no node consumes: the log alone.
const RAW_SUBJECT: &str = "ha_replication.rawbench";
/// The subject the three nodes consume: the log and its delivery to every node (each receives,
/// decodes, recognises the copy of a transaction it has already applied, and acks).
const REPLICATED_SUBJECT: &str = "ha_replication.bench_db";

async fn raw_publishes(
    js: &async_nats::jetstream::Context,
    subject: &'static str,
    payload: bytes::Bytes,
    conc: usize,
    dur: Duration,
) -> Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let js = js.clone();
        let payload = payload.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                js.publish(subject, payload.clone()).await?.await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok((lat.len() as u64, lat))
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Sample::merge(parts, start.elapsed().as_secs_f64()))
}

/// Writes at `rate` per second on `a` for `dur` while watching `b`; returns the rate reached
/// and, per row, the time from the write's acknowledgement on `a` to its visibility on `b`.
async fn lag_run(
    a: &TestNode,
    b: &TestNode,
    rate: u64,
    dur: Duration,
    next_id: &mut i64,
) -> Result<(f64, Sample)> {
    let acked: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let first = *next_id;
    let total = (rate * dur.as_secs()) as i64;
    *next_id += total;
    let stop = Arc::new(AtomicBool::new(false));
    // The watcher: new rows on b, as soon as they show.
    let watcher = {
        let (client, url, seen, stop) = (b.client.clone(), b.url("/"), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut low = first - 1;
            loop {
                let body = json!({"sql": "SELECT id FROM lag WHERE id > ? ORDER BY id LIMIT 5000", "params": [low]});
                if let Ok(r) = client.post(&url).json(&body).send().await
                    && let Ok(j) = r.json::<serde_json::Value>().await
                {
                    let now = Instant::now();
                    let mut s = seen.lock().await;
                    for row in j["rows"].as_array().cloned().unwrap_or_default() {
                        if let Some(id) = row[0].as_i64() {
                            s.entry(id).or_insert(now);
                        }
                    }
                    while s.contains_key(&(low + 1)) {
                        low += 1;
                    }
                    if stop.load(Ordering::Relaxed) && low >= first + total - 1 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut writers = Vec::new();
    for id in first..first + total {
        tick.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let (client, url, acked) = (a.client.clone(), a.url("/"), acked.clone());
        writers.push(tokio::spawn(async move {
            let _permit = permit;
            let body = json!({"sql": "INSERT INTO lag(id, v) VALUES (?, 'x')", "params": [id]});
            let r = client.post(&url).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("HTTP {}", r.status());
            }
            acked.lock().await.insert(id, Instant::now());
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let reached = total as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), watcher).await??;
    let acked = acked.lock().await;
    let seen = seen.lock().await;
    let lags: Vec<u64> = acked
        .iter()
        .filter_map(|(id, t)| {
            seen.get(id)
                .map(|s| s.saturating_duration_since(*t).as_micros() as u64)
        })
        .collect();
    Ok((reached, Sample::from_latencies(lags, dur.as_secs_f64())))
}
