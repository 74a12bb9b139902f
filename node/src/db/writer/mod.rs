//! Owns the single write connection and runs every write on its own thread, in arrival order.
//! Must not block async workers: callers send a job over a bounded channel and await a oneshot.
//! Invariant: jobs waiting together are committed together (group commit), each inside its own
//! SAVEPOINT, so one failing job never undoes or fails another. An interactive session (pg
//! BEGIN…COMMIT) takes the writer whole: the open group commits first, then only that session's
//! commands run until it commits, rolls back, idles too long or goes away. Both paths commit
//! through `finish_transaction`, the one place where a transaction becomes durable.
//! With replication, every statement's row changes are captured (see `capture`), and the commit
//! publishes them through the `ChangeSink` before SQLite commits: nothing is committed that is
//! not in the log. Replicated change sets are applied here too, in stream order (`replicated`).
//! See `exec::Executor` and `exec::Session` for the callers.
//!
//! ## Layout
//! - `mod.rs` (here): the jobs the writer thread takes and the loop that groups them;
//! - `handle`: `WriterHandle` and `WriterSession`, the async side that sends jobs and commands;
//! - `conn`: `WriteConn`, one statement, a session's savepoints (by name) and THE commit
//!   (`finish_transaction`, which answers with the stream sequence it was published at);
//! - `publish`: what a statement leaves for replication (DDL text, captured rows) and publishing
//!   it at commit;
//! - `group`: group commit of batches, each in its savepoint;
//! - `gather`: how long a replicated writer waits for the clients it just answered;
//! - `replicated`: applying replicated change sets, quarantine, restore;
//! - `session`: serving an interactive session's typed commands.

mod conn;
mod gather;
mod group;
mod handle;
mod publish;
mod replicated;
mod session;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::DbError;
use super::deadline::Limits;
use super::dsn::TxLock;
use super::sink::ReplicationHooks;
use super::statement::{Stmt, StmtResult};
use crate::changeset::apply::ApplyStats;
use crate::changeset::{ChangeSet, Seq};
use conn::WriteConn;
use group::commit_group;
use handle::SessionStart;
use replicated::{apply_group, quarantine, restore};
use session::serve_session;

pub(crate) use handle::{SessionCmd, WriterHandle, WriterSession};

/// How many jobs one SQLite transaction may carry at most.
const MAX_GROUP: usize = 256;

#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub tx_lock: TxLock,
    /// Checkpoint the WAL into the main file when the writer stops.
    pub checkpoint_on_close: bool,
    /// Capture and publish every transaction (None: a standalone node).
    pub replication: Option<ReplicationHooks>,
}

/// What a batch answers: its results and, once its transaction committed, where it is in the
/// replication log.
#[derive(Debug)]
pub struct Executed {
    /// One result per statement, in order.
    pub results: Vec<StmtResult>,
    /// The stream sequence the transaction was published at: `None` on a standalone node, for a
    /// batch that only read or changed nothing, or one whose changes the interceptor kept local.
    pub commit_seq: Option<Seq>,
    /// The commit also moved the node's applied position to `commit_seq` (it was published
    /// right after everything the node had applied).
    pub applied: bool,
}

type Reply<T> = oneshot::Sender<Result<T, DbError>>;
/// One replicated change set (at stream sequence `Seq`) and where its outcome goes.
type ApplyItem = (Seq, Arc<ChangeSet>, Reply<ApplyStats>);
/// A batch waiting in a group, with where its answer goes.
type Pending = (Arc<Vec<Stmt>>, Limits, Reply<Executed>);
/// A batch of a group that ran in its savepoint, waiting for the group's commit.
type Ran = (Arc<Vec<Stmt>>, Limits, Reply<Executed>, Vec<StmtResult>);

/// What the writer thread is asked to do; `run` takes them in arrival order.
enum Job {
    Batch {
        stmts: Arc<Vec<Stmt>>,
        /// The client's bounds (time, cancel, result size), enforced while the job runs.
        limits: Limits,
        reply: Reply<Executed>,
    },
    /// An interactive session takes the writer (see `session::serve_session`).
    Session(SessionStart),
    /// Apply replicated change sets, in this order, in one transaction if they all apply.
    Apply(Vec<ApplyItem>),
    /// Give up on a message that cannot be applied: record it and move past it.
    Quarantine {
        seq: Seq,
        error: String,
        attempts: u32,
        payload: Vec<u8>,
        reply: Reply<()>,
    },
    /// Replace the whole database with the SQLite file at `from` (snapshot recovery), with the
    /// online backup API into the write connection: readers see the new content once it is
    /// complete, never a mix.
    Restore { from: PathBuf, reply: Reply<()> },
    /// Set (`Some`) or remove (`None`) one key of the node's own `_ha_meta`, outside any
    /// client's judgement (clients may read the bookkeeping, not change it).
    SetMeta {
        key: String,
        value: Option<String>,
        reply: Reply<()>,
    },
    /// Finish what is queued, then stop.
    Shutdown,
}

/// One key of `_ha_meta`, in a transaction of its own.
fn set_meta(conn: &rusqlite::Connection, key: &str, value: Option<&str>) -> Result<(), DbError> {
    Ok(match value {
        Some(v) => crate::changeset::meta::set_text(conn, key, v),
        None => crate::changeset::meta::remove(conn, key),
    }?)
}

fn run(mut w: WriteConn, mut rx: mpsc::Receiver<Job>, checkpoint_on_close: bool) {
    let mut gather = gather::Gather::default();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        gather.fill(&mut rx, &mut group);
        let started = std::time::Instant::now();
        let answered = group.iter().filter(|j| gather::is_batch(j)).count();
        let mut batches = Vec::with_capacity(group.len());
        let mut applies = Vec::new();
        for job in group {
            match job {
                Job::Batch {
                    stmts,
                    limits,
                    reply,
                } => {
                    if !applies.is_empty() {
                        apply_group(&mut w, std::mem::take(&mut applies));
                    }
                    batches.push((stmts, limits, reply))
                }
                Job::Apply(items) => {
                    // Local writes queued before a replicated change commit before it.
                    commit_group(&mut w, std::mem::take(&mut batches));
                    applies.extend(items);
                }
                Job::Quarantine {
                    seq,
                    error,
                    attempts,
                    payload,
                    reply,
                } => {
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    let _ = reply.send(quarantine(&mut w, seq, &error, attempts, &payload));
                }
                Job::Session(start) => {
                    // The jobs before the session commit first; the ones after it wait for it.
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    serve_session(&mut w, start);
                }
                Job::Restore { from, reply } => {
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    let _ = reply.send(restore(&mut w, &from));
                }
                Job::SetMeta { key, value, reply } => {
                    commit_group(&mut w, std::mem::take(&mut batches));
                    apply_group(&mut w, std::mem::take(&mut applies));
                    let _ = reply.send(set_meta(&w.conn, &key, value.as_deref()));
                }
                Job::Shutdown => rx.close(),
            }
        }
        commit_group(&mut w, batches);
        apply_group(&mut w, applies);
        // A replicated writer's clients wait for the publish: the ones answered now are
        // expected back (see `gather`).
        if w.repl.is_some() && answered > 0 {
            gather.answered(answered, rx.len(), started.elapsed());
        } else {
            gather.reset();
        }
    }
    if checkpoint_on_close {
        match w
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(0) => tracing::info!("WAL checkpointed"),
            Ok(busy) => tracing::warn!(busy, "WAL checkpoint could not finish"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    if let Err((_, e)) = w.conn.close() {
        tracing::warn!(error = %e, "closing the write connection failed");
    }
}
