//! Owns opening SQLite connections for a `DbTarget`: the one write connection and the readers.
//! Must not run user statements; the writer and the read pool do that.
//! Invariant: the writer is opened (and the file created, WAL set) before any reader, and
//! readers cannot write (read-only open for files, `query_only` for memory). Every connection
//! has the `--extensions` loaded before it is used, then the authorizer (client SQL stays inside
//! the database) and the progress handler (client jobs are bounded) installed; readers also run
//! in SQLite's defensive mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::DbError;
use super::dsn::{DbTarget, Location};

/// The in-process name of this database when it lives in memory. Every connection of one node
/// opens the same name; two nodes in one process (tests) get different names.
#[derive(Debug, Clone)]
pub(crate) struct OpenSpec {
    target: DbTarget,
    memory_uri: Option<String>,
    /// The node's stop flag: set when shutdown runs out of time, it interrupts every statement.
    stop: Arc<AtomicBool>,
}

static MEMDB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl OpenSpec {
    pub(crate) fn new(target: DbTarget) -> OpenSpec {
        let memory_uri = match &target.location {
            Location::Memory { name, .. } => {
                let n = MEMDB_COUNTER.fetch_add(1, Ordering::Relaxed);
                Some(format!(
                    "file:/ha-{}-{n}/{}?vfs=memdb",
                    std::process::id(),
                    uri_escape(name)
                ))
            }
            Location::File(_) => None,
        };
        OpenSpec {
            target,
            memory_uri,
            stop: Arc::default(),
        }
    }

    /// Interrupts every statement running on this database's connections, now and from now on
    /// (the end of shutdown).
    pub(crate) fn stop_all(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn open(&self, read_only: bool) -> Result<Connection, DbError> {
        let mut flags = OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        flags |= if read_only && self.memory_uri.is_none() {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        };
        let uri = match (&self.memory_uri, &self.target.location) {
            (Some(uri), _) => uri.clone(),
            (None, Location::File(path)) => {
                let mut uri = format!("file:{}", uri_escape(&path.to_string_lossy()));
                for (i, (k, v)) in self.target.uri_params.iter().enumerate() {
                    uri.push(if i == 0 { '?' } else { '&' });
                    uri.push_str(&format!("{k}={}", uri_escape(v)));
                }
                uri
            }
            (None, Location::Memory { .. }) => unreachable!("memory targets always have a URI"),
        };
        let mut conn = Connection::open_with_flags(&uri, flags).map_err(|e| DbError::Open {
            target: self.target.to_string(),
            source: e,
        })?;
        // Before anything else runs on it: PRAGMAs, the schema and replicated changes may all
        // need what the extensions define (functions, collations, virtual-table modules).
        super::extensions::load(&conn, &self.target.extensions)?;
        super::authorizer::install(&mut conn)?;
        super::deadline::install(&mut conn, self.stop.clone())?;
        if read_only {
            // Not on the writer: applying replicated changes writes virtual tables' shadow
            // tables directly, which defensive mode forbids; the authorizer covers the rest.
            conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        }
        conn.busy_timeout(Duration::from_millis(u64::from(
            self.target.busy_timeout_ms,
        )))?;
        for (name, value) in &self.target.pragmas {
            conn.pragma_update(None, name, value)?;
        }
        if read_only && self.memory_uri.is_some() {
            conn.pragma_update(None, "query_only", "ON")?;
        }
        // Statements that a reader or writer prepares again and again stay compiled.
        conn.set_prepared_statement_cache_capacity(128);
        Ok(conn)
    }

    /// Opens the write connection, creating the database if needed and loading the file to copy
    /// into memory, if any.
    pub(crate) fn open_writer(&self) -> Result<Connection, DbError> {
        let mut conn = self.open(false)?;
        for (name, value) in &self.target.writer_pragmas {
            // Some of these (journal_mode) answer with a row; values were validated by `dsn`.
            let sql = format!("PRAGMA {name} = {value}");
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        if let Location::Memory {
            load_from: Some(path),
            ..
        } = &self.target.location
        {
            if path.exists() {
                load_into(&mut conn, path)?;
                tracing::info!(file = %path.display(), "loaded database file into memory");
            } else {
                tracing::info!(file = %path.display(), "no such file to load; starting with an empty in-memory database");
            }
        }
        Ok(conn)
    }

    pub(crate) fn open_reader(&self) -> Result<Connection, DbError> {
        self.open(true)
    }
}

/// Copies the file at `path` into `conn` with the online backup API; the file is opened
/// read-only and never modified. A WAL-mode file (its header says so, and the copy would too,
/// which memdb cannot honour: the first write would fail to open a WAL) is first copied to a
/// private temporary file switched to a rollback journal.
fn load_into(conn: &mut Connection, path: &std::path::Path) -> Result<(), DbError> {
    let mut header = [0u8; 20];
    let is_wal = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .is_ok()
        && header[18] == 2;
    let _private;
    let source = if is_wal {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let tmp = tempfile::Builder::new()
            .prefix(".ha-load-")
            .suffix(".db")
            .tempfile_in(&dir)
            .or_else(|_| tempfile::NamedTempFile::new())?
            .into_temp_path();
        {
            let src = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| DbError::Open {
                target: path.display().to_string(),
                source: e,
            })?;
            let mut copy = Connection::open(&tmp)?;
            rusqlite::backup::Backup::new(&src, &mut copy)?.step(-1)?;
            super::file::set_rollback_journal(&copy)?;
        }
        let p = tmp.to_path_buf();
        _private = Some(tmp);
        p
    } else {
        _private = None;
        path.to_path_buf()
    };
    let src = Connection::open_with_flags(
        &source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| DbError::Open {
        target: path.display().to_string(),
        source: e,
    })?;
    let backup = rusqlite::backup::Backup::new(&src, conn)?;
    backup.step(-1)?;
    Ok(())
}

/// Escapes the characters that would end or break the path or value of an SQLite URI.
fn uri_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '?' | '#' | '&' | '=' => out.push_str(&format!("%{:02X}", c as u32)),
            _ => out.push(c),
        }
    }
    out
}
