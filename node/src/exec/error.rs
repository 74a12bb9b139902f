//! Owns `ExecError`, the only error type front ends see, and its stable classification.
//! Must not map to HTTP statuses or SQLSTATEs: `http::error` and the pg front end do that.
//! Invariant: `code()` strings are part of the API; add new ones, never rename.

use rusqlite::ErrorCode as Sqlite;

use crate::db::DbError;

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
}

impl ExecError {
    pub fn code(&self) -> ErrorCode {
        let db = match self {
            ExecError::BadRequest(_) => return ErrorCode::BadRequest,
            ExecError::InFailedTransaction
            | ExecError::NoTransaction(_)
            | ExecError::NoSuchSavepoint(_) => return ErrorCode::Transaction,
            ExecError::Db(db) => db.root(),
        };
        match db {
            DbError::MultipleStatements | DbError::EmptyStatement | DbError::Params(_) => {
                ErrorCode::BadRequest
            }
            DbError::Prepare { .. } => ErrorCode::InvalidSql,
            DbError::Unsupported(_) => ErrorCode::Unsupported,
            DbError::Forbidden(_) => ErrorCode::Forbidden,
            DbError::Stopped(crate::db::Stop::Timeout(_)) => ErrorCode::Timeout,
            DbError::Stopped(crate::db::Stop::Cancelled) => ErrorCode::Cancelled,
            DbError::Stopped(crate::db::Stop::Shutdown) => ErrorCode::Unavailable,
            DbError::ResultTooLarge(_) => ErrorCode::ResultTooLarge,
            DbError::Aborted(_) | DbError::WriterGone | DbError::Publish(_) => {
                ErrorCode::Unavailable
            }
            DbError::SessionTimedOut => ErrorCode::Transaction,
            DbError::Interceptor(_) => ErrorCode::Interceptor,
            DbError::Conflict(_) => ErrorCode::Conflict,
            DbError::Io(_) | DbError::Open { .. } | DbError::Extension(_) => ErrorCode::Internal,
            DbError::InStatement { .. } => ErrorCode::Internal,
            DbError::Run { .. } | DbError::Sqlite(_) => match db.sqlite_code() {
                Some(Sqlite::ConstraintViolation) => ErrorCode::Constraint,
                Some(
                    Sqlite::Unknown
                    | Sqlite::TypeMismatch
                    | Sqlite::TooBig
                    | Sqlite::ParameterOutOfRange
                    | Sqlite::ReadOnly,
                ) => ErrorCode::InvalidSql,
                Some(
                    Sqlite::DatabaseBusy | Sqlite::DatabaseLocked | Sqlite::OperationInterrupted,
                ) => ErrorCode::Unavailable,
                Some(Sqlite::DiskFull) => ErrorCode::StorageFull,
                Some(_) => ErrorCode::Internal,
                None => ErrorCode::Internal,
            },
        }
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
