//! Owns `ApplyError`, the one error of everything in this crate that touches SQLite (`schema`,
//! `meta`, `apply`).
//! Must not know the node's error types: the node maps each variant onto its `DbError` (`Prepare`
//! → `Prepare`, `Run` → `Run`, `Sqlite` → `Sqlite`), the `ha-sync` extension onto SQLite errors.
//! Invariant: the SQLite error behind a failure stays reachable (`source`), so callers can still
//! classify it (busy, corrupt, constraint).

/// Why a change set, or the bookkeeping around it, could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The change set cannot be applied as it is: a replicated statement does not compile, a
    /// change names a table this database lacks, or lacks values its key needs.
    #[error("{message}")]
    Prepare { message: String },
    /// A generated statement compiled but failed while running (constraint, busy, I/O).
    #[error("{source}")]
    Run {
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl ApplyError {
    /// The SQLite error behind this one, if any.
    pub fn sqlite(&self) -> Option<&rusqlite::Error> {
        match self {
            ApplyError::Prepare { .. } => None,
            ApplyError::Run { source } | ApplyError::Sqlite(source) => Some(source),
        }
    }
}
