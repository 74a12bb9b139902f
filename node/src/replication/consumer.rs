//! Owns reading the stream and applying it: one durable pull consumer per node, messages applied
//! in stream order through the executor, acknowledged only after they are committed.
//! Must not write SQLite itself: `exec::Executor::apply` / `quarantine` do, on the writer.
//! Invariant: the position lives in the database (`applied_seq`), not in the durable: at every
//! (re)start the durable is recreated to begin right after it, so a restart, a restored backup
//! or a deleted durable all resume at the right place. A message that cannot be applied is
//! retried with back-off and then quarantined, never dropped silently.
//! A gap (the stream purged what the node needs next) is judged by `gap` at start and while
//! running; the consumer then restarts itself, and the restart restores the latest snapshot.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use ha_follow::{Backoff, InOrder, Received, pull};
use tokio_util::sync::CancellationToken;

use super::gap::{DurableState, GapWatch, Verdict};
use super::names::DeliverPolicy;
use super::status::ReplStatus;
use crate::changeset::{self, ChangeSet, Seq};
use crate::exec::Executor;
use crate::metrics::Metrics;

/// Whether an apply error is one every node meets the same way with this change set (then it
/// is quarantined at once); anything else is transient and retried.
fn is_deterministic(e: &crate::exec::ExecError) -> bool {
    use crate::exec::ErrorCode as C;
    matches!(
        e.code(),
        C::InvalidSql | C::Constraint | C::Interceptor | C::BadRequest | C::Unsupported
    )
}

/// A batch being applied and then acknowledged, and when that started.
struct Applying<'a> {
    run: futures::future::BoxFuture<'a, Result<(), ConsumeError>>,
    started: Instant,
}

pub struct ConsumerConfig {
    pub stream: String,
    pub subject: String,
    pub durable: String,
    pub replicas: usize,
    pub max_age: Duration,
    pub policy: DeliverPolicy,
    /// How long the parts of a split change set may wait for the rest.
    pub part_timeout: Duration,
}

pub struct Consumer {
    pub config: ConsumerConfig,
    pub js: jetstream::Context,
    pub exec: Executor,
    pub status: Arc<ReplStatus>,
    pub metrics: Arc<Metrics>,
    /// Where to recover from when the stream no longer holds what this node needs.
    pub snapshots: Option<Arc<crate::snapshot::Snapshots>>,
    /// How far the node is known complete; kept across restarts of `consume`.
    pub gaps: GapWatch,
    /// Set when `consume` stopped on a gap found while it ran; the next recovery says so.
    pub gap_while_running: std::sync::atomic::AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("{0}")]
    Nats(String),
    #[error("{0}")]
    Db(#[from] crate::exec::ExecError),
    /// The stream lost messages this node needs while it was consuming: restart (and recover).
    #[error(
        "gap in the replication stream while consuming: applied up to {applied}, the stream now starts at {first}"
    )]
    Gap { applied: u64, first: u64 },
    /// The stream is not the one the node's data came from (see `identity`).
    #[error(transparent)]
    Identity(#[from] super::identity::IdentityError),
}

fn nats<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ConsumeError + '_ {
    move |e| ConsumeError::Nats(format!("{what}: {e}"))
}

/// The stream configuration of reference §2.4 (the last node to start writes it).
pub fn stream_config(c: &ConsumerConfig) -> stream::Config {
    stream::Config {
        name: c.stream.clone(),
        subjects: super::names::stream_subjects(&c.stream),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: c.max_age,
        num_replicas: c.replicas,
        ..Default::default()
    }
}

impl Consumer {
    /// Consumes until `shutdown`, reconnecting and recreating the durable as needed.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::restart();
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            match self.consume(&shutdown).await {
                Ok(()) => return,
                Err(ConsumeError::Gap { applied, first }) => {
                    self.status.consuming.store(false, Ordering::Release);
                    self.status.caught_up.store(false, Ordering::Release);
                    self.status.gaps_detected.fetch_add(1, Ordering::Relaxed);
                    self.metrics.replication_gaps.inc();
                    tracing::warn!(
                        applied,
                        first,
                        "gap detected while consuming: the stream purged messages this node had not applied; restarting the consumer to recover from the latest snapshot"
                    );
                    self.gap_while_running.store(true, Ordering::Release);
                    // The restart judges the gap again with fresh numbers and recovers.
                    continue;
                }
                Err(e) => {
                    self.status.consuming.store(false, Ordering::Release);
                    let pause = backoff.after_life(started.elapsed());
                    tracing::warn!(error = %e, retry_in = ?pause, "replication consumer stopped; restarting");
                    self.status.set_error(Some(e.to_string()));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let cfg = &self.config;
        let mut stream = match self.js.create_or_update_stream(stream_config(cfg)).await {
            Ok(_) => self
                .js
                .get_stream(&cfg.stream)
                .await
                .map_err(nats("get stream"))?,
            Err(e) => {
                // Another node may own a slightly different config; use what is there. If there
                // is nothing, the creation's own error is the one that explains.
                tracing::debug!(error = %e, "create_or_update_stream failed; opening the stream");
                self.js.get_stream(&cfg.stream).await.map_err(|_| {
                    ConsumeError::Nats(format!(
                        "cannot create stream {} with {} replica(s) (--replicas): {e}",
                        cfg.stream, cfg.replicas
                    ))
                })?
            }
        };
        let info = stream.info().await.map_err(nats("stream info"))?.clone();
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        self.status.stream_first_seq.store(first, Ordering::Release);
        self.status.stream_last_seq.store(last, Ordering::Release);

        let mut applied = self.exec.applied_seq().await?.0;
        self.status.applied_seq.store(applied, Ordering::Release);
        let node = super::identity::Node {
            exec: &self.exec,
            status: &self.status,
            metrics: &self.metrics,
            snapshots: self.snapshots.as_deref(),
        };
        applied = super::identity::check(&node, &info, applied).await?;
        // A gap: what this node needs next is no longer in the stream (history aged out, or a
        // new node reading "all" of a stream that no longer starts at 1).
        let needs_history = applied > 0 || matches!(cfg.policy, DeliverPolicy::All);
        let while_running = self.gap_while_running.swap(false, Ordering::AcqRel);
        if needs_history && self.gaps.is_gap(applied, first) {
            if !while_running {
                self.status.gaps_detected.fetch_add(1, Ordering::Relaxed);
                self.metrics.replication_gaps.inc();
            }
            applied = self.recover(applied, first, while_running).await?;
            let report = if !self.gaps.is_gap(applied, first) {
                None
            } else if applied > 0 {
                Some(format!(
                    "gap in the replication stream: this node applied up to {applied} but the stream starts at {first}; \
                     the changes in between are gone (older than --replication-max-age) and no snapshot covers them — \
                     restore from a snapshot or a backup"
                ))
            } else {
                Some(format!(
                    "gap in the replication stream: this node has no data but the stream starts at {first}; \
                     the changes before it are gone and no snapshot covers them — restore from a snapshot or a backup"
                ))
            };
            if let Some(msg) = &report {
                tracing::error!("{msg}");
                // Reported (and kept in /status until a recovery): do not judge this hole again.
                self.gaps.learn(first - 1);
            }
            if let Ok(mut g) = self.status.gap.lock() {
                *g = report;
            }
        }
        let deliver = if applied == 0 && needs_history && first > 1 {
            consumer::DeliverPolicy::All
        } else {
            pull::start_at(applied, &cfg.policy)
        };
        // Nothing older than where we start counts for catching up.
        if applied >= last || matches!(deliver, consumer::DeliverPolicy::New) {
            self.status.caught_up.store(true, Ordering::Release);
        }
        let catch_up_to = last;

        // The durable is only a cursor: recreate it where the database says we are.
        let config = pull::config(Some(cfg.durable.clone()), &cfg.subject, deliver);
        let consumer = pull::recreate(&stream, config)
            .await
            .map_err(nats("create consumer"))?;
        let mut messages = pull::messages(&consumer).await.map_err(nats("pull"))?;
        self.status.consuming.store(true, Ordering::Release);
        self.status.set_error(None);
        tracing::info!(stream = %cfg.stream, subject = %cfg.subject, durable = %cfg.durable, from = applied + 1, "replication consumer started");

        // What was received, in stream order, until it may be applied (see `ha_follow::in_order`).
        let mut received = InOrder::new(cfg.part_timeout);
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        // The highest sequence taken so far (applied, being applied, or held in `received`).
        let mut taken = self.status.applied();
        // The last message received and not yet acknowledged (acks are cumulative).
        let mut unacked: Option<jetstream::Message> = None;
        // One batch at a time is applied (and then acknowledged) on the writer while the next
        // messages are received and decoded here; the next batch starts when it is done, so
        // change sets still apply one batch after the other, in stream order.
        let mut applying: Option<Applying<'_>> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                done = async { applying.as_mut().expect("guarded").run.as_mut().await },
                    if applying.is_some() =>
                {
                    let started = applying.take().expect("guarded").started;
                    done?;
                    // Parts keep coming while the writer is busy (a long pg transaction holds
                    // it): that wait is not the origin giving up, so it does not count.
                    received.not_counting(started.elapsed());
                    self.status.note_caught_up(catch_up_to);
                }
                _ = refresh.tick() => {
                    // What follows judges the position: nothing may move locally meanwhile.
                    if let Some(a) = applying.take() {
                        a.run.await?;
                        received.not_counting(a.started.elapsed());
                    }
                    self.status.note_caught_up(catch_up_to);
                    if let Ok(i) = stream.info().await {
                        let (first, last) = (i.state.first_sequence, i.state.last_sequence);
                        self.status.stream_first_seq.store(first, Ordering::Release);
                        self.status.stream_last_seq.store(last, Ordering::Release);
                        super::identity::watch(&self.status, i)?;
                        if self.watches_gaps() {
                            self.look_for_gap(&mut stream, first, last).await?;
                        }
                    }
                    self.metrics.lag_messages.set(self.status.lag_messages() as i64);
                    if let Some(all) = received.expired() {
                        self.release(all, shutdown).await?;
                    }
                }
                m = messages.next() => {
                    let Some(msg) = m else {
                        return Err(ConsumeError::Nats("message stream ended".into()));
                    };
                    // Take what else is already here: applied together, they share one commit.
                    let batch = pull::with_arrived(msg, &mut messages)
                        .into_iter()
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(nats("receive"))?;
                    for msg in &batch {
                        let seq = Seq(msg
                            .info()
                            .map_err(nats("message metadata"))?
                            .stream_sequence);
                        if seq.0 <= taken {
                            continue;
                        }
                        // This node's own commit, which moved the applied position itself.
                        if seq.0 <= self.exec.applied_position().0 {
                            taken = seq.0;
                            self.status.applied_seq.fetch_max(seq.0, Ordering::AcqRel);
                            continue;
                        }
                        if seq.0 > self.gaps.position(taken) + 1 && self.watches_gaps() {
                            // A jump: the messages in between were other subjects' or were
                            // purged before they reached us. Only the stream's first sequence,
                            // asked now, tells.
                            if let Some(a) = applying.take() {
                                a.run.await?;
                            }
                            let first = stream
                                .info()
                                .await
                                .map_err(nats("stream info"))?
                                .state
                                .first_sequence;
                            self.status.stream_first_seq.store(first, Ordering::Release);
                            if self.gaps.jump_is_gap(taken, seq.0, first) {
                                // What came before the hole is whole: keep it, then recover.
                                self.release(received.whole(), shutdown).await?;
                                return Err(ConsumeError::Gap {
                                    applied: self.status.applied(),
                                    first,
                                });
                            }
                        }
                        taken = seq.0;
                        received.receive(seq, &msg.payload);
                    }
                    if let Some(last) = batch.into_iter().last() {
                        unacked = Some(last);
                    }
                }
            }
            if applying.is_none() && unacked.is_some() {
                let (ready, ack) = (received.ready(), unacked.take());
                applying = Some(Applying {
                    run: Box::pin(async move {
                        self.release(ready, shutdown).await?;
                        pull::ack_batch(ack.as_slice()).await.map_err(nats("ack"))
                    }),
                    started: Instant::now(),
                });
            }
        }
    }

    fn watches_gaps(&self) -> bool {
        self.status.applied() > 0 || matches!(self.config.policy, DeliverPolicy::All)
    }

    /// The periodic look for a gap when no message arrives (a node resumed after a pause has
    /// nothing to jump over until the next write); learns how far the node is complete.
    async fn look_for_gap(
        &self,
        stream: &mut stream::Stream,
        first: u64,
        last: u64,
    ) -> Result<(), ConsumeError> {
        let applied = self.status.applied();
        if !self.gaps.is_gap(applied, first) && last <= self.gaps.position(applied) {
            return Ok(()); // caught up: nothing to learn, nothing lost (the common case)
        }
        let Ok(d) = stream.consumer_info(&self.config.durable).await else {
            return Ok(()); // judged at the next tick
        };
        let Ok(after) = stream.info().await else {
            return Ok(());
        };
        let first_after = after.state.first_sequence;
        let durable = DurableState {
            num_pending: d.num_pending,
            num_ack_pending: d.num_ack_pending as u64,
        };
        // Nothing moves locally while this runs (apply and ack happen in the other arm).
        let applied = self.status.applied();
        match self.gaps.judge(applied, first, last, durable, first_after) {
            Verdict::Fine => Ok(()),
            Verdict::Covered(n) => {
                self.gaps.learn(n);
                Ok(())
            }
            Verdict::Gap => Err(ConsumeError::Gap {
                applied,
                first: first.max(first_after),
            }),
        }
    }

    /// Restores the newest snapshot that covers a gap (`seq >= first - 1`) into the live
    /// database; returns the applied sequence afterwards (unchanged when none covers it).
    async fn recover(
        &self,
        applied: u64,
        first: u64,
        while_running: bool,
    ) -> Result<u64, ConsumeError> {
        let Some(snaps) = &self.snapshots else {
            return Ok(applied);
        };
        tracing::warn!(
            applied,
            first,
            "the stream no longer holds what this node needs; recovering from the latest snapshot"
        );
        let started = Instant::now();
        match snaps.recover(&self.exec, applied, first).await {
            Ok(Some((f, refused))) => {
                let now = self.exec.applied_seq().await?.0;
                self.status.applied_seq.store(now, Ordering::Release);
                let report = serde_json::json!({
                    "at": time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    "snapshot": f.name,
                    "from_seq": applied,
                    "to_seq": now,
                    "stream_first_seq": first,
                    "bytes": f.bytes,
                    "duration_ms": started.elapsed().as_millis() as u64,
                    "refused": refused,
                    "detected": if while_running { "while consuming" } else { "at start" },
                });
                self.status.recoveries.fetch_add(1, Ordering::Relaxed);
                self.metrics.snapshot_recoveries.inc();
                tracing::warn!(snapshot = %f.name, from = applied, to = now, bytes = f.bytes, "recovered from a snapshot; resuming the stream after it");
                if let Ok(mut g) = self.status.last_recovery.lock() {
                    *g = Some(report);
                }
                Ok(now)
            }
            Ok(None) => {
                tracing::error!(
                    applied,
                    first,
                    "no usable snapshot covers the gap; the node stays behind (see /status)"
                );
                Ok(applied)
            }
            Err(e) => {
                tracing::error!(error = %e, "recovery from a snapshot failed");
                Err(ConsumeError::Nats(format!("recovery from a snapshot: {e}")))
            }
        }
    }

    /// Applies change sets in stream order, together in one transaction when they all apply;
    /// from the first that fails on, one by one with retries (and quarantine).
    /// Applies (or quarantines) `items`, in order.
    async fn release(
        &self,
        items: Vec<(Seq, Received)>,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let mut run = Vec::new();
        for (seq, item) in items {
            match item {
                Received::Change(cs, payload) => run.push((seq, *cs, payload)),
                Received::Undecodable(e, payload) => {
                    self.apply_in_order(std::mem::take(&mut run), shutdown)
                        .await?;
                    self.quarantine(seq, format!("cannot decode: {e}"), 1, &payload)
                        .await?;
                }
            }
        }
        self.apply_in_order(run, shutdown).await
    }

    async fn apply_in_order(
        &self,
        items: Vec<(Seq, ChangeSet, Vec<u8>)>,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        if items.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let items: Vec<(Seq, Arc<ChangeSet>, Vec<u8>)> = items
            .into_iter()
            .map(|(s, cs, payload)| (s, Arc::new(cs), payload))
            .collect();
        let shared: Vec<(Seq, Arc<ChangeSet>)> =
            items.iter().map(|(s, cs, _)| (*s, cs.clone())).collect();
        let results = self.exec.apply_batch(shared).await;
        let n = items.len() as f64;
        for (i, ((seq, cs, payload), result)) in items.into_iter().zip(results).enumerate() {
            match result {
                Ok(stats) => {
                    self.metrics
                        .apply_duration
                        .observe(start.elapsed().as_secs_f64() / n);
                    self.applied(seq, cs.timestamp_ns, &stats);
                }
                Err(e) => {
                    tracing::debug!(%seq, index = i, error = %e, "batched apply stopped; going one by one");
                    self.apply_or_quarantine(seq, cs, &payload, shutdown)
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn applied(&self, seq: Seq, ts: i64, stats: &crate::changeset::apply::ApplyStats) {
        self.metrics.key_collisions.inc_by(stats.collisions);
        self.metrics
            .constraint_conflicts
            .inc_by(stats.constraint_conflicts);
        self.status.record_applied(seq.0, ts, stats);
    }

    /// Applies one change set. A transient failure (busy, locked, interrupted, the writer or
    /// the disk in trouble) is retried without bound, with back-off up to a second; a failure
    /// that every node meets the same way (the SQL does not compile, a constraint the
    /// conflict rule does not settle, the interceptor script) is quarantined at once, so that
    /// later messages never wait behind it.
    async fn apply_or_quarantine(
        &self,
        seq: Seq,
        cs: Arc<ChangeSet>,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let mut wait = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        for attempt in 1u32.. {
            let start = Instant::now();
            match self.exec.apply(seq, cs.clone()).await {
                Ok(stats) => {
                    self.metrics
                        .apply_duration
                        .observe(start.elapsed().as_secs_f64());
                    self.applied(seq, cs.timestamp_ns, &stats);
                    tracing::trace!(%seq, applied = stats.applied, superseded = stats.superseded, "applied");
                    return Ok(());
                }
                Err(e) if is_deterministic(&e) => {
                    return self
                        .quarantine(seq, e.to_string(), attempt, &self.payload_of(&cs, payload))
                        .await;
                }
                Err(e) => {
                    self.status.apply_retries.fetch_add(1, Ordering::Relaxed);
                    if attempt % 50 == 1 {
                        tracing::warn!(%seq, attempt, error = %e, "cannot apply change set yet (transient), retrying");
                    }
                    self.status.set_error(Some(format!(
                        "applying message {seq} (attempt {attempt}): {e}"
                    )));
                }
            }
            tokio::select! {
                // Not applied, not acknowledged: nothing after it may apply; the next start
                // takes it up again.
                _ = shutdown.cancelled() => {
                    return Err(ConsumeError::Nats(format!("stopped while retrying message {seq}")));
                }
                _ = tokio::time::sleep(wait.next_pause()) => {}
            }
        }
        Ok(())
    }

    /// The message as received, or re-encoded when it was assembled from parts.
    fn payload_of(&self, cs: &ChangeSet, payload: &[u8]) -> Vec<u8> {
        if payload.is_empty() {
            changeset::encode(cs).unwrap_or_default()
        } else {
            payload.to_vec()
        }
    }

    async fn quarantine(
        &self,
        seq: Seq,
        error: String,
        attempts: u32,
        payload: &[u8],
    ) -> Result<(), ConsumeError> {
        tracing::error!(%seq, attempts, error = %error, "change set quarantined (see _ha_quarantine and /status); later changes go on");
        self.exec
            .quarantine(seq, error, attempts, payload.to_vec())
            .await?;
        self.status.applied_seq.store(seq.0, Ordering::Release);
        self.status.quarantined.fetch_add(1, Ordering::Relaxed);
        self.metrics.quarantined.inc();
        Ok(())
    }
}
