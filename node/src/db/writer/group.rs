//! Owns group commit: the write batches waiting together run in one SQLite transaction, each
//! in its own SAVEPOINT, and every caller is answered once the group committed.
//! Must not publish or commit itself: `conn::WriteConn::finish_transaction` does.
//! Invariant: one failing batch never undoes or fails another; when SQLite rolls the whole
//! transaction back, every batch of it is told (or runs again, when only one was stopped).

use std::collections::VecDeque;

use rusqlite::Connection;

use super::conn::WriteConn;
use super::{Executed, Pending, Ran};
use crate::changeset::{ddl, sql};
use crate::db::DbError;
use crate::db::deadline;
use crate::db::statement::{self, Stmt, StmtResult};

/// Whether a batch holds replicated DDL (see `commit_group`).
fn changes_schema((stmts, _, _): &Pending) -> bool {
    stmts
        .iter()
        .any(|s| matches!(ddl::classify(&s.sql), Ok(Some(d)) if !d.is_local_only()))
}

/// Runs the batches in one transaction, each in a savepoint, and answers every caller.
pub(super) fn commit_group(w: &mut WriteConn, batches: Vec<Pending>) {
    if batches.is_empty() {
        return;
    }
    // A batch that changes the schema is published only right after the node's applied
    // position, and is refused (409 / 40001) when another node's change came first: it commits
    // in a transaction of its own, so that losing that race never refuses the batches it would
    // have shared a group with.
    if w.repl.is_some() && batches.len() > 1 && batches.iter().any(changes_schema) {
        let (schema, rest): (Vec<_>, Vec<_>) = batches.into_iter().partition(changes_schema);
        commit_group(w, rest);
        for b in schema {
            commit_group(w, vec![b]);
        }
        return;
    }
    // VACUUM cannot run inside a transaction; alone in its request it runs on its own.
    let (solo, batches): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .partition(|(s, _, _)| s.len() == 1 && sql::leading_keyword(&s[0].sql) == "VACUUM");
    for (stmts, limits, reply) in solo {
        let refused = match w.repl {
            Some(_) => vacuum_refusal(&w.conn, &stmts[0].sql),
            None => Ok(()),
        };
        let r =
            refused.and_then(|_| deadline::scope(&limits, || statement::run(&w.conn, &stmts[0])));
        let _ = reply.send(r.map(|r| Executed {
            results: vec![r],
            commit_seq: None,
            applied: false,
        }));
    }
    let mut pending: Vec<Ran> = Vec::new();
    let mut open = false;
    let mut queue: VecDeque<Pending> = batches.into();
    while let Some((stmts, limits, reply)) = queue.pop_front() {
        if !open {
            if let Err(e) = w.begin() {
                let _ = reply.send(Err(e));
                continue;
            }
            open = true;
        }
        match deadline::scope(&limits, || run_in_savepoint(w, &stmts)) {
            Ok(results) => pending.push((stmts, limits, reply, results)),
            Err(e) => {
                if w.conn.is_autocommit() && matches!(e.root(), DbError::Stopped(_)) {
                    // Interrupting a write (its deadline, its client's cancel) makes SQLite
                    // roll back the whole transaction, but only this job is over: the jobs
                    // before it run again, first, in a new transaction.
                    w.rollback();
                    for (s, l, r, _) in pending.drain(..).rev() {
                        queue.push_front((s, l, r));
                    }
                    open = false;
                } else if w.conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (disk full, I/O error, …): the
                    // jobs before this one are lost with it and must be told.
                    w.rollback();
                    let why = e.to_string();
                    for (_, _, r, _) in pending.drain(..) {
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
    match w.finish_transaction() {
        Ok(published) => {
            for (_, _, r, results) in pending {
                let _ = r.send(Ok(Executed {
                    results,
                    commit_seq: published.seq,
                    applied: published.caught_up,
                }));
            }
        }
        // The interceptor's publish hook saw the change set of every job in the group and
        // refused it: the refusal may be about one job only. Each job runs again in its own
        // transaction (the group was rolled back), so none fails for another's changes.
        Err(e)
            if matches!(e.root(), DbError::Interceptor(_) | DbError::Conflict(_))
                && pending.len() > 1 =>
        {
            tracing::debug!(
                jobs = pending.len(),
                "publish hook refused a group; committing its jobs one by one"
            );
            for (stmts, l, r, _) in pending {
                commit_group(w, vec![(stmts, l, r)]);
            }
        }
        Err(e) => {
            for (_, _, r, _) in pending {
                let _ = r.send(Err(e.clone_for_group()));
            }
        }
    }
}

/// VACUUM renumbers the rowids of tables without a declared primary key, and rowids are how
/// replication knows those rows on every node: refused while such a table exists (VACUUM INTO
/// writes a copy and changes nothing here).
fn vacuum_refusal(conn: &Connection, sql: &str) -> Result<(), DbError> {
    // VACUUM [schema] INTO file: read as tokens, so comments and a schema name don't hide it.
    if sql::tokens(sql).any(|t| t.is_kw("INTO")) {
        return Ok(());
    }
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM main.sqlite_schema s WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_ha\\_%' ESCAPE '\\' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' \
             AND NOT EXISTS (SELECT 1 FROM pragma_table_info(s.name) WHERE pk > 0) \
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(());
    }
    Err(DbError::Unsupported(format!(
        "VACUUM is refused on a replicated node: it renumbers the rowids of tables without a PRIMARY KEY ({}), \
         and replication identifies their rows by rowid, so later changes would hit other rows on other nodes; \
         give those tables a PRIMARY KEY, or use VACUUM INTO to write a compacted copy",
        tables.join(", ")
    )))
}

/// Runs one batch in the savepoint `job`; a failing statement undoes the batch, not the group.
fn run_in_savepoint(w: &mut WriteConn, stmts: &[Stmt]) -> Result<Vec<StmtResult>, DbError> {
    let mark = w.repl.as_ref().map(|r| r.capture.mark());
    w.conn.execute_batch("SAVEPOINT job")?;
    let mut out = Vec::with_capacity(stmts.len());
    let mut failed = None;
    for (i, s) in stmts.iter().enumerate() {
        match w.run(s) {
            Ok(r) => out.push(r),
            Err(e) => {
                failed = Some(at_statement(e, i, stmts.len()));
                break;
            }
        }
    }
    if failed.is_some() {
        if !w.conn.is_autocommit() {
            w.conn.execute_batch("ROLLBACK TO job")?;
        }
        if let (Some(r), Some(m)) = (&w.repl, mark) {
            r.capture.truncate(m);
        }
    }
    if !w.conn.is_autocommit() {
        w.conn.execute_batch("RELEASE job")?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
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
