//! Owns what one subscription follows (`Spec`) and what its thread reports (`Status`): shared
//! by `subscription`, which starts and stops the thread, and `follow`, which is the thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use ha_changeset::names::DeliverPolicy;

use crate::options::Options;

/// What to follow, and where to apply it.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The filter subject, e.g. `ha_replication.ha_db`.
    pub subject: String,
    /// The stream: the subject up to its first `.` (as the original ha-sync).
    pub stream: String,
    /// Durable consumer name; `None` for an ephemeral consumer.
    pub durable: Option<String>,
    /// Where to start when the database holds no position for `subject` yet.
    pub policy: DeliverPolicy,
    pub options: Options,
    /// The host connection's main database file.
    pub db_path: PathBuf,
}

/// What the thread reports; read by `SELECT … FROM temp.ha`.
#[derive(Debug)]
pub(crate) struct Status {
    /// The last stream sequence applied (or skipped) into the database.
    pub applied_seq: AtomicU64,
    /// Messages of the subject in the stream not applied yet, as of the last delivery; -1 until
    /// the consumer has said.
    pending: AtomicI64,
    /// Whether the pull consumer is running right now.
    pub following: AtomicBool,
    /// The last failure, until the next success.
    error: Mutex<Option<String>>,
    /// Set by DELETE: remove the durable consumer on the way out.
    pub delete_durable: AtomicBool,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            applied_seq: AtomicU64::new(0),
            pending: AtomicI64::new(-1),
            following: AtomicBool::new(false),
            error: Mutex::new(None),
            delete_durable: AtomicBool::new(false),
        }
    }
}

impl Status {
    pub(crate) fn set_pending(&self, n: u64) {
        self.pending
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Release);
    }

    /// `None` until the consumer has reported.
    pub(crate) fn pending(&self) -> Option<i64> {
        Some(self.pending.load(Ordering::Acquire)).filter(|n| *n >= 0)
    }

    pub(crate) fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = e;
    }

    pub(crate) fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
