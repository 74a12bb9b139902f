//! Owns the status writes: the status of what a reconcile saw goes out by server-side apply
//! (field manager `ha-operator`, force) after the Lease check; `failed_status` is the status of
//! a reconcile stopped by an error, and `report_failure` writes it with its Warning Event.
//! Must not compute a status itself: `status::compute` does.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::FIELD_MANAGER;
use super::context::Context;
use super::events::Events;
use crate::crd::{HaCluster, HaClusterStatus};
use crate::observed::Observed;
use crate::rollout::{Rollout, RolloutDecision};
use crate::status::{self, Inputs, Schedule};
use crate::{Error, Result, scaling};

/// Best effort: the API server that failed the reconcile may fail these too (then the log and
/// the failure metric are what is left).
pub(super) async fn report_failure(cluster: &HaCluster, ctx: &Context, e: &Error) {
    let mut events = Events::default();
    events.warning(e.reason(), "Reconcile", e.to_string());
    let status = failed_status(cluster, e, (ctx.clock)());
    if let Err(err) = patch_status(ctx, cluster, &status).await {
        tracing::warn!(error = %err, "writing the status of a failed reconcile failed");
    }
    events.publish(ctx, cluster).await;
}

/// The status of a cluster whose spec or Secrets cannot be used.
pub(super) fn failed_status(cluster: &HaCluster, e: &Error, now: Timestamp) -> HaClusterStatus {
    let name = cluster.name_any();
    let seen = Observed::default();
    let rollout = RolloutDecision {
        partition: cluster.spec.replicas,
        rollout: Rollout::Idle,
        updated: 0,
    };
    let scale = scaling::Decision {
        replicas: cluster.spec.replicas,
        scale: scaling::Scale::Steady,
    };
    let previous = cluster.status.as_ref();
    let mut s = status::compute(&Inputs {
        cluster: &name,
        generation: cluster.metadata.generation,
        spec: &cluster.spec,
        previous,
        stateful_set: None,
        seen: &seen,
        rollout: &rollout,
        scale: &scale,
        storage: None,
        departed: &[],
        leaving: &[],
        schedule: Schedule::None,
        last_snapshot: previous.and_then(|p| p.last_snapshot.clone()),
        endpoints: previous.and_then(|p| p.endpoints.clone()),
        failure: Some(e.to_string()),
        now,
    });
    for c in &mut s.conditions {
        if c.reason == "InvalidSpec" {
            c.reason = e.reason().into();
        }
    }
    // Nothing was observed: keep what the last good reconcile saw of the nodes and backups.
    s.conditions
        .retain(|c| c.type_ != crate::backups::BACKUP_FAILING);
    if let Some(p) = previous {
        s.backup = p.backup.clone();
        s.conditions.extend(
            p.conditions
                .iter()
                .filter(|c| c.type_ == crate::backups::BACKUP_FAILING)
                .cloned(),
        );
        s.nodes = p.nodes.clone();
        s.ready_replicas = p.ready_replicas;
        s.replicas = p.replicas;
        s.ready = Some(format!("{}/{}", p.ready_replicas, cluster.spec.replicas));
    }
    s
}

pub(super) async fn patch_status(
    ctx: &Context,
    cluster: &HaCluster,
    status: &HaClusterStatus,
) -> Result<()> {
    let ns = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<HaCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.may_write()?;
    api.patch_status(
        &cluster.name_any(),
        &pp,
        &Patch::Apply(status::patch(status)),
    )
    .await?;
    Ok(())
}
