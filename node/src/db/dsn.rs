//! Owns the reading of a DSN (`file:ha.db?_journal=WAL&_timeout=5000`) into a `DbTarget`.
//! Must not open anything: `db::open` turns a target into connections.
//! Invariant: every DSN parameter is either applied or refused with a clear error, never ignored.
//! The parameter names are the ones of the Go driver the original used (mattn/go-sqlite3).

use std::fmt;
use std::path::{Path, PathBuf};

/// The DSN used when none is given on the command line (the original's default).
pub const DEFAULT_DSN: &str = "file:ha.db?_journal=WAL&_timeout=5000";

/// Where the database lives and how each connection to it is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct DbTarget {
    pub location: Location,
    /// SQLite URI parameters passed through to `sqlite3_open_v2` (`cache`, `vfs`, `immutable`, …).
    pub uri_params: Vec<(String, String)>,
    /// `PRAGMA name = value` run on every connection, in order.
    pub pragmas: Vec<(&'static str, String)>,
    /// PRAGMAs only the write connection runs (journal mode, synchronous, auto_vacuum).
    pub writer_pragmas: Vec<(&'static str, String)>,
    pub busy_timeout_ms: u32,
    pub tx_lock: TxLock,
    /// The DSN as given, for `/status` and logs.
    pub dsn: String,
    /// SQLite extensions loaded on every connection, in order (`--extensions`).
    pub extensions: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    File(PathBuf),
    /// One in-memory database shared by every connection of this node; `load_from` is copied
    /// in at start (the file itself is never written).
    Memory {
        name: String,
        load_from: Option<PathBuf>,
    },
}

/// How the writer opens its transactions (`_txlock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxLock {
    Immediate,
    Deferred,
    Exclusive,
}

impl TxLock {
    pub fn begin_sql(self) -> &'static str {
        match self {
            TxLock::Immediate => "BEGIN IMMEDIATE",
            TxLock::Deferred => "BEGIN DEFERRED",
            TxLock::Exclusive => "BEGIN EXCLUSIVE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DSN {dsn:?}: {reason}")]
pub struct DsnError {
    pub dsn: String,
    pub reason: String,
}

impl DbTarget {
    /// The database's file name (the replication id of the original: `ha.db` for the defaults).
    pub fn file_name(&self) -> String {
        match &self.location {
            Location::File(p) => base_name(p),
            Location::Memory { name, .. } => name.clone(),
        }
    }

    /// Sets `PRAGMA synchronous` for the writer unless the DSN chose one (`_sync`).
    pub fn default_synchronous(&mut self, value: &str) {
        if !self.writer_pragmas.iter().any(|(k, _)| *k == "synchronous") {
            self.writer_pragmas.push(("synchronous", value.to_string()));
        }
    }

    /// Where temporary copies of this database go: beside the file (same file system, so a
    /// rename can install one), or the OS temp dir for memory databases.
    pub fn scratch_dir(&self) -> PathBuf {
        match &self.location {
            Location::File(p) => p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(|d| d.to_path_buf())
                .unwrap_or_else(|| ".".into()),
            Location::Memory { .. } => std::env::temp_dir(),
        }
    }

    pub fn is_memory(&self) -> bool {
        matches!(self.location, Location::Memory { .. })
    }

    /// Reads `dsn`; with `memory` the database is kept in memory and `dsn` (if it names a file)
    /// is loaded into it at start.
    pub fn parse(dsn: Option<&str>, memory: bool) -> Result<DbTarget, DsnError> {
        let given = dsn.map(str::trim).filter(|s| !s.is_empty());
        let raw = given.unwrap_or(DEFAULT_DSN);
        let err = |reason: String| DsnError {
            dsn: raw.to_string(),
            reason,
        };
        let body = raw.strip_prefix("file:").unwrap_or(raw);
        let (path_part, query) = match body.split_once('?') {
            Some((p, q)) => (p, q),
            None => (body, ""),
        };
        let mut target = DbTarget {
            location: Location::File(PathBuf::from(path_part)),
            uri_params: Vec::new(),
            pragmas: Vec::new(),
            writer_pragmas: Vec::new(),
            busy_timeout_ms: 5000,
            tx_lock: TxLock::Immediate,
            dsn: raw.to_string(),
            extensions: Vec::new(),
        };
        let mut journal: Option<String> = None;
        let mut in_memory = memory || path_part == ":memory:" || path_part.is_empty();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).map_err(|e| err(format!("parameter {key}: {e}")))?;
            match key {
                "_journal" | "_journal_mode" => {
                    journal = Some(
                        one_of(
                            key,
                            &value,
                            &["DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"],
                        )
                        .map_err(err)?,
                    )
                }
                "_timeout" | "_busy_timeout" => {
                    target.busy_timeout_ms = value
                        .parse()
                        .map_err(|_| err(format!("{key} must be milliseconds, got {value:?}")))?
                }
                "_sync" | "_synchronous" => {
                    let v = one_of(
                        key,
                        &value,
                        &["OFF", "NORMAL", "FULL", "EXTRA", "0", "1", "2", "3"],
                    )
                    .map_err(err)?;
                    target.writer_pragmas.push(("synchronous", v));
                }
                "_txlock" => {
                    target.tx_lock = match value.to_ascii_lowercase().as_str() {
                        "immediate" => TxLock::Immediate,
                        "deferred" => TxLock::Deferred,
                        "exclusive" => TxLock::Exclusive,
                        _ => {
                            return Err(err(format!(
                                "_txlock must be immediate, deferred or exclusive, got {value:?}"
                            )));
                        }
                    }
                }
                "_auto_vacuum" | "_vacuum" => {
                    let v = one_of(key, &value, &["NONE", "FULL", "INCREMENTAL", "0", "1", "2"])
                        .map_err(err)?;
                    target.writer_pragmas.push(("auto_vacuum", v));
                }
                "_foreign_keys" | "_fk" => target
                    .pragmas
                    .push(("foreign_keys", boolean(key, &value).map_err(err)?)),
                "_case_sensitive_like" | "_cslike" => target
                    .pragmas
                    .push(("case_sensitive_like", boolean(key, &value).map_err(err)?)),
                "_recursive_triggers" | "_rt" => target
                    .pragmas
                    .push(("recursive_triggers", boolean(key, &value).map_err(err)?)),
                "_defer_foreign_keys" | "_defer_fk" => target
                    .pragmas
                    .push(("defer_foreign_keys", boolean(key, &value).map_err(err)?)),
                "_ignore_check_constraints" => target.pragmas.push((
                    "ignore_check_constraints",
                    boolean(key, &value).map_err(err)?,
                )),
                "_writable_schema" => target
                    .pragmas
                    .push(("writable_schema", boolean(key, &value).map_err(err)?)),
                "_secure_delete" => {
                    let v = if value.eq_ignore_ascii_case("fast") {
                        "FAST".to_string()
                    } else {
                        boolean(key, &value).map_err(err)?
                    };
                    target.pragmas.push(("secure_delete", v));
                }
                "_cache_size" => {
                    let n: i64 = value.parse().map_err(|_| {
                        err(format!("_cache_size must be an integer, got {value:?}"))
                    })?;
                    target.pragmas.push(("cache_size", n.to_string()));
                }
                // Each of our connections is used by one thread at a time, which is what
                // `_mutex=no` asks for; `full` is stricter and equally safe.
                "_mutex" => {
                    one_of(key, &value, &["NO", "FULL"]).map_err(err)?;
                }
                "_locking" | "_locking_mode" => {
                    if !value.eq_ignore_ascii_case("normal") {
                        return Err(err(format!(
                            "{key}={value}: only NORMAL works, the node reads on several connections"
                        )));
                    }
                }
                "_query_only" => {
                    return Err(err(
                        "_query_only: a node must be able to write (it applies replicated changes)"
                            .into(),
                    ));
                }
                "mode" => match value.as_str() {
                    "rw" | "rwc" => {}
                    "memory" => in_memory = true,
                    _ => {
                        return Err(err(format!(
                            "mode={value}: the node needs a writable database (rw, rwc or memory)"
                        )));
                    }
                },
                "vfs" if value == "memdb" => in_memory = true,
                "cache" | "vfs" | "immutable" | "nolock" | "psow" => {
                    target.uri_params.push((key.to_string(), value))
                }
                _ => {
                    return Err(err(format!(
                        "unknown parameter {key:?} (see docs/configuration.md for the supported ones)"
                    )));
                }
            }
        }
        if in_memory {
            let source = if path_part.is_empty() || path_part == ":memory:" || given.is_none() {
                None
            } else {
                Some(PathBuf::from(path_part))
            };
            let name = source
                .as_deref()
                .map(base_name)
                .unwrap_or_else(|| "ha.db".to_string());
            // An in-memory database has no journal file to put in WAL mode.
            target.location = Location::Memory {
                name,
                load_from: if memory { source } else { None },
            };
        } else {
            if path_part.is_empty() {
                return Err(err("no database file name".into()));
            }
            target
                .writer_pragmas
                .insert(0, ("journal_mode", journal.unwrap_or_else(|| "WAL".into())));
        }
        Ok(target)
    }
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Memory { name, .. } => write!(f, "memory:{name}"),
        }
    }
}

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ha.db".into())
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<String, String> {
    let up = value.to_ascii_uppercase();
    if allowed.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(format!(
            "{key} must be one of {}, got {value:?}",
            allowed.join(", ")
        ))
    }
}

fn boolean(key: &str, value: &str) -> Result<String, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok("ON".into()),
        "0" | "false" | "no" | "off" => Ok("OFF".into()),
        _ => Err(format!("{key} must be a boolean, got {value:?}")),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dsn_is_a_wal_file_named_ha_db() {
        let t = DbTarget::parse(None, false).unwrap();
        assert_eq!(t.location, Location::File("ha.db".into()));
        assert_eq!(t.busy_timeout_ms, 5000);
        assert_eq!(t.writer_pragmas[0], ("journal_mode", "WAL".to_string()));
        assert_eq!(t.file_name(), "ha.db");
    }

    #[test]
    fn driver_parameters_become_pragmas() {
        let t = DbTarget::parse(
            Some("file:data/my.db?_journal=delete&_busy_timeout=500&_sync=NORMAL&_fk=1&_txlock=deferred"),
            false,
        )
        .unwrap();
        assert_eq!(t.location, Location::File("data/my.db".into()));
        assert_eq!(t.busy_timeout_ms, 500);
        assert_eq!(t.tx_lock, TxLock::Deferred);
        assert!(
            t.writer_pragmas
                .contains(&("journal_mode", "DELETE".into()))
        );
        assert!(t.writer_pragmas.contains(&("synchronous", "NORMAL".into())));
        assert!(t.pragmas.contains(&("foreign_keys", "ON".into())));
        assert_eq!(t.file_name(), "my.db");
    }

    #[test]
    fn unknown_or_bad_parameters_are_refused() {
        let e = DbTarget::parse(Some("file:x.db?_bogus=1"), false).unwrap_err();
        assert!(e.reason.contains("unknown parameter \"_bogus\""), "{e}");
        assert!(DbTarget::parse(Some("x.db?_journal=fast"), false).is_err());
        assert!(DbTarget::parse(Some("x.db?_timeout=soon"), false).is_err());
        assert!(DbTarget::parse(Some("x.db?mode=ro"), false).is_err());
    }

    #[test]
    fn memory_mode_loads_the_named_file_and_keeps_its_name() {
        let t = DbTarget::parse(Some("backup.db"), true).unwrap();
        assert_eq!(
            t.location,
            Location::Memory {
                name: "backup.db".into(),
                load_from: Some("backup.db".into())
            }
        );
        let t = DbTarget::parse(None, true).unwrap();
        assert_eq!(
            t.location,
            Location::Memory {
                name: "ha.db".into(),
                load_from: None
            }
        );
        let t = DbTarget::parse(Some("file:/ha.db?vfs=memdb"), false).unwrap();
        assert!(t.is_memory());
        assert!(!t.writer_pragmas.iter().any(|(k, _)| *k == "journal_mode"));
    }
}
