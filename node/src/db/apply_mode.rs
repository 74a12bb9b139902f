//! Owns how the write connection is set while it applies replicated change sets: triggers off
//! (`SQLITE_DBCONFIG_ENABLE_TRIGGER`) and foreign keys not enforced (`PRAGMA foreign_keys`,
//! which only changes outside a transaction). Replicated rows are the *effects* of the origin's
//! statements — the rows its triggers wrote and its cascades deleted are in the change set — so
//! running them again would write them twice, and enforcing keys would make the outcome depend
//! on the order concurrent writers reached the stream.
//! Must not be left on: local statements run with the user's triggers and foreign keys.
//! Invariant: `enter` before the apply transaction begins, `leave` after it ended.

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::DbError;

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
    pub(super) fn enter(conn: &Connection) -> Result<ApplyMode, DbError> {
        let has_triggers: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE type = 'trigger')",
            )?
            .query_row([], |r| r.get(0))?;
        let fk: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        let mode = ApplyMode {
            triggers_off: has_triggers,
            foreign_keys_off: fk,
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
