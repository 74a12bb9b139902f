//! Snapshots, restore and automatic recovery through a real nats-server and real `ha` binaries:
//! `POST`/`GET /snapshot`, `--from-latest-snapshot` for file and memory databases,
//! recovery when the stream no longer starts where a node needs it, `--snapshot-interval`,
//! `--snapshot-retain`, refusal of corrupt snapshots, writes during a snapshot, and `ha -m` on a
//! downloaded backup. Nothing sleeps to synchronise; every wait polls with a deadline.

use std::time::Duration;

use async_nats::jetstream::object_store;
use futures::StreamExt;
use ha_tests::cluster::{DB_FILE, TestCluster, status};
use ha_tests::{TestNode, eventually};
use serde_json::{Value as Json, json};

const BUCKET: &str = "ha_replication_SNAPSHOTS";

/// The snapshots in the bucket: (name, seq header), newest first.
async fn stored(c: &TestCluster) -> Vec<(String, u64)> {
    let js = c.jetstream().await.unwrap();
    let Ok(store) = js.get_object_store(BUCKET).await else {
        return Vec::new();
    };
    let mut list = store.list().await.unwrap();
    let mut out = Vec::new();
    while let Some(Ok(i)) = list.next().await {
        let seq = i
            .headers
            .as_ref()
            .and_then(|h| h.get("seq"))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        out.push((i.name, seq));
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.1));
    out
}

async fn insert_range(n: &TestNode, table: &str, from: i64, to: i64) {
    n.sql(&format!(
        "WITH RECURSIVE s(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM s WHERE i < {to}) \
         INSERT INTO {table}(id, v) SELECT i, 'v' || i FROM s"
    ))
    .await
    .unwrap();
}

fn keys(table: &'static str, from: i64, to: i64) -> Vec<(&'static str, &'static str, Json)> {
    (from..=to).map(|i| (table, "id", json!(i))).collect()
}

#[tokio::test]
async fn post_and_get_snapshot_round_trip_and_a_second_post_is_a_no_op() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    // Nothing stored yet: a JSON 404.
    let r = n.client.get(n.url("/snapshot")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let j: Json = r.json().await.unwrap();
    assert_eq!(j["error"]["code"], "not_found", "{j}");

    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    insert_range(n, "t", 1, 100).await;
    let applied = c.settle(n, Duration::from_secs(30)).await.unwrap();
    let (s, x, j) = n.take_snapshot().await.unwrap().parts();
    assert_eq!(s, 200, "{j}");
    assert_eq!(x, applied, "{j}");
    assert_eq!(j["seq"].as_u64(), Some(applied), "{j}");
    assert_eq!(j["skipped"], false);
    assert!(j["bytes"].as_u64().unwrap() > 0, "{j}");

    let r = n.client.get(n.url("/snapshot")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["x-sequence"].to_str().unwrap(), applied.to_string());
    let cd = h["content-disposition"].to_str().unwrap().to_string();
    assert!(
        cd.starts_with("attachment; filename=\"")
            && cd.ends_with(&format!("_ha_snapshot_{applied}.db\"")),
        "{cd}"
    );
    let body = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    std::fs::write(&path, &body).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    let (count, seq): (i64, i64) = db
        .query_row(
            "SELECT (SELECT count(*) FROM t), (SELECT value FROM _ha_meta WHERE key = 'applied_seq')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(count, 100);
    assert_eq!(seq as u64, applied);
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");

    // Nothing applied since: a no-op, not an error.
    let (s, x, j) = n.take_snapshot().await.unwrap().parts();
    assert_eq!((s, x), (200, 0), "{j}");
    assert_eq!(j["seq"], 0);
    assert_eq!(j["skipped"], true);
    assert_eq!(stored(&c).await.len(), 1);

    // A node without NATS has no snapshots.
    let solo = TestNode::start(&["file:solo.db"]).await.unwrap();
    let r = solo
        .client
        .post(solo.url("/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let j: Json = r.json().await.unwrap();
    assert_eq!(j["error"]["code"], "not_replicating", "{j}");
}

/// File and memory nodes that join later restore the latest snapshot before they open the
/// database, resume the stream after it, and end identical.
#[tokio::test]
async fn file_and_memory_nodes_joining_later_restore_the_latest_snapshot() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    insert_range(n, "t", 1, 200).await;
    c.settle(n, Duration::from_secs(30)).await.unwrap();
    let (_, seq, _) = n.take_snapshot().await.unwrap().parts();
    assert!(seq > 0);
    insert_range(c.node(0), "t", 201, 300).await;

    let f = c
        .join(&["--from-latest-snapshot"], |_| Ok(()), true)
        .await
        .unwrap();
    let m = c
        .join(&["-m", "--from-latest-snapsot"], |_| Ok(()), true)
        .await
        .unwrap();
    insert_range(c.node(0), "t", 301, 310).await;
    c.assert_converged(&keys("t", 1, 310)).await.unwrap();
    for i in [f, m] {
        let log = c.node(i).log_text();
        assert!(
            log.contains(&format!("seq={seq}")) && log.contains("from the latest snapshot"),
            "node {i} did not restore snapshot {seq}:\n{log}"
        );
        assert!(
            log.contains(&format!("from={}", seq + 1)),
            "node {i}:\n{log}"
        );
    }
}

/// A node away longer than the stream keeps history, and a brand-new node joining a stream
/// that no longer starts at 1, both recover from the snapshot by themselves and end identical.
#[tokio::test]
async fn gaps_are_recovered_automatically_from_the_latest_snapshot() {
    let mut c = TestCluster::external(2, &["--replication-max-age", "1s"])
        .await
        .unwrap();
    c.node(0)
        .sql("CREATE TABLE g(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    c.assert_converged(&[]).await.unwrap();
    c.stop(1).await.unwrap();
    insert_range(c.node(0), "g", 1, 50).await;
    c.settle(c.node(0), Duration::from_secs(30)).await.unwrap();
    let (s, seq, j) = c.node(0).take_snapshot().await.unwrap().parts();
    assert_eq!(s, 200, "{j}");
    // Wait until the stream has dropped everything (max age 1 s).
    let js = c.jetstream().await.unwrap();
    eventually(Duration::from_secs(30), "messages to age out", || async {
        let mut s = js.get_stream("ha_replication").await.ok()?;
        let info = s.info().await.ok()?;
        (info.state.messages == 0 && info.state.first_sequence > 1).then_some(())
    })
    .await
    .unwrap();
    insert_range(c.node(0), "g", 51, 60).await;
    c.restart(1, &[]).await.unwrap();
    let newcomer = c.join(&[], |_| Ok(()), true).await.unwrap();
    c.assert_converged(&keys("g", 1, 60)).await.unwrap();
    for i in [1, newcomer] {
        let st = status(c.node(i)).await.unwrap();
        let rec = &st["replication"]["last_recovery"];
        assert_eq!(rec["to_seq"].as_u64(), Some(seq), "node {i}: {st}");
        assert!(st["replication"]["gap"].is_null(), "node {i}: {st}");
    }
}

#[tokio::test]
async fn interval_takes_snapshots_and_retention_keeps_the_newest_n() {
    let c = TestCluster::external(
        1,
        &["--snapshot-interval", "300ms", "--snapshot-retain", "2"],
    )
    .await
    .unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let mut seen = Vec::new();
    for round in 0..4 {
        insert_range(n, "t", round * 10 + 1, round * 10 + 10).await;
        let applied = c.settle(n, Duration::from_secs(30)).await.unwrap();
        eventually(Duration::from_secs(20), "a periodic snapshot", || async {
            let s = stored(&c).await;
            s.first().filter(|(_, seq)| *seq >= applied).map(|_| ())
        })
        .await
        .unwrap();
        seen.push(applied);
    }
    let s = eventually(Duration::from_secs(20), "retention to apply", || async {
        let s = stored(&c).await;
        (s.len() == 2).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(s[0].1, *seen.last().unwrap(), "{s:?}");
    assert_eq!(s[0].0, format!("{DB_FILE}.{}", s[0].1));
    // The count moves once `take` returns, a moment after the object is visible.
    eventually(
        Duration::from_secs(20),
        "four snapshots counted",
        || async {
            let st = status(n).await.ok()?;
            (st["replication"]["snapshots"]["taken"].as_u64()? >= 4).then_some(())
        },
    )
    .await
    .unwrap();
}

/// Garbage uploaded by hand as the newest snapshot (a bad sha256, or a good sha256 of
/// something that is not a database) is refused with the check named, and the previous one is
/// restored.
#[tokio::test]
async fn corrupt_snapshots_are_refused_and_the_previous_one_is_used() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    insert_range(n, "t", 1, 20).await;
    c.settle(n, Duration::from_secs(30)).await.unwrap();
    let (_, good, _) = n.take_snapshot().await.unwrap().parts();
    let js = c.jetstream().await.unwrap();
    let store = js.get_object_store(BUCKET).await.unwrap();
    let garbage = b"this is not an SQLite database, just bytes".to_vec();
    let sha = sha256_hex(&garbage);
    for (name, seq, sum) in [
        (format!("{DB_FILE}.{}", good + 100), good + 100, sha.clone()),
        (
            format!("{DB_FILE}.{}", good + 200),
            good + 200,
            "00".repeat(32),
        ),
    ] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("seq", seq.to_string().as_str());
        h.insert("sha256", sum.as_str());
        store
            .put(
                object_store::ObjectMetadata {
                    name,
                    headers: Some(h),
                    ..Default::default()
                },
                &mut garbage.as_slice(),
            )
            .await
            .unwrap();
    }
    // The Go original's key, with garbage too.
    store.put(DB_FILE, &mut garbage.as_slice()).await.unwrap();
    let log = join_from_latest(&mut c).await;
    assert!(log.contains("sha256 check failed"), "{log}");
    assert!(
        log.contains("not an SQLite database") || log.contains("integrity_check"),
        "{log}"
    );
    assert!(log.contains(&format!("seq={good}")), "{log}");
    // A new snapshot is still taken (garbage does not block it).
    insert_range(c.node(0), "t", 31, 31).await;
    c.settle(c.node(0), Duration::from_secs(30)).await.unwrap();
    let (s, x, body) = c.node(0).take_snapshot().await.unwrap().parts();
    assert_eq!(s, 200, "{body}");
    assert!(x > good, "{body}");
}

/// SHA-256 (hex) with the system's `sha256sum` (the tests crate has no hashing dependency).
fn sha256_hex(b: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g");
    std::fs::write(&p, b).unwrap();
    let out = std::process::Command::new("sha256sum")
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_string()
}

/// A snapshot of a database of a few MB while another client keeps writing: the writes are
/// acknowledged during it and the snapshot is consistent.
#[tokio::test]
async fn writes_continue_during_a_snapshot() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    n.sql("CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for k in 0..8 {
        n.sql(&format!(
            "WITH RECURSIVE s(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
             INSERT INTO big(id, v) SELECT i, randomblob(4000) FROM s",
            k * 500 + 1,
            k * 500 + 500
        ))
        .await
        .unwrap();
    }
    c.settle(n, Duration::from_secs(30)).await.unwrap();
    let url = n.url("/");
    let client = n.client.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let writer = tokio::spawn(async move {
        let mut ok = 0i64;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let r = client
                .post(&url)
                .json(&json!({"sql": "INSERT INTO w(v) VALUES ('x')"}))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                ok += 1;
            }
        }
        ok
    });
    // Let the writer get going (observed, not slept for).
    eventually(Duration::from_secs(10), "writes to flow", || async {
        let rows = n.rows("SELECT count(*) FROM w").await.ok()?;
        (rows[0][0].as_i64()? > 5).then_some(())
    })
    .await
    .unwrap();
    let before = n.rows("SELECT count(*) FROM w").await.unwrap()[0][0]
        .as_i64()
        .unwrap();
    let (s, seq, j) = n.take_snapshot().await.unwrap().parts();
    let after = n.rows("SELECT count(*) FROM w").await.unwrap()[0][0]
        .as_i64()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = writer.await.unwrap();
    assert_eq!(s, 200, "{j}");
    assert!(seq > 0);
    assert!(after > before, "no write went through during the snapshot");
    // A file database in WAL mode is read in place, not copied first.
    let log = n.log_text();
    assert!(
        log.contains("snapshot stored") && log.contains("read_in_place=true"),
        "{log}"
    );
    assert!(total > 0);
    let bytes = n
        .client
        .get(n.url("/snapshot"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.len() > 15_000_000, "{}", bytes.len());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.db");
    std::fs::write(&p, &bytes).unwrap();
    let db = rusqlite::Connection::open(&p).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let big: i64 = db
        .query_row("SELECT count(*) FROM big", [], |r| r.get(0))
        .unwrap();
    assert_eq!(big, 4000);
    // Read while writes went on, the content is the state at the sequence the snapshot names.
    let inside: i64 = db
        .query_row(
            "SELECT value FROM _ha_meta WHERE key = 'applied_seq'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(inside as u64, seq);
}

/// A memory node whose durable was deleted while it was down restarts with
/// `--from-latest-snapshot`, loads the snapshot, resumes after it and ends identical.
#[tokio::test]
async fn a_memory_node_without_its_durable_restores_and_converges() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    c.node(0)
        .sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    insert_range(c.node(0), "t", 1, 100).await;
    let m = c
        .join(&["-m", "--from-latest-snapshot"], |_| Ok(()), true)
        .await
        .unwrap();
    c.assert_converged(&keys("t", 1, 100)).await.unwrap();
    c.stop(m).await.unwrap();
    insert_range(c.node(0), "t", 101, 150).await;
    c.settle(c.node(0), Duration::from_secs(30)).await.unwrap();
    let (_, seq, _) = c.node(0).take_snapshot().await.unwrap().parts();
    let r = c
        .node(0)
        .client
        .delete(c.node(0).url(&format!("/replications/t_db_n{}", m + 1)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    insert_range(c.node(0), "t", 151, 160).await;
    c.restart(m, &[]).await.unwrap();
    c.assert_converged(&keys("t", 1, 160)).await.unwrap();
    let log = c.node(m).log_text();
    assert!(log.contains(&format!("from={}", seq + 1)), "{log}");
}

/// `ha -m <downloaded backup>` resumes the stream right after the sequence inside the backup.
#[tokio::test]
async fn a_memory_node_loading_a_downloaded_backup_resumes_after_its_sequence() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    insert_range(n, "t", 1, 40).await;
    let applied = c.settle(n, Duration::from_secs(30)).await.unwrap();
    let backup = n
        .client
        .get(n.url("/"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    insert_range(c.node(0), "t", 41, 50).await;
    let m = c
        .join(
            &["-m"],
            move |dir| {
                std::fs::write(dir.join(DB_FILE), &backup)?;
                Ok(())
            },
            true,
        )
        .await
        .unwrap();
    c.assert_converged(&keys("t", 1, 50)).await.unwrap();
    let log = c.node(m).log_text();
    assert!(log.contains(&format!("from={}", applied + 1)), "{log}");
}

/// `kill -9` of the node in the middle of an upload leaves the previous snapshot as the latest
/// usable one: a node joining afterwards restores it.
#[tokio::test]
async fn a_kill_during_an_upload_leaves_the_previous_snapshot_usable() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    n.sql("INSERT INTO big(id, v) VALUES (0, x'00')")
        .await
        .unwrap();
    c.settle(n, Duration::from_secs(30)).await.unwrap();
    let (_, first, _) = n.take_snapshot().await.unwrap().parts();
    for k in 0..10 {
        n.sql(&format!(
            "WITH RECURSIVE s(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
             INSERT INTO big(id, v) SELECT i, randomblob(4000) FROM s",
            k * 1000 + 1,
            k * 1000 + 1000
        ))
        .await
        .unwrap();
    }
    c.settle(n, Duration::from_secs(30)).await.unwrap();
    let js = c.jetstream().await.unwrap();
    let obj_stream = format!("OBJ_{BUCKET}");
    let before = js
        .get_stream(&obj_stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .bytes;
    let url = n.url("/snapshot");
    let client = n.client.clone();
    let upload = tokio::spawn(async move { client.post(url).send().await.map(|r| r.status()) });
    // Kill as soon as chunks of the new snapshot are arriving, before it is complete.
    eventually(Duration::from_secs(30), "the upload to start", || {
        let js = js.clone();
        let name = obj_stream.clone();
        async move {
            let b = js
                .get_stream(&name)
                .await
                .ok()?
                .info()
                .await
                .ok()?
                .state
                .bytes;
            (b > before + (1 << 20)).then_some(())
        }
    })
    .await
    .unwrap();
    c.kill(0);
    let _ = upload.await;
    let s = stored(&c).await;
    assert_eq!(s.first().map(|x| x.1), Some(first), "{s:?}");
    let j = c
        .join(&["--from-latest-snapshot"], |_| Ok(()), true)
        .await
        .unwrap();
    let log = c.node(j).log_text();
    assert!(
        log.contains(&format!("seq={first}")) && log.contains("from the latest snapshot"),
        "{log}"
    );
    let rows = c.node(j).rows("SELECT count(*) FROM big").await.unwrap();
    assert_eq!(rows[0][0], json!(10_001));
}

/// A snapshot whose metadata is intact (its `digest` and `sha256` header agree) but whose chunks
/// hold other content is refused — the restore no longer hashes a download whose object-store
/// digest is its `sha256` header (the client checks that digest), so this is that check — and
/// the previous snapshot is used. The stored object written by the node is readable by the
/// stock client and carries both forms of the one SHA-256.
#[tokio::test]
async fn a_snapshot_whose_chunks_differ_from_its_digest_is_refused() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE;
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let (good, js, info, content) = first_snapshot(&c).await;
    let sha = info
        .headers
        .as_ref()
        .and_then(|h| h.get("sha256"))
        .map(|v| v.as_str().to_string())
        .unwrap();
    assert_eq!(
        sha,
        sha256_hex(&content),
        "the header is the content's SHA-256"
    );
    let digest = b64.encode(
        (0..32)
            .map(|i| u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    );
    assert_eq!(info.digest, Some(format!("SHA-256={digest}")));
    // The same metadata (digest, sha256) under a newer name, over chunks with one byte changed.
    let mut tampered = content.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0xff;
    let bad = good + 100;
    forge_snapshot(
        &js,
        &info,
        bad,
        "tamperedtamperedtampered",
        &tampered,
        64 * 1024,
        usize::MAX,
    )
    .await;
    assert_eq!(stored(&c).await.first().map(|x| x.1), Some(bad));
    let log = join_from_latest(&mut c).await;
    assert!(
        log.contains("sha256 check failed") && log.contains(&format!("{DB_FILE}.{bad}")),
        "{log}"
    );
    assert!(log.contains(&format!("seq={good}")), "{log}");
}

/// Snapshots whose metadata is intact but whose chunks are gone (purged, or never stored) or
/// cut short are refused with the size check, and the previous one is used: a restore used to
/// wait forever for chunks that no longer exist, so the node never became ready.
#[tokio::test]
async fn snapshots_whose_chunks_are_missing_or_cut_short_are_refused() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let (good, js, info, content) = first_snapshot(&c).await;
    // Newest: metadata naming chunks that were never stored; next: only the first half of
    // the chunks (the metadata's size, digest and sha256 are the whole content's).
    let chunk_size = 4096;
    let half = content.len().div_ceil(chunk_size) / 2;
    let (cut, gone) = (good + 100, good + 200);
    forge_snapshot(
        &js,
        &info,
        gone,
        "gonegonegonegonegonegone",
        &content,
        chunk_size,
        0,
    )
    .await;
    forge_snapshot(
        &js,
        &info,
        cut,
        "cutcutcutcutcutcutcutcut",
        &content,
        chunk_size,
        half,
    )
    .await;
    assert_eq!(stored(&c).await.first().map(|x| x.1), Some(gone));
    let log = join_from_latest(&mut c).await;
    for bad in [gone, cut] {
        assert!(
            log.lines().any(|l| l.contains("snapshot refused")
                && l.contains("size check failed")
                && l.contains(&format!("{DB_FILE}.{bad}"))),
            "{log}"
        );
    }
    assert!(log.contains(&format!("seq={good}")), "{log}");
}

/// `GET /snapshot` skips a snapshot whose chunks are gone and serves the one before it: the
/// object store's reader used to wait forever for the missing chunks.
#[tokio::test]
async fn get_snapshot_skips_one_whose_chunks_are_gone() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    let (good, js, info, _) = first_snapshot(&c).await;
    let gone = good + 100;
    forge_snapshot(
        &js,
        &info,
        gone,
        "gonegonegonegonegonegone",
        &[0; 8192],
        4096,
        0,
    )
    .await;
    assert_eq!(stored(&c).await.first().map(|x| x.1), Some(gone));
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let r = n.client.get(n.url("/snapshot")).send().await.unwrap();
        let status = r.status();
        let seq = r
            .headers()
            .get("x-sequence")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.bytes().await.unwrap();
        (status, seq, body.len())
    })
    .await
    .expect("GET /snapshot waited for chunks that are gone");
    assert_eq!(
        r,
        (reqwest::StatusCode::OK, Some(good.to_string()), info.size)
    );
}

/// A node that starts with `--from-latest-snapshot` while JetStream cannot answer (NATS down, as
/// while a growing cluster elects its meta leader) keeps trying until a deadline instead of
/// starting without the snapshot after one failed attempt: once NATS is back it restores the
/// snapshot and converges.
#[tokio::test]
async fn a_node_starting_before_jetstream_answers_retries_and_restores() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let (good, ..) = first_snapshot(&c).await;
    c.nats.as_mut().unwrap().kill();
    let j = c
        .join_starting(&["--from-latest-snapshot"], |_| Ok(()))
        .unwrap();
    // Its first attempt fails (the log says so one way or the other) before NATS comes back.
    eventually(
        Duration::from_secs(60),
        "a first failed restore attempt",
        || {
            let log = c.node(j).log_text();
            async move {
                (log.contains("COULD NOT RESTORE") || log.contains("trying again")).then_some(())
            }
        },
    )
    .await
    .unwrap();
    c.nats.as_mut().unwrap().restart().await.unwrap();
    let n = c.members[j].node.as_mut().unwrap();
    n.wait_listening(Duration::from_secs(90)).await.unwrap();
    ha_tests::cluster::wait_ready(c.node(j), Duration::from_secs(60))
        .await
        .unwrap();
    c.assert_converged(&keys("t", 1, 20)).await.unwrap();
    let log = c.node(j).log_text();
    assert!(
        log.contains(&format!("seq={good}")) && log.contains("from the latest snapshot"),
        "the node did not restore snapshot {good}:\n{log}"
    );
    assert!(!log.contains("COULD NOT RESTORE"), "{log}");
}

/// Rows 21–30 written on node 0, then a node joins with `--from-latest-snapshot` and converges
/// with it (rows 1–30 of `t`): the joined node's log.
async fn join_from_latest(c: &mut TestCluster) -> String {
    insert_range(c.node(0), "t", 21, 30).await;
    let j = c
        .join(&["--from-latest-snapshot"], |_| Ok(()), true)
        .await
        .unwrap();
    c.assert_converged(&keys("t", 1, 30)).await.unwrap();
    c.node(j).log_text()
}

/// Table `t` with rows 1–20 on node 0, its snapshot taken: the snapshot's sequence, a
/// JetStream context, the stored object's metadata and its content.
async fn first_snapshot(
    c: &TestCluster,
) -> (
    u64,
    async_nats::jetstream::Context,
    object_store::ObjectInfo,
    Vec<u8>,
) {
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    insert_range(n, "t", 1, 20).await;
    c.settle(n, Duration::from_secs(30)).await.unwrap();
    let (_, good, _) = n.take_snapshot().await.unwrap().parts();
    let js = c.jetstream().await.unwrap();
    let store = js.get_object_store(BUCKET).await.unwrap();
    let name = format!("{DB_FILE}.{good}");
    let info = store.info(&name).await.unwrap();
    let mut content = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut store.get(&name).await.unwrap(), &mut content)
        .await
        .unwrap();
    (good, js, info, content)
}

/// Stores `content` as snapshot `seq` of the bucket by hand: its first `stored` chunks of
/// `chunk_size` under `nuid`, then `info`'s metadata (digest, sha256, size: the real
/// snapshot's) renamed to `seq` and naming those chunks — as a tampered or broken bucket would.
async fn forge_snapshot(
    js: &async_nats::jetstream::Context,
    info: &object_store::ObjectInfo,
    seq: u64,
    nuid: &str,
    content: &[u8],
    chunk_size: usize,
    stored: usize,
) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE;
    for chunk in content.chunks(chunk_size).take(stored) {
        js.publish(
            format!("$O.{BUCKET}.C.{nuid}"),
            bytes::Bytes::copy_from_slice(chunk),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut forged = info.clone();
    forged.name = format!("{DB_FILE}.{seq}");
    forged.nuid = nuid.to_string();
    forged.chunks = content.len().div_ceil(chunk_size);
    let mut h = forged.headers.clone().unwrap();
    h.insert("seq", seq.to_string().as_str());
    forged.headers = Some(h);
    let mut rollup = async_nats::HeaderMap::new();
    rollup.insert("Nats-Rollup", "sub");
    js.publish_with_headers(
        format!("$O.{BUCKET}.M.{}", b64.encode(&forged.name)),
        rollup,
        serde_json::to_vec(&forged).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}
