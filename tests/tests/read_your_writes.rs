//! Read-your-writes across nodes (issue 19): a write's answer names its commit's stream
//! sequence (`X-Ha-Seq`, pg `ha_last_seq()`), and a read on another node that asks for it
//! (`X-Ha-Min-Seq`, pg `SET ha.min_seq`) waits until that node has applied it — or fails, in
//! bounded time, naming the sequence reached.
//! The lag is made real, not slept for: the reading node's writer is held by a pg transaction
//! (`hold_writer`), so its consumer cannot apply what the other node commits until it ends.

use std::time::Duration;

use anyhow::{Context, Result};
use ha_tests::cluster::{TestCluster, status};
use ha_tests::converge::{converged, hold_writer, pg};
use ha_tests::{TestNode, eventually};
use serde_json::{Value as Json, json};

/// `POST /` with extra headers; the status, the `X-Ha-Seq` header and the JSON answer.
async fn post(
    n: &TestNode,
    body: &Json,
    headers: &[(&str, String)],
) -> Result<(u16, Option<u64>, Json)> {
    let mut req = n.client.post(n.url("/")).json(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let seq = resp
        .headers()
        .get("x-ha-seq")
        .map(|v| v.to_str().unwrap_or_default().parse::<u64>())
        .transpose()?;
    Ok((status, seq, resp.json().await?))
}

async fn applied(n: &TestNode) -> Result<u64> {
    let s = status(n).await?;
    s["read_your_writes"]["applied_seq"]
        .as_u64()
        .with_context(|| format!("no read_your_writes.applied_seq in {s}"))
}

/// Waits until `n` says `count` reads wait for a sequence.
async fn wait_for_waiting_reads(n: &TestNode, count: u64) -> Result<()> {
    eventually(
        Duration::from_secs(20),
        "a read waiting for its sequence",
        || async {
            let s = status(n).await.ok()?;
            (s["read_your_writes"]["waiting"].as_u64()? == count).then_some(())
        },
    )
    .await
}

/// Two nodes, table `t` on both, and table `hold` (for the transaction that holds a writer).
async fn cluster() -> Result<TestCluster> {
    let c = TestCluster::external(2, &[]).await?;
    c.node(0)
        .sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    c.node(0).sql("CREATE TABLE hold(x INTEGER)").await?;
    converged(&c).await?;
    Ok(c)
}

#[tokio::test]
async fn a_read_on_another_node_waits_until_it_has_applied_the_write() {
    let c = cluster().await.unwrap();
    let (a, b) = (c.node(0), c.node(1));
    let holder = hold_writer(b, "INSERT INTO hold VALUES (1)").await.unwrap();

    let (code, seq, _) = post(a, &json!({"sql": "INSERT INTO t VALUES (1, 'x')"}), &[])
        .await
        .unwrap();
    assert_eq!(code, 200);
    let seq = seq.expect("a write's answer carries X-Ha-Seq");
    // An array answer carries it in the body too.
    let (code, seq2, body) = post(a, &json!([{"sql": "INSERT INTO t VALUES (2, 'y')"}]), &[])
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(body["seq"].as_u64(), seq2);
    assert!(seq2.unwrap() > seq);
    // A read has no sequence of its own.
    let (_, read_seq, _) = post(a, &json!({"sql": "SELECT 1"}), &[]).await.unwrap();
    assert_eq!(read_seq, None);

    // The lag is visible: b has not applied the write, and a plain read does not see it.
    assert!(applied(b).await.unwrap() < seq);
    assert_eq!(
        b.rows("SELECT v FROM t WHERE id = 1").await.unwrap(),
        Vec::<Json>::new()
    );

    let read = {
        let b_client = b.client.clone();
        let url = b.url("/");
        tokio::spawn(async move {
            let resp = b_client
                .post(url)
                .header("X-Ha-Min-Seq", seq2.unwrap().to_string())
                .header("X-Ha-Min-Seq-Timeout-Ms", "60000")
                .json(&json!({"sql": "SELECT v FROM t ORDER BY id"}))
                .send()
                .await?;
            anyhow::Ok((resp.status().as_u16(), resp.json::<Json>().await?))
        })
    };
    wait_for_waiting_reads(b, 1).await.unwrap();
    assert!(!read.is_finished(), "the read answered before b applied");

    holder.batch_execute("ROLLBACK").await.unwrap();
    let released = std::time::Instant::now();
    let (code, body) = read.await.unwrap().unwrap();
    eprintln!(
        "the waiting read answered {:?} after b's writer was released",
        released.elapsed()
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["rows"], json!([["x"], ["y"]]));
    wait_for_waiting_reads(b, 0).await.unwrap();
}

/// A node's own write, published right after everything the node had applied, moves the
/// node's applied position as it commits: reading it back there needs no wait, and its return
/// from the stream is skipped, not applied in a second transaction.
#[tokio::test]
async fn a_nodes_own_write_is_applied_there_as_it_commits() {
    let c = cluster().await.unwrap();
    let a = c.node(0);
    let applied_total = |s: &Json| s["replication"]["applied_total"].as_u64();
    let before = applied_total(&status(a).await.unwrap()).expect("applied_total");
    let mut last = 0;
    for i in 10..30 {
        let body = json!({"sql": format!("INSERT INTO t VALUES ({i}, 'own')")});
        let (code, seq, body) = post(a, &body, &[]).await.unwrap();
        assert_eq!(code, 200, "{body}");
        last = seq.expect("a write's answer carries X-Ha-Seq");
        assert!(
            applied(a).await.unwrap() >= last,
            "write {i} at {last} is not the node's applied position once answered"
        );
    }
    // The messages come back from the stream, and are skipped.
    let s = eventually(
        Duration::from_secs(20),
        "a to pass its own writes",
        || async {
            let s = status(a).await.ok()?;
            (s["replication"]["applied_seq"].as_u64()? >= last).then_some(s)
        },
    )
    .await
    .unwrap();
    assert_eq!(applied_total(&s), Some(before), "{s}");
    // The other node applies them as usual.
    converged(&c).await.unwrap();
    assert_eq!(
        c.node(1).rows("SELECT count(*) FROM t").await.unwrap(),
        vec![json!([20])]
    );
}

/// `GET /` (the backup download) that names a sequence waits for it like a read: the copy holds
/// that write, or the request fails in bounded time saying how far the node got.
#[tokio::test]
async fn a_backup_download_that_names_a_sequence_holds_that_write() {
    let c = cluster().await.unwrap();
    let (a, b) = (c.node(0), c.node(1));
    let holder = hold_writer(b, "INSERT INTO hold VALUES (1)").await.unwrap();
    let (code, seq, _) = post(a, &json!({"sql": "INSERT INTO t VALUES (1, 'x')"}), &[])
        .await
        .unwrap();
    assert_eq!(code, 200);
    let seq = seq.unwrap();
    assert!(applied(b).await.unwrap() < seq);
    let download = |timeout_ms: &'static str| {
        let (client, url) = (b.client.clone(), b.url("/"));
        async move {
            client
                .get(url)
                .header("X-Ha-Min-Seq", seq.to_string())
                .header("X-Ha-Min-Seq-Timeout-Ms", timeout_ms)
                .send()
                .await
        }
    };
    // b cannot apply while its writer is held: the download says so instead of sending a copy
    // without the write.
    let resp = download("300").await.unwrap();
    assert_eq!(resp.status().as_u16(), 504);
    let body: Json = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "seq_not_reached", "{body}");

    let waiting = tokio::spawn(download("60000"));
    wait_for_waiting_reads(b, 1).await.unwrap();
    holder.batch_execute("ROLLBACK").await.unwrap();
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = resp.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.db");
    std::fs::write(&path, &bytes).unwrap();
    let v: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT v FROM t WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "x");
}

#[tokio::test]
async fn a_sequence_the_node_does_not_reach_in_time_is_a_clear_error() {
    let c = cluster().await.unwrap();
    let (a, b) = (c.node(0), c.node(1));
    let (_, seq, _) = post(a, &json!({"sql": "INSERT INTO t VALUES (1, 'x')"}), &[])
        .await
        .unwrap();
    let far = seq.unwrap() + 1000;
    let started = std::time::Instant::now();
    let (code, _, body) = post(
        b,
        &json!({"sql": "SELECT v FROM t"}),
        &[
            ("X-Ha-Min-Seq", far.to_string()),
            ("X-Ha-Min-Seq-Timeout-Ms", "300".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["error"]["code"], "seq_not_reached");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("not yet {far}")), "{message}");
    assert!(message.contains("up to "), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The query form, a malformed value, and the node still serving.
    let (code, _, body) = post(
        b,
        &json!({"sql": "SELECT 1"}),
        &[("X-Ha-Min-Seq", "soon".into())],
    )
    .await
    .unwrap();
    assert_eq!(code, 400, "{body}");
    let resp = b
        .client
        .post(b.url(&format!("/?min_seq={far}&min_seq_timeout=100ms")))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 504);
    assert_eq!(b.rows("SELECT 1").await.unwrap(), vec![json!([1])]);
}

#[tokio::test]
async fn pg_sessions_read_their_writes_on_another_node() {
    let c = cluster().await.unwrap();
    let (a, b) = (c.node(0), c.node(1));
    let writer = pg(a).await.unwrap();
    let none: Option<i64> = writer
        .query_one("SELECT ha_last_seq()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        none, None,
        "a session that published nothing has no sequence"
    );

    let holder = hold_writer(b, "INSERT INTO hold VALUES (1)").await.unwrap();
    writer
        .execute("INSERT INTO t VALUES (7, 'pg')", &[])
        .await
        .unwrap();
    let seq: i64 = writer
        .query_one("SELECT ha_last_seq() AS s", &[])
        .await
        .unwrap()
        .get("s");
    assert!(seq > 0);
    assert!(applied(b).await.unwrap() < seq as u64);

    let reader = pg(b).await.unwrap();
    reader
        .batch_execute(&format!("SET ha.min_seq = {seq}"))
        .await
        .unwrap();
    let shown: String = reader
        .query_one("SHOW ha.min_seq", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, seq.to_string());
    let read = tokio::spawn(async move {
        let rows = reader.query("SELECT v FROM t WHERE id = 7", &[]).await?;
        anyhow::Ok((
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>(),
            reader,
        ))
    });
    wait_for_waiting_reads(b, 1).await.unwrap();
    assert!(!read.is_finished(), "the read answered before b applied");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let (rows, reader) = read.await.unwrap().unwrap();
    assert_eq!(rows, vec!["pg".to_string()]);

    // A sequence b cannot reach: SQLSTATE 57014 with the position reached, and the session
    // goes on once it stops asking.
    reader
        .batch_execute(&format!(
            "SET ha.min_seq_timeout = '200ms'; SET ha.min_seq = {}",
            seq + 1000
        ))
        .await
        .unwrap();
    let e = reader.query("SELECT 1", &[]).await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "57014");
    assert!(db.message().contains("up to "), "{}", db.message());
    assert!(
        db.message().contains(&format!("not yet {}", seq + 1000)),
        "{}",
        db.message()
    );
    reader.batch_execute("RESET ha.min_seq").await.unwrap();
    let one: i64 = reader.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let e = reader
        .batch_execute("SET ha.min_seq = 'soon'")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22023");
}
