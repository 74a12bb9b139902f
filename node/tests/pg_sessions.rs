//! PostgreSQL sessions as the server manages them: the connection limit, one thread per
//! admitted session (and none for silent sockets), cancel requests, and what clients see when the
//! node shuts down.

mod common;

use std::time::Duration;

use common::{TestNode, code};
use ha_testkit::eventually;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn connections_beyond_the_limit_get_53300() {
    let node = TestNode::start_with(|c| c.pg.max_connections = 2).await;
    let a = node.client().await;
    let _b = node.client().await;
    let e = tokio_postgres::connect(&node.conn_str(), tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(code(&e), "53300");
    drop(a);
    // A slot frees once a client leaves.
    eventually(Duration::from_secs(10), "a slot to free", || async {
        tokio_postgres::connect(&node.conn_str(), tokio_postgres::NoTls)
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .unwrap();
}

/// Threads of this process whose name is `name` (each admitted pg connection has one).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[tokio::test]
async fn each_admitted_connection_has_one_thread_and_silent_floods_get_none() {
    let node = TestNode::start_with(|c| c.pg.max_connections = 3).await;
    let name = format!("ha-pg-{}", node.pg.port());
    let a = node.client().await;
    let b = node.client().await;
    eventually(Duration::from_secs(10), "two session threads", || async {
        (threads_named(&name) == 2).then_some(())
    })
    .await
    .unwrap();
    // 200 sockets that never send a startup message. Each newcomer evicts the one that has
    // waited longest to authenticate (53300) and takes its place, so when the first 199 are
    // closed the last one holds the last slot — and none of them may leave a thread behind.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(node.pg).await.unwrap());
    }
    for s in &mut silent[..199] {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
            .await
            .expect("an evicted socket is closed")
            .unwrap();
    }
    eventually(Duration::from_secs(10), "three session threads", || async {
        (threads_named(&name) == 3).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(threads_named(&name), 3, "over-limit sockets got threads");
    // The admitted clients still answer, reads and writes.
    a.batch_execute("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let n: i64 = b
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // Every thread ends with its connection.
    drop(silent);
    drop((a, b));
    eventually(Duration::from_secs(10), "no session threads", || async {
        (threads_named(&name) == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_cancel_request_stops_a_running_read_with_57014_and_the_session_goes_on() {
    let node = TestNode::start().await;
    let client = node.client().await;
    // A read that would run for minutes.
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT count(*) FROM n WHERE i < 0";
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let r = client.simple_query(endless).await;
        (client, r)
    });
    // Cancel until the query ends: the first request may come before it starts running.
    eventually(
        Duration::from_secs(20),
        "the query to be cancelled",
        || async {
            if query.is_finished() {
                return Some(());
            }
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
            None
        },
    )
    .await
    .unwrap();
    let (client, r) = query.await.unwrap();
    let e = r.expect_err("a cancelled query fails");
    assert_eq!(code(&e), "57014", "{e}");
    // The same session answers the next query.
    let n: i64 = client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
    // A request with a wrong secret cancels nothing (and does not disturb the server).
    let mut raw = tokio::net::TcpStream::connect(node.pg).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let mut msg = Vec::new();
    msg.extend_from_slice(&16i32.to_be_bytes());
    msg.extend_from_slice(&80877102i32.to_be_bytes());
    msg.extend_from_slice(&1i32.to_be_bytes());
    msg.extend_from_slice(&2i32.to_be_bytes());
    raw.write_all(&msg).await.unwrap();
    drop(raw);
    let n: i64 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
}

#[tokio::test]
async fn shutdown_tells_clients_57p01() {
    let node = TestNode::start().await;
    let (client, conn) = tokio_postgres::connect(&node.conn_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();
    node.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), conn_task)
        .await
        .unwrap()
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(code(&e), "57P01");
}

#[tokio::test]
async fn shutdown_interrupts_a_running_read() {
    let node = TestNode::start().await;
    let client = node.client().await;
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) \
                   SELECT count(*) FROM n WHERE i < 0";
    let query = tokio::spawn(async move { client.simple_query(endless).await });
    // Once the read runs (its session is registered and busy), stop the node.
    tokio::task::yield_now().await;
    eventually(Duration::from_secs(10), "the node to answer", || async {
        let c = node.client().await;
        c.simple_query("SELECT 1").await.ok().map(|_| ())
    })
    .await
    .unwrap();
    node.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(20), query)
        .await
        .expect("the read ended with the shutdown, not minutes later")
        .unwrap();
    assert!(r.is_err(), "an interrupted read fails");
    tokio::time::timeout(Duration::from_secs(20), node.task)
        .await
        .expect("the node stopped")
        .unwrap();
}
