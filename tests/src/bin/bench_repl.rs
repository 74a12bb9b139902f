//! `ha-bench-repl`: replication on a local 3-node cluster (embedded nats-servers clustered by
//! routes, stream replicas 3), printed beside its ceiling measured in the same run.
//! 1. Replicated single-row INSERTs through HTTP on node 1 at concurrency 1, 16 and 64, next to
//!    raw JetStream publishes (publish + wait for the ack) of the same message to the same R3
//!    stream at the same concurrency: to a subject no node consumes (the log alone), and to the
//!    replicated subject (the log and its delivery to the three nodes, which recognise the copy
//!    of a transaction they already have and skip it).
//! 2. Replication lag (commit acknowledged on node 1 → row visible on node 2) at a steady 500
//!    and 2,000 writes/s: p50, p99, max; and the whole way (request sent to node 1 → row
//!    visible on node 2), which a faster acknowledgement does not lengthen.
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

use anyhow::Result;
use ha_tests::bench_cluster::{BenchCluster, Layout};

/// The cluster of every part: 3 nodes with embedded servers, R3.
const LAYOUT: Layout = Layout::Embedded {
    nodes: 3,
    replicas: 3,
};

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
            let cluster = BenchCluster::start(LAYOUT, sync).await?;
            for row in cluster.write_rates(dur).await? {
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
    let cluster = BenchCluster::start(LAYOUT, "always").await?;
    let mut out = vec![
        "| what | concurrency | ops/s | p50 ms | p99 ms |".to_string(),
        "|---|---:|---:|---:|---:|".to_string(),
    ];
    out.extend(cluster.write_rates(dur).await?);
    out.push(String::new());
    out.push(
        "| steady load on node 1 | writes/s reached | lag p50 ms | lag p99 ms | lag max ms | sent → visible p50 ms | p99 ms |"
            .into(),
    );
    out.push("|---|---:|---:|---:|---:|---:|---:|".into());
    out.extend(cluster.lag_rows(&[500, 2000], dur, &mut 1).await?);
    // The cluster stops before the apply benchmark starts its own processes.
    drop(cluster);
    out.push(String::new());
    out.extend(ha_tests::apply_bench::run(apply_count, 2).await?);
    println!("{}", out.join("\n"));
    Ok(())
}

/// `--load C`: only replicated INSERTs on node 1 at concurrency `C`, for profiling (`perf record
/// -a` around it); prints the processes' ids first and the rate last.
async fn load_only(conc: usize, dur: std::time::Duration) -> Result<()> {
    let cluster = BenchCluster::start(LAYOUT, "always").await?;
    let pids: Vec<String> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid())
        .map(|p| p.to_string())
        .collect();
    eprintln!("node pids: {}", pids.join(" "));
    let before = metrics(&cluster.nodes[0]).await?;
    let s = cluster.insert_load(conc, dur).await?;
    let after = metrics(&cluster.nodes[0]).await?;
    let d = |name: &str| after.get(name).unwrap_or(&0.0) - before.get(name).unwrap_or(&0.0);
    let publishes = d("ha_publish_duration_seconds_count");
    let requests = d("ha_http_request_duration_seconds_count");
    println!(
        "replicated INSERT via HTTP (node 1, R3), concurrency {conc}: {:.0}/s, p50 {:.3} ms, p99 {:.3} ms",
        s.per_second(),
        s.pct(0.5),
        s.pct(0.99)
    );
    println!(
        "node 1: {:.1} writes per publish, publish {:.3} ms mean, HTTP request {:.3} ms mean",
        requests / publishes.max(1.0),
        1000.0 * d("ha_publish_duration_seconds_sum") / publishes.max(1.0),
        1000.0 * d("ha_http_request_duration_seconds_sum") / requests.max(1.0),
    );
    Ok(())
}

/// Node `n`'s Prometheus samples without labels (labelled ones summed under their name).
async fn metrics(n: &ha_tests::TestNode) -> Result<std::collections::HashMap<String, f64>> {
    let text = n.client.get(n.url("/metrics")).send().await?.text().await?;
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name).to_string();
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name).or_insert(0.0) += v;
        }
    }
    Ok(out)
}
