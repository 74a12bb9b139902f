//! Owns THE executor: the one API through which every front end (HTTP and PostgreSQL) runs SQL,
//! takes backups and reads the database's state.
//! Must not speak any wire protocol: front ends translate requests into `Stmt`s and `ExecError`s
//! into their own answers.
//! Invariant: there is exactly one write path (the `db` writer), whatever the front end.

mod applied;
mod client;
mod error;
mod executor;
mod session;

pub use crate::changeset::Seq;
/// The one SQL reader (tokens, comments, leading keyword, splitting), for front ends.
pub use crate::changeset::sql;
pub use crate::db::{
    Column, DbError, Described, ExecSummary, Executed, Limits, Params, Rows, Stmt, StmtResult,
    Stop, Value, split_sql,
};
pub use client::{CancelSlot, run_reads_on_this_thread};
pub use error::{Cause, ErrorCode, ExecError};
pub use executor::{ExecConfig, Executor};
pub use session::{ControlOutcome, Session, TxControl, TxStatus};

/// The SQLite library version, e.g. "3.46.0".
pub fn sqlite_version() -> &'static str {
    crate::db::sqlite_version()
}

/// Checks on database files that are not the live database (snapshots, backups, the local file
/// before a restore), for `replication::snapshot`, which must not open SQLite itself.
pub mod file_check {
    pub use crate::db::file::{
        FileCheckError, applied_seq_of, make_loadable, stamp_applied_seq, verify,
    };
}
