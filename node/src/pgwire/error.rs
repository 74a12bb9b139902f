//! Owns the translation of `ExecError` into PostgreSQL errors (SQLSTATE, severity, message).
//! Must not decide what failed: `exec` classifies (`ExecError::cause`), this only names each
//! cause the pg way.
//! Invariant: the message is SQLite's own text; the SQLSTATE is the one a PostgreSQL client
//! would get for the same failure (23505 for a duplicate key, 42P01 for a missing table, …).

use pgwire::error::{ErrorInfo, PgWireError, SEVERITY_ERROR, SEVERITY_FATAL};

use crate::exec::{Cause, ExecError};

/// The SQLSTATE for an executor error: what a PostgreSQL client would get for its cause.
pub fn sqlstate(e: &ExecError) -> &'static str {
    match e.cause() {
        Cause::BadRequest | Cause::Syntax => "42601",
        Cause::BadParameters => "08P01",
        Cause::InFailedTransaction => "25P02",
        Cause::NoTransaction => "25P01",
        Cause::NoSuchSavepoint => "3B001",
        Cause::SessionTimedOut => "25P03",
        Cause::Unsupported => "0A000",
        Cause::Forbidden => "42501",
        Cause::Timeout | Cause::Cancelled | Cause::Interrupted => "57014",
        // Like a statement timeout: the wait for `ha.min_seq` ran out.
        Cause::SeqNotReached => "57014",
        Cause::Shutdown => "57P01",
        Cause::ResultTooLarge | Cause::TooBig => "54000",
        Cause::Aborted | Cause::Conflict => "40001",
        Cause::Publish => "57P03",
        // raise_exception: the user's script said no.
        Cause::Interceptor => "P0001",
        Cause::NoSuchTable => "42P01",
        Cause::NoSuchColumn => "42703",
        Cause::NoSuchFunction => "42883",
        Cause::AlreadyExists => "42P07",
        Cause::OtherSqlError => "42000",
        Cause::TypeMismatch => "42804",
        Cause::ReadOnly => "25006",
        Cause::UniqueViolation => "23505",
        Cause::ForeignKeyViolation => "23503",
        Cause::NotNullViolation => "23502",
        Cause::CheckViolation => "23514",
        Cause::OtherConstraint => "23000",
        Cause::Busy => "55P03",
        Cause::DiskFull => "53100",
        Cause::ParameterOutOfRange | Cause::Internal => "XX000",
    }
}

/// The ErrorInfo for an executor error (severity ERROR; the session goes on).
pub fn error_info(e: &ExecError) -> ErrorInfo {
    ErrorInfo::new(
        SEVERITY_ERROR.to_owned(),
        sqlstate(e).to_owned(),
        e.to_string(),
    )
}

pub fn to_pg(e: ExecError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

/// An error of this front end itself (not of the executor) with an explicit SQLSTATE.
pub fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        SEVERITY_ERROR.to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// A FATAL error: the server ends the connection after sending it.
pub fn fatal(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(SEVERITY_FATAL.to_owned(), code.to_owned(), message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::DbError;

    #[test]
    fn transaction_states_have_their_sqlstates() {
        assert_eq!(sqlstate(&ExecError::InFailedTransaction), "25P02");
        assert_eq!(
            sqlstate(&ExecError::Db(DbError::Prepare {
                message: "no such table: nope".into()
            })),
            "42P01"
        );
        assert_eq!(
            sqlstate(&ExecError::Db(DbError::Prepare {
                message: "near \"SELEC\": syntax error".into()
            })),
            "42601"
        );
    }
}
