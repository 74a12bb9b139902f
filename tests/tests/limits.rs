//! Every statement is bounded in time and memory, through the real `ha` binary: HTTP
//! `timeout=` and `--query-timeout`, a client that goes away, a runaway write that only loses
//! its own job, `--max-result-bytes`, and a shutdown that ends within `--shutdown-timeout`.
//! See docs/security.md, "Limits and their flags".

use std::time::{Duration, Instant};

use anyhow::Result;
use ha_tests::{TestNode, eventually};
use serde_json::{Value as Json, json};

/// A read that never ends on its own.
const FOREVER: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                       SELECT count(*) FROM c";
/// A write that never ends on its own (it computes forever before it changes anything).
const FOREVER_WRITE: &str = "UPDATE t SET a = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                             SELECT x + 1 FROM c) SELECT count(*) FROM c)";

async fn post_to(n: &TestNode, path: &str, body: &Json) -> Result<(u16, Json)> {
    let resp = n.client.post(n.url(path)).json(body).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

#[tokio::test]
async fn a_request_timeout_stops_a_runaway_read() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--query-timeout", "0"]).await?;
    let started = Instant::now();
    let (s, j) = post_to(&n, "/?timeout=300ms", &json!({ "sql": FOREVER })).await?;
    assert_eq!(s, 504, "{j}");
    assert_eq!(j["error"]["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    let (s, j) = post_to(&n, "/?timeout=soon", &json!({ "sql": "SELECT 1" })).await?;
    assert_eq!(s, 400, "{j}");
    Ok(())
}

#[tokio::test]
async fn a_runaway_write_loses_only_its_own_job_and_the_writer_goes_on() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--query-timeout", "30s"]).await?;
    n.sql("CREATE TABLE t(a)").await?;
    n.sql("CREATE TABLE u(id INTEGER PRIMARY KEY)").await?;
    n.sql("INSERT INTO t VALUES (7)").await?;
    let runaway = {
        let client = n.client.clone();
        let url = n.url("/?timeout=1s");
        tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({ "sql": FOREVER_WRITE }))
                .send()
                .await?;
            anyhow::Ok((r.status().as_u16(), r.json::<Json>().await?))
        })
    };
    // Other clients' writes meanwhile: grouped with the runaway or after it, all commit.
    let mut ok = 0;
    for i in 0..50 {
        let (s, j) = n
            .post(&json!({"sql": "INSERT INTO u VALUES (?)", "params": [i]}))
            .await?;
        assert_eq!(s, 200, "{j}");
        ok += 1;
    }
    let (s, j) = runaway.await??;
    assert_eq!(s, 504, "{j}");
    assert_eq!(j["error"]["code"], "timeout");
    assert_eq!(n.rows("SELECT a FROM t").await?, vec![json!([7])]);
    assert_eq!(n.rows("SELECT count(*) FROM u").await?, vec![json!([ok])]);
    n.sql("INSERT INTO u VALUES (1000)").await?;
    Ok(())
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_read() -> Result<()> {
    // One read connection and no server timeout: only the cancellation can free it.
    let n = TestNode::start(&[
        "file:t.db",
        "--query-timeout",
        "0",
        "--concurrent-queries",
        "1",
    ])
    .await?;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?;
    assert!(
        impatient
            .post(n.url("/"))
            .json(&json!({ "sql": FOREVER }))
            .send()
            .await
            .is_err()
    );
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), n.rows("SELECT 42")).await;
    assert!(
        matches!(&r, Ok(Ok(rows)) if rows == &vec![json!([42])]),
        "the read connection stayed busy after its client left: {r:?}"
    );
    eprintln!("next read answered after {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_within_its_timeout_even_with_runaway_statements() -> Result<()> {
    let mut n = TestNode::start(&[
        "file:t.db",
        "--query-timeout",
        "0",
        "--shutdown-timeout",
        "2s",
    ])
    .await?;
    n.sql("CREATE TABLE t(a)").await?;
    n.sql("INSERT INTO t VALUES (1)").await?;
    let post = |sql: &'static str| {
        let client = n.client.clone();
        let url = n.url("/");
        tokio::spawn(async move { client.post(url).json(&json!({ "sql": sql })).send().await });
    };
    post(FOREVER);
    post(FOREVER_WRITE);
    // The runaway write is running once an insert waits behind it. Which of the two reaches
    // the writer first is not ours to choose, so each look that sees no one waiting sends
    // another insert: one that arrives while the runaway write runs has to wait.
    eventually(
        Duration::from_secs(20),
        "a write waits for the writer",
        || async {
            let text = n
                .client
                .get(n.url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let waiting = text
                .lines()
                .any(|l| l.starts_with("ha_write_queue_jobs ") && !l.ends_with(" 0"));
            if !waiting {
                post("INSERT INTO t VALUES (2)");
            }
            waiting.then_some(())
        },
    )
    .await?;
    let started = Instant::now();
    let status = n.stop(Duration::from_secs(30)).await?;
    let took = started.elapsed();
    eprintln!("stopped in {took:?} with {status}");
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?}:\n{}",
        n.log_text()
    );
    Ok(())
}

/// The peak resident memory of process `pid` (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_huge_result_is_refused_before_it_fills_memory() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--max-result-bytes", "8MiB"]).await?;
    let pid = n.pid().expect("running");
    let before = peak_rss(pid);
    // 512 rows of 1 MB: half a gigabyte if it were collected.
    let (s, j) = n
        .post(
            &json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                              WHERE x < 512) SELECT x, randomblob(1000000) FROM c"}),
        )
        .await?;
    assert_eq!(s, 413, "{j}");
    assert_eq!(j["error"]["code"], "result_too_large");
    let after = peak_rss(pid);
    eprintln!(
        "peak RSS {} MB before, {} MB after",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (100 << 20),
        "peak RSS grew from {} MB to {} MB",
        before >> 20,
        after >> 20
    );
    // Smaller answers still come back.
    assert_eq!(
        n.rows("SELECT length(randomblob(1000000))").await?,
        vec![json!([1000000])]
    );
    Ok(())
}

#[tokio::test]
async fn slow_or_silent_http_clients_are_closed_after_the_header_timeout() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = TestNode::start(&[
        "file:t.db",
        "--http-header-timeout",
        "1s",
        "--http-max-connections",
        "20",
    ])
    .await?;
    let mut held = Vec::new();
    for i in 0..40 {
        let mut s = tokio::net::TcpStream::connect(n.http).await?;
        if i % 2 == 0 {
            // Half of a request's headers, then nothing (slowloris).
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").await?;
        }
        held.push(s);
    }
    // A real client gets through although more connections than the cap were held.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), n.rows("SELECT 1")).await;
    assert!(matches!(&r, Ok(Ok(_))), "{r:?}");
    eprintln!("a real request got through after {:?}", started.elapsed());
    // Every held connection is closed by the server.
    for mut s in held {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "a silent connection stayed open");
    }
    Ok(())
}

/// A client that sends its headers, then part of its body and nothing more, is answered 408
/// once the body has paused for `--http-header-timeout`; its connection's place is freed and the
/// node serves everyone else meanwhile.
#[tokio::test]
async fn a_request_body_that_stops_arriving_is_answered_408() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = TestNode::start(&[
        "file:t.db",
        "--http-header-timeout",
        "1s",
        "--http-max-connections",
        "4",
    ])
    .await?;
    let body = r#"{"sql": "SELECT 1"}"#;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(n.http).await?;
        s.write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                &body[..5]
            )
            .as_bytes(),
        )
        .await?;
        stalled.push(s);
    }
    // Every connection place is held by a stalled body: a real client gets through only once
    // the server gives up on them.
    let r = tokio::time::timeout(Duration::from_secs(20), n.rows("SELECT 2")).await;
    assert!(
        matches!(&r, Ok(Ok(rows)) if rows == &vec![json!([2])]),
        "{r:?}"
    );
    for mut s in stalled {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a stalled body kept its connection open");
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with("HTTP/1.1 408") && text.contains("request_timeout"),
            "{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn metrics_labels_come_from_a_fixed_set() -> Result<()> {
    let n = TestNode::start(&["file:t.db"]).await?;
    for i in 0..100 {
        let method = reqwest::Method::from_bytes(format!("JUNK{i}").as_bytes())?;
        n.client
            .request(method, n.url(&format!("/no/such/path/{i}")))
            .send()
            .await?;
    }
    let text = n.client.get(n.url("/metrics")).send().await?.text().await?;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ha_http_requests_total{"))
        .collect();
    assert!(
        series.len() < 10,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(!text.contains("JUNK"));
    assert!(!text.contains("/no/such/path"));
    Ok(())
}

#[tokio::test]
async fn concurrent_backup_downloads_are_capped() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--max-concurrent-backups", "1"]).await?;
    n.sql("CREATE TABLE t(a)").await?;
    // 32 MiB: more than loopback's socket buffers hold, so a download nobody reads stays in
    // flight (a tiny database is sent whole at once and frees its place at once).
    n.sql(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 32) \
         INSERT INTO t SELECT randomblob(1048576) FROM c",
    )
    .await?;
    // A download whose body nobody reads holds its place.
    let stalled = n.client.get(n.url("/")).send().await?;
    assert_eq!(stalled.status().as_u16(), 200);
    let second = n.client.get(n.url("/")).send().await?;
    assert_eq!(second.status().as_u16(), 429);
    let j: Json = second.json().await?;
    assert_eq!(j["error"]["code"], "too_many_backups");
    drop(stalled);
    eventually(
        Duration::from_secs(20),
        "the place is free again",
        || async {
            let r = n.client.get(n.url("/")).send().await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        },
    )
    .await?;
    Ok(())
}
