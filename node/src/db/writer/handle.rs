//! Owns the async side of the writer: `WriterHandle`, through which every job reaches the
//! writer thread, and `WriterSession`, an interactive session's hold on it, with the typed
//! commands such a session sends (`SessionCmd`).
//! Must not touch SQLite: it only sends jobs and waits for their answers.
//! Invariant: every job gets exactly one answer, or its reply is dropped (`WriterGone`); a
//! dropped `WriterSession` rolls its transaction back.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::conn::WriteConn;
use super::{Executed, Job, Reply, WriterConfig};
use crate::changeset::apply::ApplyStats;
use crate::changeset::{ChangeSet, Seq};
use crate::db::deadline::Limits;
use crate::db::statement::{Described, Stmt, StmtResult};
use crate::db::{DbError, OpenSpec};

/// How long a batch with DDL that lost the race to the log is tried again (see `write`).
const DDL_RETRY_FOR: Duration = Duration::from_secs(2);
/// How many jobs may wait for the writer before senders wait too.
const QUEUE_DEPTH: usize = 4096;

/// An interactive session asking for the writer (see `session::serve_session`).
pub(super) struct SessionStart {
    pub(super) cmds: std_mpsc::Receiver<SessionCmd>,
    /// Answered once the session's transaction is open on the writer.
    pub(super) ready: Reply<()>,
    pub(super) idle_timeout: Option<Duration>,
    /// Set by the writer when it rolled the session back because it idled too long.
    pub(super) timed_out: Arc<AtomicBool>,
}

/// What a session that holds the writer asks of it.
pub(crate) enum SessionCmd {
    Run {
        stmt: Stmt,
        limits: Limits,
        reply: Reply<StmtResult>,
    },
    /// Compile `sql` inside the session's transaction (it may see tables the session created).
    Describe {
        sql: String,
        reply: Reply<Described>,
    },
    /// Opens a savepoint called `name` (PostgreSQL's folding already applied by the caller).
    Savepoint {
        name: String,
        reply: Reply<()>,
    },
    /// Releases the innermost savepoint called `name` and every one opened after it.
    Release {
        name: String,
        reply: Reply<()>,
    },
    /// Undoes everything since the savepoint called `name`, which stays open.
    RollbackTo {
        name: String,
        reply: Reply<()>,
    },
    /// Commits the session's transaction; the answer is the stream sequence it was published
    /// at, if it was.
    Commit {
        reply: Reply<Option<Seq>>,
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
        let w = WriteConn::open(spec, &config)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let checkpoint = config.checkpoint_on_close;
        let thread = std::thread::Builder::new()
            .name("ha-writer".into())
            .spawn(move || super::run(w, rx, checkpoint))?;
        Ok(WriterHandle {
            tx,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Runs a batch as one transaction. A batch with DDL that lost the race to the log (this
    /// node had not applied everything yet, typically its own previous commit) committed
    /// nothing: it runs again once the node has caught up, for up to `DDL_RETRY_FOR`.
    pub(crate) async fn write(
        &self,
        stmts: Arc<Vec<Stmt>>,
        limits: Limits,
    ) -> Result<Executed, DbError> {
        let deadline = std::time::Instant::now() + DDL_RETRY_FOR;
        let mut wait = Duration::from_millis(5);
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Job::Batch {
                    stmts: stmts.clone(),
                    limits: limits.clone(),
                    reply,
                })
                .await
                .map_err(|_| DbError::WriterGone)?;
            match rx.await.map_err(|_| DbError::WriterGone)? {
                Err(e)
                    if matches!(e.root(), DbError::Conflict(_))
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
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

    /// Applies replicated change sets in order, in one transaction (each in a savepoint); the
    /// first that fails stops the rest. One outcome per change set, once committed.
    pub(crate) async fn apply(
        &self,
        items: Vec<(Seq, Arc<ChangeSet>)>,
    ) -> Vec<Result<ApplyStats, DbError>> {
        let mut jobs = Vec::with_capacity(items.len());
        let mut answers = Vec::with_capacity(items.len());
        for (seq, cs) in items {
            let (reply, rx) = oneshot::channel();
            jobs.push((seq, cs, reply));
            answers.push(rx);
        }
        if self.tx.send(Job::Apply(jobs)).await.is_err() {
            return answers.iter().map(|_| Err(DbError::WriterGone)).collect();
        }
        let mut out = Vec::with_capacity(answers.len());
        for rx in answers {
            out.push(rx.await.unwrap_or(Err(DbError::WriterGone)));
        }
        out
    }

    /// Records a message that cannot be applied and moves the applied sequence past it.
    pub(crate) async fn quarantine(
        &self,
        seq: Seq,
        error: String,
        attempts: u32,
        payload: Vec<u8>,
    ) -> Result<(), DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Quarantine {
                seq,
                error,
                attempts,
                payload,
                reply,
            })
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Sets or removes one key of the node's `_ha_meta` (see `Job::SetMeta`).
    pub(crate) async fn set_meta(&self, key: String, value: Option<String>) -> Result<(), DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::SetMeta { key, value, reply })
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// Replaces the database's content with the SQLite file at `from` (see `Job::Restore`).
    pub(crate) async fn restore_from(&self, from: PathBuf) -> Result<(), DbError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Restore { from, reply })
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
