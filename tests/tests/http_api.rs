//! The HTTP API of one node, through the real binary: shapes, values, transactions, errors.

use std::time::Duration;

use anyhow::Result;
use ha_tests::{NodeSpec, TestNode, eventually};
use serde_json::{Value as Json, json};

async fn node() -> Result<TestNode> {
    TestNode::start(&["file:t.db"]).await
}

#[tokio::test]
async fn single_object_and_array_have_the_original_shapes() -> Result<()> {
    let n = node().await?;
    let (s, j) = n
        .post(&json!({"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)"}))
        .await?;
    assert_eq!(s, 200);
    assert_eq!(
        j,
        json!({"columns": ["rows_affected", "last_insert_id"], "rows": [[0, 0]]})
    );
    let (s, j) = n
        .post(&json!([
            {"sql": "INSERT INTO t(name) VALUES ('a')"},
            {"sql": "INSERT INTO t(name) VALUES ('b')"},
            {"sql": "SELECT id, name FROM t ORDER BY id"}
        ]))
        .await?;
    assert_eq!(s, 200);
    assert_eq!(
        j,
        json!({"results": [
            {"columns": ["rows_affected", "last_insert_id"], "rows": [[1, 1]]},
            {"columns": ["rows_affected", "last_insert_id"], "rows": [[1, 2]]},
            {"columns": ["id", "name"], "rows": [[1, "a"], [2, "b"]]}
        ]})
    );
    let j = n.sql("SELECT * FROM t WHERE id > 100").await?;
    assert_eq!(j, json!({"columns": ["id", "name"], "rows": []}));
    Ok(())
}

#[tokio::test]
async fn an_array_is_all_or_nothing() -> Result<()> {
    let n = node().await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .await?;
    let (s, j) = n
        .post(&json!([
            {"sql": "INSERT INTO t VALUES (1, 'one')"},
            {"sql": "INSERT INTO t VALUES (2, 'two')"},
            {"sql": "INSERT INTO t VALUES (3, NULL)"}
        ]))
        .await?;
    assert_eq!(s, 409, "{j}");
    assert_eq!(j["error"]["code"], "constraint_violation");
    assert_eq!(j["error"]["statement"], 3);
    assert!(
        j["error"]["message"].as_str().unwrap().contains("NOT NULL"),
        "{j}"
    );
    assert_eq!(n.rows("SELECT count(*) FROM t").await?, vec![json!([0])]);
    // A broken statement in the middle undoes the first one too.
    let (s, _) = n
        .post(&json!([{"sql": "INSERT INTO t VALUES (1, 'one')"}, {"sql": "INSERT INTO nope VALUES (1)"}]))
        .await?;
    assert_eq!(s, 400);
    assert_eq!(n.rows("SELECT count(*) FROM t").await?, vec![json!([0])]);
    Ok(())
}

#[tokio::test]
async fn values_keep_their_type_and_precision() -> Result<()> {
    let n = node().await?;
    n.sql("CREATE TABLE v(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n TEXT)")
        .await?;
    let big = 9_007_199_254_740_993_i64;
    let (s, j) = n
        .post(&json!({
            "sql": "INSERT INTO v VALUES (:id, :i, :r, :t, :b, :n)",
            "params": {"id": 1, ":i": big, "@r": 1.5, "$t": "zwölf 🦀 \"q\" \\", "b": {"base64": "AAEC/w=="}, "n": null}
        }))
        .await?;
    assert_eq!(s, 200, "{j}");
    n.post(&json!({"sql": "INSERT INTO v(id, i) VALUES ($1, $2)", "params": {"$1": 2, "$2": i64::MIN}}))
        .await?;
    n.post(&json!({"sql": "INSERT INTO v(id, i) VALUES (?, ?)", "params": [3, i64::MAX]}))
        .await?;
    let rows = n
        .rows("SELECT id, i, r, t, b, n, typeof(b), typeof(i) FROM v ORDER BY id")
        .await?;
    assert_eq!(
        rows[0],
        json!([
            1,
            big,
            1.5,
            "zwölf 🦀 \"q\" \\",
            "AAEC/w==",
            null,
            "blob",
            "integer"
        ])
    );
    assert_eq!(rows[1][1], json!(i64::MIN));
    assert_eq!(rows[2][1], json!(i64::MAX));
    // The number arrives as a JSON integer, not a float that lost its last digit.
    let text = n
        .client
        .post(n.url("/"))
        .json(&json!({"sql": "SELECT i FROM v WHERE id = 1"}))
        .send()
        .await?
        .text()
        .await?;
    assert!(text.contains("9007199254740993"), "{text}");
    let (s, j) = n
        .post(&json!({"sql": "SELECT ?", "params": [9223372036854775808u64]}))
        .await?;
    assert_eq!(s, 400, "{j}");
    Ok(())
}

#[tokio::test]
async fn statements_that_return_rows_answer_with_rows() -> Result<()> {
    let n = node().await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    let j = n
        .sql("INSERT INTO t(v) VALUES ('x') RETURNING id, v")
        .await?;
    assert_eq!(j, json!({"columns": ["id", "v"], "rows": [[1, "x"]]}));
    for sql in [
        "PRAGMA table_info(t)",
        "EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = 1",
        "VALUES (1, 2)",
        "WITH x(a) AS (SELECT 1) SELECT a FROM x",
    ] {
        let j = n.sql(sql).await?;
        assert!(!j["rows"].as_array().unwrap().is_empty(), "{sql}: {j}");
        assert_ne!(j["columns"][0], "rows_affected", "{sql}");
    }
    let j = n.sql("UPDATE t SET v = 'y'").await?;
    assert_eq!(j["rows"], json!([[1, 0]]));
    let j = n.sql("DELETE FROM t").await?;
    assert_eq!(j["rows"], json!([[1, 0]]));
    Ok(())
}

#[tokio::test]
async fn sixty_four_concurrent_writers_and_readers_never_fail() -> Result<()> {
    let n = node().await?;
    n.sql("CREATE TABLE c(id INTEGER PRIMARY KEY, w INTEGER, k INTEGER)")
        .await?;
    let mut tasks = Vec::new();
    for w in 0..64 {
        let client = n.client.clone();
        let url = n.url("/");
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for k in 0..25 {
                let body = if w % 2 == 0 {
                    json!({"sql": "INSERT INTO c(w, k) VALUES (?, ?)", "params": [w, k]})
                } else {
                    json!({"sql": "SELECT count(*) FROM c WHERE w = ?", "params": [w - 1]})
                };
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => errors.push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await?);
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(
        n.rows("SELECT count(*) FROM c").await?,
        vec![json!([32 * 25])]
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_node_keeps_serving() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--max-body-size", "64KiB"]).await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY)").await?;
    n.sql("INSERT INTO t VALUES (1)").await?;
    let raw = |body: &'static str| {
        let c = n.client.clone();
        let url = n.url("/");
        async move {
            let r = c.post(url).body(body).send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Json>().await.unwrap())
        }
    };
    for (body, status, code) in [
        ("{not json", 400, "bad_request"),
        ("[]", 400, "bad_request"),
        ("\"SELECT 1\"", 400, "bad_request"),
        ("{\"params\": {}}", 400, "bad_request"),
        ("{\"sql\": \"SELECT 1; SELECT 2\"}", 400, "bad_request"),
        ("{\"sql\": \"   \"}", 400, "bad_request"),
        ("{\"sql\": \"SELEKT 1\"}", 400, "invalid_sql"),
        ("{\"sql\": \"SELECT * FROM missing\"}", 400, "invalid_sql"),
        ("{\"sql\": \"SELECT :a\"}", 400, "bad_request"),
        ("{\"sql\": \"BEGIN\"}", 400, "unsupported"),
        (
            "{\"sql\": \"INSERT INTO t VALUES (1)\"}",
            409,
            "constraint_violation",
        ),
    ] {
        let (s, j) = raw(body).await;
        assert_eq!(
            (s, j["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {j}"
        );
        assert!(!j["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    let big = format!("{{\"sql\": \"SELECT '{}'\"}}", "x".repeat(100_000));
    let r = n.client.post(n.url("/")).body(big).send().await?;
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        r.json::<Json>().await?["error"]["code"],
        "payload_too_large"
    );
    let r = n.client.get(n.url("/no/such/route")).send().await?;
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Json>().await?["error"]["code"], "not_found");
    let r = n.client.delete(n.url("/")).send().await?;
    assert_eq!(r.status().as_u16(), 405);
    // Still serving, nothing lost.
    assert_eq!(n.rows("SELECT id FROM t").await?, vec![json!([1])]);
    Ok(())
}

#[tokio::test]
async fn token_guards_everything_but_the_probes() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--token", "s3cret"]).await?;
    let c = &n.client;
    assert_eq!(
        c.get(n.url("/healthz")).send().await?.status().as_u16(),
        200
    );
    assert_eq!(c.get(n.url("/readyz")).send().await?.status().as_u16(), 200);
    for path in ["/", "/status", "/metrics"] {
        let r = c.get(n.url(path)).send().await?;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = c.get(n.url(path)).bearer_auth("wrong").send().await?;
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = c.get(n.url(path)).bearer_auth("s3cret").send().await?;
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = c
        .post(n.url("/"))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.json::<Json>().await?["error"]["code"], "unauthorized");
    assert_eq!(n.sql("SELECT 1").await?["rows"], json!([[1]]));
    assert!(
        !n.log_text().contains("s3cret"),
        "the token leaked into the log"
    );
    Ok(())
}

#[tokio::test]
async fn backup_is_a_consistent_sqlite_file() -> Result<()> {
    let n = node().await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    for i in 0..100 {
        n.post(&json!({"sql": "INSERT INTO t VALUES (?, ?)", "params": [i, format!("row {i}")]}))
            .await?;
    }
    let r = n.client.get(n.url("/")).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let cd = r.headers()["content-disposition"].to_str()?.to_string();
    // attachment; filename="YYYY-MM-DD HH:MM:SS_t.db"
    let name = cd
        .strip_prefix("attachment; filename=\"")
        .and_then(|r| r.strip_suffix("_t.db\""))
        .unwrap_or_else(|| panic!("{cd}"));
    let shape: String = name
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99 99:99:99", "{cd}");
    let bytes = r.bytes().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("copy.db");
    std::fs::write(&path, &bytes)?;
    let out = std::process::Command::new("sqlite3")
        .arg(&path)
        .arg("PRAGMA integrity_check; SELECT count(*), max(v) FROM t;")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout)?, "ok\n100|row 99\n");
    // No temporary copies left next to the database.
    let leftovers: Vec<_> = std::fs::read_dir(&n.dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ha-backup"))
        .collect();
    assert!(leftovers.is_empty());
    Ok(())
}

#[tokio::test]
async fn status_and_metrics_describe_the_node() -> Result<()> {
    let n = TestNode::start(&["file:t.db", "--name", "alpha"]).await?;
    n.sql("CREATE TABLE t(x)").await?;
    let _ = n.post(&json!({"sql": "nonsense"})).await?;
    let s: Json = n.client.get(n.url("/status")).send().await?.json().await?;
    assert_eq!(s["node"], "alpha");
    assert_eq!(s["database"]["file"], "t.db");
    assert_eq!(s["database"]["memory"], false);
    assert!(
        s["version"].is_string() && s["uptime_seconds"].is_u64(),
        "{s}"
    );
    assert!(s["database"]["size_bytes"].as_u64().unwrap() > 0);
    let m = n.client.get(n.url("/metrics")).send().await?.text().await?;
    for needle in [
        "ha_http_requests_total{method=\"POST\",route=\"/\",status=\"200\"} 1",
        "ha_http_requests_total{method=\"POST\",route=\"/\",status=\"400\"} 1",
        "ha_http_request_duration_seconds_bucket{method=\"POST\",route=\"/\"",
        "ha_db_size_bytes ",
        "ha_exec_errors_total{code=\"invalid_sql\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    Ok(())
}

#[tokio::test]
async fn memory_database_is_shared_by_all_connections_and_loads_a_file_untouched() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("seed.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&src)
        .arg("CREATE TABLE s(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO s VALUES (1, 'seeded');")
        .output()?;
    assert!(out.status.success());
    let before = std::fs::read(&src)?;
    let n = TestNode::start_spec(NodeSpec::new(&["-m", "seed.db"]).dir(dir.path())).await?;
    assert_eq!(n.rows("SELECT v FROM s").await?, vec![json!(["seeded"])]);
    n.sql("INSERT INTO s VALUES (2, 'new')").await?;
    // Reads come from the read pool: every connection must see the writer's commit.
    for _ in 0..20 {
        assert_eq!(n.rows("SELECT count(*) FROM s").await?, vec![json!([2])]);
    }
    let s: Json = n.client.get(n.url("/status")).send().await?.json().await?;
    assert_eq!(s["database"]["memory"], true);
    assert_eq!(s["database"]["file"], "seed.db");
    drop(n);
    assert_eq!(std::fs::read(&src)?, before, "the loaded file was modified");
    Ok(())
}

#[tokio::test]
async fn dsn_parameters_become_pragmas() -> Result<()> {
    let n = TestNode::start(&["file:p.db?_journal=DELETE&_busy_timeout=1234&_fk=1"]).await?;
    assert_eq!(
        n.rows("PRAGMA journal_mode").await?,
        vec![json!(["delete"])]
    );
    assert_eq!(n.rows("PRAGMA foreign_keys").await?, vec![json!([1])]);
    assert_eq!(n.rows("PRAGMA busy_timeout").await?, vec![json!([1234])]);
    let d = TestNode::start(&["file:w.db"]).await?;
    assert_eq!(d.rows("PRAGMA journal_mode").await?, vec![json!(["wal"])]);
    Ok(())
}

#[tokio::test]
async fn sigterm_finishes_cleanly_and_checkpoints_the_wal() -> Result<()> {
    let mut n = node().await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY)").await?;
    n.sql("INSERT INTO t VALUES (42)").await?;
    let status = n.stop(Duration::from_secs(20)).await?;
    assert!(status.success(), "{status}");
    let wal = n.dir.join("t.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "WAL still holds data after shutdown");
    let out = std::process::Command::new("sqlite3")
        .arg(n.dir.join("t.db"))
        .arg("SELECT id FROM t")
        .output()?;
    assert_eq!(String::from_utf8(out.stdout)?, "42\n");
    Ok(())
}

#[tokio::test]
async fn readiness_and_health_answer_at_once() -> Result<()> {
    let n = node().await?;
    let ready = eventually(Duration::from_secs(5), "readyz 200", || async {
        let r = n.client.get(n.url("/readyz")).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    assert!(ready.is_ok());
    let j: Json = n.client.get(n.url("/readyz")).send().await?.json().await?;
    assert_eq!(j["ready"], true);
    Ok(())
}
