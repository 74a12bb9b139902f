//! Owns `--snapshot-interval`: a task that takes a snapshot on every tick until shutdown.

use std::time::Duration;

use super::Snapshots;
use crate::exec::Executor;

/// Takes a snapshot every `interval` until `shutdown`; never blocks start-up, errors are
/// logged and counted. The caller spawns it (and tracks it).
pub async fn take_every(
    snapshots: std::sync::Arc<Snapshots>,
    exec: Executor,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; start one interval after start-up
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match snapshots.take(&exec).await {
            Ok(t) if t.skipped => tracing::debug!("periodic snapshot: nothing new"),
            Ok(t) => tracing::info!(seq = t.seq, bytes = t.bytes, "periodic snapshot taken"),
            Err(e) => tracing::error!(error = %e, "periodic snapshot failed"),
        }
    }
}
