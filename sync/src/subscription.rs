//! Owns one followed subject: the background thread that follows it (its own tokio runtime, its
//! own NATS client, its own SQLite connection), what it reports, and how it stops.
//! Must not block the host's connection for long: starting waits at most for the first answer
//! from NATS (`timeout`), stopping at most for the thread's current step.
//! Invariant: within one process, one (database file, subject) pair has at most one follower,
//! whichever connection or table started it.
//! See `spec` for what it follows and reports, `follow` for the thread's work and `vtab` for
//! the SQL surface.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Dispatch;

use crate::SyncError;
use crate::follow;
use crate::spec::{Spec, Status};

/// (canonical database path, subject) of every follower in this process.
static FOLLOWERS: Mutex<Option<HashSet<(PathBuf, String)>>> = Mutex::new(None);

/// A claim on one (file, subject) pair, released on drop.
struct Claim(PathBuf, String);

impl Claim {
    fn take(path: &std::path::Path, subject: &str) -> Result<Claim, SyncError> {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut set = FOLLOWERS.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (path, subject.to_string());
        if !set.get_or_insert_with(HashSet::new).insert(key.clone()) {
            return Err(SyncError::Options(format!(
                "already subscribed: {subject} is followed into {} by another connection of this process",
                key.0.display()
            )));
        }
        Ok(Claim(key.0, key.1))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = FOLLOWERS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = set.as_mut() {
            s.remove(&(std::mem::take(&mut self.0), std::mem::take(&mut self.1)));
        }
    }
}

/// A running follower. Dropping it stops the thread (keeping the durable).
pub(crate) struct Subscription {
    pub spec: Arc<Spec>,
    /// The policy as the user wrote it (shown by SELECT).
    pub policy_text: Option<String>,
    pub status: Arc<Status>,
    stop: CancellationToken,
    /// Receives once when the thread has finished.
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    _claim: Claim,
}

impl Subscription {
    /// Starts following and waits until NATS has answered once (connected, stream found) or
    /// failed; a failure is returned and nothing keeps running.
    pub(crate) fn start(
        spec: Spec,
        policy_text: Option<String>,
        dispatch: Dispatch,
    ) -> Result<Subscription, SyncError> {
        let claim = Claim::take(&spec.db_path, &spec.subject)?;
        let spec = Arc::new(spec);
        let status = Arc::new(Status::default());
        let stop = CancellationToken::new();
        let (started_tx, started_rx) = mpsc::sync_channel::<Result<(), String>>(1);
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
        let thread = {
            let (spec, status, stop) = (spec.clone(), status.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("ha-sync {}", spec.subject))
                .spawn(move || {
                    let _log = tracing::dispatcher::set_default(&dispatch);
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        follow::run(&spec, &status, &stop, started_tx)
                    }));
                    if let Err(p) = outcome {
                        let msg = crate::guard::panic_message(p.as_ref());
                        tracing::error!(subject = %spec.subject, "follower stopped by an internal error: {msg}");
                        status.set_error(Some(format!("internal error: {msg}")));
                    }
                    let _ = done_tx.send(());
                })
                .map_err(|e| SyncError::Local(format!("cannot start a thread: {e}")))?
        };
        let mut sub = Subscription {
            spec: spec.clone(),
            policy_text,
            status,
            stop,
            done: done_rx,
            thread: Some(thread),
            _claim: claim,
        };
        // Connecting and opening the stream each take at most `timeout`.
        let wait = spec.options.timeout * 2 + Duration::from_secs(1);
        match started_rx.recv_timeout(wait) {
            Ok(Ok(())) => Ok(sub),
            Ok(Err(e)) => {
                sub.finish(wait);
                Err(SyncError::Nats(e))
            }
            Err(RecvTimeoutError::Timeout) => {
                sub.finish(wait);
                Err(SyncError::Nats(format!(
                    "no answer from NATS at {} within {:?}",
                    spec.options.servers, wait
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let why = sub.status.error().unwrap_or_else(|| "it stopped".into());
                sub.finish(wait);
                Err(SyncError::Local(format!(
                    "the follower did not start: {why}"
                )))
            }
        }
    }

    /// Stops following; with `delete_durable` the durable consumer is removed from the stream.
    /// Waits for the thread at most `wait`.
    pub(crate) fn stop(mut self, delete_durable: bool) {
        self.status
            .delete_durable
            .store(delete_durable, Ordering::Release);
        let wait = self.spec.options.timeout + Duration::from_secs(1);
        self.finish(wait);
    }

    fn finish(&mut self, wait: Duration) {
        self.stop.cancel();
        let Some(thread) = self.thread.take() else {
            return;
        };
        match self.done.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            Err(RecvTimeoutError::Timeout) => {
                // Still inside a step (a busy database, a slow server): it ends on its own.
                tracing::warn!(subject = %self.spec.subject, "the follower did not stop in time; leaving it to finish");
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let wait = self.spec.options.timeout + Duration::from_secs(1);
        self.finish(wait);
    }
}
