//! Owns everything that touches SQLite: DSN reading, connections, the read pool, the single
//! writer thread, statement execution and backups.
//! Must not know about HTTP, PostgreSQL or NATS; callers go through `exec`.
//! Invariant: SQLite runs only on the writer thread or on blocking-pool threads, never on async
//! workers, and only the writer thread writes.
//! See `writer` for the write path and `statement` for how one statement runs.

mod apply_mode;
mod authorizer;
pub mod capture;
pub mod checksum;
mod deadline;
pub mod dsn;
pub mod extensions;
pub mod file;
mod intercepted;
mod open;
mod reader;
pub mod sink;
mod statement;
mod writer;

pub use crate::changeset::Value;
/// Splits SQL text into statements (the workspace's one SQL reader, `changeset::sql`).
pub use crate::changeset::sql::split as split_sql;
pub use dsn::{DbTarget, DsnError, Location};
pub use statement::{
    Column, Described, ExecSummary, Params, Rows, Stmt, StmtResult, starts_with_write,
};

pub use deadline::{Limits, Stop};
pub(crate) use open::OpenSpec;
pub use reader::{CancelSlot, ImagePart};
pub(crate) use reader::{ReadOutcome, ReadPool, run_reads_here};
pub use writer::Executed;
pub(crate) use writer::{SessionCmd, WriterConfig, WriterHandle, WriterSession};

/// The SQLite library version, e.g. "3.46.0".
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// Why the database layer could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {target}: {source}")]
    Open {
        target: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The SQL text could not be compiled (syntax error, unknown table or column, …).
    #[error("{message}")]
    Prepare { message: String },
    /// The statement compiled but failed while running.
    #[error("{source}")]
    Run {
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "several SQL statements in one \"sql\" are not allowed; send an array of statements instead"
    )]
    MultipleStatements,
    #[error("the SQL text is empty")]
    EmptyStatement,
    #[error("{0}")]
    Params(String),
    #[error("{0}")]
    Unsupported(String),
    /// Client SQL asked for something the authorizer refuses (see `authorizer`).
    #[error("{0}")]
    Forbidden(String),
    /// The job was stopped: its deadline passed, its client cancelled it or went away, or the
    /// node is shutting down.
    #[error("{}", stop_message(.0))]
    Stopped(Stop),
    /// The result sets of the job hold more than `--max-result-bytes` (the limit in bytes).
    #[error(
        "the result is larger than {0} bytes (--max-result-bytes); select fewer rows or columns, or page with LIMIT"
    )]
    ResultTooLarge(usize),
    /// The transaction this batch was grouped with was rolled back by SQLite (for example a full
    /// disk); the batch itself may be fine and can be retried.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// Which statement of a multi-statement batch failed (0-based `index`).
    #[error("statement {}: {source}", index + 1)]
    InStatement {
        index: usize,
        #[source]
        source: Box<DbError>,
    },
    /// The change set could not be published to the replication log; nothing was committed.
    #[error("replication log unavailable, nothing was committed: {0}")]
    Publish(String),
    /// A schema change lost the race to the replication log (another node's change came first
    /// and this node had not applied it yet); nothing was committed, retrying may succeed.
    #[error("{0}")]
    Conflict(String),
    #[error("the database writer has stopped")]
    WriterGone,
    /// An interactive transaction held the writer idle longer than allowed and was rolled back.
    #[error(
        "the transaction was rolled back: idle in transaction for too long while holding the writer"
    )]
    SessionTimedOut,
    /// The interceptor script failed on this change set (see `interceptor::ScriptError`).
    #[error(transparent)]
    Interceptor(#[from] crate::interceptor::ScriptError),
    #[error(transparent)]
    Extension(#[from] extensions::ExtensionError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn stop_message(s: &Stop) -> String {
    match s {
        Stop::Timeout(t) => format!(
            "canceling statement due to statement timeout ({})",
            humantime::format_duration(*t)
        ),
        Stop::Cancelled => "canceling statement due to user request".into(),
        Stop::Shutdown => "canceling statement: the node is shutting down".into(),
    }
}

impl From<crate::changeset::ApplyError> for DbError {
    fn from(e: crate::changeset::ApplyError) -> DbError {
        use crate::changeset::ApplyError;
        match e {
            ApplyError::Prepare { message } => DbError::Prepare { message },
            ApplyError::Run { source } => DbError::Run { source },
            ApplyError::Sqlite(e) => DbError::Sqlite(e),
        }
    }
}

impl DbError {
    /// The same failure for every job of a group whose shared commit failed.
    pub fn clone_for_group(&self) -> DbError {
        match self.root() {
            DbError::Publish(m) => DbError::Publish(m.clone()),
            DbError::Interceptor(e) => DbError::Interceptor(e.clone()),
            DbError::Conflict(m) => DbError::Conflict(m.clone()),
            other => DbError::Aborted(format!("commit failed: {other}")),
        }
    }

    /// The error itself, looking through `InStatement`.
    pub fn root(&self) -> &DbError {
        match self {
            DbError::InStatement { source, .. } => source.root(),
            other => other,
        }
    }

    /// The failing statement of a batch, if the batch had several.
    pub fn statement_index(&self) -> Option<usize> {
        match self {
            DbError::InStatement { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The SQLite primary result code behind this error, if any.
    pub fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self.root() {
            DbError::Open { source, .. } | DbError::Run { source } | DbError::Sqlite(source) => {
                source.sqlite_error_code()
            }
            _ => None,
        }
    }

    /// The extended result code (e.g. SQLITE_CONSTRAINT_UNIQUE), if any.
    pub fn sqlite_extended_code(&self) -> Option<i32> {
        match self.root() {
            DbError::Open { source, .. } | DbError::Run { source } | DbError::Sqlite(source) => {
                match source {
                    rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}
