//! Untrusted SQL against a real `ha` binary: what would leave the database file, break its
//! schema or change a pooled connection's settings is refused with 403 `forbidden`, and the node
//! keeps serving (and starting). See docs/security.md, "What SQL is refused and why".

use std::time::Duration;

use anyhow::Result;
use ha_tests::{NodeSpec, TestNode, eventually};
use serde_json::{Value as Json, json};

async fn refused(n: &TestNode, sql: &str) -> Result<Json> {
    let (status, j) = n.post(&json!({ "sql": sql })).await?;
    assert_eq!(status, 403, "{sql}: {j}");
    assert_eq!(j["error"]["code"], "forbidden", "{sql}: {j}");
    Ok(j)
}

#[tokio::test]
async fn vacuum_into_writes_no_file() -> Result<()> {
    let n = TestNode::start(&["file:t.db"]).await?;
    n.sql("CREATE TABLE t(a)").await?;
    let out = n.dir.join("stolen.db");
    let j = refused(&n, &format!("VACUUM INTO '{}'", out.display())).await?;
    assert!(
        j["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("VACUUM INTO")),
        "{j}"
    );
    assert!(!out.exists(), "VACUUM INTO wrote {}", out.display());
    // In an array too (where SQLite refuses VACUUM inside the transaction first), and the
    // node goes on.
    let (s, j) = n
        .post(&json!([{"sql": "INSERT INTO t VALUES (1)"},
                      {"sql": format!("VACUUM INTO '{}'", out.display())}]))
        .await?;
    assert!(s == 403 || s == 400, "{j}");
    assert!(!out.exists());
    assert_eq!(n.rows("SELECT count(*) FROM t").await?, vec![json!([0])]);
    // A plain VACUUM still works.
    n.sql("VACUUM").await?;
    Ok(())
}

#[tokio::test]
async fn writable_schema_is_refused_and_the_node_starts_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let spec = || NodeSpec::new(&["file:t.db"]).dir(dir.path());
    let mut n = TestNode::start_spec(spec()).await?;
    n.sql("CREATE TABLE t(a)").await?;
    refused(&n, "PRAGMA writable_schema = ON").await?;
    let (s, j) = n
        .post(&json!({"sql": "UPDATE sqlite_schema SET sql = 'garbage' WHERE name = 't'"}))
        .await?;
    assert_ne!(s, 200, "{j}");
    n.stop(Duration::from_secs(30)).await?;
    let n = TestNode::start_spec(spec()).await?;
    n.sql("INSERT INTO t VALUES (1)").await?;
    assert_eq!(n.rows("SELECT a FROM t").await?, vec![json!([1])]);
    Ok(())
}

#[tokio::test]
async fn attach_load_extension_and_file_pragmas_are_refused() -> Result<()> {
    let n = TestNode::start(&["file:t.db"]).await?;
    let other = n.dir.join("other.db");
    refused(&n, &format!("ATTACH '{}' AS o", other.display())).await?;
    refused(&n, "DETACH o").await?;
    refused(&n, "SELECT load_extension('/lib/x.so')").await?;
    for p in [
        "journal_mode = DELETE",
        "locking_mode = EXCLUSIVE",
        "synchronous = OFF",
        "mmap_size = 268435456",
        "temp_store_directory = '/tmp'",
        "foreign_keys = OFF",
    ] {
        refused(&n, &format!("PRAGMA {p}")).await?;
    }
    assert!(!other.exists());
    // Reading settings and inspecting the schema stay allowed.
    assert_eq!(n.rows("PRAGMA journal_mode").await?, vec![json!(["wal"])]);
    n.sql("CREATE TABLE t(a INTEGER PRIMARY KEY)").await?;
    assert_eq!(n.rows("PRAGMA table_info(t)").await?.len(), 1);
    assert_eq!(
        n.rows("SELECT name FROM pragma_table_info('t')").await?,
        vec![json!(["a"])]
    );
    Ok(())
}

#[tokio::test]
async fn connection_settings_do_not_reach_other_clients() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--concurrent-queries", "1"]).await?;
    n.sql("CREATE TABLE t(a)").await?;
    n.post(&json!([{"sql": "INSERT INTO t VALUES (1)"}, {"sql": "INSERT INTO t VALUES (2)"}]))
        .await?;
    let before = n.rows("PRAGMA cache_size").await?;
    let order = n.rows("SELECT a FROM t").await?;
    refused(&n, "PRAGMA cache_size = 5").await?;
    refused(&n, "PRAGMA reverse_unordered_selects = ON").await?;
    // One read connection: whatever a request did to it, the next request sees.
    assert_eq!(n.rows("PRAGMA cache_size").await?, before);
    assert_eq!(n.rows("SELECT a FROM t").await?, order);
    Ok(())
}

#[tokio::test]
async fn integers_past_64_bits_are_refused_not_rounded() -> Result<()> {
    let n = TestNode::start(&["file:t.db"]).await?;
    let resp = n
        .client
        .post(n.url("/"))
        .header("content-type", "application/json")
        .body(r#"{"sql": "SELECT ?", "params": [99999999999999999999999]}"#)
        .send()
        .await?;
    let s = resp.status().as_u16();
    let j: Json = resp.json().await?;
    assert!(
        j["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("99999999999999999999999")),
        "{j}"
    );
    assert_eq!(s, 400);
    Ok(())
}

#[tokio::test]
async fn the_start_banner_shows_the_user_but_never_the_password() -> Result<()> {
    let n = TestNode::start(&[
        "file:t.db",
        "--pg-user",
        "alice",
        "--pg-pass",
        "s3cret-Pa55",
        "--token",
        "t0ken-Va1ue",
    ])
    .await?;
    // The banner's lines follow the ready line: wait until the psql hint is there.
    let shown = eventually(Duration::from_secs(10), "the psql hint", || async {
        n.log_text().contains("postgres://alice@").then_some(())
    })
    .await;
    let log = n.log_text();
    assert!(shown.is_ok(), "{log}");
    assert!(
        !log.contains("s3cret-Pa55") && !log.contains("t0ken-Va1ue"),
        "{log}"
    );
    Ok(())
}

/// `_ha_*` tables hold the node's position, row versions and applied transactions: a client
/// that changed them would make the node skip or repeat replicated writes.
#[tokio::test]
async fn the_replication_bookkeeping_can_be_read_but_not_changed() -> Result<()> {
    let c = ha_tests::cluster::TestCluster::external(1, &[]).await?;
    let n = c.node(0);
    n.sql("CREATE TABLE t(a INTEGER PRIMARY KEY)").await?;
    n.sql("INSERT INTO t VALUES (1)").await?;
    let meta = "SELECT value FROM _ha_meta WHERE key = 'stream_created'";
    let before = n.rows(meta).await?;
    assert_eq!(
        before.len(),
        1,
        "the node records its stream's identity in _ha_meta"
    );
    for sql in [
        "DELETE FROM _ha_meta",
        "UPDATE _ha_versions SET seq = 0",
        "DROP TABLE _ha_txids",
        "INSERT INTO _ha_quarantine VALUES (1, 'x', 1, NULL, 0)",
    ] {
        let j = refused(n, sql).await?;
        assert!(
            j["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("bookkeeping")),
            "{sql}: {j}"
        );
    }
    // A trigger's body is judged when a client's statement fires it.
    n.sql("CREATE TABLE t2(a)").await?;
    n.sql("CREATE TRIGGER sneak AFTER INSERT ON t2 BEGIN DELETE FROM _ha_meta; END")
        .await?;
    refused(n, "INSERT INTO t2 VALUES (1)").await?;
    assert_eq!(n.rows(meta).await?, before);
    n.sql("INSERT INTO t VALUES (2)").await?;
    assert_eq!(n.rows("SELECT count(*) FROM t").await?, vec![json!([2])]);
    Ok(())
}
