//! Owns the operator's Prometheus metrics: reconciliations, failures by error label, reconcile
//! durations, snapshot results and leadership.
//! Must not label by object name or anything else unbounded: labels are fixed small sets.
//! Invariant: every reconcile is counted once and timed by a drop guard, whatever path it ends on.
//! See `web` for `/metrics` and `controller::error_policy` for failures.

use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::Error;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciliations: IntCounter,
    pub failures: IntCounterVec,
    pub duration: Histogram,
    /// Scheduled snapshots by result (`succeeded`, `failed`).
    pub snapshots: IntCounterVec,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounter::new(
            "ha_operator_reconciliations_total",
            "Reconciliations of HaCluster objects",
        )
        .expect("static metric definition");
        let failures = IntCounterVec::new(
            Opts::new(
                "ha_operator_reconcile_failures_total",
                "Failed reconciliations by error",
            ),
            &["error"],
        )
        .expect("static metric definition");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "ha_operator_reconcile_duration_seconds",
                "Time one reconciliation took",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]),
        )
        .expect("static metric definition");
        let snapshots = IntCounterVec::new(
            Opts::new(
                "ha_operator_snapshots_total",
                "Scheduled snapshots by result",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let leader = IntGauge::new(
            "ha_operator_leader",
            "1 while this replica is the active operator",
        )
        .expect("static metric definition");
        for c in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(snapshots.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            snapshots,
            leader,
        }
    }

    /// Counts a reconciliation and times it until the guard drops.
    pub fn count_and_measure(&self) -> ReconcileTimer {
        self.reconciliations.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    pub fn set_failure(&self, e: &Error) {
        self.failures.with_label_values(&[e.metric_label()]).inc();
    }

    pub fn failure_count(&self, label: &str) -> u64 {
        self.failures.with_label_values(&[label]).get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Observes the reconcile's duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_reconcile_is_counted_and_observed() {
        let m = Metrics::new();
        drop(m.count_and_measure());
        m.set_failure(&Error::InvalidSpec("x".into()));
        let text = m.encode();
        assert!(
            text.contains("ha_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(text.contains("ha_operator_reconcile_duration_seconds_count 1"));
        assert!(text.contains("ha_operator_reconcile_failures_total{error=\"invalid_spec\"} 1"));
        assert_eq!(m.failure_count("invalid_spec"), 1);
    }
}
