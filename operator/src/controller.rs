//! Owns the reconcile loop of `HaCluster`: server-side apply of every rendered object,
//! the create-once Secret, observing the nodes, scale-down cleanup, snapshots, status, Events.
//! Must not build objects (`render`) nor decide policy inline: status, rollout partition,
//! departed nodes and snapshot ticks come from the pure modules.
//! Invariant: every reconcile ends with a status of what it saw, applied by `ha-operator` (force)
//! — unless this replica lost its leader Lease: then it stops before its next write and only an
//! Event says why (`Context::may_write`).
//! See `status`, `rollout`, `members`, `snapshots`; `run` wires it into a kube `Controller`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{HaCluster, HaClusterStatus, SnapshotStatus};
use crate::metrics::Metrics;
use crate::node_client::{NodeClient, NodeTarget};
use crate::observed::{Observed, PodView, node_base_url, pod_view};
use crate::render::{Credentials, Rendered};
use crate::rollout::{self, Revisions, Rollout, RolloutDecision};
use crate::snapshots::{self, Tick};
use crate::status::{self, Inputs, Schedule};
use crate::{Error, Result, credentials, members, scaling, storage};

/// The one field manager of every object and status the operator applies.
pub const FIELD_MANAGER: &str = "ha-operator";
/// The finalizer operators before this one put on every HaCluster (it did no cleanup: owner
/// references remove the children). Removed when found.
pub const FINALIZER: &str = "ha.sqlite.dev/cleanup";
/// Label every rendered object carries (value: the cluster name).
pub const CLUSTER_LABEL: &str = crate::render::labels::CLUSTER;

/// Requeue while nothing is in progress (refreshes per-node sequences and lag).
const REQUEUE_STEADY: Duration = Duration::from_secs(60);
/// Requeue while creating, scaling or updating.
const REQUEUE_BUSY: Duration = Duration::from_secs(10);

/// The render function the reconciler calls (`render::render`; tests may pass a stand-in).
pub type RenderFn = fn(&HaCluster, &str, &Credentials) -> Result<Rendered>;

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
    fn may_write(&self) -> Result<()> {
        if *self.leading.borrow() {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                identity: self.identity.clone(),
            })
        }
    }

    fn record_failure(&self, key: &str) -> u32 {
        let Ok(mut m) = self.failures.lock() else {
            return 1;
        };
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn reset_failures(&self, key: &str) {
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

    fn remember_attempt(&self, key: &str, at: Timestamp) {
        if let Ok(mut m) = self.snapshot_attempts.lock() {
            m.insert(key.to_string(), at);
        }
    }
}

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

/// Events of one reconcile, published after its status is written.
#[derive(Default)]
struct Events(Vec<Event>);

impl Events {
    fn normal(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Normal, reason, action, note);
    }
    fn warning(&mut self, reason: &str, action: &str, note: String) {
        self.push(EventType::Warning, reason, action, note);
    }
    fn push(&mut self, type_: EventType, reason: &str, action: &str, note: String) {
        self.0.push(Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        });
    }
    /// Best effort: an Event that cannot be written is logged, never a failed reconcile.
    async fn publish(self, ctx: &Context, cluster: &HaCluster) {
        let oref = cluster.object_ref(&());
        for e in self.0 {
            if let Err(err) = ctx.recorder.publish(&e, &oref).await {
                tracing::warn!(reason = %e.reason, error = %err, "publishing an Event failed");
            }
        }
    }
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

/// Best effort: the API server that failed the reconcile may fail these too (then the log and
/// the failure metric are what is left).
async fn report_failure(cluster: &HaCluster, ctx: &Context, e: &Error) {
    let mut events = Events::default();
    events.warning(e.reason(), "Reconcile", e.to_string());
    let status = failed_status(cluster, e, (ctx.clock)());
    if let Err(err) = patch_status(ctx, cluster, &status).await {
        tracing::warn!(error = %err, "writing the status of a failed reconcile failed");
    }
    events.publish(ctx, cluster).await;
}

/// Everything one Apply reconcile does, in order.
async fn apply_steps(cluster: &HaCluster, ctx: &Context) -> Result<Action> {
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

    // 5. Scale-down: remove departed nodes' consumers and peers once their pods are gone.
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

/// Reads the credentials Secret (or draws new credentials), renders, and creates the Secret
/// when it was absent. A Secret created meanwhile by someone else wins (409 → read it back).
/// A Secret from an older operator gets the keys it lacks added, never one it has replaced.
async fn credentials_and_render(
    cluster: &HaCluster,
    ns: &str,
    ctx: &Context,
    events: &mut Events,
) -> Result<(Rendered, Credentials)> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = crate::render::names::credentials_secret(&cluster.name_any());
    let fresh = Credentials::generate().map_err(|e| Error::Secret {
        secret: secret_name.clone(),
        message: e.to_string(),
    })?;
    if let Some(existing) = secrets.get_opt(&secret_name).await? {
        let (creds, added) = credentials::read(&existing, &fresh)?;
        let rendered = (ctx.render)(cluster, ns, &creds)?;
        if !added.is_empty() {
            let data: serde_json::Map<String, serde_json::Value> = added
                .iter()
                .filter_map(|k| {
                    let v = rendered.secret.data.as_ref()?.get(*k)?;
                    Some((k.to_string(), serde_json::to_value(v).ok()?))
                })
                .collect();
            // The resourceVersion makes the patch fail (409, retried) if the Secret changed
            // since it was read: a key added meanwhile is never replaced.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": existing.metadata.resource_version},
                "data": data,
            });
            ctx.may_write()?;
            secrets
                .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            events.normal(
                "CredentialsAdded",
                "Update",
                format!("added {} to Secret {secret_name}", added.join(", ")),
            );
        }
        return Ok((rendered, creds));
    }
    let rendered = (ctx.render)(cluster, ns, &fresh)?;
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    ctx.may_write()?;
    match secrets.create(&pp, &rendered.secret).await {
        Ok(_) => {
            events.normal(
                "CredentialsGenerated",
                "Create",
                format!("generated credentials in Secret {secret_name}"),
            );
            Ok((rendered, fresh))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = secrets.get(&secret_name).await?;
            let creds = credentials::from_secret(&existing)?;
            Ok(((ctx.render)(cluster, ns, &creds)?, creds))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bearer token for the nodes' HTTP API: `spec.http.tokenSecret`'s `token`, else the
/// generated one, `None` with `http.disableToken`.
async fn node_token(
    cluster: &HaCluster,
    ns: &str,
    creds: &Credentials,
    ctx: &Context,
) -> Result<Option<String>> {
    let Some(name) = &cluster.spec.http.token_secret else {
        return Ok((!cluster.spec.http.disable_token).then(|| creds.http_token.clone()));
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let missing = |message: &str| Error::Secret {
        secret: name.clone(),
        message: message.into(),
    };
    let secret = secrets
        .get_opt(name)
        .await?
        .ok_or_else(|| missing("not found (spec.http.tokenSecret)"))?;
    let bytes = secret
        .data
        .and_then(|d| d.get("token").map(|b| b.0.clone()))
        .ok_or_else(|| missing("has no key \"token\""))?;
    let token = String::from_utf8(bytes).map_err(|_| missing("key \"token\" is not UTF-8"))?;
    Ok(Some(token.trim().to_string()))
}

/// Lists the StatefulSet's pods and reads each node's `/status` (concurrently, short timeout).
async fn observe(
    cluster: &HaCluster,
    ns: &str,
    sts: &StatefulSet,
    token: Option<&str>,
    ctx: &Context,
) -> Result<Observed> {
    let name = cluster.name_any();
    let selector = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{CLUSTER_LABEL}={name}"));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut seen = Observed::new(list.iter().filter_map(|p| pod_view(&name, p)).collect());
    let port = cluster.spec.http.port;
    let reads = seen.pods.iter().filter(|p| !p.terminating).map(|p| async {
        let report = match target(p, port, token) {
            Some(t) => ctx.nodes.status(&t).await.map_err(|e| e.to_string()),
            None => Err("pod has no IP yet".to_string()),
        };
        (p.name.clone(), report)
    });
    let reports = futures::future::join_all(reads).await;
    seen.reports.extend(reports);
    Ok(seen)
}

/// The JetStream meta group, read through a ready node of the live StatefulSet.
async fn read_meta(
    cluster: &HaCluster,
    live: i32,
    seen: &Observed,
    token: Option<&str>,
    ctx: &Context,
) -> Result<scaling::Meta, String> {
    let via = seen
        .ready_pods()
        .filter(|p| p.ordinal < live)
        .find_map(|p| target(p, cluster.spec.http.port, token))
        .ok_or_else(|| "no ready node to ask".to_string())?;
    ctx.nodes
        .peers(&via)
        .await
        .map_err(|e| format!("{}: {e}", via.name))
}

/// The departed nodes of a StatefulSet of `replicas` pods: those the last status listed and
/// those the meta group still lists (so a lost status loses no cleanup).
fn departed(
    name: &str,
    replicas: i32,
    previous: Option<&HaClusterStatus>,
    seen: &Observed,
    meta: Option<&Result<scaling::Meta, String>>,
) -> members::Plan {
    let mut plan = members::plan(name, replicas, previous, seen);
    if plan.leaving.is_empty() {
        for n in scaling::departed_in_meta(name, replicas, meta) {
            if !plan.clean.contains(&n) {
                plan.clean.push(n);
            }
        }
    }
    plan
}

fn target(pod: &PodView, port: i32, token: Option<&str>) -> Option<NodeTarget> {
    Some(NodeTarget {
        name: pod.name.clone(),
        base_url: node_base_url(pod.ip.as_deref()?, port),
        token: token.map(str::to_string),
    })
}

fn revisions_of(live: Option<&StatefulSet>) -> Revisions {
    let Some(sts) = live else {
        return Revisions::default();
    };
    let status = sts.status.as_ref();
    Revisions {
        current: status.and_then(|s| s.current_revision.clone()),
        update: status.and_then(|s| s.update_revision.clone()),
        partition: sts
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition),
    }
}

/// The operator owns the partition: rolling updates go one pod at a time, gated by `rollout`.
fn set_partition(sts: &mut StatefulSet, partition: i32) {
    let spec = sts.spec.get_or_insert_with(Default::default);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    strategy.type_ = Some("RollingUpdate".into());
    strategy
        .rolling_update
        .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
        .partition = Some(partition);
}

/// Acts on a storage change: expands the claims (their StorageClass allowing it) or says why
/// not. Returns the `Storage` condition's (status, reason, message), `None` when nothing changed.
async fn storage_step(
    cluster: &HaCluster,
    ns: &str,
    change: &storage::Change,
    ctx: &Context,
    events: &mut Events,
) -> Result<Option<status::StorageCondition>> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use k8s_openapi::api::storage::v1::StorageClass;
    let (from, to) = match change {
        storage::Change::None => return Ok(None),
        storage::Change::Grow { from, to } => (from, to),
        refused => {
            let (reason, message) = storage::refusal(refused).unwrap_or_default();
            events.warning(reason, "Storage", message.clone());
            return Ok(Some(status::StorageCondition::new(false, reason, message)));
        }
    };
    let name = cluster.name_any();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let prefix = format!(
        "{}-{}-",
        crate::render::names::VOLUME_DATA,
        crate::render::names::stateful_set(&name)
    );
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    let claims: Vec<PersistentVolumeClaim> = pvcs
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    let pending = storage::to_expand(&claims, to);
    if pending.is_empty() {
        return Ok(Some(status::StorageCondition::new(
            true,
            "VolumesExpanded",
            format!(
                "every volume requests {to}; the StatefulSet's claim template keeps {from} (it \
                 cannot change), so a pod added later starts with {from} and is expanded next"
            ),
        )));
    }
    let class = pending
        .iter()
        .find_map(|c| c.spec.as_ref().and_then(|s| s.storage_class_name.clone()));
    if let Some(class) = &class {
        let classes: Api<StorageClass> = Api::all(ctx.client.clone());
        let expandable = classes
            .get_opt(class)
            .await?
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !expandable {
            let message = format!(
                "StorageClass {class} does not allow volume expansion (allowVolumeExpansion): \
                 set spec.storage.size back to {from}, or have the class allow expansion"
            );
            events.warning("VolumeExpansionUnsupported", "Storage", message.clone());
            return Ok(Some(status::StorageCondition::new(
                false,
                "VolumeExpansionUnsupported",
                message,
            )));
        }
    }
    let body = serde_json::json!({"spec": {"resources": {"requests": {"storage": to}}}});
    let mut names = Vec::new();
    for c in pending {
        let n = c.name_any();
        ctx.may_write()?;
        pvcs.patch(&n, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
        names.push(n);
    }
    let message = format!("expanding {} from {from} to {to}", names.join(", "));
    events.normal("VolumesExpanding", "Storage", message.clone());
    Ok(Some(status::StorageCondition::new(
        false,
        "Expanding",
        message,
    )))
}

/// Server-side apply of every rendered object (the Secret excepted: create-once), and removal
/// of optional objects the spec no longer asks for. Returns the applied StatefulSet.
async fn apply_children(
    cluster: &HaCluster,
    ns: &str,
    r: &Rendered,
    ctx: &Context,
) -> Result<StatefulSet> {
    apply_object(ctx, ns, &r.config_map).await?;
    apply_object(ctx, ns, &r.peers_service).await?;
    apply_object(ctx, ns, &r.client_service).await?;
    let sts = apply_object(ctx, ns, &r.stateful_set).await?;
    match &r.pdb {
        Some(pdb) => {
            apply_object(ctx, ns, pdb).await?;
        }
        None => prune::<PodDisruptionBudget>(cluster, ns, ctx).await?,
    }
    match &r.ingress {
        Some(ing) => {
            apply_object(ctx, ns, ing).await?;
        }
        None => prune::<Ingress>(cluster, ns, ctx).await?,
    }
    Ok(sts)
}

async fn apply_object<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    ctx.may_write()?;
    api.patch(name, &pp, &Patch::Apply(obj)).await.map_err(|e| {
        let kind = K::kind(&());
        let hint = match &e {
            kube::Error::Api(a) if a.code == 422 && kind == "StatefulSet" => {
                "; the StatefulSet refuses a change of a field it cannot change (its \
                     volumeClaimTemplates, selector or serviceName): see docs/kubernetes.md, \
                     \"Storage\""
                    .to_string()
            }
            _ => String::new(),
        };
        Error::Apply {
            what: format!("{kind} {name}"),
            source: Box::new(e),
            hint,
        }
    })
}

/// Server-side apply of the prometheus-operator ServiceMonitor; the error says what to do.
async fn apply_service_monitor(
    ctx: &Context,
    ns: &str,
    sm: &kube::api::DynamicObject,
) -> std::result::Result<(), String> {
    let ar = crate::render::monitoring::service_monitor_resource();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let name = sm.name_any();
    match api.patch(&name, &pp, &Patch::Apply(sm)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(a)) if a.code == 404 => Err(format!(
            "ServiceMonitor {name}: the monitoring.coreos.com/v1 ServiceMonitor kind is not \
             installed; install prometheus-operator (or its CRDs) or set \
             spec.monitoring.serviceMonitor to false"
        )),
        Err(e) => Err(format!("ServiceMonitor {name}: {e}")),
    }
}

/// The stream's and the snapshot bucket's replica state, asked through a ready node.
async fn read_streams(
    cluster: &HaCluster,
    live: i32,
    seen: &Observed,
    token: Option<&str>,
    ctx: &Context,
) -> Result<Vec<scaling::StreamState>, String> {
    let via = seen
        .ready_pods()
        .filter(|p| p.ordinal < live)
        .find_map(|p| target(p, cluster.spec.http.port, token))
        .ok_or_else(|| "no ready node to ask".to_string())?;
    ctx.nodes
        .streams(&via)
        .await
        .map_err(|e| format!("{}: {e}", via.name))
}

/// Deletes objects of kind `K` this cluster controls (label + controller owner reference).
async fn prune<K>(cluster: &HaCluster, ns: &str, ctx: &Context) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", cluster.name_any()));
    let uid = cluster.uid();
    for obj in api.list(&lp).await? {
        let ours = obj
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
        if ours {
            let n = obj.name_any();
            tracing::info!(kind = %K::kind(&()), name = %n, "removing an object the spec no longer asks for");
            ctx.may_write()?;
            match api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Events for what this reconcile changed: first creation, a scale step (or its refusal), a
/// pod handed to the update.
fn note_changes(
    cluster: &HaCluster,
    live: Option<&StatefulSet>,
    revisions: &Revisions,
    rollout: &RolloutDecision,
    scale: &scaling::Decision,
    events: &mut Events,
) {
    let replicas = cluster.spec.replicas;
    let first = cluster
        .status
        .as_ref()
        .is_none_or(|s| s.observed_generation.is_none());
    if live.is_none() && first {
        events.normal(
            "Created",
            "Create",
            format!("created the cluster's objects for {replicas} nodes"),
        );
    }
    match &scale.scale {
        scaling::Scale::Step { .. } => {
            events.normal("Scaling", "Scale", scale.message().unwrap_or_default())
        }
        scaling::Scale::Refused { .. } => {
            events.warning("ScaleRefused", "Scale", scale.message().unwrap_or_default())
        }
        _ => {}
    }
    if let Rollout::Replacing { pod } = &rollout.rollout
        && revisions.partition.is_some_and(|p| rollout.partition < p)
    {
        events.normal(
            "RollingUpdate",
            "Update",
            format!(
                "replacing {pod} ({}/{} nodes updated)",
                rollout.updated, scale.replicas
            ),
        );
    }
}

/// Runs the scale-down cleanup the plan asks for. Returns the departed nodes still to clean
/// (with why) and the error to report after the status is written.
async fn clean_departed(
    plan: &members::Plan,
    via: Option<NodeTarget>,
    what: members::Cleanup<'_>,
    ctx: &Context,
    events: &mut Events,
) -> (Vec<(String, String)>, Option<Error>) {
    if plan.clean.is_empty() {
        return (Vec::new(), None);
    }
    let Some(via) = via else {
        let why = "waiting for a ready node to remove its consumer and JetStream peer";
        return (
            plan.clean
                .iter()
                .map(|n| (n.clone(), why.to_string()))
                .collect(),
            None,
        );
    };
    let (results, error) = members::clean(&ctx.nodes, &via, &plan.clean, what).await;
    let mut left = Vec::new();
    let mut cleaned = Vec::new();
    for r in results {
        match r.result {
            Ok(()) => cleaned.push(r.name),
            Err(e) => left.push((r.name, format!("cleanup through {} failed: {e}", via.name))),
        }
    }
    if !cleaned.is_empty() {
        let what = if what.jetstream_peers {
            "durable consumers and JetStream peers"
        } else {
            "durable consumers"
        };
        events.normal(
            "DepartedNodesRemoved",
            "Scale",
            format!("removed the {what} of {}", cleaned.join(", ")),
        );
    }
    if !left.is_empty() {
        let detail: Vec<String> = left.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        events.warning("CleanupFailed", "Scale", detail.join("; "));
    }
    let error = error.map(|source| Error::Node {
        node: via.name.clone(),
        source,
    });
    (left, error)
}

/// The snapshot part of a reconcile.
struct SnapshotOutcome {
    schedule: Schedule,
    last: Option<SnapshotStatus>,
    /// When the next tick falls, to requeue in time.
    next: Option<Timestamp>,
}

async fn snapshot_step(
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

/// The status of a cluster whose spec or Secrets cannot be used.
fn failed_status(cluster: &HaCluster, e: &Error, now: Timestamp) -> HaClusterStatus {
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

async fn patch_status(ctx: &Context, cluster: &HaCluster, status: &HaClusterStatus) -> Result<()> {
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
