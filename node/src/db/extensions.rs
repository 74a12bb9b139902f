//! Owns loading SQLite extensions (`--extensions a.so,b.so`) into a connection.
//! Must not choose connections: `open` loads them into every connection of the live database
//! (writer, readers, and so the apply path) before it is used, and `check` proves them once at
//! start-up so that a missing or broken file stops the node with its name before anything runs.
//! Invariant: loading is switched on only while the listed files load (`LoadExtensionGuard`), so
//! SQL sent by clients can never call `load_extension()` itself.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, LoadExtensionGuard};

/// An extension that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot load SQLite extension {path}: {reason}")]
pub struct ExtensionError {
    pub path: String,
    pub reason: String,
}

impl ExtensionError {
    fn new(path: &Path, reason: impl ToString) -> ExtensionError {
        ExtensionError {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Loads `extensions` into `conn`, in order (SQLite derives each entry point from the file
/// name, e.g. `pcre.so` → `sqlite3_pcre_init`).
pub fn load(conn: &Connection, extensions: &[PathBuf]) -> Result<(), ExtensionError> {
    let Some(first) = extensions.first() else {
        return Ok(());
    };
    // SAFETY: loading runs the library's initialiser inside this process; the files are the
    // operator's own choice (`--extensions`), as with `sqlite3`'s `.load`. The guard switches
    // loading off again before any other SQL runs on the connection.
    let _guard =
        unsafe { LoadExtensionGuard::new(conn) }.map_err(|e| ExtensionError::new(first, e))?;
    for path in extensions {
        if !path.exists() {
            return Err(ExtensionError::new(path, "no such file"));
        }
        // SAFETY: as above.
        unsafe { conn.load_extension(path, None::<&str>) }
            .map_err(|e| ExtensionError::new(path, e))?;
    }
    Ok(())
}

/// Loads `extensions` into a throwaway in-memory connection: the start-up check.
pub fn check(extensions: &[PathBuf]) -> Result<(), ExtensionError> {
    if extensions.is_empty() {
        return Ok(());
    }
    let conn = Connection::open_in_memory().map_err(|e| ExtensionError::new(&extensions[0], e))?;
    load(&conn, extensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_broken_extension_is_named() {
        let e = check(&[PathBuf::from("/nonexistent/ext.so")]).unwrap_err();
        assert_eq!(e.path, "/nonexistent/ext.so");
        assert!(e.to_string().contains("/nonexistent/ext.so"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.so");
        std::fs::write(&junk, b"not a shared library").unwrap();
        let e = check(std::slice::from_ref(&junk)).unwrap_err();
        assert_eq!(e.path, junk.display().to_string());
    }

    #[test]
    fn sql_cannot_load_extensions() {
        let conn = Connection::open_in_memory().unwrap();
        load(&conn, &[]).unwrap();
        let r: Result<i64, _> =
            conn.query_row("SELECT load_extension('/nonexistent.so')", [], |r| r.get(0));
        assert!(r.unwrap_err().to_string().contains("not authorized"));
    }
}
