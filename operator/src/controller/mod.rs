//! Owns the reconcile loop of `HaCluster`: its entry points (`reconcile`, `error_policy`), the
//! kube `Controller` that drives them (`run`), and the consts every step shares. The steps —
//! the create-once Secret, observing the nodes, server-side apply of every rendered object,
//! storage, scale-down cleanup, snapshots, status, Events — live in the files below.
//! Must not build objects (`render`) nor decide policy inline: status, rollout partition,
//! departed nodes and snapshot ticks come from the pure modules.
//! Invariant: every reconcile ends with a status of what it saw, applied by `ha-operator` (force)
//! — unless this replica lost its leader Lease: then it stops before its next write and only an
//! Event says why (`Context::may_write`).
//! See `status`, `rollout`, `members`, `snapshots`; `run` wires it into a kube `Controller`.
//!
//! # Layout (each file uses only files listed above it)
//!
//! - `context`: `Context`, what every reconcile shares, and the leader-Lease gate of every write.
//! - `events`: the Events of one reconcile, published after its status.
//! - `status_write`: the status write, and the status and Event of a failed reconcile.
//! - `secrets`: the credentials Secret, the render, the nodes' API token (step 1).
//! - `observe`: the pods, the nodes' reports, meta group, streams and revisions (step 2).
//! - `children`: server-side apply of the rendered objects, pruning, the partition (step 4).
//! - `storage`: volume expansion (step 4).
//! - `cleanup`: departed nodes' consumers and JetStream peers (step 5).
//! - `snapshots`: the snapshot schedule (step 6).
//! - `steps`: one Apply reconcile, step by step.
//! - this file: the consts, `reconcile`, `error_policy` and `run`.

mod children;
mod cleanup;
mod context;
mod events;
mod observe;
mod secrets;
mod snapshots;
mod status_write;
mod steps;
mod storage;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};

pub use context::Context;
use events::Events;
use status_write::report_failure;
use steps::apply_steps;

use crate::crd::HaCluster;
use crate::render::{Credentials, Rendered};
use crate::{Error, Result};

/// The one field manager of every object and status the operator applies.
pub const FIELD_MANAGER: &str = "ha-operator";
/// The finalizer operators before this one put on every HaCluster (it did no cleanup: owner
/// references remove the children). Removed when found.
pub const FINALIZER: &str = "ha.sqlite.dev/cleanup";
/// Label every rendered object carries (value: the cluster name).
pub const CLUSTER_LABEL: &str = crate::render::labels::CLUSTER;

/// The render function the reconciler calls (`render::render`; tests may pass a stand-in).
pub type RenderFn = fn(&HaCluster, &str, &Credentials) -> Result<Rendered>;

fn key_of(cluster: &HaCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

/// The controller's entry point for one object: metrics, the removal of the finalizer older
/// operators added, then the Apply reconcile (nothing for an object being deleted: owner
/// references remove every child, and no finalizer can hold up a namespace's deletion when the
/// operator is gone).
pub async fn reconcile(cluster: Arc<HaCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.count_and_measure();
    let ns = cluster
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let key = key_of(&cluster);
    tracing::debug!(cluster = %key, "reconciling");
    if cluster.finalizers().iter().any(|f| f == FINALIZER) {
        let api: Api<HaCluster> = Api::namespaced(ctx.client.clone(), &ns);
        remove_legacy_finalizer(&api, &cluster, &ctx).await?;
    }
    if cluster.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let result = apply(&cluster, &ctx).await;
    if result.is_ok() {
        ctx.reset_failures(&key);
    }
    result
}

/// Drops `FINALIZER` (added by operators before this one; it did no cleanup), keeping any other.
/// The resourceVersion makes a concurrent change of the list a 409 (retried), never a loss.
async fn remove_legacy_finalizer(
    api: &Api<HaCluster>,
    cluster: &HaCluster,
    ctx: &Context,
) -> Result<()> {
    let others: Vec<&String> = cluster
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {"finalizers": others, "resourceVersion": cluster.resource_version()}
    });
    ctx.may_write()?;
    api.patch(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Logs and counts the failure, then retries with a per-object exponential back-off.
pub fn error_policy(cluster: Arc<HaCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(&cluster);
    let n = ctx.record_failure(&key);
    let wait = backoff(n);
    tracing::warn!(cluster = %key, error = %error, failures = n, retry_in = ?wait, "reconcile failed");
    ctx.metrics.set_failure(error);
    Action::requeue(wait)
}

/// 5 s after the first failure, doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exp).min(Duration::from_secs(300))
}

/// One Apply reconcile; an error that stops it is reported in the status (Ready and
/// Progressing False with its reason) and a Warning Event before it is returned for the retry,
/// so no reconcile is ever blocked silently.
async fn apply(cluster: &HaCluster, ctx: &Context) -> Result<Action> {
    match apply_steps(cluster, ctx).await {
        Ok(a) => Ok(a),
        // Already in the status and Events (InvalidSpec, SecretUnusable, CleanupFailed).
        Err(e @ (Error::InvalidSpec(_) | Error::Secret { .. } | Error::Node { .. })) => Err(e),
        // No status: the replica that holds the Lease writes it now. The Event says why this
        // one stopped (Events are reports, not state two replicas could fight over).
        Err(e @ Error::LeaseLost { .. }) => {
            tracing::warn!(cluster = %key_of(cluster), error = %e, "reconcile stopped: leader lease lost");
            let mut events = Events::default();
            events.warning(e.reason(), "Reconcile", e.to_string());
            events.publish(ctx, cluster).await;
            Err(e)
        }
        Err(e) => {
            report_failure(cluster, ctx, &e).await;
            Err(e)
        }
    }
}

/// Fails with an install hint when the HaCluster CRD is not served.
pub async fn check_crd(client: &Client, namespace: Option<&str>) -> Result<(), String> {
    let api: Api<HaCluster> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            Err("the HaCluster CRD is not installed; install it with \
             `ha-operator crd | kubectl apply -f -` (or the ha-operator Helm chart)"
                .into())
        }
        Err(e) => Err(format!(
            "cannot list HaClusters: {e} (check the operator's RBAC and the CRD: \
             `ha-operator crd | kubectl apply -f -`)"
        )),
    }
}

/// Runs the controller until `shutdown` resolves: HaClusters (one namespace or all) and the
/// objects they own, reconciled on spec and finalizer changes, child changes and requeues.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let clusters: Api<HaCluster> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // Status-only updates (our own status patches) must not trigger reconciles: filter the
    // main stream on generation (spec changes, deletion) and finalizers.
    let (reader, writer) = reflector::store();
    let main = watcher(clusters, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        );
    let owned = watcher::Config::default().labels(CLUSTER_LABEL);
    Controller::for_stream(main, reader)
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        .owns(api::<Ingress>(&client, ns), owned)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}
