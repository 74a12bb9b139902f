//! Interceptor scripts (`--interceptor`) on real `ha` binaries replicating through a real
//! nats-server: the shipped examples in examples/interceptors/ exactly as written, run-time
//! failures going to quarantine, skips counted, and start-up refusing a script that does not
//! compile. Nothing sleeps to synchronise: every wait is `eventually` with a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ha_tests::cluster::{TestCluster, status};
use ha_tests::{TestNode, eventually, repo_root, run_ha};
use serde_json::{Value as Json, json};

const WAIT: Duration = Duration::from_secs(60);

fn example(name: &str) -> String {
    let p: PathBuf = repo_root().join("examples/interceptors").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p.display().to_string()
}

/// Waits until `sql` on `n` returns exactly `want` as its rows.
async fn rows_become(n: &TestNode, sql: &str, want: Json) {
    let last = std::sync::Mutex::new(Json::Null);
    let r = eventually(WAIT, sql, || async {
        let rows = n.rows(sql).await.ok()?;
        let got = Json::Array(rows);
        if got == want {
            Some(())
        } else {
            *last.lock().ok()? = got;
            None
        }
    })
    .await;
    if let Err(e) = r {
        panic!("{e}: last {} (want {want})", last.lock().unwrap());
    }
}

/// `/status` → `replication` of a node.
async fn repl(n: &TestNode) -> Json {
    status(n).await.unwrap()["replication"].clone()
}

/// Waits until every node has applied the whole stream.
async fn all_applied(c: &TestCluster) {
    let js = c.jetstream().await.unwrap();
    for n in c.nodes() {
        let js = js.clone();
        eventually(WAIT, "the node to apply the whole stream", || {
            let js = js.clone();
            async move {
                let head = js
                    .get_stream("ha_replication")
                    .await
                    .ok()?
                    .info()
                    .await
                    .ok()?
                    .state
                    .last_sequence;
                (repl(n).await["applied_seq"].as_u64()? >= head).then_some(())
            }
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_shipped_example_ignores_a_replayed_alter_table_error_where_a_plain_node_quarantines() {
    // n1 writes; n2 runs the example; n3 runs no script (the control). n2 and n3 add the
    // column locally first (--disable-ddl-sync keeps their own DDL off the stream).
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let script = example("ignore_alter_table_errors.rhai");
    c.join(
        &["--disable-ddl-sync", "--interceptor", &script],
        |_| Ok(()),
        true,
    )
    .await
    .unwrap();
    c.join(&["--disable-ddl-sync"], |_| Ok(()), true)
        .await
        .unwrap();
    c.node(0)
        .sql("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)")
        .await
        .unwrap();
    for i in [1, 2] {
        rows_become(c.node(i), "SELECT count(*) FROM t", json!([[0]])).await;
        c.node(i)
            .sql("ALTER TABLE t ADD COLUMN b TEXT")
            .await
            .unwrap();
    }
    c.node(0)
        .sql("ALTER TABLE t ADD COLUMN b TEXT")
        .await
        .unwrap();
    c.node(0)
        .sql("INSERT INTO t VALUES (1, 'x', 'y')")
        .await
        .unwrap();
    for i in [1, 2] {
        rows_become(c.node(i), "SELECT id, a, b FROM t", json!([[1, "x", "y"]])).await;
    }
    let with_script = repl(c.node(1)).await;
    assert_eq!(
        with_script["interceptor"]["rescued"],
        json!(1),
        "{with_script}"
    );
    assert_eq!(
        with_script["interceptor"]["failures"],
        json!(0),
        "{with_script}"
    );
    assert_eq!(with_script["quarantined"], json!(0), "{with_script}");
    assert!(
        c.node(1)
            .rows("SELECT * FROM _ha_quarantine")
            .await
            .unwrap()
            .is_empty()
    );
    let metrics = c
        .node(1)
        .client
        .get(c.node(1).url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ha_interceptor_rescued_total 1"),
        "{metrics}"
    );
    let control = repl(c.node(2)).await;
    assert_eq!(control["quarantined"], json!(1), "{control}");
    let err = c
        .node(2)
        .rows("SELECT error FROM _ha_quarantine")
        .await
        .unwrap();
    assert!(
        err[0][0]
            .as_str()
            .unwrap()
            .contains("duplicate column name"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_keep_local_example_publishes_no_rows_of_local_tables() {
    let script = example("keep_table_local.rhai");
    let c = TestCluster::external(2, &["--interceptor", &script])
        .await
        .unwrap();
    let (n1, n2) = (c.node(0), c.node(1));
    n1.sql("CREATE TABLE local_cache(k TEXT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    n1.sql("CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    rows_become(n2, "SELECT count(*) FROM local_cache", json!([[0]])).await;
    rows_become(n2, "SELECT count(*) FROM items", json!([[0]])).await;
    let js = c.jetstream().await.unwrap();
    let head = || {
        let js = js.clone();
        async move {
            js.get_stream("ha_replication")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .last_sequence
        }
    };
    let h0 = head().await;
    // One transaction with a local and a shared row: one message, with the shared row only.
    let (code, body) = n1
        .post(&json!([
            {"sql": "INSERT INTO local_cache VALUES ('a', 'n1 cache')"},
            {"sql": "INSERT INTO items VALUES (1, 'one')"}
        ]))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    // Only local rows: committed here, nothing published.
    n1.sql("INSERT INTO local_cache VALUES ('b', 'n1 cache too')")
        .await
        .unwrap();
    assert_eq!(head().await, h0 + 1);
    let msg = js
        .get_stream("ha_replication")
        .await
        .unwrap()
        .get_raw_message(h0 + 1)
        .await
        .unwrap();
    let cs: Json = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(cs["changes"].as_array().unwrap().len(), 1, "{cs}");
    assert_eq!(cs["changes"][0]["table"], json!("items"), "{cs}");
    // n2's own local rows stay on n2 too, its shared rows reach n1.
    n2.sql("INSERT INTO local_cache VALUES ('z', 'n2 cache')")
        .await
        .unwrap();
    n2.sql("INSERT INTO items VALUES (2, 'two')").await.unwrap();
    all_applied(&c).await;
    for n in [n1, n2] {
        rows_become(
            n,
            "SELECT id, v FROM items ORDER BY id",
            json!([[1, "one"], [2, "two"]]),
        )
        .await;
    }
    rows_become(
        n1,
        "SELECT k FROM local_cache ORDER BY k",
        json!([["a"], ["b"]]),
    )
    .await;
    rows_become(n2, "SELECT k FROM local_cache ORDER BY k", json!([["z"]])).await;
    let s = repl(n1).await;
    assert_eq!(s["interceptor"]["unpublished_changes"], json!(2), "{s}");
    assert_eq!(s["interceptor"]["unpublished_sets"], json!(1), "{s}");
    assert_eq!(s["interceptor"]["hooks"], json!(["publish"]), "{s}");
    // The bookkeeping knows only what was published: a later update from n2 wins on n1.
    n2.sql("UPDATE items SET v = 'uno' WHERE id = 1")
        .await
        .unwrap();
    rows_become(n1, "SELECT v FROM items WHERE id = 1", json!([["uno"]])).await;
}

#[tokio::test]
async fn the_mask_example_masks_received_emails_and_keeps_every_other_value_exact() {
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    let script = example("mask_email.rhai");
    c.join(&["--interceptor", &script], |_| Ok(()), true)
        .await
        .unwrap();
    let (n1, n2) = (c.node(0), c.node(1));
    n1.sql("CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, big INTEGER, r REAL, b BLOB, n TEXT)")
        .await
        .unwrap();
    n1.sql("INSERT INTO users VALUES (1, 'alice@example.com', 9223372036854775807, 0.1, x'00ff10', NULL)")
        .await
        .unwrap();
    n1.sql("INSERT INTO users VALUES (3, NULL, -9223372036854775808, -2.5e300, x'', 'n')")
        .await
        .unwrap();
    n1.sql("UPDATE users SET n = 'seen' WHERE id = 1")
        .await
        .unwrap();
    let q = "SELECT id, email, big, r, hex(b), typeof(b), n FROM users ORDER BY id";
    rows_become(
        n2,
        q,
        json!([
            [
                1,
                "a***@example.com",
                9223372036854775807i64,
                0.1,
                "00FF10",
                "blob",
                "seen"
            ],
            [3, null, -9223372036854775808i64, -2.5e300, "", "blob", "n"]
        ]),
    )
    .await;
    // What n2 writes itself is not masked, here or on n1; n1 keeps its own values.
    n2.sql("INSERT INTO users(id, email) VALUES (2, 'bob@example.org')")
        .await
        .unwrap();
    let q = "SELECT id, email FROM users ORDER BY id";
    rows_become(
        n1,
        q,
        json!([[1, "alice@example.com"], [2, "bob@example.org"], [3, null]]),
    )
    .await;
    rows_become(
        n2,
        q,
        json!([[1, "a***@example.com"], [2, "bob@example.org"], [3, null]]),
    )
    .await;
    assert_eq!(repl(n2).await["quarantined"], json!(0));
}

#[tokio::test]
async fn a_script_that_throws_or_runs_away_sends_the_message_to_quarantine_and_a_skip_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("picky.rhai");
    std::fs::write(
        &script,
        r#"
        fn before(cs) {
            let t = if cs.changes.len() > 0 { cs.changes[0].table } else { "" };
            if t == "boom" { throw "boom is not welcome here"; }
            if t == "spin" { loop { } }
            if t == "skip" { return false; }
            true
        }
        "#,
    )
    .unwrap();
    let mut c = TestCluster::external(1, &[]).await.unwrap();
    c.join(
        &["--interceptor", script.to_str().unwrap()],
        |_| Ok(()),
        true,
    )
    .await
    .unwrap();
    let (n1, n2) = (c.node(0), c.node(1));
    for t in ["boom", "spin", "skip", "ok"] {
        n1.sql(&format!("CREATE TABLE {t}(x)")).await.unwrap();
    }
    for t in ["boom", "spin", "skip", "ok"] {
        n1.sql(&format!("INSERT INTO {t} VALUES (1)"))
            .await
            .unwrap();
    }
    rows_become(n2, "SELECT x FROM ok", json!([[1]])).await;
    for t in ["boom", "spin", "skip"] {
        rows_become(n2, &format!("SELECT count(*) FROM {t}"), json!([[0]])).await;
    }
    let s = repl(n2).await;
    assert_eq!(s["quarantined"], json!(2), "{s}");
    assert_eq!(s["interceptor"]["skipped"], json!(1), "{s}");
    assert!(s["interceptor"]["failures"].as_u64().unwrap() >= 2, "{s}");
    let errors = n2
        .rows("SELECT error FROM _ha_quarantine ORDER BY seq")
        .await
        .unwrap();
    assert!(
        errors[0][0]
            .as_str()
            .unwrap()
            .contains("boom is not welcome here"),
        "{errors:?}"
    );
    assert!(
        errors[1][0].as_str().unwrap().contains("operations"),
        "{errors:?}"
    );
    // The node is not stuck: its own writes still go out and the stream is fully applied.
    n2.sql("INSERT INTO ok VALUES (2)").await.unwrap();
    rows_become(n1, "SELECT x FROM ok ORDER BY x", json!([[1], [2]])).await;
    all_applied(&c).await;
}

#[test]
fn a_script_that_does_not_compile_stops_start_up_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("broken.rhai");
    std::fs::write(&script, "fn before(cs) {\n    cs.changes = ;\n}\n").unwrap();
    let out = run_ha(
        &[
            "--nats-port",
            "0",
            "--port",
            "0",
            "--pg-port",
            "0",
            "--interceptor",
            script.to_str().unwrap(),
            &format!("file:{}", dir.path().join("t.db").display()),
        ],
        &[],
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(script.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("line 2, column"), "{stderr}");
    // A hook with the wrong parameters is refused the same way, through HA_INTERCEPTOR.
    std::fs::write(&script, "fn after(cs) { true }\n").unwrap();
    let out = run_ha(
        &[
            "--nats-port",
            "0",
            "--port",
            "0",
            "--pg-port",
            "0",
            &format!("file:{}", dir.path().join("t.db").display()),
        ],
        &[("HA_INTERCEPTOR", script.to_str().unwrap())],
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("after(cs, error)"), "{stderr}");
}

#[test]
fn check_config_compiles_the_script_too() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hooks.rhai");
    std::fs::write(&script, "fn before(cs) { true }\n").unwrap();
    let args = |s: &str| -> Vec<String> {
        vec!["--check-config".into(), "--interceptor".into(), s.into()]
    };
    let out = run_ha(&args(script.to_str().unwrap()), &[]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hooks.rhai"));
    std::fs::write(&script, "fn before(cs) { ( }\n").unwrap();
    let out = run_ha(&args(script.to_str().unwrap()), &[]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1, column"), "{stderr}");
}
