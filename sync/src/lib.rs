//! # ha-sync — a SQLite loadable extension that keeps a local file up to date from an ha cluster
//!
//! Owns the extension's entry point (`sqlite3_extension_init`) and what it registers on the
//! host's connection: the virtual-table module `HA` and the function `ha_info()`.
//! Must not let a panic cross into the host: every callback from SQLite runs under
//! `guard::catch`, and background threads catch their own.
//! Invariant: all SQLite calls go through the host's SQLite library (rusqlite's
//! `loadable_extension`), so the extension's own connection to the file and the host's share
//! one lock table and one library.
//!
//! ## Layout
//! - `options`      `HA(servers=…, timeout=…, …)`: key=value arguments of CREATE VIRTUAL TABLE.
//! - `logger`       the `logger=` option as a tracing dispatcher (stdout, stderr, file).
//! - `vtab`         the `HA` module: INSERT starts following a subject, DELETE stops, SELECT lists.
//! - `spec`         what one subscription follows and what its thread reports.
//! - `subscription` one followed subject: its thread, how it starts and stops.
//! - `follow`       the thread's work: NATS, the durable pull consumer, parts, retries (the
//!   mechanism is `ha-follow`'s, shared with the node; the retry-forever policy is ha-sync's).
//! - `local`        the extension's own connection to the database file: apply, position.
//! - `guard`        panics into SQLite errors.
//!
//! Change sets are decoded and applied by `ha-changeset`, the node's own code.
//!
//! ## Errors
//! `SyncError` (thiserror) inside; at the SQLite boundary every error becomes a SQLite error
//! with its message (`rusqlite::Error::ModuleError` or a user-function error).

mod follow;
mod guard;
mod local;
mod logger;
mod options;
mod spec;
mod subscription;
mod vtab;

use std::os::raw::{c_char, c_int};

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, ffi};

/// What `ha_info()` returns.
pub fn version_text() -> String {
    format!(
        "ha-sync version={}, sqlite={}",
        env!("CARGO_PKG_VERSION"),
        rusqlite::version()
    )
}

/// Why the extension could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("{0}")]
    Options(String),
    #[error("{0}")]
    Nats(String),
    #[error("{0}")]
    Local(String),
    #[error(transparent)]
    Apply(#[from] ha_changeset::ApplyError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Entry point for SQLite (`.load`, `load_extension`); see <https://sqlite.org/loadext.html>.
///
/// # Safety
/// Called by SQLite with a valid connection and API table.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_extension_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: the arguments come straight from SQLite's loader.
    unsafe { Connection::extension_init2(db, pz_err_msg, p_api, init) }
}

/// Registers the module and the function. Returns `true`: the library stays loaded after the
/// connection closes (SQLITE_OK_LOAD_PERMANENTLY), because subscription threads may still be
/// finishing their last transaction when SQLite would otherwise unload it.
fn init(db: Connection) -> rusqlite::Result<bool> {
    guard::catch(|| {
        // SAFETY: a plain query of how the host library was compiled.
        if unsafe { ffi::sqlite3_threadsafe() } == 0 {
            return Err(rusqlite::Error::ModuleError(
                "ha-sync needs a thread-safe SQLite (SQLITE_THREADSAFE=1 or 2): it applies changes on its own threads".into(),
            ));
        }
        vtab::register(&db)?;
        db.create_scalar_function(
            c"ha_info",
            0,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            |_ctx| guard::catch(|| Ok(version_text())),
        )?;
        Ok(true)
    })
}
