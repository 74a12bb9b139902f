//! Owns what the writer does for the replication consumer: applying replicated change sets in
//! stream order (`apply_group`), parking a message that cannot be applied (`quarantine`), and
//! replacing the database with a snapshot (`restore`).
//! Must not capture or publish: what is applied came from the log and is not sent back.
//! Invariant: the applied sequence moves only with what it stands for, in the same
//! transaction; replicated rows are effects (no triggers, no foreign-key actions: `apply_mode`).

use std::collections::HashSet;

use rusqlite::Connection;

use ha_follow::group::{self, GroupError, GroupTx};

use super::ApplyItem;
use super::conn::{WriteConn, rollback};
use crate::changeset::Seq;
use crate::changeset::apply::{self, ApplyStats};
use crate::changeset::meta;
use crate::db::DbError;
use crate::db::apply_mode::ApplyMode;
use crate::db::intercepted::{self, SAVEPOINT};

/// Copies the database file at `from` over the live database (one backup, committed at once),
/// then forgets what the writer cached about the old schema.
pub(super) fn restore(w: &mut WriteConn, from: &std::path::Path) -> Result<(), DbError> {
    let src = Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| DbError::Open {
        target: from.display().to_string(),
        source: e,
    })?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut w.conn)?;
        backup.step(-1)?;
    }
    w.conn.flush_prepared_statement_cache();
    if let Some(r) = &mut w.repl {
        r.tables.invalidate();
        r.apply_mode.invalidate();
        meta::ensure(&w.conn)?;
    }
    Ok(())
}

/// Applies replicated change sets in one transaction, in stream order (all at once; one by one,
/// each in a savepoint, after one failed or with an `after` hook). A failing one stops the group: it and the ones after it are answered with errors (the consumer
/// retries them in order).
pub(super) fn apply_group(w: &mut WriteConn, jobs: Vec<ApplyItem>) {
    if jobs.is_empty() {
        return;
    }
    let Some(r) = &mut w.repl else {
        for (_, _, reply) in jobs {
            let _ = reply.send(Err(DbError::Unsupported(
                "replication is not configured".into(),
            )));
        }
        return;
    };
    // Replicated rows are the effects of the origin's statements: no triggers, no FK actions.
    let mode = match ApplyMode::enter(&w.conn, &mut r.apply_mode) {
        Ok(m) => m,
        Err(e) => {
            for (_, _, reply) in jobs {
                let _ = reply.send(Err(DbError::Aborted(e.to_string())));
            }
            return;
        }
    };
    r.capture.pause(&mut w.conn);
    // Replicated rows are applied through the same group shell as ha-sync's (`ha_follow`); what
    // is the node's own: the writer's lock mode, the interceptor, the counters and the answers.
    let mut stats: Vec<ApplyStats> = Vec::with_capacity(jobs.len());
    let tables = &mut r.tables;
    let hooks = &r.hooks;
    let pruning = &mut r.pruning;
    let conn = &w.conn;
    // An `after` hook that ignores an error rolls back to the change set's savepoint.
    let batch = hooks.interceptor.as_ref().is_none_or(|i| !i.has_after());
    // While the group runs as one batch, the identities it claimed at once that no change set
    // has taken yet; `None` while change sets run one by one (each claims its own).
    let mut claimed: Option<HashSet<String>> = None;
    // Each change set's identity, made once (the batch claims them all, each checks its own).
    let txids: Vec<String> = jobs.iter().map(|(_, cs, _)| cs.txid()).collect();
    let out = group::apply_group(
        conn,
        &jobs,
        GroupTx {
            begin: w.tx_lock.begin_sql(),
            savepoint: SAVEPOINT,
            batch,
        },
        |(seq, cs, _), step| {
            if step.retry_starts {
                // The batch was rolled back: its results, claims and any DDL it ran are undone.
                tables.invalidate();
                claimed = None;
            } else if batch && step.index == 0 {
                let txs: Vec<(String, u64, i64)> = jobs
                    .iter()
                    .zip(&txids)
                    .map(|((s, c, _), t)| (t.clone(), s.0, c.timestamp_ns))
                    .collect();
                claimed = Some(meta::claim_txs(conn, &txs)?);
            }
            stats.truncate(step.index);
            // Our own commit coming back, or a message published again: already here.
            // (The identity is claimed first, in the group's transaction — in the change set's
            // savepoint one by one — so a failed apply takes it back.)
            let txid = &txids[step.index];
            let new = match &mut claimed {
                Some(c) => c.remove(txid),
                None => meta::claim_tx(conn, txid, seq.0, cs.timestamp_ns)?,
            };
            let s = if !new {
                ApplyStats::already_here()
            } else {
                match &hooks.interceptor {
                    Some(i) => intercepted::apply(conn, tables, i, *seq, cs, &hooks.subject)?,
                    None => apply::apply(conn, tables, seq.0, cs)?,
                }
            };
            stats.push(s);
            Ok::<(), DbError>(())
        },
        |done| {
            // Transaction identities older than the stream can deliver are forgotten now and
            // then; the applied sequence moves once, to the last change set that applied.
            pruning.applied(conn, done);
            meta::advance_applied_seq(conn, jobs[done - 1].0.0).map_err(DbError::from)
        },
    );
    mode.leave(&w.conn);
    if let Err(e) = r.capture.resume(&mut w.conn) {
        // Local writes would commit without being captured, never replicated: the writer
        // stops rather than go on (its callers then get `WriterGone`).
        tracing::error!(error = %e, "the capture hook cannot be installed: the writer stops");
        panic!("the capture hook cannot be installed: {e}");
    }
    r.capture.take();
    let mut error = out.error.map(|e| {
        r.tables.invalidate();
        match e {
            GroupError::Item(e) | GroupError::Bookkeeping(e) => e,
            GroupError::Sqlite(e) => DbError::from(e),
            GroupError::RolledBack => {
                DbError::Aborted("SQLite rolled the apply transaction back".into())
            }
        }
    });
    if out.done > 0
        && let Some(i) = &r.hooks.interceptor
    {
        let c = i.counters();
        for s in &stats[..out.done] {
            c.skipped.inc_by(s.script_skipped);
            c.rescued.inc_by(s.script_rescued);
        }
    }
    let why = error.as_ref().map(|e| e.to_string()).unwrap_or_default();
    let mut stats = stats.into_iter();
    for (i, (seq, _, reply)) in jobs.into_iter().enumerate() {
        let answer = if i < out.done {
            Ok(stats.next().unwrap_or_default())
        } else if i == out.done
            && let Some(e) = error.take()
        {
            Err(e)
        } else {
            Err(DbError::Aborted(format!(
                "message {seq} not applied: an earlier one of its group failed ({why})"
            )))
        };
        let _ = reply.send(answer);
    }
}

/// Records `seq` as quarantined and moves the applied sequence past it, in one transaction.
pub(super) fn quarantine(
    w: &mut WriteConn,
    seq: Seq,
    error: &str,
    attempts: u32,
    payload: &[u8],
) -> Result<(), DbError> {
    w.conn.execute_batch(w.tx_lock.begin_sql())?;
    let res = meta::quarantine(&w.conn, seq.0, error, attempts, payload)
        .and_then(|_| meta::set_applied_seq(&w.conn, seq.0));
    match res {
        Ok(()) => w.conn.execute_batch("COMMIT").map_err(|e| {
            rollback(&w.conn);
            e.into()
        }),
        Err(e) => {
            rollback(&w.conn);
            Err(e.into())
        }
    }
}
