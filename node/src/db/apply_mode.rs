//! Owns how the write connection is set while it applies replicated change sets: triggers off
//! (`SQLITE_DBCONFIG_ENABLE_TRIGGER`) and foreign keys not enforced (`PRAGMA foreign_keys`,
//! which only changes outside a transaction). Replicated rows are the *effects* of the origin's
//! statements — the rows its triggers wrote and its cascades deleted are in the change set — so
//! running them again would write them twice, and enforcing keys would make the outcome depend
//! on the order concurrent writers reached the stream.
//! Must not be left on: local statements run with the user's triggers and foreign keys.
//! Invariant: `enter` before the apply transaction begins, `leave` after it ended.
//! What `enter` needs to know is cached (`ApplyModeCache`): whether the schema has a trigger,
//! keyed by `PRAGMA schema_version` (every schema change bumps it), and whether foreign keys are
//! on, which only the DSN sets when the connection opens (clients may not set PRAGMAs, see
//! `authorizer`) and `leave` restores.

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::DbError;

/// What `enter` learnt about the write connection, so that applying a change set costs no
/// schema scan while the schema stays the same.
#[derive(Debug, Default)]
pub(super) struct ApplyModeCache {
    /// `(schema_version, whether sqlite_schema holds a trigger)` as last read.
    triggers: Option<(i64, bool)>,
    /// Whether foreign keys are enforced outside apply transactions, once read.
    foreign_keys: Option<bool>,
}

impl ApplyModeCache {
    /// Forgets everything (the database was replaced by a restore).
    pub(super) fn invalidate(&mut self) {
        *self = ApplyModeCache::default();
    }

    fn has_triggers(&mut self, conn: &Connection) -> Result<bool, DbError> {
        let version: i64 = conn
            .prepare_cached("PRAGMA main.schema_version")?
            .query_row([], |r| r.get(0))?;
        if let Some((v, has)) = self.triggers
            && v == version
        {
            return Ok(has);
        }
        let has: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE type = 'trigger')",
            )?
            .query_row([], |r| r.get(0))?;
        self.triggers = Some((version, has));
        Ok(has)
    }

    fn foreign_keys(&mut self, conn: &Connection) -> Result<bool, DbError> {
        if let Some(on) = self.foreign_keys {
            return Ok(on);
        }
        let on: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        self.foreign_keys = Some(on);
        Ok(on)
    }
}

/// What `enter` changed, to be undone by `leave`.
#[must_use]
pub(super) struct ApplyMode {
    triggers_off: bool,
    foreign_keys_off: bool,
}

impl ApplyMode {
    /// Turns triggers and foreign-key enforcement off for the apply transaction about to begin.
    /// Changing either recompiles prepared statements, so each is only touched when it matters:
    /// triggers when the schema has one, foreign keys when they are on.
    pub(super) fn enter(
        conn: &Connection,
        cache: &mut ApplyModeCache,
    ) -> Result<ApplyMode, DbError> {
        let mode = ApplyMode {
            triggers_off: cache.has_triggers(conn)?,
            foreign_keys_off: cache.foreign_keys(conn)?,
        };
        if mode.foreign_keys_off {
            conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        }
        if mode.triggers_off {
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
        }
        Ok(mode)
    }

    /// Back to the user's settings (the transaction has ended).
    pub(super) fn leave(self, conn: &Connection) {
        if self.triggers_off
            && let Err(e) = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
        {
            tracing::error!(error = %e, "could not turn triggers back on after applying");
        }
        if self.foreign_keys_off
            && let Err(e) = conn.execute_batch("PRAGMA foreign_keys = ON")
        {
            tracing::error!(error = %e, "could not turn foreign keys back on after applying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers_enabled(conn: &Connection) -> bool {
        conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
            .unwrap()
    }

    #[test]
    fn a_trigger_created_after_the_first_apply_is_still_turned_off() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON; CREATE TABLE t(a)")
            .unwrap();
        let mut cache = ApplyModeCache::default();
        let mode = ApplyMode::enter(&conn, &mut cache).unwrap();
        assert!(!mode.triggers_off, "no trigger yet");
        assert!(mode.foreign_keys_off);
        mode.leave(&conn);
        conn.execute_batch("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END")
            .unwrap();
        let mode = ApplyMode::enter(&conn, &mut cache).unwrap();
        assert!(mode.triggers_off, "the cache must follow schema_version");
        assert!(!triggers_enabled(&conn));
        let fk: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(!fk, "foreign keys off while applying");
        mode.leave(&conn);
        assert!(triggers_enabled(&conn));
        let fk: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(fk, "foreign keys back on after applying");
    }
}
