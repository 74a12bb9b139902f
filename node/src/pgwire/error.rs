//! Owns the translation of `ExecError` into PostgreSQL errors (SQLSTATE, severity, message).
//! Must not decide what failed: `exec` classifies, this only names the class the pg way.
//! Invariant: the message is SQLite's own text; the SQLSTATE is the one a PostgreSQL client
//! would get for the same failure (23505 for a duplicate key, 42P01 for a missing table, …).

use pgwire::error::{ErrorInfo, PgWireError, SEVERITY_ERROR, SEVERITY_FATAL};

use crate::db::DbError;
use crate::exec::ExecError;

// SQLite extended result codes for constraints (sqlite3.h).
const SQLITE_CONSTRAINT_CHECK: i32 = 275;
const SQLITE_CONSTRAINT_FOREIGNKEY: i32 = 787;
const SQLITE_CONSTRAINT_NOTNULL: i32 = 1299;
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;

/// The SQLSTATE for an executor error.
pub fn sqlstate(e: &ExecError) -> &'static str {
    let db = match e {
        ExecError::InFailedTransaction => return "25P02",
        ExecError::NoTransaction(_) => return "25P01",
        ExecError::NoSuchSavepoint(_) => return "3B001",
        ExecError::BadRequest(_) => return "42601",
        ExecError::Db(db) => db.root(),
    };
    match db {
        DbError::SessionTimedOut => "25P03",
        DbError::MultipleStatements | DbError::EmptyStatement => "42601",
        DbError::Params(_) => "08P01",
        DbError::Unsupported(_) => "0A000",
        DbError::Aborted(_) | DbError::Conflict(_) => "40001",
        DbError::Forbidden(_) => "42501",
        DbError::Stopped(crate::db::Stop::Shutdown) => "57P01",
        DbError::Stopped(_) => "57014",
        DbError::ResultTooLarge(_) => "54000",
        DbError::WriterGone => "57P01",
        DbError::Publish(_) => "57P03",
        // raise_exception: the user's script said no.
        DbError::Interceptor(_) => "P0001",
        DbError::Prepare { message } => by_message(message),
        DbError::Run { .. } | DbError::Sqlite(_) => {
            if let Some(ext) = db.sqlite_extended_code() {
                match ext {
                    SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY => return "23505",
                    SQLITE_CONSTRAINT_FOREIGNKEY => return "23503",
                    SQLITE_CONSTRAINT_NOTNULL => return "23502",
                    SQLITE_CONSTRAINT_CHECK => return "23514",
                    _ => {}
                }
            }
            use rusqlite::ErrorCode as C;
            match db.sqlite_code() {
                Some(C::ConstraintViolation) => "23000",
                Some(C::DatabaseBusy | C::DatabaseLocked) => "55P03",
                Some(C::OperationInterrupted) => "57014",
                Some(C::DiskFull) => "53100",
                Some(C::TooBig) => "54000",
                Some(C::TypeMismatch) => "42804",
                Some(C::ReadOnly) => "25006",
                Some(C::Unknown) => by_message(&db.to_string()),
                _ => "XX000",
            }
        }
        DbError::InStatement { .. }
        | DbError::Open { .. }
        | DbError::Io(_)
        | DbError::Extension(_) => "XX000",
    }
}

fn by_message(m: &str) -> &'static str {
    if m.starts_with("no such table") {
        "42P01"
    } else if m.starts_with("no such column") {
        "42703"
    } else if m.starts_with("no such function") {
        "42883"
    } else if m.contains("already exists") {
        "42P07"
    } else if m.contains("syntax error")
        || m.contains("incomplete input")
        || m.contains("unrecognized token")
    {
        "42601"
    } else {
        "42000"
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
