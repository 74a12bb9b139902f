//! Owns the write connection (`WriteConn`): opening it, running one statement with its changes
//! captured, a session's savepoints, and THE commit (`finish_transaction`), where a transaction
//! is published and becomes durable.
//! Must not decide grouping or ordering: `group`, `session` and `replicated` call it.
//! Invariant: a statement that fails leaves nothing captured; a rollback leaves nothing
//! captured and no savepoint recorded.

use rusqlite::Connection;

use super::WriterConfig;
use super::publish::{Published, Replicating};
use crate::changeset::meta;
use crate::changeset::schema::{TableCache, quote_ident};
use crate::db::apply_mode::ApplyModeCache;
use crate::db::capture::Capture;
use crate::db::dsn::TxLock;
use crate::db::statement::{self, Stmt, StmtResult};
use crate::db::{DbError, OpenSpec};

/// The write connection and, with replication, what captures and publishes its changes.
pub(super) struct WriteConn {
    pub(super) conn: Connection,
    pub(super) tx_lock: TxLock,
    pub(super) repl: Option<Replicating>,
}

impl WriteConn {
    /// Opens the write connection; with replication, creates the `_ha_*` tables and installs
    /// the capture hook.
    pub(super) fn open(spec: &OpenSpec, config: &WriterConfig) -> Result<WriteConn, DbError> {
        let mut conn = spec.open_writer()?;
        let repl = match config.replication.clone() {
            Some(hooks) => {
                meta::ensure(&conn)?;
                Some(Replicating {
                    capture: Capture::install(&mut conn)?,
                    tables: TableCache::default(),
                    pruning: ha_follow::group::TxidPruning::new(hooks.dedupe_window),
                    hooks,
                    apply_mode: ApplyModeCache::default(),
                    savepoints: Vec::new(),
                })
            }
            None => None,
        };
        Ok(WriteConn {
            conn,
            tx_lock: config.tx_lock,
            repl,
        })
    }

    pub(super) fn begin(&mut self) -> Result<(), DbError> {
        self.conn.execute_batch(self.tx_lock.begin_sql())?;
        Ok(())
    }

    /// Runs one statement; with replication, captures its changes (and its DDL text), or drops
    /// them if it fails.
    pub(super) fn run(&mut self, stmt: &Stmt) -> Result<StmtResult, DbError> {
        let Some(r) = &mut self.repl else {
            return statement::run(&self.conn, stmt);
        };
        let mark = r.capture.mark();
        let result = statement::run(&self.conn, stmt).and_then(|res| {
            flush_virtual_tables(&self.conn, &mut r.tables)?;
            r.capture.resolve_pending(&self.conn, &mut r.tables)?;
            Ok(res)
        });
        match result {
            Ok(res) => {
                if let Err(e) = r.after_statement(&self.conn, &stmt.sql, mark) {
                    r.capture.truncate(mark);
                    return Err(e);
                }
                Ok(res)
            }
            Err(e) => {
                r.capture.truncate(mark);
                Err(e)
            }
        }
    }

    /// Opens a session's savepoint `name`.
    pub(super) fn savepoint(&mut self, name: &str) -> Result<(), DbError> {
        self.control(&format!("SAVEPOINT {}", quote_ident(name)))?;
        if let Some(r) = &mut self.repl {
            r.savepoints.push((name.to_string(), r.capture.mark()));
        }
        Ok(())
    }

    /// Releases a session's savepoint `name` and the ones opened after it.
    pub(super) fn release(&mut self, name: &str) -> Result<(), DbError> {
        self.control(&format!("RELEASE {}", quote_ident(name)))?;
        if let Some(r) = &mut self.repl
            && let Some(i) = r.savepoint_index(name)
        {
            r.savepoints.truncate(i);
        }
        Ok(())
    }

    /// Rolls a session back to its savepoint `name`, which stays open, and drops what was
    /// captured after it.
    pub(super) fn rollback_to(&mut self, name: &str) -> Result<(), DbError> {
        self.control(&format!("ROLLBACK TO {}", quote_ident(name)))?;
        if let Some(r) = &mut self.repl
            && let Some(i) = r.savepoint_index(name)
        {
            let mark = r.savepoints[i].1;
            r.savepoints.truncate(i + 1);
            r.capture.truncate(mark);
        }
        Ok(())
    }

    fn control(&self, sql: &str) -> Result<(), DbError> {
        self.conn
            .execute_batch(sql)
            .map_err(|source| DbError::Run { source })
    }

    /// Makes the open transaction durable, or rolls it back and says why. THE commit path: group
    /// commit and interactive sessions both end here. With replication the captured change set
    /// is published first and only an acknowledged one commits; the sequence it got becomes
    /// the version of every row it wrote.
    pub(super) fn finish_transaction(&mut self) -> Result<Published, DbError> {
        let mut published = Published::default();
        if let Some(r) = &mut self.repl {
            r.savepoints.clear();
            let changes = r.take_changes();
            if !changes.is_empty() {
                match r.publish(&self.conn, changes) {
                    Ok(p) => published = p,
                    Err(e) => {
                        rollback(&self.conn);
                        return Err(e);
                    }
                }
            }
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                if let Some(i) = self
                    .repl
                    .as_ref()
                    .and_then(|r| r.hooks.interceptor.as_ref())
                    && published.kept_local > 0
                {
                    let c = i.counters();
                    c.unpublished_changes.inc_by(published.kept_local as u64);
                    if published.seq.is_none() {
                        c.unpublished_sets.inc();
                    }
                }
                Ok(published)
            }
            Err(e) => {
                // If it was published, the consumer applies it from the log later: the log
                // stays the truth.
                rollback(&self.conn);
                Err(e.into())
            }
        }
    }

    pub(super) fn rollback(&mut self) {
        rollback(&self.conn);
        if let Some(r) = &mut self.repl {
            r.capture.take();
            r.savepoints.clear();
        }
    }
}

impl Replicating {
    /// The innermost open savepoint called `name` (SQLite compares the names without case).
    fn savepoint_index(&self, name: &str) -> Option<usize> {
        self.savepoints
            .iter()
            .rposition(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// Makes virtual tables write what they hold in memory to their shadow tables now, inside the
/// statement, so that the hook captures it. FTS5 keeps new terms in memory until the commit
/// (xSync), which would be after the change set is published; opening a savepoint makes it
/// flush (xSavepoint). Costs nothing on a schema without virtual tables.
fn flush_virtual_tables(conn: &Connection, tables: &mut TableCache) -> Result<(), DbError> {
    if conn.is_autocommit() || !tables.has_virtual_tables(conn)? {
        return Ok(());
    }
    conn.execute_batch("SAVEPOINT _ha_flush; RELEASE _ha_flush")?;
    Ok(())
}

/// Rolls back the open transaction, if SQLite has not already.
pub(super) fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "rollback failed");
    }
}
