//! Owns the seam between the writer and the replication log: the `ChangeSink` trait the writer
//! publishes through, and the origin stamped on every change set.
//! Must not know about NATS: `replication::publisher` implements the trait over JetStream, tests
//! implement it in memory (rqlite's consumer-defined interface).
//! Invariant: `publish` returns only once the change set is durably in the log, with its
//! sequence; an error means it is not (or not known to be) there, and the writer rolls back.

use crate::changeset::{ChangeSet, Seq};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PublishError(pub String);

/// Why `publish_after` did not publish.
#[derive(Debug, Clone)]
pub enum PublishAfterError {
    /// The log holds messages after `after`: someone else's change came first.
    Race(String),
    Other(PublishError),
}

/// Where committed change sets go.
pub trait ChangeSink: Send + Sync + 'static {
    /// Publishes one transaction's change set and returns the stream sequence it got (the last
    /// part's, when it had to be split). Called on the writer thread; may block.
    fn publish(&self, changeset: &ChangeSet) -> Result<Seq, PublishError>;

    /// Publishes only if the last message of this node's subject is `after` (the node has
    /// applied everything before): how schema changes are ordered with the data. A log with a
    /// single writer is always in order, hence the default.
    fn publish_after(&self, changeset: &ChangeSet, after: Seq) -> Result<Seq, PublishAfterError> {
        let _ = after;
        self.publish(changeset).map_err(PublishAfterError::Other)
    }
}

/// Who writes the change sets of this node.
#[derive(Debug, Clone)]
pub struct Origin {
    pub node: String,
    /// The process start time in Unix nanoseconds (the original's process id).
    pub process_id: i64,
    /// The database file name: the replication group.
    pub filename: String,
}

/// Everything the writer needs to capture and publish.
#[derive(Clone)]
pub struct ReplicationHooks {
    pub sink: std::sync::Arc<dyn ChangeSink>,
    pub origin: Origin,
    /// Replicate DDL as statement text (`--disable-ddl-sync` turns it off).
    pub ddl_sync: bool,
    /// How long the identity of an applied transaction is remembered, so that the same change
    /// set published again is recognised (at least as long as the stream keeps messages).
    pub dedupe_window: std::time::Duration,
    /// The subject this node publishes to and consumes (shown to interceptor scripts).
    pub subject: String,
    /// The user's script around publishing and applying (`--interceptor`).
    pub interceptor: Option<std::sync::Arc<crate::interceptor::Interceptor>>,
}

impl std::fmt::Debug for ReplicationHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationHooks")
            .field("origin", &self.origin)
            .field("ddl_sync", &self.ddl_sync)
            .field("dedupe_window", &self.dedupe_window)
            .field("subject", &self.subject)
            .field("interceptor", &self.interceptor)
            .finish()
    }
}
