//! Owns serving an interactive session on the writer thread: BEGIN, then that session's typed
//! commands only (run, describe, savepoint, release, rollback-to, commit, rollback).
//! Must not parse SQL: savepoints arrive as names and `conn` builds their statements.
//! Invariant: whatever way the session ends (commit, rollback, idle timeout, client gone, SQLite
//! rolling back), no transaction stays open when `serve_session` returns.

use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use super::conn::WriteConn;
use super::handle::{SessionCmd, SessionStart};
use crate::db::DbError;
use crate::db::deadline;
use crate::db::statement;

/// Serves one interactive session: BEGIN, then its commands only, until it commits, rolls back,
/// stays idle longer than its timeout or drops its sender (client gone). Whatever way it ends,
/// no transaction stays open when this returns.
pub(super) fn serve_session(w: &mut WriteConn, start: SessionStart) {
    if let Err(e) = w.begin() {
        let _ = start.ready.send(Err(e));
        return;
    }
    if start.ready.send(Ok(())).is_err() {
        w.rollback();
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
                w.rollback();
                return;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                w.rollback();
                return;
            }
        };
        match cmd {
            SessionCmd::Run {
                stmt,
                limits,
                reply,
            } => {
                let _ = reply.send(deadline::scope(&limits, || w.run(&stmt)));
            }
            SessionCmd::Describe { sql, reply } => {
                let _ = reply.send(statement::describe(&w.conn, &sql));
            }
            SessionCmd::Savepoint { name, reply } => {
                let _ = reply.send(w.savepoint(&name));
            }
            SessionCmd::Release { name, reply } => {
                let _ = reply.send(w.release(&name));
            }
            SessionCmd::RollbackTo { name, reply } => {
                let _ = reply.send(w.rollback_to(&name));
            }
            SessionCmd::Commit { reply } => {
                let _ = reply.send(if w.conn.is_autocommit() {
                    w.rollback();
                    Err(DbError::Aborted(
                        "SQLite rolled the transaction back".into(),
                    ))
                } else {
                    w.finish_transaction().map(|p| p.seq)
                });
                return;
            }
            SessionCmd::Rollback { reply } => {
                w.rollback();
                let _ = reply.send(Ok(()));
                return;
            }
        }
        if w.conn.is_autocommit() {
            // SQLite rolled the whole transaction back (e.g. disk full): the session is over;
            // its next command finds the channel closed.
            tracing::warn!("SQLite rolled back a session's transaction");
            w.rollback();
            return;
        }
    }
}
