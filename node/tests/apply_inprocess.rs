//! Capture → publish → apply through the real executor and writer, with an in-memory log
//! standing in for JetStream: convergence, own messages, DDL, failures, interceptor hooks.

use std::sync::{Arc, Mutex};

use ha::changeset::{self, ChangeSet, Seq};
use ha::db::sink::{ChangeSink, Origin, PublishAfterError, PublishError, ReplicationHooks};
use ha::db::{DbTarget, Stmt, StmtResult, Value};
use ha::exec::{ExecConfig, Executor, Session, TxControl};
use ha::interceptor::Interceptor;
use ha::metrics::InterceptorCounters;

/// A shared, ordered log: what JetStream is to the nodes.
#[derive(Default)]
struct Log {
    messages: Mutex<Vec<Vec<u8>>>,
    fail: Mutex<bool>,
    /// Every ordered publish (a schema change) loses its race.
    race: Mutex<bool>,
    /// The tables of the change sets that lost.
    lost: Mutex<Vec<String>>,
}

struct Sink(Arc<Log>);

impl ChangeSink for Sink {
    fn publish(&self, cs: &ChangeSet) -> Result<Seq, PublishError> {
        if *self.0.fail.lock().unwrap() {
            return Err(PublishError("log unreachable".into()));
        }
        let bytes = changeset::encode(cs).map_err(|e| PublishError(e.to_string()))?;
        let mut m = self.0.messages.lock().unwrap();
        m.push(bytes);
        Ok(Seq(m.len() as u64))
    }

    fn publish_after(&self, cs: &ChangeSet, after: Seq) -> Result<Seq, PublishAfterError> {
        if *self.0.race.lock().unwrap() {
            let mut lost = self.0.lost.lock().unwrap();
            lost.extend(cs.changes.iter().map(|c| c.table.clone()));
            return Err(PublishAfterError::Race(format!(
                "another node's change came after {}",
                after.0
            )));
        }
        self.publish(cs).map_err(PublishAfterError::Other)
    }
}

async fn node(log: &Arc<Log>, name: &str, dir: &std::path::Path) -> Executor {
    node_with(log, name, dir, None).await
}

/// A node whose writer runs `script` (Rhai text) as its interceptor.
async fn node_with(
    log: &Arc<Log>,
    name: &str,
    dir: &std::path::Path,
    script: Option<&Arc<Interceptor>>,
) -> Executor {
    let dsn = format!("file:{}", dir.join(format!("{name}.db")).display());
    Executor::open(ExecConfig {
        target: DbTarget::parse(Some(&dsn), false).unwrap(),
        read_connections: 4,
        replication: Some(ReplicationHooks {
            sink: Arc::new(Sink(log.clone())),
            origin: Origin {
                node: name.into(),
                process_id: 1,
                filename: "ha.db".into(),
            },
            ddl_sync: true,
            dedupe_window: std::time::Duration::from_secs(3600),
            subject: "ha_replication.ha_db".into(),
            interceptor: script.cloned(),
        }),
        query_timeout: None,
        max_result_bytes: None,
    })
    .await
    .unwrap()
}

/// Applies every message of the log the node has not applied yet, in order.
async fn catch_up(log: &Log, node: &Executor) {
    let msgs = log.messages.lock().unwrap().clone();
    let from = node.applied_seq().await.unwrap().0 as usize;
    for (i, bytes) in msgs.iter().enumerate().skip(from) {
        let cs = changeset::decode(bytes).unwrap();
        node.apply(Seq(i as u64 + 1), Arc::new(cs)).await.unwrap();
    }
}

async fn exec(node: &Executor, sql: &str) -> Vec<StmtResult> {
    node.execute(vec![Stmt::new(sql)]).await.unwrap().results
}

async fn dump(node: &Executor, sql: &str) -> Vec<Vec<Value>> {
    match exec(node, sql).await.remove(0) {
        StmtResult::Rows(r) => r.rows,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn writes_on_both_nodes_converge_including_conflicts_and_ddl() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    let b = node(&log, "b", dir.path()).await;
    exec(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").await;
    catch_up(&log, &b).await;
    exec(&a, "INSERT INTO t VALUES (1, 'a1')").await;
    exec(&b, "INSERT INTO t VALUES (2, 'b2')").await;
    // A conflict: both update row 1 before seeing the other's write.
    catch_up(&log, &b).await;
    exec(&a, "UPDATE t SET v = 'from a' WHERE id = 1").await;
    exec(&b, "UPDATE t SET v = 'from b' WHERE id = 1").await;
    exec(&b, "ALTER TABLE t ADD COLUMN extra INTEGER DEFAULT 7").await;
    // A has not seen row 2 yet: its DELETE changes nothing, so nothing is replicated.
    exec(&a, "DELETE FROM t WHERE id = 2").await;
    catch_up(&log, &a).await;
    catch_up(&log, &b).await;
    let q = "SELECT id, v, extra FROM t ORDER BY id";
    let da = dump(&a, q).await;
    assert_eq!(da, dump(&b, q).await);
    // The later message in the log (b's update) wins on both.
    assert_eq!(
        da,
        vec![
            vec![
                Value::Integer(1),
                Value::Text("from b".into()),
                Value::Integer(7)
            ],
            vec![
                Value::Integer(2),
                Value::Text("b2".into()),
                Value::Integer(7)
            ],
        ]
    );
    // A delete of a row both have reaches both.
    exec(&a, "DELETE FROM t WHERE id = 2").await;
    catch_up(&log, &a).await;
    catch_up(&log, &b).await;
    assert_eq!(dump(&a, q).await.len(), 1);
    assert_eq!(dump(&a, q).await, dump(&b, q).await);
    // Each node applied the other's ALTER once and skipped its own.
    assert_eq!(
        a.applied_seq().await.unwrap(),
        b.applied_seq().await.unwrap()
    );
}

#[tokio::test]
async fn failed_statements_publish_nothing_and_publish_failure_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    exec(
        &a,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
    )
    .await;
    let n = log.messages.lock().unwrap().len();
    let err = a
        .execute(vec![
            Stmt::new("INSERT INTO t VALUES (1, 'x')"),
            Stmt::new("INSERT INTO t VALUES (2, NULL)"),
        ])
        .await;
    assert!(err.is_err());
    assert_eq!(
        log.messages.lock().unwrap().len(),
        n,
        "a failed batch was published"
    );
    *log.fail.lock().unwrap() = true;
    let err = a
        .execute(vec![Stmt::new("INSERT INTO t VALUES (3, 'y')")])
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "unavailable", "{err}");
    *log.fail.lock().unwrap() = false;
    assert!(dump(&a, "SELECT * FROM t").await.is_empty());
    exec(&a, "INSERT INTO t VALUES (4, 'z')").await;
    let last = changeset::decode(log.messages.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(last.changes.len(), 1);
    assert_eq!(last.node, "a");
}

#[tokio::test]
async fn a_fresh_node_rebuilds_everything_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    exec(
        &a,
        "CREATE TABLE k(a TEXT, b INTEGER, v BLOB, PRIMARY KEY (a, b)) WITHOUT ROWID",
    )
    .await;
    exec(&a, "CREATE TABLE n(v TEXT)").await;
    exec(&a, "CREATE TABLE g(id INTEGER PRIMARY KEY, x INTEGER, y INTEGER GENERATED ALWAYS AS (x * 2) STORED)").await;
    a.execute(vec![
        Stmt::new("INSERT INTO k VALUES ('p', 1, x'00ff')"),
        Stmt::new("INSERT INTO n VALUES ('keyless')"),
        Stmt::new("INSERT INTO g(id, x) VALUES (1, 21)"),
        Stmt::new("CREATE TABLE c AS SELECT v FROM n"),
    ])
    .await
    .unwrap();
    let c = node(&log, "c", dir.path()).await;
    catch_up(&log, &c).await;
    for q in [
        "SELECT a, b, v FROM k",
        "SELECT rowid, v FROM n",
        "SELECT id, x, y FROM g",
        "SELECT v FROM c",
    ] {
        assert_eq!(dump(&a, q).await, dump(&c, q).await, "{q}");
    }
    assert_eq!(
        dump(&c, "SELECT typeof(v) FROM k").await,
        vec![vec![Value::Text("blob".into())]]
    );
}

#[tokio::test]
async fn an_old_message_published_again_does_not_undo_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    let b = node(&log, "b", dir.path()).await;
    exec(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").await;
    exec(&a, "INSERT INTO t VALUES (1, 'first')").await;
    catch_up(&log, &b).await;
    exec(&b, "UPDATE t SET v = 'second' WHERE id = 1").await;
    // Someone publishes a's INSERT again: it gets a new, later sequence.
    let old = log.messages.lock().unwrap()[1].clone();
    log.messages.lock().unwrap().push(old);
    catch_up(&log, &a).await;
    catch_up(&log, &b).await;
    let q = "SELECT v FROM t";
    assert_eq!(dump(&a, q).await, vec![vec![Value::Text("second".into())]]);
    assert_eq!(dump(&b, q).await, dump(&a, q).await);
}

fn script(text: &str) -> Arc<Interceptor> {
    Arc::new(Interceptor::compile("test.rhai", text, InterceptorCounters::default()).unwrap())
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[tokio::test]
async fn before_edits_and_skips_and_after_ignores_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    let i = script(
        r#"
        fn before(cs) {
            if cs.changes.some(|c| c.table == "skipme") { return false; }
            cs.changes = cs.changes.map(|c| {
                let at = c.columns.index_of("email");
                if c.table == "users" && at >= 0 && c.new_values.len() > at { c.new_values[at] = "masked"; }
                c
            });
            cs
        }
        fn after(cs, error) {
            error == () || !error.contains("duplicate column name")
        }
        "#,
    );
    let b = node_with(&log, "b", dir.path(), Some(&i)).await;
    exec(
        &a,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT, n INTEGER)",
    )
    .await;
    exec(&a, "CREATE TABLE skipme(x)").await;
    a.execute(vec![
        Stmt::new("INSERT INTO users VALUES (1, 'a@example.com', 9007199254740993)"),
        Stmt::new("INSERT INTO users VALUES (2, NULL, -1)"),
    ])
    .await
    .unwrap();
    exec(&a, "INSERT INTO skipme VALUES (1)").await;
    catch_up(&log, &b).await;
    assert_eq!(
        dump(&b, "SELECT id, email, n FROM users ORDER BY id").await,
        vec![
            vec![
                Value::Integer(1),
                text("masked"),
                Value::Integer(9007199254740993)
            ],
            vec![Value::Integer(2), text("masked"), Value::Integer(-1)],
        ]
    );
    assert!(dump(&b, "SELECT * FROM skipme").await.is_empty());
    assert_eq!(i.counters().skipped.get(), 1);
    assert_eq!(
        b.applied_seq().await.unwrap().0 as usize,
        log.messages.lock().unwrap().len()
    );
    // b adds a column a does not know of yet; a adds the same: a's ALTER fails on b, and b's
    // after() ignores it.
    exec(&b, "ALTER TABLE users ADD COLUMN nick TEXT").await;
    exec(&a, "ALTER TABLE users ADD COLUMN nick TEXT").await;
    exec(&a, "UPDATE users SET nick = 'one' WHERE id = 1").await;
    catch_up(&log, &b).await;
    assert_eq!(i.counters().rescued.get(), 1);
    assert_eq!(i.counters().failures.get(), 0);
    assert_eq!(
        dump(&b, "SELECT nick FROM users WHERE id = 1").await,
        vec![vec![text("one")]]
    );
    assert_eq!(b.quarantine_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_failing_script_is_an_interceptor_error_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    let i = script(
        r#"fn before(cs) { if cs.changes[0].table == "boom" { throw "no boom here"; } true }"#,
    );
    let b = node_with(&log, "b", dir.path(), Some(&i)).await;
    exec(&a, "CREATE TABLE boom(x)").await;
    exec(&a, "INSERT INTO boom VALUES (1)").await;
    catch_up_until_error(&log, &b).await;
    let msgs = log.messages.lock().unwrap().clone();
    let cs = changeset::decode(&msgs[1]).unwrap();
    let err = b.apply(Seq(2), Arc::new(cs)).await.unwrap_err();
    assert!(err.is_interceptor(), "{err}");
    assert_eq!(err.code().as_str(), "interceptor_failed");
    assert!(err.to_string().contains("no boom here"), "{err}");
    assert!(err.to_string().contains("test.rhai"), "{err}");
    assert_eq!(b.applied_seq().await.unwrap(), Seq(1));
    assert!(dump(&b, "SELECT * FROM boom").await.is_empty());
    assert_eq!(i.counters().failures.get(), 2);
}

/// Applies the log in order until one message fails.
async fn catch_up_until_error(log: &Log, node: &Executor) {
    let msgs = log.messages.lock().unwrap().clone();
    let from = node.applied_seq().await.unwrap().0 as usize;
    for (k, bytes) in msgs.iter().enumerate().skip(from) {
        let cs = changeset::decode(bytes).unwrap();
        if node.apply(Seq(k as u64 + 1), Arc::new(cs)).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn publish_keeps_a_table_local_and_the_bookkeeping_follows_what_was_published() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let i = script(
        r#"fn publish(cs) {
            cs.changes = cs.changes.filter(|c| !c.table.starts_with("local_"));
            cs
        }"#,
    );
    let a = node_with(&log, "a", dir.path(), Some(&i)).await;
    let b = node(&log, "b", dir.path()).await;
    exec(&a, "CREATE TABLE local_cache(k TEXT PRIMARY KEY, v TEXT)").await;
    exec(&a, "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT)").await;
    let before = log.messages.lock().unwrap().len();
    a.execute(vec![
        Stmt::new("INSERT INTO local_cache VALUES ('k1', 'cached')"),
        Stmt::new("INSERT INTO items VALUES (1, 'shared')"),
    ])
    .await
    .unwrap();
    assert_eq!(log.messages.lock().unwrap().len(), before + 1);
    let last = changeset::decode(log.messages.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(last.changes.len(), 1);
    assert_eq!(last.changes[0].table, "items");
    // Only local rows: nothing is published, the commit still happens.
    exec(&a, "INSERT INTO local_cache VALUES ('k2', 'cached too')").await;
    assert_eq!(log.messages.lock().unwrap().len(), before + 1);
    assert_eq!(
        dump(&a, "SELECT k FROM local_cache ORDER BY k").await.len(),
        2
    );
    assert_eq!(i.counters().unpublished_changes.get(), 2);
    assert_eq!(i.counters().unpublished_sets.get(), 1);
    catch_up(&log, &b).await;
    catch_up(&log, &a).await;
    assert!(dump(&b, "SELECT * FROM local_cache").await.is_empty());
    assert_eq!(
        dump(&b, "SELECT id, v FROM items").await,
        vec![vec![Value::Integer(1), text("shared")]]
    );
    // The versions name exactly the published rows, so a later write from b wins on a.
    assert_eq!(
        dump(&a, "SELECT tbl, seq FROM _ha_versions ORDER BY tbl").await,
        vec![vec![text("items"), Value::Integer(before as i64 + 1)]]
    );
    exec(&b, "UPDATE items SET v = 'from b' WHERE id = 1").await;
    catch_up(&log, &a).await;
    assert_eq!(
        dump(&a, "SELECT v FROM items").await,
        vec![vec![text("from b")]]
    );
    catch_up(&log, &b).await;
    assert_eq!(a.applied_seq().await.unwrap(), Seq(4));
    assert_eq!(b.applied_seq().await.unwrap(), Seq(4));
}

#[tokio::test]
async fn a_failing_publish_hook_rolls_the_transaction_back_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let i = script(
        r#"fn publish(cs) {
            if cs.changes.some(|c| c.table == "t" && c.new_values[1] == "refuse") { throw "not this one"; }
            cs
        }"#,
    );
    let a = node_with(&log, "a", dir.path(), Some(&i)).await;
    exec(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)").await;
    let n = log.messages.lock().unwrap().len();
    let err = a
        .execute(vec![
            Stmt::new("INSERT INTO t VALUES (1, 'fine')"),
            Stmt::new("INSERT INTO t VALUES (2, 'refuse')"),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "interceptor_failed", "{err}");
    assert!(err.to_string().contains("not this one"), "{err}");
    assert_eq!(log.messages.lock().unwrap().len(), n, "nothing published");
    assert!(
        dump(&a, "SELECT * FROM t").await.is_empty(),
        "nothing committed"
    );
    exec(&a, "INSERT INTO t VALUES (3, 'fine')").await;
    assert_eq!(log.messages.lock().unwrap().len(), n + 1);
    // Clients committed together (group commit) share one change set: only the one the script
    // refuses fails.
    let writes = (10..40).map(|id| {
        let a = a.clone();
        let v = if id == 25 { "refuse" } else { "fine" };
        tokio::spawn(async move {
            a.execute(vec![Stmt::new(format!(
                "INSERT INTO t VALUES ({id}, '{v}')"
            ))])
            .await
        })
    });
    let mut failed = Vec::new();
    for (k, w) in futures::future::join_all(writes)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = w.unwrap() {
            assert_eq!(e.code().as_str(), "interceptor_failed", "{e}");
            failed.push(k + 10);
        }
    }
    assert_eq!(failed, vec![25]);
    assert_eq!(
        dump(&a, "SELECT count(*) FROM t").await,
        vec![vec![Value::Integer(30)]]
    );
}

#[tokio::test]
async fn a_write_answers_with_the_stream_sequence_it_was_published_at() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    let last = || Some(Seq(log.messages.lock().unwrap().len() as u64));
    let run = |sql: &str| a.execute_with(vec![Stmt::new(sql)], a.limits(None, None));
    let created = run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    assert_eq!(created.commit_seq, last());
    // Another node's message moves the stream on: the next write's sequence is after it.
    let b = node(&log, "b", dir.path()).await;
    catch_up(&log, &b).await;
    b.execute(vec![Stmt::new("INSERT INTO t VALUES (7, 'b')")])
        .await
        .unwrap();
    let written = run("INSERT INTO t VALUES (1, 'x')").await.unwrap();
    assert_eq!(written.commit_seq, last());
    assert_eq!(written.commit_seq, Some(Seq(3)));
    let read = run("SELECT * FROM t").await.unwrap();
    assert_eq!(read.commit_seq, None, "a read publishes nothing");
    let nothing = run("DELETE FROM t WHERE id = 99").await.unwrap();
    assert_eq!(nothing.commit_seq, None, "a write that changed nothing");
    assert_eq!(log.messages.lock().unwrap().len(), 3);

    // An interactive session's COMMIT: the session remembers where its commit went.
    let mut session = Session::new(a.clone(), None);
    session.control(TxControl::Begin).await.unwrap();
    let stmt = Stmt::new("INSERT INTO t VALUES (2, 'y')");
    session.execute(stmt, a.limits(None, None)).await.unwrap();
    assert_eq!(session.last_commit_seq(), None, "nothing committed yet");
    session.control(TxControl::Commit).await.unwrap();
    assert_eq!(session.last_commit_seq(), Some(Seq(4)));
    assert_eq!(session.last_commit_seq(), last());
}

#[tokio::test]
async fn vacuum_into_behind_a_schema_name_or_a_comment_is_still_vacuum_into() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    // A table without a PRIMARY KEY: a plain VACUUM is refused on a replicated node.
    exec(&a, "CREATE TABLE n(v TEXT)").await;
    let out = dir.path().join("copy.db");
    for sql in [
        format!("VACUUM main INTO '{}'", out.display()),
        format!("VACUUM /* c */ INTO '{}'", out.display()),
    ] {
        // VACUUM INTO changes nothing here: the authorizer's refusal, not the rowid one.
        let e = a.execute(vec![Stmt::new(&sql)]).await.unwrap_err();
        assert_eq!(e.code().as_str(), "forbidden", "{sql}: {e}");
    }
}

/// A schema change that loses the race for the log's position (another node's change came
/// first) is refused alone: the writes that waited in the same group commit go through.
#[tokio::test]
async fn a_schema_change_that_loses_its_race_refuses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::default());
    let a = node(&log, "a", dir.path()).await;
    exec(&a, "CREATE TABLE t(id INTEGER PRIMARY KEY)").await;
    *log.race.lock().unwrap() = true;
    // A session holds the writer, so that the two batches below wait in one group.
    let mut session = Session::new(a.clone(), None);
    session.control(TxControl::Begin).await.unwrap();
    session
        .execute(Stmt::new("INSERT INTO t VALUES (1)"), a.limits(None, None))
        .await
        .unwrap();
    let run = |sql: &'static str| {
        let a = a.clone();
        tokio::spawn(async move { a.execute(vec![Stmt::new(sql)]).await })
    };
    let ddl = run("CREATE TABLE u(x)");
    let plain = run("INSERT INTO t VALUES (2)");
    ha_testkit::eventually(
        std::time::Duration::from_secs(10),
        "both batches to queue",
        || async { (a.write_queue_len() >= 2).then_some(()) },
    )
    .await
    .unwrap();
    session.control(TxControl::Commit).await.unwrap();
    plain
        .await
        .unwrap()
        .expect("a plain write is not refused with the schema change");
    let e = ddl
        .await
        .unwrap()
        .expect_err("the schema change lost its race");
    assert_eq!(e.code().as_str(), "serialization_failure", "{e}");
    assert_eq!(
        dump(&a, "SELECT count(*) FROM t").await,
        vec![vec![Value::Integer(2)]]
    );
    // Not even once did the plain write travel with the schema change (and get refused with
    // it, to be retried by luck).
    let lost = log.lost.lock().unwrap().clone();
    assert!(
        !lost.is_empty() && !lost.iter().any(|t| t == "t"),
        "{lost:?}"
    );
}
