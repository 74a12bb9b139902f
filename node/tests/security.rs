//! Hostile clients through real tokio-postgres connections and raw sockets against an in-process
//! node: refused SQL, statement timeouts and cancellation, result limits, and what a client
//! costs before it authenticates. See docs/security.md.

mod common;

use std::time::Duration;

use common::{TestNode, code};
use ha_testkit::eventually;

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
    eventually(
        Duration::from_secs(20),
        "the write to be cancelled",
        || async {
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
            write.is_finished().then_some(())
        },
    )
    .await
    .unwrap();
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

/// This process's resident memory now (VmRSS), in bytes: the node runs in it.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn startup_message() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes()); // protocol 3.0
    for (k, v) in [("user", "ha"), ("database", "ha")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

#[tokio::test]
async fn a_huge_message_before_authentication_is_refused_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start().await;
    let before = rss();
    let mut sent_total = 0usize;
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(node.pg).await.unwrap();
        s.write_all(&startup_message()).await.unwrap();
        let mut first = [0u8; 1];
        s.read_exact(&mut first).await.unwrap(); // the server asks for a password
        // A query message announcing 512 MiB, then as much of it as the server takes.
        let mut head = vec![b'Q'];
        head.extend_from_slice(&(512i32 << 20).to_be_bytes());
        s.write_all(&head).await.unwrap();
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                _ => break,
            }
        }
        sent_total += sent;
    }
    let grown = rss().saturating_sub(before);
    eprintln!(
        "sent {} MB before the server closed; RSS grew {} MB",
        sent_total >> 20,
        grown >> 20
    );
    assert!(
        sent_total < 16 << 20,
        "the server took {} MB",
        sent_total >> 20
    );
    assert!(grown < 32 << 20, "RSS grew {} MB", grown >> 20);
    node.client().await.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn silent_sockets_do_not_lock_real_clients_out() {
    let node = TestNode::start_with(|c| {
        c.pg.max_connections = 10;
        c.pg.reserved_connections = 3;
        c.pg.auth_timeout = Duration::from_secs(60);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(node.pg).await.unwrap());
    }
    let started = std::time::Instant::now();
    let (c, conn) = tokio_postgres::connect(&node.conn_str(), tokio_postgres::NoTls)
        .await
        .expect("a real client gets in while silent sockets wait");
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
}

#[tokio::test]
async fn a_client_that_never_authenticates_is_closed_after_the_auth_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start_with(|c| c.pg.auth_timeout = Duration::from_millis(500)).await;
    let mut s = tokio::net::TcpStream::connect(node.pg).await.unwrap();
    s.write_all(&startup_message()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(String::from_utf8_lossy(&buf).contains("authentication timed out"));
}

#[tokio::test]
async fn a_wrong_password_names_the_user() {
    let node = TestNode::start().await;
    let conn = node.conn_str().replace("password=ha", "password=wrong");
    let e = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(code(&e), "28P01", "{e}");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(
        db.message(),
        "password authentication failed for user \"ha\""
    );
}
