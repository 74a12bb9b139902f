//! Owns checks on SQLite database *files* that are not the live database: a downloaded snapshot
//! or backup before it is installed, and the local file before a restore decides anything.
//! Must not touch the live database's connections; `writer` restores into those.
//! Invariant: every check opens the file read-only (except `stamp_applied_seq`, which writes
//! only to a private temporary copy), so inspecting can never damage what it inspects.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::DbError;
use crate::changeset::meta;

/// Why a file is not a usable database copy.
#[derive(Debug, thiserror::Error)]
pub enum FileCheckError {
    #[error("not an SQLite database ({0})")]
    NotSqlite(String),
    #[error("PRAGMA integrity_check failed: {0}")]
    Integrity(String),
}

fn open_ro(path: &Path) -> Result<Connection, rusqlite::Error> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// Opens `path` read-only, runs `PRAGMA integrity_check` and returns the applied sequence
/// recorded inside (`_ha_meta.applied_seq`, 0 when the file has no `_ha_meta`).
pub fn verify(path: &Path) -> Result<u64, FileCheckError> {
    let conn = open_ro(path).map_err(|e| FileCheckError::NotSqlite(e.to_string()))?;
    let verdict: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect());
    match verdict {
        Ok(v) if v.len() == 1 && v[0] == "ok" => {}
        Ok(v) => return Err(FileCheckError::Integrity(v.join("; "))),
        Err(e) => return Err(FileCheckError::NotSqlite(e.to_string())),
    }
    read_applied_seq(&conn).map_err(|e| FileCheckError::NotSqlite(e.to_string()))
}

/// The applied sequence of the database file at `path` (read-only; 0 when the file or its
/// `_ha_meta` does not exist).
pub fn applied_seq_of(path: &Path) -> Result<u64, DbError> {
    if !path.exists() {
        return Ok(0);
    }
    let conn = open_ro(path).map_err(|e| DbError::Open {
        target: path.display().to_string(),
        source: e,
    })?;
    read_applied_seq(&conn)
}

/// The applied sequence recorded in the database `conn` has open (0 without `_ha_meta`).
pub(crate) fn read_applied_seq(conn: &Connection) -> Result<u64, DbError> {
    let has_meta: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_ha_meta'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if has_meta.is_none() {
        return Ok(0);
    }
    Ok(meta::applied_seq(conn)?)
}

/// Records `seq` as the applied sequence of the (private, temporary) copy at `path`: for a
/// snapshot made by the Go original, which keeps the sequence only in the object header.
pub fn stamp_applied_seq(path: &Path, seq: u64) -> Result<(), DbError> {
    let conn = Connection::open(path)?;
    meta::ensure(&conn)?;
    meta::set_applied_seq(&conn, seq)?;
    conn.close().map_err(|(_, e)| DbError::Sqlite(e))
}

/// Switches a (private) database file to a rollback journal, so a copy of it can be loaded
/// into memory (memdb cannot keep a WAL).
pub fn set_rollback_journal(conn: &Connection) -> Result<(), DbError> {
    let _mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    Ok(())
}

/// `set_rollback_journal` on the file at `path`.
pub fn make_loadable(path: &Path) -> Result<(), DbError> {
    let conn = Connection::open(path)?;
    set_rollback_journal(&conn)?;
    conn.close().map_err(|(_, e)| DbError::Sqlite(e))
}
