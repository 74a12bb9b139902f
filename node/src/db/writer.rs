//! Owns the single write connection and runs every write on its own thread, in arrival order.
//! Must not block async workers: callers send a job over a bounded channel and await a oneshot.
//! Invariant: jobs waiting together are committed together (group commit), each inside its own
//! SAVEPOINT, so one failing job never undoes or fails another.
//! See `exec::Executor` for the callers.

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::dsn::TxLock;
use super::statement::{self, Stmt, StmtResult};
use super::{DbError, OpenSpec};

/// How many jobs one SQLite transaction may carry at most.
const MAX_GROUP: usize = 256;
/// How many jobs may wait for the writer before senders wait too.
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub tx_lock: TxLock,
    /// Checkpoint the WAL into the main file when the writer stops.
    pub checkpoint_on_close: bool,
}

type Reply<T> = oneshot::Sender<Result<T, DbError>>;
/// A batch waiting in a group, with where its answer goes.
type Pending = (Arc<Vec<Stmt>>, Reply<Vec<StmtResult>>);

enum Job {
    Batch {
        stmts: Arc<Vec<Stmt>>,
        reply: Reply<Vec<StmtResult>>,
    },
    /// Finish what is queued, then stop.
    Shutdown,
}

/// The cheap handle through which everything reaches the writer thread.
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Job>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Opens the write connection on a new thread and starts serving jobs.
    pub(crate) fn spawn(spec: &OpenSpec, config: WriterConfig) -> Result<WriterHandle, DbError> {
        let conn = spec.open_writer()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("ha-writer".into())
            .spawn(move || run(conn, rx, config))?;
        Ok(WriterHandle {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    pub(crate) async fn write(&self, stmts: Arc<Vec<Stmt>>) -> Result<Vec<StmtResult>, DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Batch { stmts, reply })
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Jobs waiting for the writer right now.
    pub(crate) fn queue_len(&self) -> usize {
        QUEUE_DEPTH - self.tx.capacity()
    }

    /// Stops taking jobs, finishes the queued ones, checkpoints and closes the connection.
    pub(crate) async fn close(&self) {
        // The thread closes its end on Shutdown, drains what was queued before, and exits.
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        let _ = self.tx.send(Job::Shutdown).await;
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, config: WriterConfig) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut batches = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Batch { stmts, reply } => batches.push((stmts, reply)),
                Job::Shutdown => rx.close(),
            }
        }
        commit_group(&conn, config.tx_lock, batches);
    }
    if config.checkpoint_on_close {
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => tracing::info!("WAL checkpointed"),
            Ok(busy) => tracing::warn!(busy, "WAL checkpoint could not finish"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the write connection failed");
    }
}

/// Runs the batches in one transaction, each in a savepoint, and answers every caller.
fn commit_group(conn: &Connection, tx_lock: TxLock, batches: Vec<Pending>) {
    if batches.is_empty() {
        return;
    }
    // VACUUM cannot run inside a transaction; alone in its request it runs on its own.
    let (solo, batches): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .partition(|(s, _)| s.len() == 1 && statement::leading_keyword(&s[0].sql) == "VACUUM");
    for (stmts, reply) in solo {
        let _ = reply.send(statement::run(conn, &stmts[0]).map(|r| vec![r]));
    }
    let mut pending: Vec<(Reply<Vec<StmtResult>>, Vec<StmtResult>)> = Vec::new();
    let mut open = false;
    for (stmts, reply) in batches {
        if !open {
            if let Err(e) = conn.execute_batch(tx_lock.begin_sql()) {
                let _ = reply.send(Err(e.into()));
                continue;
            }
            open = true;
        }
        match run_in_savepoint(conn, &stmts) {
            Ok(results) => pending.push((reply, results)),
            Err(e) => {
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (disk full, I/O error, …): the
                    // jobs before this one are lost with it and must be told.
                    let why = e.to_string();
                    for (r, _) in pending.drain(..) {
                        let _ = r.send(Err(DbError::Aborted(why.clone())));
                    }
                    open = false;
                }
                let _ = reply.send(Err(e));
            }
        }
    }
    if !open {
        return;
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => {
            for (r, results) in pending {
                let _ = r.send(Ok(results));
            }
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            let why = e.to_string();
            for (r, _) in pending {
                let _ = r.send(Err(DbError::Aborted(format!("commit failed: {why}"))));
            }
        }
    }
}

fn run_in_savepoint(conn: &Connection, stmts: &[Stmt]) -> Result<Vec<StmtResult>, DbError> {
    conn.execute_batch("SAVEPOINT job")?;
    let out: Result<Vec<_>, DbError> = stmts
        .iter()
        .enumerate()
        .map(|(i, s)| statement::run(conn, s).map_err(|e| at_statement(e, i, stmts.len())))
        .collect();
    if out.is_err() && !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK TO job")?;
    }
    if !conn.is_autocommit() {
        conn.execute_batch("RELEASE job")?;
    }
    out
}

/// Says which statement of a multi-statement batch failed.
fn at_statement(e: DbError, index: usize, len: usize) -> DbError {
    if len == 1 {
        return e;
    }
    match e {
        DbError::InStatement { .. } => e,
        other => DbError::InStatement {
            index,
            source: Box::new(other),
        },
    }
}
