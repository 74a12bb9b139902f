//! Hostile clients through real tokio-postgres connections and raw sockets against an in-process
//! node: refused SQL, statement timeouts and cancellation, result limits, and what a client
//! costs before it authenticates. See docs/security.md.

mod common;

use std::time::Duration;

use common::{TestNode, code, eventually};

#[tokio::test]
async fn refused_sql_has_sqlstate_42501_and_the_session_goes_on() {
    let node = TestNode::start().await;
    let c = node.client().await;
    for sql in [
        "VACUUM INTO '/tmp/ha-stolen.db'",
        "PRAGMA writable_schema = ON",
        "PRAGMA cache_size = 5",
        "ATTACH 'x.db' AS x",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "42501", "{sql}: {e}");
    }
    assert!(!std::path::Path::new("/tmp/ha-stolen.db").exists());
    let e = c
        .query("SELECT load_extension($1)", &[&"x"])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42501", "{e}");
    c.simple_query("SELECT 1").await.unwrap();
}

const FOREVER: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                       SELECT count(*) FROM c";
const FOREVER_WRITE: &str = "UPDATE t SET a = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                             SELECT x + 1 FROM c) SELECT count(*) FROM c)";

#[tokio::test]
async fn statement_timeout_bounds_reads_and_writes_with_57014() {
    let node = TestNode::start_with(|c| c.limits.query_timeout = None).await;
    let c = node.client().await;
    c.batch_execute("CREATE TABLE t(a); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    c.batch_execute("SET statement_timeout = 300")
        .await
        .unwrap();
    for sql in [FOREVER, FOREVER_WRITE] {
        let started = std::time::Instant::now();
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "57014", "{sql}: {e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    // Inside a transaction too; the transaction is then failed, as in PostgreSQL.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let e = c.simple_query(FOREVER_WRITE).await.unwrap_err();
    assert_eq!(code(&e), "57014", "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // The writer goes on, and so does the session.
    c.batch_execute("INSERT INTO t VALUES (3)").await.unwrap();
    let rows = c.query("SELECT a FROM t ORDER BY a", &[]).await.unwrap();
    let got: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, vec![1, 3]);
    let e = c
        .batch_execute("SET statement_timeout = 'soon'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023");
}

#[tokio::test]
async fn the_server_query_timeout_caps_what_a_session_asks() {
    let node =
        TestNode::start_with(|c| c.limits.query_timeout = Some(Duration::from_millis(300))).await;
    let c = node.client().await;
    c.batch_execute("SET statement_timeout = '1h'")
        .await
        .unwrap();
    let e = c.simple_query(FOREVER).await.unwrap_err();
    assert_eq!(code(&e), "57014", "{e}");
}

#[tokio::test]
async fn a_cancel_request_stops_a_write_and_the_writer_goes_on() {
    let node = TestNode::start_with(|c| c.limits.query_timeout = None).await;
    let c = node.client().await;
    c.batch_execute("CREATE TABLE t(a); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let token = c.cancel_token();
    let write = tokio::spawn(async move {
        let r = c.simple_query(FOREVER_WRITE).await;
        (c, r)
    });
    let other = node.client().await;
    // Cancel until the write has failed (a cancel before it started cancels nothing).
    eventually(Duration::from_secs(20), || async {
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        write.is_finished().then_some(())
    })
    .await;
    let (c, r) = write.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(code(&e), "57014", "{e}");
    other
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_result_past_max_result_bytes_is_54000() {
    let node = TestNode::start_with(|c| c.limits.max_result_bytes = Some(1 << 20)).await;
    let c = node.client().await;
    let e = c
        .simple_query(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) \
             SELECT randomblob(100000) FROM c",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "54000", "{e}");
    c.simple_query("SELECT 1").await.unwrap();
}
