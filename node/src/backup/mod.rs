//! Owns off-cluster backups: snapshots and a change-log archive in S3-compatible storage,
//! restore to any archived point, and the bootstrap of a new cluster from them (issue #18).
//! Must not produce copies or apply change sets itself: copies come from
//! `Executor::backup_to` (as for the NATS object store) and replay goes through
//! `Executor::apply_batch`, the node's own apply path.
//! Invariant: an object is visible to restore only once its manifest (written after it, with
//! its sha256) is stored; segments chain by `prev`, so a missing one is noticed.
//! Layout: `store` (client, errors), `layout` (names, manifests), `upload` (snapshots and
//! retention), `archive` (segments), `lease` (one uploader per cluster), `service` (the loops),
//! `restore`, `status`, `cli`. See docs/operations.md "Off-cluster backups".

pub mod archive;
pub mod bootstrap;
pub mod cli;
pub mod layout;
pub mod lease;
pub mod restore;
pub mod service;
pub mod status;
pub mod store;
pub mod upload;

pub use status::BackupStatus;
pub use store::Storage;

/// Why a backup, an archive step or a restore failed (said so that an operator can act).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Storage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] crate::exec::ExecError),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Nats(String),
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// Now, as nanoseconds since the epoch.
pub(crate) fn now_ns() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// Nanoseconds since the epoch as RFC 3339.
pub fn rfc3339(ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
