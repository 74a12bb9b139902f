//! Recovery while a node runs, and the object store's hygiene, through a real nats-server and
//! real `ha` binaries: a gap that opens while a node is paused (SIGSTOP) is found and healed
//! from the latest snapshot without a restart, and chunks left by an upload cut short are
//! removed while the latest complete snapshot stays usable.
//! Nothing sleeps to synchronise; every wait polls with a deadline.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use ha_tests::cluster::{TestCluster, status};
use ha_tests::{TestNode, eventually};
use serde_json::{Value as Json, json};

const STREAM: &str = "ha_replication";

fn signal(n: &TestNode, sig: &str) {
    let pid = n.pid().expect("node runs").to_string();
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Resumes a SIGSTOPped node even when the test fails half-way (else its drop hangs nothing,
/// but its log would explain nothing).
struct Paused<'a>(&'a TestNode);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

async fn stream_state(c: &TestCluster) -> (u64, u64, u64) {
    let js = c.jetstream().await.unwrap();
    let mut s = js.get_stream(STREAM).await.unwrap();
    let st = &s.info().await.unwrap().state;
    (st.first_sequence, st.last_sequence, st.messages)
}

async fn take(n: &TestNode) -> (u16, Json) {
    let r = n.client.post(n.url("/snapshot")).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Json::Null))
}

fn keys(
    table: &'static str,
    ids: impl Iterator<Item = i64>,
) -> Vec<(&'static str, &'static str, Json)> {
    ids.map(|i| (table, "id", json!(i))).collect()
}

/// A node paused while `--replication-max-age` purges more history than was already on its
/// way to it: once resumed, its consumer finds the hole by itself (no restart of the process),
/// restores the latest snapshot, resumes after it and converges; `/status` and `/metrics` say so.
/// With writes after the purge, the first message past the hole gives it away.
#[tokio::test]
async fn a_gap_that_opens_while_a_node_is_paused_is_recovered_without_a_restart() {
    paused_node_recovers(5).await;
}

/// The same with no write after the purge: nothing arrives to jump over, so only the
/// consumer's periodic look at the stream can find the hole.
#[tokio::test]
async fn a_gap_with_no_later_write_is_found_by_the_periodic_look() {
    paused_node_recovers(0).await;
}

async fn paused_node_recovers(writes_after: usize) {
    let c = TestCluster::external(2, &["--replication-max-age", "1s"])
        .await
        .unwrap();
    let (a, b) = (c.node(0), c.node(1));
    a.sql("CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    c.assert_converged(&[]).await.unwrap();
    let pid = b.pid();
    let (_, before, _) = stream_state(&c).await;

    let paused = Paused(b);
    signal(b, "STOP");
    // More messages than one pull batch (256) of the paused consumer: the rest can only come
    // from the stream, which is about to forget them. One statement per message.
    let mut id = 0i64;
    while stream_state(&c).await.1 < before + 400 {
        for _ in 0..50 {
            id += 1;
            a.sql(&format!("INSERT INTO p(id, v) VALUES ({id}, 'during')"))
                .await
                .unwrap();
        }
    }
    let written = id;
    // Everything written during the pause ages out of the stream.
    eventually(Duration::from_secs(20), "the stream to purge", || async {
        let (first, _, _) = stream_state(&c).await;
        (first > before + 400).then_some(())
    })
    .await
    .unwrap();
    // Life goes on: a few more writes (or none), and a snapshot that covers the hole.
    for _ in 0..writes_after {
        id += 1;
        a.sql(&format!("INSERT INTO p(id, v) VALUES ({id}, 'after')"))
            .await
            .unwrap();
    }
    let (s, j) = take(a).await;
    assert_eq!(s, 200, "{j}");
    let snap_seq = j["seq"].as_u64().unwrap();
    drop(paused); // SIGCONT

    c.assert_converged(&keys("p", 1..=id)).await.unwrap();
    assert_eq!(b.pid(), pid, "the node was not restarted");
    let st = status(b).await.unwrap();
    let r = &st["replication"];
    assert_eq!(r["last_recovery"]["detected"], "while consuming", "{st}");
    assert_eq!(
        r["last_recovery"]["to_seq"].as_u64(),
        Some(snap_seq),
        "{st}"
    );
    assert!(r["recoveries"].as_u64() >= Some(1), "{st}");
    assert!(r["gaps_detected"].as_u64() >= Some(1), "{st}");
    assert!(r["gap"].is_null(), "{st}");
    let metrics = b
        .client
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ha_snapshot_recoveries_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        b.log_text().contains("gap detected while consuming"),
        "{}",
        b.log_text()
    );
    assert!(written > 256);
}

const BUCKET: &str = "ha_replication_SNAPSHOTS";
const OBJ_STREAM: &str = "OBJ_ha_replication_SNAPSHOTS";

/// The chunk sets in the snapshot bucket's stream (`$O.<bucket>.C.<nuid>` → messages), and the
/// nuids the live (not deleted) objects reference.
async fn chunk_sets(c: &TestCluster) -> (Vec<(String, usize)>, Vec<String>) {
    let js = c.jetstream().await.unwrap();
    let stream = js.get_stream(OBJ_STREAM).await.unwrap();
    let mut info = stream
        .info_builder()
        .subjects(format!("$O.{BUCKET}.C.>"))
        .fetch()
        .await
        .unwrap();
    let mut sets = Vec::new();
    while let Some(item) = info.next().await {
        let (subject, n) = item.unwrap();
        let nuid = subject.rsplit('.').next().unwrap().to_string();
        sets.push((nuid, n));
    }
    let store = js.get_object_store(BUCKET).await.unwrap();
    let mut list = store.list().await.unwrap();
    let mut live = Vec::new();
    while let Some(Ok(i)) = list.next().await {
        if !i.deleted {
            live.push(i.nuid);
        }
    }
    (sets, live)
}

fn orphans(sets: &[(String, usize)], live: &[String]) -> Vec<String> {
    sets.iter()
        .filter(|(n, _)| !live.contains(n))
        .map(|(n, _)| n.clone())
        .collect()
}

async fn fill(n: &TestNode, table: &str, from: i64, rows: i64) {
    for k in (0..rows).step_by(1000) {
        n.sql(&format!(
            "WITH RECURSIVE s(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
             INSERT INTO {table}(id, v) SELECT i, randomblob(4000) FROM s",
            from + k,
            from + (k + 999).min(rows - 1)
        ))
        .await
        .unwrap();
    }
}

/// `kill -9` in the middle of an upload leaves chunks that no object references. The node
/// started again removes them once they are older than `--snapshot-orphan-age` (at start),
/// the previous snapshot stays the latest and restores, and later snapshots keep the bucket
/// free of leftovers (tombstones of pruned snapshots included).
#[tokio::test]
async fn chunks_of_an_upload_killed_mid_way_are_removed_and_the_latest_snapshot_stays_usable() {
    let mut c = TestCluster::external(
        1,
        &["--snapshot-orphan-age", "1s", "--snapshot-retain", "1"],
    )
    .await
    .unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
        .await
        .unwrap();
    fill(n, "big", 1, 1000).await;
    eventually(
        Duration::from_secs(30),
        "the write to be applied",
        || async {
            let st = status(n).await.ok()?;
            let r = &st["replication"];
            (r["applied_seq"].as_u64()? >= r["stream_last_seq"].as_u64()?).then_some(())
        },
    )
    .await
    .unwrap();
    let (s, j) = take(n).await;
    assert_eq!(s, 200, "{j}");
    let first = j["seq"].as_u64().unwrap();
    fill(n, "big", 1001, 9000).await;
    let (sets, live) = chunk_sets(&c).await;
    assert!(orphans(&sets, &live).is_empty(), "{sets:?} {live:?}");

    let js = c.jetstream().await.unwrap();
    let before = js
        .get_stream(OBJ_STREAM)
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
    eventually(Duration::from_secs(30), "the upload to start", || {
        let js = js.clone();
        async move {
            let b = js
                .get_stream(OBJ_STREAM)
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
    let (sets, live) = chunk_sets(&c).await;
    let left = orphans(&sets, &live);
    assert_eq!(left.len(), 1, "one unfinished upload: {sets:?} {live:?}");

    // Started again once the leftovers are older than the orphan age: removed at start.
    let stream = js.get_stream(OBJ_STREAM).await.unwrap();
    let subject = format!("$O.{BUCKET}.C.{}", left[0]);
    eventually(
        Duration::from_secs(10),
        "the leftovers to be 1 s old",
        || async {
            let last = stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .ok()?;
            (time_since(last.time) > Duration::from_millis(1100)).then_some(())
        },
    )
    .await
    .unwrap();
    c.restart(0, &[]).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the leftovers to be removed",
        || async {
            let (sets, live) = chunk_sets(&c).await;
            orphans(&sets, &live).is_empty().then_some(())
        },
    )
    .await
    .unwrap();
    let st = status(c.node(0)).await.unwrap();
    assert_eq!(
        st["replication"]["snapshots"]["orphans_deleted"].as_u64(),
        Some(1),
        "{st}"
    );
    let (sets, live) = chunk_sets(&c).await;
    assert_eq!(live.len(), 1, "{sets:?} {live:?}");
    assert!(sets.iter().any(|(n, _)| *n == live[0]), "{sets:?} {live:?}");

    // The latest complete snapshot is still the first one, and it restores.
    let j = c
        .join(&["--from-latest-snapshot"], |_| Ok(()), true)
        .await
        .unwrap();
    let log = c.node(j).log_text();
    assert!(
        log.contains(&format!("seq={first}")) && log.contains("from the latest snapshot"),
        "{log}"
    );
    c.assert_converged(&[]).await.unwrap();
    let rows = c.node(j).rows("SELECT count(*) FROM big").await.unwrap();
    assert_eq!(rows[0][0], json!(10_000));

    // A new snapshot replaces the first (retain 1): no chunks, metadata or tombstones of the
    // old one stay behind.
    let (s, j2) = take(c.node(0)).await;
    assert_eq!(s, 200, "{j2}");
    let (sets, live) = chunk_sets(&c).await;
    assert_eq!(live.len(), 1, "{sets:?} {live:?}");
    assert_eq!(sets.len(), 1, "{sets:?} {live:?}");
    let metas = stream
        .info_builder()
        .subjects(format!("$O.{BUCKET}.M.>"))
        .fetch()
        .await
        .unwrap()
        .count()
        .await;
    assert_eq!(metas, 1, "tombstone of the pruned snapshot left behind");
}

/// Chunks nobody references yet may belong to an upload in progress on another node: younger
/// than `--snapshot-orphan-age` (default 10 minutes) they survive a sweep.
#[tokio::test]
async fn young_unreferenced_chunks_are_left_alone() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    let n = c.node(0);
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    n.sql("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the write to be applied",
        || async {
            let st = status(n).await.ok()?;
            let r = &st["replication"];
            (r["applied_seq"].as_u64()? >= r["stream_last_seq"].as_u64()?).then_some(())
        },
    )
    .await
    .unwrap();
    let (s, j) = take(n).await;
    assert_eq!(s, 200, "{j}");
    // Another node's upload, half-way: chunks without metadata.
    let js = c.jetstream().await.unwrap();
    for _ in 0..3 {
        js.publish(
            format!("$O.{BUCKET}.C.inprogressnuid"),
            vec![7u8; 1000].into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    n.sql("INSERT INTO t VALUES (2, 'b')").await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the write to be applied",
        || async {
            let st = status(n).await.ok()?;
            let r = &st["replication"];
            (r["applied_seq"].as_u64()? >= r["stream_last_seq"].as_u64()?).then_some(())
        },
    )
    .await
    .unwrap();
    let (s, j) = take(n).await;
    assert_eq!(s, 200, "{j}");
    assert_eq!(j["skipped"], false, "{j}");
    let (sets, live) = chunk_sets(&c).await;
    assert_eq!(orphans(&sets, &live), vec!["inprogressnuid".to_string()]);
    assert_eq!(live.len(), 2, "{live:?}");
}

fn time_since(t: time::OffsetDateTime) -> Duration {
    let d = time::OffsetDateTime::now_utc() - t;
    Duration::from_secs_f64(d.as_seconds_f64().max(0.0))
}
