//! Owns observing a cluster: its pods and each node's `/status`, the JetStream meta group and
//! stream replicas asked through a ready node, the departed nodes, the live StatefulSet's
//! revisions. See `observed` for what the observation holds.
//! Must not write anything (neither to the API server nor to a node).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::CLUSTER_LABEL;
use super::context::Context;
use crate::crd::{HaCluster, HaClusterStatus};
use crate::node_client::NodeTarget;
use crate::observed::{Observed, PodView, node_base_url, pod_view};
use crate::rollout::Revisions;
use crate::{Result, members, scaling};

/// Lists the StatefulSet's pods and reads each node's `/status` (concurrently, short timeout).
pub(super) async fn observe(
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

/// A ready node of the live StatefulSet (ordinal below `live`) to ask.
fn ready_node(
    cluster: &HaCluster,
    live: i32,
    seen: &Observed,
    token: Option<&str>,
) -> Result<NodeTarget, String> {
    seen.ready_pods()
        .filter(|p| p.ordinal < live)
        .find_map(|p| target(p, cluster.spec.http.port, token))
        .ok_or_else(|| "no ready node to ask".to_string())
}

/// The JetStream meta group, read through a ready node of the live StatefulSet.
pub(super) async fn read_meta(
    cluster: &HaCluster,
    live: i32,
    seen: &Observed,
    token: Option<&str>,
    ctx: &Context,
) -> Result<scaling::Meta, String> {
    let via = ready_node(cluster, live, seen, token)?;
    ctx.nodes
        .peers(&via)
        .await
        .map_err(|e| format!("{}: {e}", via.name))
}

/// The stream's and the snapshot bucket's replica state, asked through a ready node.
pub(super) async fn read_streams(
    cluster: &HaCluster,
    live: i32,
    seen: &Observed,
    token: Option<&str>,
    ctx: &Context,
) -> Result<Vec<scaling::StreamState>, String> {
    let via = ready_node(cluster, live, seen, token)?;
    ctx.nodes
        .streams(&via)
        .await
        .map_err(|e| format!("{}: {e}", via.name))
}

/// The departed nodes of a StatefulSet of `replicas` pods: those the last status listed and
/// those the meta group still lists (so a lost status loses no cleanup).
pub(super) fn departed(
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

pub(super) fn target(pod: &PodView, port: i32, token: Option<&str>) -> Option<NodeTarget> {
    Some(NodeTarget {
        name: pod.name.clone(),
        base_url: node_base_url(pod.ip.as_deref()?, port),
        token: token.map(str::to_string),
    })
}

pub(super) fn revisions_of(live: Option<&StatefulSet>) -> Revisions {
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
