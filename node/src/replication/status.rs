//! Owns what the replication side knows about itself, shared with `/status`, `/readyz` and
//! `/metrics`: applied and stream sequences, catch-up, gaps, errors, connection.
//! Must not do I/O; the consumer and the connection callbacks write it, HTTP reads it.
//! Invariant: `applied_seq` only moves forward and matches what is committed in the database.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde_json::{Value as Json, json};

#[derive(Debug, Default)]
pub struct ReplStatus {
    /// Last stream sequence applied (or skipped as own/duplicate) and committed.
    pub applied_seq: AtomicU64,
    pub stream_first_seq: AtomicU64,
    pub stream_last_seq: AtomicU64,
    /// Origin timestamp of the last applied change set (ns since the epoch).
    pub applied_ts_ns: AtomicI64,
    /// Set once the node has applied everything the stream held when it started.
    pub caught_up: AtomicBool,
    pub connected: AtomicBool,
    /// The writer's own connection (`publisher::PublishConnection`) is up.
    pub publish_connected: AtomicBool,
    /// The stream exists and the consumer runs.
    pub consuming: AtomicBool,
    pub reconnects: AtomicU64,
    pub quarantined: AtomicU64,
    /// Inserts of the same key by two transactions (one row lost by last-writer-wins).
    pub key_collisions: AtomicU64,
    /// Rows of different keys that met on a UNIQUE constraint (the older one was deleted).
    pub constraint_conflicts: AtomicU64,
    /// Changes skipped because DDL the stream put before them dropped their table.
    pub dropped_table_changes: AtomicU64,
    /// Apply attempts that failed for a transient reason (busy, locked, …) and were retried.
    pub apply_retries: AtomicU64,
    /// Change sets applied from the stream (not those found already here, e.g. the node's own
    /// commits coming back).
    pub applied_total: AtomicU64,
    /// Gaps found (at consumer start or while consuming), and recoveries from a snapshot.
    pub gaps_detected: AtomicU64,
    pub recoveries: AtomicU64,
    /// A hole between our applied sequence and the stream's first one (history aged out).
    pub gap: Mutex<Option<String>>,
    pub last_error: Mutex<Option<String>>,
    /// The last automatic recovery from a snapshot (when, which, from and to which sequence).
    pub last_recovery: Mutex<Option<Json>>,
    /// Why the stream behind the node is not the one its data came from (recreated, or ending
    /// before its position), while the node refuses it; see `identity`.
    pub identity: Mutex<Option<String>>,
    /// How often such a stream was found.
    pub identity_problems: AtomicU64,
    /// The creation time of the stream the data comes from, once checked (ns, decimal).
    pub stream_created: Mutex<Option<String>>,
}

impl ReplStatus {
    /// Counts change set `seq` (origin time `ts`) as committed, with what applying it did.
    pub fn record_applied(&self, seq: u64, ts: i64, stats: &crate::changeset::apply::ApplyStats) {
        self.key_collisions
            .fetch_add(stats.collisions, Ordering::Relaxed);
        self.constraint_conflicts
            .fetch_add(stats.constraint_conflicts, Ordering::Relaxed);
        self.dropped_table_changes
            .fetch_add(stats.dropped_table, Ordering::Relaxed);
        self.applied_seq.fetch_max(seq, Ordering::AcqRel);
        self.applied_ts_ns.store(ts, Ordering::Release);
        if stats.already_here == 0 {
            self.applied_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks the node caught up once it applied what the stream held when it started.
    pub fn note_caught_up(&self, catch_up_to: u64) {
        if !self.caught_up.load(Ordering::Acquire) && self.applied() >= catch_up_to {
            self.caught_up.store(true, Ordering::Release);
            tracing::info!(
                applied = self.applied(),
                "caught up with the replication stream"
            );
        }
    }

    pub fn applied(&self) -> u64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    pub fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    pub fn identity(&self) -> Option<String> {
        self.identity.lock().ok().and_then(|g| g.clone())
    }

    pub fn set_identity(&self, reason: Option<String>) {
        if let Ok(mut g) = self.identity.lock() {
            *g = reason;
        }
    }

    pub fn stream_created(&self) -> Option<String> {
        self.stream_created.lock().ok().and_then(|g| g.clone())
    }

    pub fn set_stream_created(&self, created: Option<String>) {
        if let Ok(mut g) = self.stream_created.lock() {
            *g = created;
        }
    }

    pub fn gap(&self) -> Option<String> {
        self.gap.lock().ok().and_then(|g| g.clone())
    }

    /// Messages in the stream this node has not applied yet.
    pub fn lag_messages(&self) -> u64 {
        self.stream_last_seq
            .load(Ordering::Acquire)
            .saturating_sub(self.applied())
    }

    /// Why the node is not ready, if it is not.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if !self.connected.load(Ordering::Acquire) {
            r.push("not connected to NATS".to_string());
        } else if !self.publish_connected.load(Ordering::Acquire) {
            r.push("the connection for publishing to NATS is not up".to_string());
        }
        if !self.consuming.load(Ordering::Acquire) {
            r.push("replication stream not available yet".to_string());
        } else if !self.caught_up.load(Ordering::Acquire) {
            r.push(format!(
                "catching up with the stream ({} messages behind)",
                self.lag_messages()
            ));
        }
        if let Some(g) = self.gap() {
            r.push(g);
        }
        if let Some(i) = self.identity() {
            r.push(i);
        }
        r
    }

    pub fn to_json(&self) -> Json {
        let lag = self.lag_messages();
        let ts = self.applied_ts_ns.load(Ordering::Acquire);
        let lag_seconds = if lag == 0 || ts == 0 {
            0.0
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            ((now - ts).max(0) as f64) / 1e9
        };
        json!({
            "applied_seq": self.applied(),
            "stream_first_seq": self.stream_first_seq.load(Ordering::Acquire),
            "stream_last_seq": self.stream_last_seq.load(Ordering::Acquire),
            "lag_messages": lag,
            "lag_seconds": lag_seconds,
            "caught_up": self.caught_up.load(Ordering::Acquire),
            "nats_connected": self.connected.load(Ordering::Acquire),
            "nats_publish_connected": self.publish_connected.load(Ordering::Acquire),
            "consuming": self.consuming.load(Ordering::Acquire),
            "reconnects": self.reconnects.load(Ordering::Acquire),
            "applied_total": self.applied_total.load(Ordering::Acquire),
            "quarantined": self.quarantined.load(Ordering::Acquire),
            "key_collisions": self.key_collisions.load(Ordering::Acquire),
            "constraint_conflicts": self.constraint_conflicts.load(Ordering::Acquire),
            "dropped_table_changes": self.dropped_table_changes.load(Ordering::Acquire),
            "apply_retries": self.apply_retries.load(Ordering::Acquire),
            "gaps_detected": self.gaps_detected.load(Ordering::Acquire),
            "recoveries": self.recoveries.load(Ordering::Acquire),
            "gap": self.gap(),
            "last_error": self.last_error.lock().ok().and_then(|g| g.clone()),
            "last_recovery": self.last_recovery.lock().ok().and_then(|g| g.clone()),
            "stream_identity": {
                "created_ns": self.stream_created(),
                "problem": self.identity(),
                "problems_detected": self.identity_problems.load(Ordering::Acquire),
            },
        })
    }
}
