//! `ha-bench-backup`: off-cluster backup throughput and archive lag, against moto_server.
//! Upload: the node's snapshot upload path (zstd + multipart put, `ha::backup::upload`) of a
//! `--mb` MB database (half random blobs, half repetitive text), beside a raw object_store put
//! of the same uncompressed file in the same run. Restore: `ha restore --latest` (download,
//! verify, decompress, integrity check) beside a raw get of the same object. Archive lag: one
//! node with `--backup-url` under `--rate` writes/s for `--seconds`, sampling `/status`
//! `backup.archive_lag_seconds`.
//!
//! Usage: `ha-bench-backup [--mb 50] [--rate 2000] [--seconds 10]`. Prints Markdown; asserts
//! nothing.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ha_tests::cluster::{NatsProcess, wait_ready};
use ha_tests::s3::{S3Server, backup_status, start_node};
use ha_tests::{eventually, run_ha};

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mb = arg("--mb", 50);
    let rate = arg("--rate", 2000);
    let seconds = arg("--seconds", 10);
    let s3 = S3Server::start().await?;
    s3.create_bucket("bench").await?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.db");
    {
        let c = rusqlite::Connection::open(&db)?;
        let rows = (mb << 20) / (16 << 10);
        c.execute_batch(&format!(
            "CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
             INSERT INTO big(id, v) SELECT i, CASE WHEN i % 2 = 0 THEN randomblob(16384)
               ELSE CAST(printf('%.16384c', char(65 + i % 26)) AS BLOB) END FROM s;"
        ))?;
    }
    let size = std::fs::metadata(&db)?.len();
    let size_mb = size as f64 / 1e6;
    let url = "s3://bench/b";
    let storage = s3.storage(url)?;
    println!("| step | MB | seconds | MB/s |\n|---|---:|---:|---:|");
    let row = |what: &str, secs: f64| {
        println!(
            "| {what} | {size_mb:.0} | {secs:.2} | {:.0} |",
            size_mb / secs
        );
    };
    // Baseline: the same bytes, uncompressed, straight through object_store.
    let t = Instant::now();
    storage.put_file("raw/bench.db", &db).await?;
    row(
        "raw object_store put (uncompressed)",
        t.elapsed().as_secs_f64(),
    );
    // The node's path: zstd, then the multipart put, then the manifest.
    let t = Instant::now();
    let zst = dir.path().join("bench.db.zst");
    let (sha, stored) = ha::backup::upload::compress_file(&db, &zst)?;
    let key = ha::backup::layout::snapshot_object(1);
    storage.put_file(&key, &zst).await?;
    let m = ha::backup::layout::SnapshotManifest {
        seq: 1,
        time_ns: time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        bytes: size,
        stored_bytes: stored,
        sha256: sha,
        node: "bench".into(),
    };
    storage
        .put(
            &ha::backup::layout::snapshot_manifest(1),
            serde_json::to_vec(&m)?.into(),
        )
        .await?;
    row(
        &format!(
            "ha snapshot upload (zstd to {:.0} MB + put)",
            stored as f64 / 1e6
        ),
        t.elapsed().as_secs_f64(),
    );
    let t = Instant::now();
    storage
        .get_to_file("raw/bench.db", &dir.path().join("raw.db"))
        .await?;
    row(
        "raw object_store get (uncompressed)",
        t.elapsed().as_secs_f64(),
    );
    let env = s3.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = dir.path().join("restored.db").display().to_string();
    let t = Instant::now();
    let r = run_ha(
        &["restore", "--from", url, "--latest", "--out", &out],
        &env_ref,
    )?;
    if !r.status.success() {
        bail!("restore: {}", String::from_utf8_lossy(&r.stderr));
    }
    row(
        "ha restore --latest (get + sha256 + unzstd + integrity check)",
        t.elapsed().as_secs_f64(),
    );

    // Archive lag under load.
    let nats = NatsProcess::start().await?;
    let ndir = tempfile::tempdir()?;
    let lag_url = "s3://bench/lag";
    let n = start_node(
        &nats.url(),
        "n1",
        ndir.path(),
        &["--backup-url", lag_url, "--log-level", "warn"],
        &env,
    )
    .await?;
    wait_ready(&n, Duration::from_secs(30)).await?;
    n.sql("CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let clients = 16u64;
    let per_client = Duration::from_secs_f64(clients as f64 / rate as f64);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = n.client.clone();
        let u = n.url("/");
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            let mut done = 0u64;
            while Instant::now() < stop {
                let body =
                    serde_json::json!({"sql": format!("INSERT INTO w(v) VALUES ('c{c} {done}')")});
                if client
                    .post(&u)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    done += 1;
                }
                next += per_client;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(d).await;
                }
            }
            done
        }));
    }
    let mut lags = Vec::new();
    while Instant::now() < stop {
        if let Ok(b) = backup_status(&n).await
            && let Some(l) = b["archive_lag_seconds"].as_f64()
        {
            lags.push(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut writes = 0;
    for t in tasks {
        writes += t.await?;
    }
    let end = Instant::now();
    let head: serde_json::Value = n
        .client
        .get(n.url("/checksum"))
        .send()
        .await?
        .json()
        .await?;
    let last = head["stream_last_seq"].as_u64().unwrap_or(0);
    eventually(Duration::from_secs(60), "archive caught up", || async {
        (backup_status(&n).await.ok()?["archived_seq"].as_u64()? >= last).then_some(())
    })
    .await?;
    let drain = end.elapsed().as_secs_f64();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "\narchive under load: {writes} writes in {seconds} s ({:.0}/s asked {rate}/s), --archive-interval 10s: lag p50 {:.2} s, p99 {:.2} s, max {:.2} s; last write archived {:.2} s after the load stopped",
        writes as f64 / seconds as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        drain
    );
    Ok(())
}
