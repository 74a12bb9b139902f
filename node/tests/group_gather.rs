//! Group commit on a replicated writer whose publish takes a while (a log standing in for
//! JetStream, in memory): clients in a closed loop share one publish instead of alternating
//! between two half-size groups.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ha::changeset::{ChangeSet, Seq};
use ha::db::sink::{ChangeSink, Origin, PublishError, ReplicationHooks};
use ha::db::{DbTarget, Stmt, StmtResult, Value};
use ha::exec::{ExecConfig, Executor};

/// A log whose every publish takes `PUBLISH` (JetStream's round trip and sync).
#[derive(Default)]
struct SlowLog {
    published: AtomicUsize,
}

const PUBLISH: Duration = Duration::from_millis(3);
/// How long a client takes to send its next write once answered.
const TURNAROUND: Duration = Duration::from_micros(300);

impl ChangeSink for SlowLog {
    fn publish(&self, _cs: &ChangeSet) -> Result<Seq, PublishError> {
        std::thread::sleep(PUBLISH);
        Ok(Seq(self.published.fetch_add(1, Ordering::SeqCst) as u64 + 1))
    }
}

async fn node(log: Arc<SlowLog>, dir: &std::path::Path) -> Executor {
    let dsn = format!("file:{}", dir.join("a.db").display());
    Executor::open(ExecConfig {
        target: DbTarget::parse(Some(&dsn), false).unwrap(),
        read_connections: 4,
        replication: Some(ReplicationHooks {
            sink: log,
            origin: Origin {
                node: "a".into(),
                process_id: 1,
                filename: "ha.db".into(),
            },
            ddl_sync: true,
            dedupe_window: Duration::from_secs(3600),
            subject: "ha_replication.ha_db".into(),
            interceptor: None,
        }),
        query_timeout: None,
        max_result_bytes: None,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_in_a_closed_loop_share_one_publish() {
    const CLIENTS: usize = 8;
    const WRITES: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SlowLog::default());
    let a = Arc::new(node(log.clone(), dir.path()).await);
    a.execute(vec![Stmt::new(
        "CREATE TABLE t(client INTEGER, n INTEGER, PRIMARY KEY (client, n))",
    )])
    .await
    .unwrap();
    let before = log.published.load(Ordering::SeqCst);
    // Each client is a thread of its own that takes a moment to send its next write once
    // answered (a client over the network: its own work, the round trip).
    let rt = tokio::runtime::Handle::current();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (a, rt) = (a.clone(), rt.clone());
            std::thread::spawn(move || {
                for n in 0..WRITES {
                    rt.block_on(a.execute(vec![Stmt::new(format!(
                        "INSERT INTO t(client, n) VALUES ({c}, {n})"
                    ))]))
                    .unwrap();
                    std::thread::sleep(TURNAROUND);
                }
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for c in clients {
            c.join().unwrap();
        }
    })
    .await
    .unwrap();
    let publishes = log.published.load(Ordering::SeqCst) - before;
    let writes = CLIENTS * WRITES;
    let per_publish = writes as f64 / publishes as f64;
    println!(
        "{writes} writes from {CLIENTS} clients in {publishes} publishes ({per_publish:.1} per publish)"
    );
    // Alternating halves give CLIENTS / 2 = 4 per publish; all of them give 8.
    assert!(
        per_publish >= 6.0,
        "{writes} writes took {publishes} publishes: clients alternate between groups"
    );
    let r = a
        .execute(vec![Stmt::new("SELECT count(*) FROM t")])
        .await
        .unwrap()
        .results;
    match &r[0] {
        StmtResult::Rows(rows) => assert_eq!(rows.rows, vec![vec![Value::Integer(writes as i64)]]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_client_gets_a_publish_per_write() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SlowLog::default());
    let a = node(log.clone(), dir.path()).await;
    a.execute(vec![Stmt::new("CREATE TABLE t(n INTEGER PRIMARY KEY)")])
        .await
        .unwrap();
    let before = log.published.load(Ordering::SeqCst);
    for n in 0..10 {
        let done = a
            .execute(vec![Stmt::new(format!("INSERT INTO t VALUES ({n})"))])
            .await
            .unwrap();
        // Answered only once its own publish is done: the sequence is its own.
        assert_eq!(done.commit_seq, Some(Seq((before + n + 1) as u64)));
    }
}
