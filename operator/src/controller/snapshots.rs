//! Owns the snapshot step: parses the schedule, and when a tick is due asks one ready node for a
//! snapshot, remembering the attempt so one tick never gives two.
//! Must not decide when a tick falls nor which node takes it (`crate::snapshots`).

use k8s_openapi::jiff::Timestamp;

use super::context::Context;
use super::events::Events;
use super::observe::target;
use crate::crd::{HaCluster, SnapshotStatus};
use crate::observed::Observed;
use crate::snapshots::{self, Tick};
use crate::status::Schedule;

/// The snapshot part of a reconcile.
pub(super) struct SnapshotOutcome {
    pub(super) schedule: Schedule,
    pub(super) last: Option<SnapshotStatus>,
    /// When the next tick falls, to requeue in time.
    pub(super) next: Option<Timestamp>,
}

pub(super) async fn snapshot_step(
    cluster: &HaCluster,
    key: &str,
    seen: &Observed,
    token: Option<&str>,
    now: Timestamp,
    ctx: &Context,
    events: &mut Events,
) -> SnapshotOutcome {
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_snapshot.clone());
    let keep = |schedule| SnapshotOutcome {
        schedule,
        last: previous.clone(),
        next: None,
    };
    let Some(expr) = &cluster.spec.snapshots.schedule else {
        return keep(Schedule::None);
    };
    let schedule = match snapshots::Schedule::parse(expr) {
        Ok(s) => s,
        Err(e) => {
            events.warning("InvalidSchedule", "Snapshot", e.clone());
            return keep(Schedule::Invalid(e));
        }
    };
    let last = snapshots::last_attempt(previous.as_ref()).max(ctx.remembered_attempt(key));
    let since = cluster
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let tick = match snapshots::tick(&schedule, last, since, now) {
        Ok(t) => t,
        Err(e) => return keep(Schedule::Invalid(e)),
    };
    let next_tick = |schedule: &snapshots::Schedule| schedule.next_after(now).ok();
    match tick {
        Tick::Wait { next } => SnapshotOutcome {
            schedule: Schedule::Next(Some(next)),
            last: previous,
            next: Some(next),
        },
        Tick::Due { scheduled } => {
            tracing::info!(cluster = %key, %scheduled, "snapshot due");
            ctx.remember_attempt(key, now);
            let result = take_snapshot(cluster, seen, token, now, ctx).await;
            let label = if result.result == snapshots::SUCCEEDED {
                events.normal(
                    "SnapshotTaken",
                    "Snapshot",
                    format!(
                        "snapshot by {}: {}",
                        result.node.as_deref().unwrap_or("?"),
                        result.message.as_deref().unwrap_or("")
                    ),
                );
                "succeeded"
            } else {
                events.warning(
                    "SnapshotFailed",
                    "Snapshot",
                    result.message.clone().unwrap_or_default(),
                );
                "failed"
            };
            ctx.metrics.snapshots.with_label_values(&[label]).inc();
            let next = next_tick(&schedule);
            SnapshotOutcome {
                schedule: Schedule::Next(next),
                last: Some(result),
                next,
            }
        }
    }
}

async fn take_snapshot(
    cluster: &HaCluster,
    seen: &Observed,
    token: Option<&str>,
    now: Timestamp,
    ctx: &Context,
) -> SnapshotStatus {
    let Some(pod) = snapshots::choose_node(seen, cluster.spec.replicas) else {
        return snapshots::failed(now, None, "no ready node to take the snapshot".into());
    };
    let Some(t) = target(pod, cluster.spec.http.port, token) else {
        return snapshots::failed(now, Some(&pod.name), "pod has no IP".into());
    };
    let previous_seq = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_snapshot.as_ref())
        .filter(|s| s.result == snapshots::SUCCEEDED)
        .and_then(|s| s.sequence);
    match ctx.nodes.snapshot(&t).await {
        Ok(taken) => snapshots::succeeded(now, &pod.name, &taken, previous_seq),
        Err(e) => snapshots::failed(now, Some(&pod.name), e.to_string()),
    }
}
