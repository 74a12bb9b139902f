//! Owns the order of one Apply reconcile: credentials and render, observe, the scale step, the
//! rollout partition and the apply of every object, storage, departed-node cleanup, snapshots,
//! then the status and its Events, and when to come back.
//! Must not do a step's work inline: each step is a function of a sibling file, each decision
//! one of the pure modules.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::SignedDuration;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::children::{apply_children, apply_service_monitor, set_partition};
use super::cleanup::{clean_departed, clean_stale_generations};
use super::context::Context;
use super::events::{Events, note_changes};
use super::key_of;
use super::observe::{departed, observe, read_meta, read_streams, revisions_of, target};
use super::secrets::{credentials_and_render, node_token};
use super::snapshots::snapshot_step;
use super::status_write::{failed_status, patch_status};
use super::storage::storage_step;
use crate::crd::HaCluster;
use crate::rollout::{self, Rollout};
use crate::status::{self, Inputs};
use crate::{Error, Result, credentials, members, scaling, storage};

/// Requeue while nothing is in progress (refreshes per-node sequences and lag).
const REQUEUE_STEADY: Duration = Duration::from_secs(60);
/// Requeue while creating, scaling or updating.
const REQUEUE_BUSY: Duration = Duration::from_secs(10);

/// Everything one Apply reconcile does, in order.
pub(super) async fn apply_steps(cluster: &HaCluster, ctx: &Context) -> Result<Action> {
    let name = cluster.name_any();
    let ns = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let key = key_of(cluster);
    let now = (ctx.clock)();
    let previous = cluster.status.as_ref();
    let mut events = Events::default();

    // 1. Credentials (created once), the render of every object, the nodes' API token.
    let prepared = match credentials_and_render(cluster, &ns, ctx, &mut events).await {
        Ok((r, creds)) => node_token(cluster, &ns, &creds, ctx).await.map(|t| (r, t)),
        Err(e) => Err(e),
    };
    let (rendered, token) = match prepared {
        Ok(p) => p,
        Err(e @ (Error::InvalidSpec(_) | Error::Secret { .. })) => {
            // The user must fix something: say so in the status, then fail (counted, backed off).
            let reason = match e {
                Error::Secret { .. } => "SecretUnusable",
                _ => "InvalidSpec",
            };
            events.warning(reason, "Reconcile", e.to_string());
            let status = failed_status(cluster, &e, now);
            patch_status(ctx, cluster, &status).await?;
            events.publish(ctx, cluster).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };

    // 2. Observe: the live StatefulSet, its pods and each node's /status.
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let sts_name = rendered
        .stateful_set
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingField("StatefulSet metadata.name"))?;
    let live = sts_api.get_opt(&sts_name).await?;
    let seen = observe(cluster, &ns, &rendered.stateful_set, token.as_deref(), ctx).await?;
    let desired = cluster.spec.replicas;
    let live_replicas = live
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas);
    let at = live_replicas.unwrap_or(desired);
    let embedded = cluster.spec.embedded_nats();
    let (meta, streams) = if embedded && at > 1 && desired != at {
        (
            Some(read_meta(cluster, at, &seen, token.as_deref(), ctx).await),
            Some(read_streams(cluster, at, &seen, token.as_deref(), ctx).await),
        )
    } else if embedded && at > 1 {
        (
            Some(read_meta(cluster, at, &seen, token.as_deref(), ctx).await),
            None,
        )
    } else {
        (None, None)
    };
    let revisions = revisions_of(live.as_ref());

    // 3. Decide the scale step: one pod at a time, only from a whole cluster.
    let pending = departed(&name, at, previous, &seen, meta.as_ref());
    let rolling = rollout::decide(&name, at, &revisions, &seen).rollout != Rollout::Idle;
    let scale = scaling::decide(&scaling::Inputs {
        cluster: &name,
        desired,
        live: live_replicas,
        embedded,
        seen: &seen,
        meta: meta.as_ref(),
        streams: streams.as_ref(),
        departed: &pending.clean,
        rolling,
    });
    let replicas = scale.replicas;
    let rendered = if replicas == desired {
        rendered
    } else {
        let creds = credentials::from_secret(&rendered.secret)?;
        (ctx.render)(&scaling::at_step(cluster, replicas), &ns, &creds)?
    };

    // 4. Decide the rolling-update partition and apply every object; the StatefulSet keeps
    //    its live volume claim templates (it cannot change them).
    let rollout = rollout::decide(&name, replicas, &revisions, &seen);
    let mut rendered = rendered;
    set_partition(&mut rendered.stateful_set, rollout.partition);
    let storage_change = match &live {
        Some(l) => {
            let change = storage::compare(l, &rendered.stateful_set);
            storage::keep_live_claims(&mut rendered.stateful_set, l);
            change
        }
        None => storage::Change::None,
    };
    let applied = apply_children(cluster, &ns, &rendered, ctx).await?;
    ctx.may_write()?;
    if let Some(sm) = &rendered.service_monitor
        && let Err(e) = apply_service_monitor(ctx, &ns, sm).await
    {
        // Opt-in and outside the cluster's own objects: said, never blocking the reconcile.
        events.warning("ServiceMonitorFailed", "Monitoring", e);
    }
    let volumes = storage_step(cluster, &ns, &storage_change, ctx, &mut events).await?;
    note_changes(
        cluster,
        live.as_ref(),
        &revisions,
        &rollout,
        &scale,
        &mut events,
    );

    // 5. Membership: remove departed nodes' consumers and peers once their pods are gone, and
    //    servers that earlier generations of live pods left behind.
    ctx.may_write()?;
    let plan = departed(&name, replicas, previous, &seen, meta.as_ref());
    let via = seen
        .ready_pods()
        .filter(|p| p.ordinal < replicas)
        .find_map(|p| target(p, cluster.spec.http.port, token.as_deref()));
    let what = members::Cleanup {
        cluster: &name,
        db_file: &cluster.spec.database.name,
        jetstream_peers: embedded && replicas > 1,
        meta: meta.as_ref().and_then(|m| m.as_ref().ok()),
    };
    clean_stale_generations(via.as_ref(), what, replicas, ctx, &mut events).await;
    let (departed, deferred) = clean_departed(&plan, via, what, ctx, &mut events).await;

    // 6. The snapshot schedule.
    ctx.may_write()?;
    let snap = snapshot_step(
        cluster,
        &key,
        &seen,
        token.as_deref(),
        now,
        ctx,
        &mut events,
    )
    .await;

    // 7. Status, then Events.
    let status = status::compute(&Inputs {
        cluster: &name,
        generation: cluster.metadata.generation,
        spec: &cluster.spec,
        previous,
        stateful_set: Some(&applied),
        seen: &seen,
        rollout: &rollout,
        scale: &scale,
        storage: volumes,
        departed: &departed,
        leaving: &plan.leaving,
        schedule: snap.schedule,
        last_snapshot: snap.last,
        endpoints: Some(status::endpoints(&name, &ns, &cluster.spec)),
        failure: None,
        now,
    });
    let before = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    if let Some(t) = crate::backups::transition(before, &status.conditions) {
        if t.warning {
            events.warning(t.reason, "Backup", t.note);
        } else {
            events.normal(t.reason, "Backup", t.note);
        }
    }
    patch_status(ctx, cluster, &status).await?;
    events.publish(ctx, cluster).await;
    if let Some(e) = deferred {
        return Err(e);
    }

    let busy = matches!(
        status.phase.as_deref(),
        Some("Creating" | "Scaling" | "Updating")
    );
    let mut wait = if busy { REQUEUE_BUSY } else { REQUEUE_STEADY };
    if let Some(next) = snap.next {
        let until = next.duration_since(now).max(SignedDuration::ZERO);
        let until = Duration::try_from(until).unwrap_or(Duration::ZERO) + Duration::from_secs(1);
        wait = wait.min(until);
    }
    Ok(Action::requeue(wait))
}
