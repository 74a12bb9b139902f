//! Capture → publish → apply through the real executor and writer, with an in-memory log
//! standing in for JetStream: convergence, own messages, DDL, failures.

use std::sync::{Arc, Mutex};

use ha::changeset::{self, ChangeSet, Seq};
use ha::db::sink::{ChangeSink, Origin, PublishError, ReplicationHooks};
use ha::db::{DbTarget, Stmt, StmtResult, Value};
use ha::exec::{ExecConfig, Executor};

/// A shared, ordered log: what JetStream is to the nodes.
#[derive(Default)]
struct Log {
    messages: Mutex<Vec<Vec<u8>>>,
    fail: Mutex<bool>,
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
}

async fn node(log: &Arc<Log>, name: &str, dir: &std::path::Path) -> Executor {
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
        }),
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
    node.execute(vec![Stmt::new(sql)]).await.unwrap()
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
