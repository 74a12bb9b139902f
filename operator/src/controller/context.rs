//! Owns `Context`, what every reconcile shares: the API client, the Event recorder, metrics, the
//! nodes' client, the render function, the clock, the per-object failure counts and snapshot
//! attempts, and the leader-Lease gate (`may_write`) every write checks first.
//! Must not talk to the API server or the nodes itself: the steps do, through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::{FIELD_MANAGER, RenderFn};
use crate::metrics::Metrics;
use crate::node_client::NodeClient;
use crate::{Error, Result};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub nodes: NodeClient,
    pub render: RenderFn,
    /// Wall clock (tests pass a fixed one).
    pub clock: fn() -> Timestamp,
    /// Consecutive failures per object (`ns/name`), for the error back-off. Never held across
    /// an await.
    failures: Mutex<HashMap<String, u32>>,
    /// Last snapshot attempt per object: covers the moment before its status write is visible
    /// in the watch cache, so one tick never gives two snapshots.
    snapshot_attempts: Mutex<HashMap<String, Timestamp>>,
    /// Whether this replica holds the leader Lease (always, without leader election): every
    /// write of a reconcile checks it first, so a replica that lost the Lease mid-reconcile
    /// stops before its next write.
    leading: tokio::sync::watch::Receiver<bool>,
    /// This replica's name (Events, the lease-lost error).
    identity: String,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, identity: &str) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.into()),
            },
        );
        Self {
            client,
            recorder,
            metrics,
            nodes: NodeClient::default(),
            render: crate::render::render,
            clock: Timestamp::now,
            failures: Mutex::default(),
            snapshot_attempts: Mutex::default(),
            leading: tokio::sync::watch::channel(true).1,
            identity: identity.into(),
        }
    }

    /// Writes only while `leading` says this replica holds the leader Lease.
    pub fn follow_lease(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = leading;
        self
    }

    /// `Err(LeaseLost)` once this replica no longer holds the leader Lease: called before every
    /// write to the API server or to a node.
    pub(super) fn may_write(&self) -> Result<()> {
        if *self.leading.borrow() {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                identity: self.identity.clone(),
            })
        }
    }

    pub(super) fn record_failure(&self, key: &str) -> u32 {
        let Ok(mut m) = self.failures.lock() else {
            return 1;
        };
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub(super) fn reset_failures(&self, key: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(key);
        }
    }

    /// When this operator last asked `key`'s cluster for a snapshot (its scenario tests read it).
    pub(crate) fn remembered_attempt(&self, key: &str) -> Option<Timestamp> {
        self.snapshot_attempts
            .lock()
            .ok()
            .and_then(|m| m.get(key).copied())
    }

    pub(super) fn remember_attempt(&self, key: &str, at: Timestamp) {
        if let Ok(mut m) = self.snapshot_attempts.lock() {
            m.insert(key.to_string(), at);
        }
    }
}
