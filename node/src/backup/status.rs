//! Owns what a node knows of the cluster's off-cluster backups, for `/status` (`backup`) and
//! `/metrics`: the uploader writes it, and shares it through the lease so every node reports
//! the same state.
//! Must not do I/O.
//! Invariant: `failing` is true when the last upload or archive attempt failed, or when no
//! snapshot was uploaded for two intervals.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// The state the uploader publishes (also the lease's value).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Shared {
    pub node: String,
    pub last_upload_ns: Option<i128>,
    pub last_snapshot_seq: Option<u64>,
    pub archived_seq: u64,
    /// Stream time of the oldest message not yet archived (None: nothing waits).
    pub oldest_unarchived_ns: Option<i128>,
    pub last_error: Option<String>,
    /// The last snapshot upload or archive attempt failed.
    pub attempt_failed: bool,
    /// When the uploader started (ns): "nothing uploaded for 2 × interval" counts from it.
    pub since_ns: i128,
}

pub struct BackupStatus {
    pub url: String,
    pub interval: Duration,
    state: Mutex<(bool, Shared)>,
    pub failures: IntCounter,
    pub last_success: IntGauge,
    pub archived: IntGauge,
}

impl BackupStatus {
    pub fn new(url: String, interval: Duration) -> BackupStatus {
        BackupStatus {
            url,
            interval,
            state: Mutex::new((false, Shared::default())),
            failures: IntCounter::new(
                "ha_backup_failures_total",
                "Failed backup uploads and archive steps",
            )
            .expect("valid metric"),
            last_success: IntGauge::new(
                "ha_backup_last_success_timestamp_seconds",
                "When a snapshot was last uploaded to the backup storage (unix seconds)",
            )
            .expect("valid metric"),
            archived: IntGauge::new(
                "ha_backup_archived_seq",
                "The last stream sequence in the change-log archive",
            )
            .expect("valid metric"),
        }
    }

    pub fn shared(&self) -> Shared {
        self.state.lock().map(|g| g.1.clone()).unwrap_or_default()
    }

    pub fn is_uploader(&self) -> bool {
        self.state.lock().map(|g| g.0).unwrap_or(false)
    }

    /// Changes the shared state (on the uploader) and keeps the metrics in step.
    pub fn update(&self, f: impl FnOnce(&mut Shared)) {
        if let Ok(mut g) = self.state.lock() {
            f(&mut g.1);
            self.archived.set(g.1.archived_seq as i64);
            if let Some(t) = g.1.last_upload_ns {
                self.last_success.set((t / 1_000_000_000) as i64);
            }
        }
    }

    /// Whether this node holds the lease; on others, `seen` is the uploader's state.
    pub fn set_role(&self, uploader: bool, seen: Option<Shared>) {
        if let Ok(mut g) = self.state.lock() {
            g.0 = uploader;
            if let Some(s) = seen {
                g.1 = s;
            }
            self.archived.set(g.1.archived_seq as i64);
        }
    }

    pub fn failed(&self, what: &str, e: &super::BackupError) {
        self.failures.inc();
        let msg = format!("{what}: {e}");
        tracing::warn!(url = %self.url, error = %msg, "backup step failed; retrying with back-off");
        self.update(|s| {
            s.last_error = Some(msg);
            s.attempt_failed = true;
        });
    }

    pub fn failing(&self, s: &Shared, now_ns: i128) -> bool {
        let two = 2 * self.interval.as_nanos() as i128;
        let last = s.last_upload_ns.unwrap_or(s.since_ns);
        s.attempt_failed || (s.since_ns > 0 && now_ns - last > two)
    }

    /// The `/status` `backup` object.
    pub fn json(&self) -> Json {
        let (uploader, s) = self
            .state
            .lock()
            .map(|g| (g.0, g.1.clone()))
            .unwrap_or_default();
        let now = super::now_ns();
        let lag = s
            .oldest_unarchived_ns
            .map(|t| ((now - t).max(0) as f64) / 1e9)
            .unwrap_or(0.0);
        json!({
            "url": self.url,
            "uploader": uploader,
            "uploader_node": if s.node.is_empty() { None } else { Some(&s.node) },
            "last_upload_time": s.last_upload_ns.map(super::rfc3339),
            "last_snapshot_seq": s.last_snapshot_seq,
            "archived_seq": s.archived_seq,
            "archive_lag_seconds": lag,
            "last_error": s.last_error,
            "failing": self.failing(&s, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i128 = 1_000_000_000;

    fn status() -> BackupStatus {
        BackupStatus::new("s3://b/p".into(), Duration::from_secs(60))
    }

    #[test]
    fn failing_when_nothing_was_uploaded_for_two_intervals() {
        let st = status();
        let now = 10_000 * SEC;
        let uploaded = |ago: i128| Shared {
            since_ns: now - 5_000 * SEC,
            last_upload_ns: Some(now - ago * SEC),
            ..Default::default()
        };
        assert!(!st.failing(&uploaded(60), now), "one interval ago is fine");
        assert!(!st.failing(&uploaded(119), now), "just under two intervals");
        assert!(st.failing(&uploaded(121), now), "over two intervals");
        // Never uploaded: counted from when the uploader started.
        let fresh = Shared {
            since_ns: now - 100 * SEC,
            ..Default::default()
        };
        assert!(!st.failing(&fresh, now));
        let stuck = Shared {
            since_ns: now - 121 * SEC,
            ..Default::default()
        };
        assert!(st.failing(&stuck, now));
        // A failed attempt is failing at once; a node that never held the lease is not.
        assert!(st.failing(
            &Shared {
                attempt_failed: true,
                ..uploaded(1)
            },
            now
        ));
        assert!(!st.failing(&Shared::default(), now));
    }

    #[test]
    fn the_status_json_says_failing_for_a_stale_upload() {
        let st = status();
        st.set_role(
            true,
            Some(Shared {
                node: "n1".into(),
                since_ns: crate::backup::now_ns() - 600 * SEC,
                last_upload_ns: Some(crate::backup::now_ns() - 300 * SEC),
                last_snapshot_seq: Some(7),
                ..Default::default()
            }),
        );
        let j = st.json();
        assert_eq!(j["failing"], true, "{j}");
        assert_eq!(j["last_snapshot_seq"], 7);
        assert_eq!(j["uploader"], true);
    }
}
