//! The stream's identity (issue 13): a node notices when the stream behind it was deleted and
//! recreated, or ends before its applied position (a log that lost acknowledged messages), says
//! so in `/status` and `/readyz`, and recovers from a snapshot taken from the current stream —
//! never silently skipping the messages that reuse its sequence numbers. Real `ha` binaries, a
//! real nats-server.

use std::time::Duration;

use ha_tests::cluster::{TestCluster, status, wait_ready};
use ha_tests::{TestNode, eventually};
use serde_json::json;

async fn count(n: &TestNode) -> i64 {
    n.rows("SELECT count(*) FROM t").await.unwrap()[0][0]
        .as_i64()
        .unwrap()
}

/// The stream is deleted and created again under running nodes: the new stream's sequences
/// start at 1 again. Both nodes refuse it (503, `/status` says why) instead of skipping its
/// first messages; a node seeded on the new stream takes a snapshot, and both recover from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_is_detected_refused_and_recovered_from_its_own_snapshot() {
    let mut c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for i in 1..=5 {
        a.sql(&format!("INSERT INTO t VALUES ({i}, 'old')"))
            .await
            .unwrap();
    }
    c.assert_converged(&[]).await.unwrap();

    let js = c.jetstream().await.unwrap();
    js.delete_stream("ha_replication").await.unwrap();
    for i in 0..2 {
        let body = c
            .node(i)
            .wait_unready("recreated", Duration::from_secs(60))
            .await
            .unwrap();
        assert!(body.contains("does not consume"), "{body}");
        let st = status(c.node(i)).await.unwrap();
        let id = &st["replication"]["stream_identity"];
        assert!(
            id["problem"].as_str().unwrap().contains("recreated"),
            "{st}"
        );
        assert!(id["problems_detected"].as_u64().unwrap() >= 1, "{st}");
        assert_eq!(st["replication"]["applied_seq"], json!(6), "{st}");
    }
    // While it refuses the stream, a node takes no writes either: they would be built on data
    // the new stream does not have.
    let e = a
        .sql("INSERT INTO t VALUES (50, 'refused')")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("does not accept writes until it recovers"),
        "{e}"
    );

    // A new node on the new stream, seeded by a client, and its snapshot.
    let seed = c.join(&[], |_| Ok(()), true).await.unwrap();
    let s = c.node(seed);
    s.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    s.sql("INSERT INTO t VALUES (100, 'new')").await.unwrap();
    assert_eq!(s.take_snapshot().await.unwrap().seq(), 2);
    for i in 0..2 {
        wait_ready(c.node(i), Duration::from_secs(60))
            .await
            .unwrap();
        let st = status(c.node(i)).await.unwrap();
        let r = &st["replication"]["last_recovery"];
        assert_eq!(r["detected"], json!("stream recreated"), "{st}");
        assert_eq!(r["to_seq"], json!(2), "{st}");
        assert!(
            st["replication"]["stream_identity"]["problem"].is_null(),
            "{st}"
        );
    }
    c.node(1)
        .sql("INSERT INTO t VALUES (101, 'after')")
        .await
        .unwrap();
    c.assert_converged(&[("t", "id", json!(100)), ("t", "id", json!(101))])
        .await
        .unwrap();
    assert_eq!(
        count(c.node(0)).await,
        2,
        "the old stream's rows are gone everywhere"
    );
}

/// The log loses acknowledged messages (what lazy fsync and a power cut do): the stream's last
/// block is cut short while nats-server is stopped. Both nodes, past the new end, notice it and
/// recover from the snapshot taken earlier from the same stream, then replicate new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_lost_acknowledged_messages_is_detected_and_recovered() {
    let mut c = TestCluster::external(2, &[]).await.unwrap();
    let a = c.node(0);
    a.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for i in 1..=5 {
        a.sql(&format!("INSERT INTO t VALUES ({i}, 'kept')"))
            .await
            .unwrap();
    }
    c.assert_converged(&[]).await.unwrap();
    assert_eq!(a.take_snapshot().await.unwrap().seq(), 6);
    for i in 6..=60 {
        a.sql(&format!("INSERT INTO t VALUES ({i}, 'maybe lost')"))
            .await
            .unwrap();
    }
    c.assert_converged(&[]).await.unwrap();

    // The power cut: the server stops and its stream's last block loses its second half.
    let nats = c.nats.as_mut().unwrap();
    nats.kill();
    let msgs = nats.store.join("jetstream/$G/streams/ha_replication/msgs");
    let mut blocks: Vec<_> = std::fs::read_dir(&msgs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    blocks.sort();
    for p in &blocks {
        if p.extension().is_some_and(|e| e != "blk") {
            std::fs::remove_file(p).unwrap(); // the index: rebuilt from the blocks
        }
    }
    let last = blocks
        .iter()
        .rfind(|p| p.extension().is_some_and(|e| e == "blk"))
        .unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let _ = std::fs::remove_file(
        nats.store
            .join("jetstream/$G/streams/ha_replication/index.db"),
    );
    nats.restart().await.unwrap();
    let js = c.jetstream().await.unwrap();
    let end = js
        .get_stream("ha_replication")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    assert!((6..61).contains(&end), "the stream now ends at {end}");

    for i in 0..2 {
        let n = c.node(i);
        let st = eventually(Duration::from_secs(60), "the recovery", || async {
            let st = status(n).await.ok()?;
            st["replication"]["last_recovery"]["detected"]
                .as_str()?
                .contains("ends before")
                .then_some(st)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", n.log_text()));
        assert_eq!(
            st["replication"]["last_recovery"]["to_seq"],
            json!(6),
            "{st}"
        );
        wait_ready(n, Duration::from_secs(60)).await.unwrap();
    }
    c.assert_converged(&[]).await.unwrap();
    // What the stream still holds was applied again after the snapshot; nothing past it.
    assert_eq!(count(c.node(1)).await, end as i64 - 1);
    // New writes take the sequences after the new end, and every node applies them.
    c.node(1)
        .sql("INSERT INTO t VALUES (1000, 'after')")
        .await
        .unwrap();
    c.assert_converged(&[("t", "id", json!(1000))])
        .await
        .unwrap();
}
