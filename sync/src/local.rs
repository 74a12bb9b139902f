//! Owns the extension's own connection to the host's database file, and applying change sets on
//! it with the node's apply code (`ha_changeset::apply`): last writer wins per row by stream
//! sequence, DDL included, the position recorded in `_ha_meta` in the same transaction.
//! Must not touch the host's connection, and must not wait on a lock for long: a busy database
//! is an error the caller retries after a pause.
//! Invariant: after a commit, the stored position is the sequence of the last item of that
//! transaction, and every item up to it is in the database (applied, superseded or skipped).

use std::path::Path;
use std::time::Duration;

use ha_changeset::schema::TableCache;
use ha_changeset::{ChangeSet, apply, meta};
use rusqlite::{Connection, OpenFlags};

use crate::SyncError;

/// How long one statement waits for the host (or another process) to release a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many applied change sets between two prunings of `_ha_txids`.
const PRUNE_EVERY: usize = 10_000;

/// One message, in stream order.
#[derive(Debug)]
pub(crate) enum Item {
    /// A change set (for a split one, `seq` is its last part's).
    Apply { seq: u64, cs: ChangeSet },
    /// A message that is not a change set: only the position moves past it.
    Skip { seq: u64 },
}

impl Item {
    pub(crate) fn seq(&self) -> u64 {
        match self {
            Item::Apply { seq, .. } | Item::Skip { seq } => *seq,
        }
    }
}

/// What `Local::apply` did: the first `done` items are committed; `error` stopped the rest.
#[derive(Debug)]
pub(crate) struct Applied {
    pub done: usize,
    pub error: Option<SyncError>,
}

pub(crate) struct Local {
    conn: Connection,
    tables: TableCache,
    /// The `_ha_meta` key of this subject's position.
    key: String,
    /// Transaction identities older than this are forgotten (the stream cannot deliver them).
    dedupe_window: Duration,
    applied_since_prune: usize,
}

impl Local {
    /// Opens `path` through the host's SQLite and creates the bookkeeping tables if needed.
    pub(crate) fn open(path: &Path, subject: &str) -> Result<Local, SyncError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SyncError::Local(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // This connection only applies replicated changes, which are the *effects* of the
        // origin's statements (the rows its triggers wrote are in the change set): the host's
        // triggers must not run again on them.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
            false,
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        meta::ensure(&conn)?;
        Ok(Local {
            conn,
            tables: TableCache::default(),
            key: meta::subject_seq_key(subject),
            dedupe_window: Duration::from_secs(30 * 24 * 3600),
            applied_since_prune: 0,
        })
    }

    /// The last stream sequence of this subject in the database (0: none yet).
    pub(crate) fn position(&self) -> Result<u64, SyncError> {
        Ok(meta::seq_of(&self.conn, &self.key)?)
    }

    /// Sets how long transaction identities are remembered: as long as the stream keeps
    /// messages (`max_age`, 0 = forever), at least an hour, 30 days when unlimited.
    pub(crate) fn set_dedupe_window(&mut self, max_age: Duration) {
        self.dedupe_window = if max_age.is_zero() {
            Duration::from_secs(30 * 24 * 3600)
        } else {
            max_age.max(Duration::from_secs(3600))
        };
    }

    /// Applies `items` in order in one transaction, each in a savepoint, stopping at the first
    /// that fails; what came before it is committed.
    pub(crate) fn apply(&mut self, items: &[Item]) -> Applied {
        if items.is_empty() {
            return Applied {
                done: 0,
                error: None,
            };
        }
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return Applied {
                done: 0,
                error: Some(e.into()),
            };
        }
        let _ = self.conn.execute_batch("PRAGMA defer_foreign_keys = ON");
        let mut done = 0;
        let mut error = None;
        for item in items {
            match self.apply_one(item) {
                Ok(()) => done += 1,
                Err(e) => {
                    self.tables.invalidate();
                    error = Some(e);
                    break;
                }
            }
        }
        self.applied_since_prune += done;
        if self.applied_since_prune >= PRUNE_EVERY && !self.conn.is_autocommit() {
            self.applied_since_prune = 0;
            let window = i64::try_from(self.dedupe_window.as_nanos()).unwrap_or(i64::MAX);
            if let Err(e) = meta::prune_txids(&self.conn, now_ns().saturating_sub(window)) {
                tracing::warn!(error = %e, "pruning _ha_txids failed");
            }
        }
        let committed = if self.conn.is_autocommit() {
            Err(SyncError::Local(
                "SQLite rolled the apply transaction back".into(),
            ))
        } else if done == 0 {
            let _ = self.conn.execute_batch("ROLLBACK");
            Ok(())
        } else {
            self.conn.execute_batch("COMMIT").map_err(|e| {
                self.rollback();
                SyncError::from(e)
            })
        };
        match committed {
            Ok(()) => Applied { done, error },
            Err(e) => {
                self.tables.invalidate();
                Applied {
                    done: 0,
                    error: Some(e),
                }
            }
        }
    }

    fn apply_one(&mut self, item: &Item) -> Result<(), SyncError> {
        self.conn.execute_batch("SAVEPOINT ha_sync_apply")?;
        let res = (|| -> Result<(), SyncError> {
            if let Item::Apply { seq, cs } = item {
                let stats = apply::apply_once(&self.conn, &mut self.tables, *seq, cs)?;
                if stats.collisions > 0 {
                    tracing::warn!(
                        seq,
                        collisions = stats.collisions,
                        "two inserts of the same key; the later one wins"
                    );
                }
            }
            meta::set_seq_of(&self.conn, &self.key, item.seq())?;
            Ok(())
        })();
        if res.is_err() && !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK TO ha_sync_apply")?;
        }
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("RELEASE ha_sync_apply")?;
        }
        res
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %e, "rollback failed");
        }
    }
}

/// Whether an error only means that someone else holds the database right now.
pub(crate) fn is_busy(e: &SyncError) -> bool {
    let sqlite = match e {
        SyncError::Sqlite(e) => Some(e),
        SyncError::Apply(e) => e.sqlite(),
        _ => None,
    };
    matches!(
        sqlite.and_then(rusqlite::Error::sqlite_error_code),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
