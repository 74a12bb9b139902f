//! Owns the node's Prometheus registry and every metric handle (names `ha_*`, unit suffixes).
//! Must not compute values itself beyond what scrapes ask for; owners update their metrics.
//! Invariant: a metric is registered once, here, so names cannot drift between modules.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route template, method and status code.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route template and method.
    pub http_duration: HistogramVec,
    /// Pages in use times page size, refreshed at each scrape.
    pub db_size: IntGauge,
    /// Write jobs waiting for the writer thread, refreshed at each scrape.
    pub write_queue: IntGauge,
    /// Failed statements by error code.
    pub exec_errors: IntCounterVec,
    /// Time from handing a change set to JetStream to its acknowledgement.
    pub publish_duration: Histogram,
    pub publish_failures: IntCounter,
    /// Time to apply one replicated change set (commit included).
    pub apply_duration: Histogram,
    /// Stream messages this node has not applied yet.
    pub lag_messages: IntGauge,
    pub quarantined: IntCounter,
    pub nats_reconnects: IntCounter,
    /// Replicated inserts that met another transaction's row with the same key.
    pub key_collisions: IntCounter,
    /// Rows of different keys that met on a UNIQUE constraint while applying (LWW settled it).
    pub constraint_conflicts: IntCounter,
    /// Gaps in the stream found (history purged before this node applied it).
    pub replication_gaps: IntCounter,
    /// Automatic restores of the latest snapshot after a gap.
    pub snapshot_recoveries: IntCounter,
    /// What the interceptor script decided (`--interceptor`).
    pub interceptor: InterceptorCounters,
}

/// The interceptor's counters, cheap clones of the registered ones handed to the script runner.
#[derive(Clone)]
pub struct InterceptorCounters {
    /// Received change sets `before` skipped (acknowledged, nothing applied).
    pub skipped: IntCounter,
    /// Received change sets whose apply error `after` ignored.
    pub rescued: IntCounter,
    /// Hook runs that threw, ran past a limit or returned something unexpected.
    pub failures: IntCounter,
    /// Changes `publish` kept on this node.
    pub unpublished_changes: IntCounter,
    /// Commits `publish` kept on this node entirely (nothing published).
    pub unpublished_sets: IntCounter,
}

impl InterceptorCounters {
    fn new() -> InterceptorCounters {
        let c =
            |name: &str, help: &str| IntCounter::new(name, help).expect("static metric definition");
        InterceptorCounters {
            skipped: c(
                "ha_interceptor_skipped_total",
                "Received change sets the interceptor's before() skipped",
            ),
            rescued: c(
                "ha_interceptor_rescued_total",
                "Received change sets whose apply error the interceptor's after() ignored",
            ),
            failures: c(
                "ha_interceptor_failures_total",
                "Interceptor hook runs that failed (threw, exceeded a limit, bad return value)",
            ),
            unpublished_changes: c(
                "ha_interceptor_unpublished_changes_total",
                "Changes the interceptor's publish() kept on this node",
            ),
            unpublished_sets: c(
                "ha_interceptor_unpublished_sets_total",
                "Commits the interceptor's publish() kept on this node entirely",
            ),
        }
    }
}

/// Unregistered counters, for an interceptor outside a node (tests).
impl Default for InterceptorCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("ha_http_requests_total", "HTTP requests served"),
            &["route", "method", "status"],
        )
        .expect("static metric definition");
        let http_duration = HistogramVec::new(
            HistogramOpts::new("ha_http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["route", "method"],
        )
        .expect("static metric definition");
        let db_size = IntGauge::new("ha_db_size_bytes", "Size of the database").expect("static");
        let write_queue = IntGauge::new("ha_write_queue_jobs", "Write jobs waiting for the writer")
            .expect("static metric definition");
        let exec_errors = IntCounterVec::new(
            Opts::new(
                "ha_exec_errors_total",
                "Requests that failed, by error code",
            ),
            &["code"],
        )
        .expect("static metric definition");
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ha_publish_duration_seconds",
                "Change-set publish until acknowledged",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        let publish_failures = IntCounter::new(
            "ha_publish_failures_total",
            "Change sets JetStream did not take",
        )
        .expect("static metric definition");
        let apply_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ha_apply_duration_seconds",
                "Applying one replicated change set",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        let lag_messages = IntGauge::new(
            "ha_replication_lag_messages",
            "Stream messages not applied yet",
        )
        .expect("static metric definition");
        let quarantined = IntCounter::new(
            "ha_quarantined_total",
            "Change sets that could not be applied",
        )
        .expect("static metric definition");
        let nats_reconnects = IntCounter::new("ha_nats_reconnects_total", "Lost NATS connections")
            .expect("static metric definition");
        let key_collisions = IntCounter::new(
            "ha_key_collisions_total",
            "Replicated inserts that met another transaction's row with the same key",
        )
        .expect("static metric definition");
        let constraint_conflicts = IntCounter::new(
            "ha_constraint_conflicts_total",
            "Replicated rows that met a row of another key on a UNIQUE constraint (the older was deleted)",
        )
        .expect("static metric definition");
        let replication_gaps = IntCounter::new(
            "ha_replication_gaps_total",
            "Gaps found in the replication stream (history purged before it was applied)",
        )
        .expect("static metric definition");
        let snapshot_recoveries = IntCounter::new(
            "ha_snapshot_recoveries_total",
            "Automatic restores of the latest snapshot after a gap",
        )
        .expect("static metric definition");
        let interceptor = InterceptorCounters::new();
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(db_size.clone()),
            Box::new(write_queue.clone()),
            Box::new(exec_errors.clone()),
            Box::new(publish_duration.clone()),
            Box::new(publish_failures.clone()),
            Box::new(apply_duration.clone()),
            Box::new(lag_messages.clone()),
            Box::new(quarantined.clone()),
            Box::new(nats_reconnects.clone()),
            Box::new(key_collisions.clone()),
            Box::new(constraint_conflicts.clone()),
            Box::new(replication_gaps.clone()),
            Box::new(snapshot_recoveries.clone()),
            Box::new(interceptor.skipped.clone()),
            Box::new(interceptor.rescued.clone()),
            Box::new(interceptor.failures.clone()),
            Box::new(interceptor.unpublished_changes.clone()),
            Box::new(interceptor.unpublished_sets.clone()),
        ] {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        Metrics {
            registry,
            http_requests,
            http_duration,
            db_size,
            write_queue,
            exec_errors,
            publish_duration,
            publish_failures,
            apply_duration,
            lag_messages,
            quarantined,
            nats_reconnects,
            key_collisions,
            constraint_conflicts,
            replication_gaps,
            snapshot_recoveries,
            interceptor,
        }
    }

    /// Registers metrics owned elsewhere (e.g. `backup`); a name registered twice is ignored.
    pub fn register(&self, collectors: Vec<Box<dyn prometheus::core::Collector>>) {
        for c in collectors {
            let _ = self.registry.register(c);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
