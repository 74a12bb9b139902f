//! `ha-bench-snapshot`: snapshot and restore throughput of a database of `--mb` MB (default 100)
//! of incompressible rows, beside `sqlite3 .backup` / `.restore` of the same file and a raw
//! object-store put / get of it in the same run, with the node's peak RSS during each step (`VmHWM` from /proc, reset before the step).
//! One node on an external nats-server (R1 bucket); restore is a second node started with
//! `--from-latest-snapshot`, timed from its start until it is ready.
//!
//! Usage: `ha-bench-snapshot [--mb N]` (release build; `sqlite3` on PATH). Prints Markdown;
//! asserts nothing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ha_tests::cluster::NatsProcess;
use ha_tests::{NodeSpec, TestNode, eventually};

#[tokio::main]
async fn main() -> Result<()> {
    let mb: usize = std::env::args()
        .skip_while(|a| a != "--mb")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir)?;
    let db = a_dir.join("bench.db");
    generate(&db, mb)?;
    let size = std::fs::metadata(&db)?.len();
    let nats = NatsProcess::start().await?;
    let common = |name: &str| -> Vec<String> {
        vec![
            "file:bench.db".into(),
            "--name".into(),
            name.into(),
            "--log-level".into(),
            "info".into(),
            "--nats-port".into(),
            "0".into(),
            "--replication-url".into(),
            nats.url(),
        ]
    };
    let t = Instant::now();
    let a = TestNode::start_spec(NodeSpec::new(&common("a")).dir(&a_dir)).await?;
    ready(&a).await?;
    let a_start = t.elapsed();
    // A snapshot records a stream position: give the database one (a database that never
    // applied anything has nothing to snapshot).
    a.sql("CREATE TABLE bench_marker(x)").await?;
    eventually(
        Duration::from_secs(60),
        "the write to be applied",
        || async {
            let st: serde_json::Value = a
                .client
                .get(a.url("/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (st["replication"]["applied_seq"].as_u64()? > 0).then_some(())
        },
    )
    .await?;
    let mut rows: Vec<String> = vec![
        "| step | MB | seconds | MB/s | node RSS before → peak MB |".into(),
        "|---|---:|---:|---:|---:|".into(),
    ];
    let mut row = |what: &str, bytes: u64, took: Duration, rss: Option<(u64, u64)>| {
        let mbs = bytes as f64 / 1048576.0;
        rows.push(format!(
            "| {what} | {mbs:.0} | {:.2} | {:.0} | {} |",
            took.as_secs_f64(),
            mbs / took.as_secs_f64(),
            rss.map(|(b, p)| format!("{} → {}", b >> 10, p >> 10))
                .unwrap_or_else(|| "–".into())
        ));
    };

    // Baselines: the sqlite3 shell on the same file (the node is running; WAL allows it), and
    // the object store's raw put and get of the copy.
    let copy = dir.path().join("cli-backup.db");
    let t = Instant::now();
    sqlite3(&db, &format!(".backup '{}'", copy.display()))?;
    row(
        "sqlite3 .backup (same file, local disk)",
        size,
        t.elapsed(),
        None,
    );
    let restored = dir.path().join("cli-restored.db");
    let t = Instant::now();
    sqlite3(&restored, &format!(".restore '{}'", copy.display()))?;
    row(
        "sqlite3 .restore (into a new file)",
        size,
        t.elapsed(),
        None,
    );
    std::fs::remove_file(&restored)?;
    // The object store's own rate: the same file put into and read back from a bucket of the
    // same server (R1), as a client does it — the ceiling of a snapshot's upload and restore.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    for (bucket, compression, what) in [
        ("rawbench", false, "R1"),
        ("rawbenchz", true, "R1, compressed like the node's bucket"),
    ] {
        let store = js
            .create_object_store(async_nats::jetstream::object_store::Config {
                bucket: bucket.into(),
                compression,
                ..Default::default()
            })
            .await?;
        let t = Instant::now();
        let mut file = tokio::fs::File::open(&copy).await?;
        store.put("bench.db", &mut file).await?;
        row(
            &format!("raw object-store put of the same file (async-nats, {what})"),
            size,
            t.elapsed(),
            None,
        );
        let t = Instant::now();
        let mut object = store.get("bench.db").await?;
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut object, &mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        row(
            &format!("raw object-store get of the same file (async-nats, {what})"),
            got,
            t.elapsed(),
            None,
        );
        js.delete_object_store(bucket).await?;
    }
    std::fs::remove_file(&copy)?;

    // GET /: the online backup streamed over HTTP.
    let pid = a.pid().context("node a")?;
    let before = reset_peak(pid)?;
    let t = Instant::now();
    let mut r = a.client.get(a.url("/")).send().await?;
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await? {
        got += chunk.len() as u64;
    }
    row(
        "ha GET / (backup download over HTTP)",
        got,
        t.elapsed(),
        Some((before, kb(pid, "VmHWM")?)),
    );

    // POST /snapshot: copy, sha256, upload to the object store, read back.
    let before = reset_peak(pid)?;
    let t = Instant::now();
    let r = a
        .client
        .post(a.url("/snapshot"))
        .timeout(Duration::from_secs(1800))
        .send()
        .await?;
    let took = t.elapsed();
    let body: serde_json::Value = r.json().await?;
    let bytes = body["bytes"].as_u64().context("snapshot bytes")?;
    row(
        "ha POST /snapshot (read in place, or a copy for a memory database; sha256; upload; R1)",
        bytes,
        took,
        Some((before, kb(pid, "VmHWM")?)),
    );

    // GET /snapshot: the stored snapshot streamed back.
    let before = reset_peak(pid)?;
    let t = Instant::now();
    let mut r = a.client.get(a.url("/snapshot")).send().await?;
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await? {
        got += chunk.len() as u64;
    }
    row(
        "ha GET /snapshot (download from the object store)",
        got,
        t.elapsed(),
        Some((before, kb(pid, "VmHWM")?)),
    );

    // Restore: a new node that starts from the snapshot (download, sha256, integrity_check,
    // install), timed until /readyz.
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir)?;
    let mut args = common("b");
    args.push("--from-latest-snapshot".into());
    let t = Instant::now();
    let b = TestNode::start_spec(NodeSpec::new(&args).dir(&b_dir)).await?;
    ready(&b).await?;
    let took = t.elapsed();
    let bpid = b.pid().context("node b")?;
    row(
        "ha --from-latest-snapshot (new node: download + verify + install, start → ready)",
        bytes,
        took,
        Some((0, kb(bpid, "VmHWM")?)),
    );

    // The restore itself, by the node's own timer (listing, download, checks, install; without
    // the node's start around it).
    let restore_ms = b
        .log_text()
        .lines()
        .find(|l| l.contains("restored the database file from the latest snapshot"))
        .and_then(|l| l.split("restore_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    // (An `ha` older than this timer, as `HA_BIN` for a comparison, logs none.)
    if let Some(ms) = restore_ms {
        row(
            "ha restore itself (download + verify + install, node b's own timer)",
            bytes,
            Duration::from_millis(ms),
            None,
        );
    }
    rows.push(format!(
        "| ha start → ready without a restore (node a, for comparison with the row above) | – | {:.2} | – | – |",
        a_start.as_secs_f64()
    ));

    println!("Database: {mb} MB of 16 KiB random blobs ({size} bytes on disk).\n");
    println!("{}", rows.join("\n"));
    // Where the time went, as the nodes log it (stage timers of the take and of the restore).
    println!("\nStages (from the nodes' logs):\n");
    for line in a.log_text().lines().chain(b.log_text().lines()) {
        if line.contains("snapshot stored")
            || line.contains("snapshots listed")
            || line.contains("snapshot downloaded and verified")
            || line.contains("restored the database file")
        {
            println!("    {line}");
        }
    }
    println!(
        "\n(\"before\" is the node's RSS when the step starts; the peak is VmHWM after resetting \
         it; the restoring node's peak is over its whole life.)"
    );
    Ok(())
}

async fn ready(n: &TestNode) -> Result<()> {
    eventually(Duration::from_secs(600), "node ready", || async {
        let r = n.client.get(n.url("/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await
}

/// A database of `mb` MB of 16 KiB random blobs, made by the sqlite3 shell.
fn generate(path: &Path, mb: usize) -> Result<()> {
    let rows = (mb << 20) / (16 << 10);
    sqlite3(
        path,
        &format!(
            "CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
             INSERT INTO big(id, v) SELECT i, randomblob(16384) FROM s;"
        ),
    )
}

fn sqlite3(db: &Path, script: &str) -> Result<()> {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(script)
        .output()
        .context("running sqlite3 (is it installed?)")?;
    if !out.status.success() {
        bail!("sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `/proc/<pid>/status` field in kB.
fn kb(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// Resets the peak RSS of `pid` (Linux `clear_refs` 5) and returns its RSS now.
fn reset_peak(pid: u32) -> Result<u64> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    kb(pid, "VmRSS")
}
