//! Owns what the writer does for the replication consumer: applying replicated change sets in
//! stream order (`apply_group`), parking a message that cannot be applied (`quarantine`), and
//! replacing the database with a snapshot (`restore`).
//! Must not capture or publish: what is applied came from the log and is not sent back.
//! Invariant: the applied sequence moves only with what it stands for, in the same
//! transaction; replicated rows are effects (no triggers, no foreign-key actions: `apply_mode`).

use rusqlite::Connection;

use super::conn::{WriteConn, rollback};
use super::publish::now_ns;
use super::{ApplyItem, Reply};
use crate::changeset::Seq;
use crate::changeset::apply::{self, ApplyStats};
use crate::changeset::meta;
use crate::db::DbError;
use crate::db::apply_mode::ApplyMode;
use crate::db::intercepted::{self, SAVEPOINT};

/// How many applied change sets between two prunings of `_ha_txids`.
const PRUNE_EVERY: usize = 10_000;

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

/// Applies replicated change sets in one transaction, each in a savepoint, in stream order. A
/// failing one stops the group: it and the ones after it are answered with errors (the consumer
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
    if let Err(e) = w.conn.execute_batch(w.tx_lock.begin_sql()) {
        mode.leave(&w.conn);
        for (_, _, reply) in jobs {
            let _ = reply.send(Err(DbError::Aborted(e.to_string())));
        }
        return;
    }
    r.capture.set_enabled(false);
    let _ = w.conn.execute_batch("PRAGMA defer_foreign_keys = ON");
    let mut done: Vec<(Reply<ApplyStats>, ApplyStats)> = Vec::new();
    let mut jobs = jobs.into_iter();
    let mut failure: Option<String> = None;
    let mut last_done: Option<Seq> = None;
    for (seq, cs, reply) in jobs.by_ref() {
        let result = (|| -> Result<ApplyStats, DbError> {
            w.conn
                .prepare_cached(&format!("SAVEPOINT {SAVEPOINT}"))?
                .execute([])?;
            let res = (|| {
                // Our own commit coming back, or a message published again: already here.
                let txid = cs.txid();
                let stats = if meta::tx_seen(&w.conn, &txid)? {
                    ApplyStats::default()
                } else {
                    let stats = match &r.hooks.interceptor {
                        Some(i) => intercepted::apply(
                            &w.conn,
                            &mut r.tables,
                            i,
                            seq,
                            &cs,
                            &r.hooks.subject,
                        )?,
                        None => apply::apply(&w.conn, &mut r.tables, seq.0, &cs)?,
                    };
                    meta::record_tx(&w.conn, &txid, seq.0, cs.timestamp_ns)?;
                    stats
                };
                Ok(stats)
            })();
            if res.is_err() && !w.conn.is_autocommit() {
                w.conn.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}"))?;
            }
            if !w.conn.is_autocommit() {
                w.conn
                    .prepare_cached(&format!("RELEASE {SAVEPOINT}"))?
                    .execute([])?;
            }
            res
        })();
        match result {
            Ok(stats) => {
                last_done = Some(seq);
                done.push((reply, stats))
            }
            Err(e) => {
                r.tables.invalidate();
                failure = Some(format!("message {seq} failed: {e}"));
                let _ = reply.send(Err(e));
                break;
            }
        }
    }
    // Transaction identities older than the stream can deliver are forgotten now and then.
    r.applied_since_prune += done.len();
    if r.applied_since_prune >= PRUNE_EVERY && !w.conn.is_autocommit() {
        r.applied_since_prune = 0;
        let window = r.hooks.dedupe_window.as_nanos().min(i64::MAX as u128) as i64;
        if let Err(e) = meta::prune_txids(&w.conn, now_ns().saturating_sub(window)) {
            tracing::warn!(error = %e, "pruning _ha_txids failed");
        }
    }
    for (_, _, reply) in jobs {
        let _ = reply.send(Err(DbError::Aborted(failure.clone().unwrap_or_default())));
    }
    // The applied sequence moves once, to the last change set of the group that applied.
    let moved = match last_done {
        Some(seq) if !w.conn.is_autocommit() => meta::set_applied_seq(&w.conn, seq.0),
        _ => Ok(()),
    };
    let committed = if w.conn.is_autocommit() {
        Err(DbError::Aborted(
            "SQLite rolled the apply transaction back".into(),
        ))
    } else if let Err(e) = moved {
        rollback(&w.conn);
        Err(DbError::from(e))
    } else {
        w.conn.execute_batch("COMMIT").map_err(|e| {
            rollback(&w.conn);
            DbError::from(e)
        })
    };
    mode.leave(&w.conn);
    r.capture.set_enabled(true);
    r.capture.take();
    if committed.is_ok()
        && let Some(i) = &r.hooks.interceptor
    {
        let c = i.counters();
        for (_, stats) in &done {
            c.skipped.inc_by(stats.script_skipped);
            c.rescued.inc_by(stats.script_rescued);
        }
    }
    for (reply, stats) in done {
        let _ = reply.send(
            committed
                .as_ref()
                .map(|_| stats)
                .map_err(|e| DbError::Aborted(e.to_string())),
        );
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
