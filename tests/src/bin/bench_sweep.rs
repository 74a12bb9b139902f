//! `ha-bench-sweep`: the "also measure" list of issue 17 — memory, other cluster layouts, and
//! how replicated writes scale with row size and rows per transaction — each printed beside a
//! baseline measured in the same run.
//! 1. Memory: VmRSS/VmHWM (`/proc/<pid>/status`) of node 1 of a 3-node R3 cluster and of its
//!    nats-server child, idle after start, during and after single-row INSERTs from 64 clients;
//!    beside a single node without NATS (`--nats-port 0`) under the same load.
//! 2. Layouts: replicated INSERTs at concurrency 1, 16, 64 beside raw JetStream publish+ack of
//!    the same message on the same cluster, and lag at 500 and 2,000 writes/s, for 3 nodes with
//!    embedded servers R3 (the `ha-bench-repl` cluster), 5 nodes with embedded servers R3, and
//!    3 nodes on one external nats-server R1 (syncing before every ack, as the embedded default).
//! 3. Shapes, on the 3-node R3 cluster: rows of 100 B, 1 KiB, 10 KiB (one per transaction) and
//!    transactions of 1, 10, 100, 1,000 rows of 100 B (an array request: one INSERT per row, one
//!    transaction): tx/s, rows/s, p50/p99 at concurrency 1 and 16 beside the raw publish+ack of
//!    that transaction's real message; lag at a modest steady rate (a quarter of the measured
//!    concurrency-16 rate, at most 200 tx/s).
//!
//! Usage: `ha-bench-sweep [--seconds N]` (each measurement window, default 3; release build).
//! Prints Markdown; asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use ha_tests::bench::{children, http_load, memory_kb};
use ha_tests::bench_cluster::{BenchCluster, Layout, RAW_SUBJECT, lag_run, raw_publishes};
use ha_tests::{NodeSpec, TestNode};
use serde_json::{Value as Json, json};

const THREE_R3: Layout = Layout::Embedded {
    nodes: 3,
    replicas: 3,
};

#[tokio::main]
async fn main() -> Result<()> {
    let dur = ha_tests::bench::seconds_arg(3);
    // Ids of the `lag` table, unique over every lag run on one cluster.
    let mut next_id = 1i64;
    let mut out = Vec::new();

    let three = BenchCluster::start(THREE_R3, "always").await?;
    out.extend(memory(&three, dur).await?);
    out.push(String::new());

    let mut rates = vec![
        "| cluster | what | concurrency | ops/s | p50 ms | p99 ms |".to_string(),
        "|---|---|---:|---:|---:|---:|".to_string(),
    ];
    let mut lags = vec![
        "| cluster | steady load on node 1 | writes/s reached | lag p50 ms | lag p99 ms | lag max ms | sent → visible p50 ms | p99 ms |"
            .to_string(),
        "|---|---|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    layout_rows(
        &three,
        "3 nodes, embedded, R3",
        dur,
        &mut next_id,
        &mut rates,
        &mut lags,
    )
    .await?;
    let shape_rows = shapes(&three, dur, &mut next_id).await?;
    drop(three);

    for (layout, label) in [
        (
            Layout::Embedded {
                nodes: 5,
                replicas: 3,
            },
            "5 nodes, embedded, R3",
        ),
        (
            Layout::External { nodes: 3 },
            "3 nodes, one external server, R1",
        ),
    ] {
        let cluster = BenchCluster::start(layout, "always").await?;
        layout_rows(&cluster, label, dur, &mut 1, &mut rates, &mut lags).await?;
    }
    out.extend(rates);
    out.push(String::new());
    out.extend(lags);
    out.push(String::new());
    out.extend(shape_rows);
    println!("{}", out.join("\n"));
    Ok(())
}

/// Part 2 on one cluster: its write rates beside raw publishes, and its lag rows.
async fn layout_rows(
    cluster: &BenchCluster,
    label: &str,
    dur: Duration,
    next_id: &mut i64,
    rates: &mut Vec<String>,
    lags: &mut Vec<String>,
) -> Result<()> {
    for row in cluster.write_rates(dur).await? {
        rates.push(format!("| {label} {row}"));
    }
    for row in cluster.lag_rows(&[500, 2000], dur, next_id).await? {
        lags.push(format!("| {label} {row}"));
    }
    Ok(())
}

/// Part 1: the memory table. `three` must be freshly started (its idle figure is taken first).
async fn memory(three: &BenchCluster, dur: Duration) -> Result<Vec<String>> {
    let node = &three.nodes[0];
    let pid = node.pid().context("node 1 has no pid")?;
    let nats = children(pid)
        .into_iter()
        .find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|n| n.trim() == "nats-server")
        })
        .context("node 1 has no nats-server child")?;
    let idle = [memory_kb(pid)?, memory_kb(nats)?];
    let (load, during) = sampled(&[pid, nats], three.insert_load(64, dur)).await?;
    let after = [memory_kb(pid)?, memory_kb(nats)?];

    // The baseline: one node without NATS, the same load (local commits, nothing replicated).
    let dir = tempfile::tempdir()?;
    let single = TestNode::start_spec(
        NodeSpec::new(&["--log-level", "warn", "file:bench.db"]).dir(dir.path()),
    )
    .await?;
    single
        .sql("CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT, at INTEGER)")
        .await?;
    let spid = single.pid().context("single node has no pid")?;
    let s_idle = memory_kb(spid)?;
    let (s_load, s_during) = sampled(&[spid], single_load(&single, dur)).await?;
    let s_after = memory_kb(spid)?;

    let mb = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    let mut out = vec![
        "| process | idle after start: VmRSS MB | under 64 clients' INSERTs: max VmRSS MB | after: VmRSS MB | VmHWM MB | INSERTs/s of the load |".to_string(),
        "|---|---:|---:|---:|---:|---:|".to_string(),
    ];
    out.push(format!(
        "| ha, single node without NATS (`--nats-port 0`, baseline) | {} | {} | {} | {} | {:.0} |",
        mb(s_idle.0),
        mb(s_during[0]),
        mb(s_after.0),
        mb(s_after.1),
        s_load.per_second()
    ));
    for (i, what) in [
        "ha, node 1 of 3 (embedded server, R3)",
        "nats-server child of node 1",
    ]
    .iter()
    .enumerate()
    {
        out.push(format!(
            "| {what} | {} | {} | {} | {} | {:.0} |",
            mb(idle[i].0),
            mb(during[i]),
            mb(after[i].0),
            mb(after[i].1),
            load.per_second()
        ));
    }
    Ok(out)
}

/// The single-row INSERT load of `BenchCluster::insert_load` on a lone node.
async fn single_load(node: &TestNode, dur: Duration) -> Result<ha_tests::bench::Sample> {
    http_load(node.url("/"), 64, dur, |w, i| {
        json!({"sql": "INSERT INTO w(v, at) VALUES (?, ?)",
               "params": [format!("worker {w} row {i} ......................................................"), i]})
    })
    .await
}

/// Runs `load` while sampling the VmRSS of `pids` every 50 ms; returns its result and each
/// pid's highest sample in kB.
async fn sampled<T>(
    pids: &[u32],
    load: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, Vec<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pids, stop) = (pids.to_vec(), stop.clone());
        tokio::spawn(async move {
            let mut max = vec![0u64; pids.len()];
            while !stop.load(Ordering::Relaxed) {
                for (m, p) in max.iter_mut().zip(&pids) {
                    if let Ok((rss, _)) = memory_kb(*p) {
                        *m = (*m).max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        })
    };
    let r = load.await;
    stop.store(true, Ordering::Relaxed);
    let max = sampler.await?;
    Ok((r?, max))
}

/// A transaction shape of part 3.
#[derive(Clone, Copy)]
struct Shape {
    row_bytes: usize,
    rows: usize,
}

impl Shape {
    /// A value of `row_bytes` bytes, unique per (worker, request, row).
    fn value(&self, w: usize, i: u64, j: usize) -> String {
        let mut v = format!("{w}-{i}-{j}-");
        let fill = self.row_bytes.saturating_sub(v.len());
        v.push_str(&".".repeat(fill));
        v
    }

    /// One request: a single INSERT, or an array of `rows` INSERTs (one transaction).
    fn body(&self, w: usize, i: u64) -> Json {
        let insert = |j| json!({"sql": "INSERT INTO w(v, at) VALUES (?, ?)", "params": [self.value(w, i, j), i]});
        if self.rows == 1 {
            insert(0)
        } else {
            Json::Array((0..self.rows).map(insert).collect())
        }
    }

    /// The lag probe: the same transaction, its first row going to `lag` with id `id`.
    fn lag_body(&self, id: i64) -> Json {
        let mut stmts = vec![json!({"sql": "INSERT INTO lag(id, v) VALUES (?, ?)",
                                    "params": [id, self.value(usize::MAX, id as u64, 0)]})];
        stmts.extend((1..self.rows).map(|j| {
            json!({"sql": "INSERT INTO w(v, at) VALUES (?, ?)",
                   "params": [self.value(usize::MAX, id as u64, j), id]})
        }));
        if self.rows == 1 {
            stmts.remove(0)
        } else {
            Json::Array(stmts)
        }
    }
}

/// Part 3: throughput and lag by row size and rows per transaction on `cluster`.
async fn shapes(cluster: &BenchCluster, dur: Duration, next_id: &mut i64) -> Result<Vec<String>> {
    let js = cluster.jetstream().await?;
    let mut rates = vec![
        "| row B | rows/tx | message B | concurrency | tx/s | rows/s | p50 ms | p99 ms | raw publish+ack of the message /s | raw p50 ms | raw p99 ms | tx/s ÷ raw |".to_string(),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    let mut lags = vec![
        "| row B | rows/tx | steady tx/s (rows/s) | tx/s reached | lag p50 ms | lag p99 ms | lag max ms |".to_string(),
        "|---:|---:|---:|---:|---:|---:|---:|".to_string(),
    ];
    let shapes = [
        (100, 1),
        (1024, 1),
        (10240, 1),
        (100, 10),
        (100, 100),
        (100, 1000),
    ];
    for (row_bytes, rows) in shapes {
        let shape = Shape { row_bytes, rows };
        let message = cluster.sample_message(&js, &shape.body(0, 0)).await?;
        let mut c16_tps = 0.0;
        for conc in [1usize, 16] {
            let s = http_load(cluster.nodes[0].url("/"), conc, dur, move |w, i| {
                shape.body(w, i)
            })
            .await?;
            let raw = raw_publishes(&js, RAW_SUBJECT, message.clone(), conc, dur).await?;
            if conc == 16 {
                c16_tps = s.per_second();
            }
            rates.push(format!(
                "| {row_bytes} | {rows} | {} | {conc} | {:.0} | {:.0} | {:.3} | {:.3} | {:.0} | {:.3} | {:.3} | {:.2} |",
                message.len(),
                s.per_second(),
                s.per_second() * rows as f64,
                s.pct(0.5),
                s.pct(0.99),
                raw.per_second(),
                raw.pct(0.5),
                raw.pct(0.99),
                s.per_second() / raw.per_second().max(f64::MIN_POSITIVE)
            ));
        }
        let rate = ((c16_tps / 4.0) as u64).clamp(1, 200);
        let (reached, lag) = lag_run(
            &cluster.nodes[0],
            &cluster.nodes[1],
            rate,
            dur,
            next_id,
            |id| shape.lag_body(id),
        )
        .await?;
        lags.push(format!(
            "| {row_bytes} | {rows} | {rate} ({}) | {reached:.1} | {:.3} | {:.3} | {:.3} |",
            rate * rows as u64,
            lag.after_ack.pct(0.5),
            lag.after_ack.pct(0.99),
            lag.after_ack.max()
        ));
    }
    let mut out = rates;
    out.push(String::new());
    out.extend(lags);
    Ok(out)
}
