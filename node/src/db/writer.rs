//! Owns the single write connection and runs every write on its own thread, in arrival order.
//! Must not block async workers: callers send a job over a bounded channel and await a oneshot.
//! Invariant: jobs waiting together are committed together (group commit), each inside its own
//! SAVEPOINT, so one failing job never undoes or fails another. An interactive session (pg
//! BEGIN…COMMIT) takes the writer whole: the open group commits first, then only that session's
//! commands run until it commits, rolls back, idles too long or goes away. Both paths commit
//! through `finish_transaction`, the one place where a transaction becomes durable.
//! See `exec::Executor` and `exec::Session` for the callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::dsn::TxLock;
use super::statement::{self, Described, Stmt, StmtResult};
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
/// One request's statements and where its answer goes.
type Batch = (Arc<Vec<Stmt>>, Reply<Vec<StmtResult>>);

enum Job {
    Batch {
        stmts: std::sync::Arc<Vec<Stmt>>,
        reply: Reply<Vec<StmtResult>>,
    },
    /// An interactive session takes the writer (see `serve_session`).
    Session(SessionStart),
    /// Finish what is queued, then stop.
    Shutdown,
}

struct SessionStart {
    cmds: std_mpsc::Receiver<SessionCmd>,
    /// Answered once the session's transaction is open on the writer.
    ready: Reply<()>,
    idle_timeout: Option<Duration>,
    /// Set by the writer when it rolled the session back because it idled too long.
    timed_out: Arc<AtomicBool>,
}

/// What a session that holds the writer asks of it.
pub(crate) enum SessionCmd {
    Run {
        stmt: Stmt,
        reply: Reply<StmtResult>,
    },
    /// Compile `sql` inside the session's transaction (it may see tables the session created).
    Describe {
        sql: String,
        reply: Reply<Described>,
    },
    /// Transaction-control SQL built by `exec::Session` from validated names (SAVEPOINT,
    /// RELEASE, ROLLBACK TO); never user text.
    Control {
        sql: String,
        reply: Reply<()>,
    },
    Commit {
        reply: Reply<()>,
    },
    Rollback {
        reply: Reply<()>,
    },
}

/// A session's hold on the writer: commands go to the writer thread, which serves nobody else
/// until the session ends. Dropping it rolls the session's transaction back.
pub(crate) struct WriterSession {
    cmds: std_mpsc::Sender<SessionCmd>,
    timed_out: Arc<AtomicBool>,
}

impl WriterSession {
    /// Sends `make(reply)` to the writer and waits for the answer.
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> SessionCmd,
    ) -> Result<T, DbError> {
        let (reply, rx) = oneshot::channel();
        self.cmds.send(make(reply)).map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }

    fn gone(&self) -> DbError {
        if self.timed_out.load(Ordering::Acquire) {
            DbError::SessionTimedOut
        } else {
            DbError::WriterGone
        }
    }
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

    pub(crate) async fn write(
        &self,
        stmts: std::sync::Arc<Vec<Stmt>>,
    ) -> Result<Vec<StmtResult>, DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Batch { stmts, reply })
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Waits for the writer, then opens a transaction that only the returned session uses.
    pub(crate) async fn session(
        &self,
        idle_timeout: Option<Duration>,
    ) -> Result<WriterSession, DbError> {
        let (cmd_tx, cmds) = std_mpsc::channel();
        let (ready, rx) = oneshot::channel();
        let timed_out = Arc::new(AtomicBool::new(false));
        let start = SessionStart {
            cmds,
            ready,
            idle_timeout,
            timed_out: timed_out.clone(),
        };
        self.tx
            .send(Job::Session(start))
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)??;
        Ok(WriterSession {
            cmds: cmd_tx,
            timed_out,
        })
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
                Job::Session(start) => {
                    // The jobs before the session commit first; the ones after it wait for it.
                    commit_group(&conn, config.tx_lock, std::mem::take(&mut batches));
                    serve_session(&conn, config.tx_lock, start);
                }
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
fn commit_group(conn: &Connection, tx_lock: TxLock, batches: Vec<Batch>) {
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
    match finish_transaction(conn) {
        Ok(()) => {
            for (r, results) in pending {
                let _ = r.send(Ok(results));
            }
        }
        Err(e) => {
            let why = e.to_string();
            for (r, _) in pending {
                let _ = r.send(Err(DbError::Aborted(format!("commit failed: {why}"))));
            }
        }
    }
}

/// Makes the open transaction durable, or rolls it back and says why. THE commit path: group
/// commit and interactive sessions both end here (replication will capture and publish here,
/// before the COMMIT).
fn finish_transaction(conn: &Connection) -> Result<(), DbError> {
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
        Err(e) => {
            rollback(conn);
            Err(e.into())
        }
    }
}

/// Rolls back the open transaction, if SQLite has not already.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "rollback failed");
    }
}

/// Serves one interactive session: BEGIN, then its commands only, until it commits, rolls back,
/// stays idle longer than its timeout or drops its sender (client gone). Whatever way it ends,
/// no transaction stays open when this returns.
fn serve_session(conn: &Connection, tx_lock: TxLock, start: SessionStart) {
    if let Err(e) = conn.execute_batch(tx_lock.begin_sql()) {
        let _ = start.ready.send(Err(e.into()));
        return;
    }
    if start.ready.send(Ok(())).is_err() {
        rollback(conn);
        return;
    }
    loop {
        let cmd = match start.idle_timeout {
            Some(t) => start.cmds.recv_timeout(t),
            None => start
                .cmds
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
        };
        let cmd = match cmd {
            Ok(cmd) => cmd,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                start.timed_out.store(true, Ordering::Release);
                tracing::warn!(
                    timeout = ?start.idle_timeout,
                    "rolled back a session idle in transaction while holding the writer"
                );
                rollback(conn);
                return;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                rollback(conn);
                return;
            }
        };
        match cmd {
            SessionCmd::Run { stmt, reply } => {
                let _ = reply.send(statement::run(conn, &stmt));
            }
            SessionCmd::Describe { sql, reply } => {
                let _ = reply.send(statement::describe(conn, &sql));
            }
            SessionCmd::Control { sql, reply } => {
                let _ = reply.send(
                    conn.execute_batch(&sql)
                        .map_err(|source| DbError::Run { source }),
                );
            }
            SessionCmd::Commit { reply } => {
                let _ = reply.send(if conn.is_autocommit() {
                    Err(DbError::Aborted(
                        "SQLite rolled the transaction back".into(),
                    ))
                } else {
                    finish_transaction(conn)
                });
                return;
            }
            SessionCmd::Rollback { reply } => {
                rollback(conn);
                let _ = reply.send(Ok(()));
                return;
            }
        }
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. disk full): the session is over;
            // its next command finds the channel closed.
            tracing::warn!("SQLite rolled back a session's transaction");
            return;
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
