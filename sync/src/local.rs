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
use ha_follow::group::{self, GroupError, TxidPruning};
use rusqlite::{Connection, OpenFlags};

use crate::SyncError;

/// How long one statement waits for the host (or another process) to release a lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// When transaction identities are forgotten (the stream cannot deliver them any more).
    pruning: TxidPruning,
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
            pruning: TxidPruning::new(group::dedupe_window(Duration::ZERO)),
        })
    }

    /// The last stream sequence of this subject in the database (0: none yet).
    pub(crate) fn position(&self) -> Result<u64, SyncError> {
        Ok(meta::seq_of(&self.conn, &self.key)?)
    }

    /// Sets how long transaction identities are remembered: as long as the stream keeps
    /// messages (`max_age`, 0 = forever), at least an hour, 30 days when unlimited.
    pub(crate) fn set_dedupe_window(&mut self, max_age: Duration) {
        self.pruning.set_window(group::dedupe_window(max_age));
    }

    /// Applies `items` in order in one transaction, each in a savepoint, stopping at the first
    /// that fails; what came before it is committed.
    pub(crate) fn apply(&mut self, items: &[Item]) -> Applied {
        let Local {
            conn,
            tables,
            key,
            pruning,
        } = &mut *self;
        let out = group::apply_group(
            conn,
            items,
            group::GroupTx {
                begin: "BEGIN IMMEDIATE",
                savepoint: "ha_sync_apply",
                batch: true,
            },
            |item, step| {
                if step.retry_starts {
                    // The batch was rolled back, DDL it ran included.
                    tables.invalidate();
                }
                apply_one(conn, tables, key, item)
            },
            |done| {
                pruning.applied(conn, done);
                Ok(())
            },
        );
        let error = out.error.map(|e| {
            // A failed item or transaction may have left the cached table shapes stale.
            self.tables.invalidate();
            match e {
                GroupError::Item(e) | GroupError::Bookkeeping(e) => e,
                GroupError::Sqlite(e) => SyncError::from(e),
                GroupError::RolledBack => {
                    SyncError::Local("SQLite rolled the apply transaction back".into())
                }
            }
        });
        Applied {
            done: out.done,
            error,
        }
    }
}

/// One item (in the batch, or in its savepoint): the change set (last writer wins per row), then
/// the position.
fn apply_one(
    conn: &Connection,
    tables: &mut TableCache,
    key: &str,
    item: &Item,
) -> Result<(), SyncError> {
    if let Item::Apply { seq, cs } = item {
        let stats = apply::apply_once(conn, tables, *seq, cs)?;
        if stats.collisions > 0 {
            tracing::warn!(
                seq,
                collisions = stats.collisions,
                "two inserts of the same key; the later one wins"
            );
        }
    }
    meta::set_seq_of(conn, key, item.seq())?;
    Ok(())
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
