//! Owns `ExecError`, the only error type front ends see, and its classification, done once
//! here: `cause()` says precisely what failed (a unique key, a missing table, a timeout, …) and
//! `code()` the stable class it belongs to.
//! Must not map to HTTP statuses or SQLSTATEs: `http::error` maps codes, `pgwire::error` causes.
//! Invariant: `code()` strings are part of the API; add new ones, never rename. Every cause
//! belongs to exactly one code (`Cause::code`).

use rusqlite::ErrorCode as Sqlite;

use crate::changeset::Seq;
use crate::db::{DbError, Stop};

/// Stable, machine-readable error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed request: body, parameters, several statements in one `sql`, empty SQL.
    BadRequest,
    /// SQL that does not compile or fails on its own terms (syntax, unknown table, type errors).
    InvalidSql,
    /// A constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY) refused the change.
    Constraint,
    /// Valid SQL the node does not run here (transaction control in a batch, ATTACH).
    Unsupported,
    /// The database is busy or the transaction was aborted for reasons outside the request.
    Unavailable,
    /// The disk is full.
    StorageFull,
    /// Anything else: a bug or a broken database.
    Internal,
    /// An interactive transaction cannot go on: it failed earlier, or its state does not allow
    /// the command (no transaction open, unknown savepoint). The client must roll back.
    Transaction,
    /// The interceptor script's `publish` hook failed on this transaction; nothing committed.
    Interceptor,
    /// A schema change lost the race to the replication log; nothing committed; retry.
    Conflict,
    // Bounds on untrusted SQL (docs/security.md).
    /// SQL that would reach outside the database or change its settings (ATTACH, VACUUM INTO,
    /// load_extension, setting a PRAGMA).
    Forbidden,
    /// The statement ran past its time (statement_timeout, `timeout=`, `--query-timeout`).
    Timeout,
    /// The client cancelled the statement (pg CancelRequest) or went away.
    Cancelled,
    /// The result is larger than `--max-result-bytes`.
    ResultTooLarge,
    /// The node did not apply the stream sequence a read asked for (read-your-writes) in time.
    SeqNotReached,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidSql => "invalid_sql",
            ErrorCode::Constraint => "constraint_violation",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
            ErrorCode::Transaction => "transaction_state",
            ErrorCode::Interceptor => "interceptor_failed",
            ErrorCode::Conflict => "serialization_failure",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ResultTooLarge => "result_too_large",
            ErrorCode::SeqNotReached => "seq_not_reached",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    BadRequest(String),
    /// A statement was sent to a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A savepoint command outside a transaction.
    #[error("{0}")]
    NoTransaction(String),
    #[error("savepoint \"{0}\" does not exist")]
    NoSuchSavepoint(String),
    /// A read asked for a stream sequence this node had not applied within the wait.
    #[error(
        "this node has applied the replication stream up to sequence {reached}, not yet {wanted} (waited {waited:?}); \
         retry, wait longer, or read on the node that wrote"
    )]
    SeqNotReached {
        wanted: Seq,
        reached: Seq,
        waited: std::time::Duration,
    },
    /// A read asked for a stream sequence on a node that does not replicate.
    #[error("this node does not replicate: it never reaches stream sequence {wanted}")]
    NotReplicating { wanted: Seq },
}

/// What precisely failed: the classification front ends map from (pg to a SQLSTATE, HTTP via
/// `code()` to a status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A malformed request or SQL text: several statements in one, none at all.
    BadRequest,
    /// Parameters that do not match the statement (missing, unused, wrong count).
    BadParameters,
    /// A statement sent to a transaction that already failed.
    InFailedTransaction,
    /// A savepoint command outside a transaction.
    NoTransaction,
    NoSuchSavepoint,
    /// The session idled too long while holding the writer and was rolled back.
    SessionTimedOut,
    Unsupported,
    Forbidden,
    Timeout,
    Cancelled,
    /// The node is shutting down, or its writer has stopped.
    Shutdown,
    ResultTooLarge,
    /// The transaction this work was grouped with was rolled back; retrying may succeed.
    Aborted,
    /// A schema change lost the race to the replication log; retry.
    Conflict,
    /// The replication log did not take the change set; nothing committed.
    Publish,
    /// The interceptor script refused or failed.
    Interceptor,
    // SQL that does not compile or run on its own terms.
    NoSuchTable,
    NoSuchColumn,
    NoSuchFunction,
    AlreadyExists,
    Syntax,
    /// Any other SQL error SQLite reports by message only.
    OtherSqlError,
    TypeMismatch,
    /// A string or blob over SQLite's limits.
    TooBig,
    /// A write where the database (or the statement's target) is read-only.
    ReadOnly,
    ParameterOutOfRange,
    // Constraints.
    UniqueViolation,
    ForeignKeyViolation,
    NotNullViolation,
    CheckViolation,
    OtherConstraint,
    // The database's state.
    Busy,
    Interrupted,
    DiskFull,
    /// A read-your-writes wait ended before the node applied the sequence asked for.
    SeqNotReached,
    /// Anything else: a bug or a broken database.
    Internal,
}

impl Cause {
    /// The stable class of this cause.
    pub fn code(self) -> ErrorCode {
        use Cause::*;
        match self {
            BadRequest | BadParameters => ErrorCode::BadRequest,
            InFailedTransaction | NoTransaction | NoSuchSavepoint | SessionTimedOut => {
                ErrorCode::Transaction
            }
            Unsupported => ErrorCode::Unsupported,
            SeqNotReached => ErrorCode::SeqNotReached,
            Forbidden => ErrorCode::Forbidden,
            Timeout => ErrorCode::Timeout,
            Cancelled => ErrorCode::Cancelled,
            Shutdown | Aborted | Publish | Busy | Interrupted => ErrorCode::Unavailable,
            ResultTooLarge => ErrorCode::ResultTooLarge,
            Conflict => ErrorCode::Conflict,
            Interceptor => ErrorCode::Interceptor,
            NoSuchTable | NoSuchColumn | NoSuchFunction | AlreadyExists | Syntax
            | OtherSqlError | TypeMismatch | TooBig | ReadOnly | ParameterOutOfRange => {
                ErrorCode::InvalidSql
            }
            UniqueViolation | ForeignKeyViolation | NotNullViolation | CheckViolation
            | OtherConstraint => ErrorCode::Constraint,
            DiskFull => ErrorCode::StorageFull,
            Internal => ErrorCode::Internal,
        }
    }
}

// SQLite extended result codes for constraints (sqlite3.h).
const SQLITE_CONSTRAINT_CHECK: i32 = 275;
const SQLITE_CONSTRAINT_FOREIGNKEY: i32 = 787;
const SQLITE_CONSTRAINT_NOTNULL: i32 = 1299;
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// An SQL error SQLite reports by its message only (a compile error, SQLITE_ERROR).
fn by_message(m: &str) -> Cause {
    if m.starts_with("no such table") {
        Cause::NoSuchTable
    } else if m.starts_with("no such column") {
        Cause::NoSuchColumn
    } else if m.starts_with("no such function") {
        Cause::NoSuchFunction
    } else if m.contains("already exists") {
        Cause::AlreadyExists
    } else if m.contains("syntax error")
        || m.contains("incomplete input")
        || m.contains("unrecognized token")
    {
        Cause::Syntax
    } else {
        Cause::OtherSqlError
    }
}

/// What SQLite's result code says of a statement that failed while running.
fn sqlite_cause(db: &DbError) -> Cause {
    match db.sqlite_extended_code() {
        Some(SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY) => {
            return Cause::UniqueViolation;
        }
        Some(SQLITE_CONSTRAINT_FOREIGNKEY) => return Cause::ForeignKeyViolation,
        Some(SQLITE_CONSTRAINT_NOTNULL) => return Cause::NotNullViolation,
        Some(SQLITE_CONSTRAINT_CHECK) => return Cause::CheckViolation,
        _ => {}
    }
    match db.sqlite_code() {
        Some(Sqlite::ConstraintViolation) => Cause::OtherConstraint,
        Some(Sqlite::DatabaseBusy | Sqlite::DatabaseLocked) => Cause::Busy,
        Some(Sqlite::OperationInterrupted) => Cause::Interrupted,
        Some(Sqlite::DiskFull) => Cause::DiskFull,
        Some(Sqlite::TooBig) => Cause::TooBig,
        Some(Sqlite::TypeMismatch) => Cause::TypeMismatch,
        Some(Sqlite::ReadOnly) => Cause::ReadOnly,
        Some(Sqlite::ParameterOutOfRange) => Cause::ParameterOutOfRange,
        Some(Sqlite::Unknown) => by_message(&db.to_string()),
        _ => Cause::Internal,
    }
}

impl ExecError {
    /// What precisely failed (the one classification of errors).
    pub fn cause(&self) -> Cause {
        let db = match self {
            ExecError::BadRequest(_) => return Cause::BadRequest,
            ExecError::InFailedTransaction => return Cause::InFailedTransaction,
            ExecError::NoTransaction(_) => return Cause::NoTransaction,
            ExecError::NoSuchSavepoint(_) => return Cause::NoSuchSavepoint,
            ExecError::SeqNotReached { .. } => return Cause::SeqNotReached,
            ExecError::NotReplicating { .. } => return Cause::Unsupported,
            ExecError::Db(db) => db.root(),
        };
        match db {
            DbError::MultipleStatements | DbError::EmptyStatement => Cause::BadRequest,
            DbError::Params(_) => Cause::BadParameters,
            DbError::Prepare { message } => by_message(message),
            DbError::Unsupported(_) => Cause::Unsupported,
            DbError::Forbidden(_) => Cause::Forbidden,
            DbError::Stopped(Stop::Timeout(_)) => Cause::Timeout,
            DbError::Stopped(Stop::Cancelled) => Cause::Cancelled,
            DbError::Stopped(Stop::Shutdown) | DbError::WriterGone => Cause::Shutdown,
            DbError::ResultTooLarge(_) => Cause::ResultTooLarge,
            DbError::Aborted(_) => Cause::Aborted,
            DbError::Publish(_) => Cause::Publish,
            DbError::SessionTimedOut => Cause::SessionTimedOut,
            DbError::Interceptor(_) => Cause::Interceptor,
            DbError::Conflict(_) => Cause::Conflict,
            DbError::Io(_)
            | DbError::Open { .. }
            | DbError::Extension(_)
            | DbError::InStatement { .. } => Cause::Internal,
            DbError::Run { .. } | DbError::Sqlite(_) => sqlite_cause(db),
        }
    }

    /// The stable class of the error (`cause().code()`).
    pub fn code(&self) -> ErrorCode {
        self.cause().code()
    }

    /// Whether the interceptor script failed (sending the same again gives the same failure).
    pub fn is_interceptor(&self) -> bool {
        self.code() == ErrorCode::Interceptor
    }

    /// Whether the same request may succeed if sent again unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code(), ErrorCode::Unavailable | ErrorCode::Conflict)
    }

    /// Whether the database itself is in trouble (the node should stop saying it is ready).
    pub fn is_fatal_db(&self) -> bool {
        match self {
            ExecError::Db(db) => matches!(
                db.sqlite_code(),
                Some(
                    Sqlite::DatabaseCorrupt
                        | Sqlite::NotADatabase
                        | Sqlite::SystemIoFailure
                        | Sqlite::CannotOpen
                )
            ),
            _ => false,
        }
    }

    /// For batches of several statements: which one (0-based) failed.
    pub fn statement_index(&self) -> Option<usize> {
        match self {
            ExecError::Db(db) => db.statement_index(),
            _ => None,
        }
    }
}
