//! `ha-bench`: single-row INSERT and point SELECT by primary key through HTTP at concurrency 1
//! and 32, printed beside the same statements run in-process with rusqlite in the same run.
//! Usage: `ha-bench [--seconds N]` (build with `--release`; `HA_BIN` picks the binary).
//! Prints a Markdown table for docs/benchmarks.md. Not a test: it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ha_tests::TestNode;
use ha_tests::bench::{Sample, http_load};
use serde_json::json;

const ROWS: i64 = 10_000;

#[tokio::main]
async fn main() -> Result<()> {
    let dur = ha_tests::bench::seconds_arg(3);
    let mut out = vec![
        "| statement | path | concurrency | ops/s | p50 ms | p99 ms |".to_string(),
        "|---|---|---:|---:|---:|---:|".to_string(),
    ];

    let node = TestNode::start(&["file:bench.db", "--log-level", "warn"]).await?;
    node.sql("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    node.sql(&format!(
        "INSERT INTO kv WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < {ROWS}) SELECT i, 'value ' || i FROM c"
    ))
    .await?;
    let raw_dir = tempfile::tempdir()?;
    let raw_path = raw_dir.path().join("raw.db");
    {
        let c = rusqlite::Connection::open(&raw_path)?;
        c.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO kv WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < {ROWS}) SELECT i, 'value ' || i FROM c;"
        ))?;
    }

    for conc in [1usize, 32] {
        let s = http_load(
            node.url("/"),
            conc,
            dur,
            |w, i| json!({"sql": "INSERT INTO kv(v) VALUES (?)", "params": [format!("w{w} #{i}")]}),
        )
        .await?;
        out.push(s.row("INSERT one row", "ha HTTP", conc));
        let s = raw_load(&raw_path, conc, dur, true)?;
        out.push(s.row("INSERT one row", "rusqlite in-process", conc));
    }
    for conc in [1usize, 32] {
        let s = http_load(node.url("/"), conc, dur, |w, i| {
            json!({"sql": "SELECT v FROM kv WHERE id = ?", "params": [(i as i64 * 7919 + w as i64) % ROWS + 1]})
        })
        .await?;
        out.push(s.row("SELECT by primary key", "ha HTTP", conc));
        let s = raw_load(&raw_path, conc, dur, false)?;
        out.push(s.row("SELECT by primary key", "rusqlite in-process", conc));
    }
    println!("{}", out.join("\n"));
    Ok(())
}

fn raw_load(path: &std::path::Path, conc: usize, dur: Duration, insert: bool) -> Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut threads = Vec::new();
    for w in 0..conc {
        let path = path.to_path_buf();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || -> Result<(u64, Vec<u64>)> {
            let c = rusqlite::Connection::open(&path)?;
            c.busy_timeout(Duration::from_secs(30))?;
            let mut lat = Vec::new();
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                if insert {
                    c.prepare_cached("INSERT INTO kv(v) VALUES (?)")?
                        .execute([format!("w{w} #{i}")])?;
                } else {
                    let _: String = c
                        .prepare_cached("SELECT v FROM kv WHERE id = ?")?
                        .query_row([(i * 7919 + w as i64) % ROWS + 1], |r| r.get(0))?;
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok((lat.len() as u64, lat))
        }));
    }
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut parts = Vec::new();
    for t in threads {
        parts.push(t.join().map_err(|_| anyhow::anyhow!("worker panicked"))??);
    }
    Ok(Sample::merge(parts, start.elapsed().as_secs_f64()))
}
