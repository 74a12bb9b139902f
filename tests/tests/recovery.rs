//! Recovery while a node runs, and the object store's hygiene, through a real nats-server and
//! real `ha` binaries: a gap that opens while a node is paused (SIGSTOP) is found and healed
//! from the latest snapshot without a restart, and chunks left by an upload cut short are
//! removed while the latest complete snapshot stays usable.
//! Nothing sleeps to synchronise; every wait polls with a deadline.

use std::process::Command;
use std::time::Duration;

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
