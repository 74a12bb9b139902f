//! Owns what one reconcile saw of a cluster: its pods (ordinal, readiness, revision) and what each
//! node's `/status` said, in plain values the pure decisions (`status`, `rollout`, `members`,
//! `snapshots`) take as input.
//! Must not call the API server or the nodes itself: `controller` gathers, this only describes.
//! Invariant: pods are sorted by ordinal and only pods named `<cluster>-<ordinal>` are kept.
//! See `controller::observe` for how it is filled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::node_client::{Meta, MetaPeer, NodeReport};

/// The StatefulSet label naming the revision a pod runs.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// Most stream messages a node may be behind and still count as caught up for a rolling update.
pub const MAX_ROLL_LAG: u64 = 1000;

/// One pod of the cluster's StatefulSet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub ordinal: i32,
    /// The pod's Ready condition (the node's `/readyz` probe passes).
    pub ready: bool,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
    /// The StatefulSet revision the pod was created from.
    pub revision: Option<String>,
    pub ip: Option<String>,
}

/// What one reconcile saw.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Sorted by ordinal.
    pub pods: Vec<PodView>,
    /// By pod name: the node's `/status`, or why it could not be read.
    pub reports: BTreeMap<String, Result<NodeReport, String>>,
}

impl Observed {
    pub fn new(mut pods: Vec<PodView>) -> Self {
        pods.sort_by_key(|p| p.ordinal);
        Self {
            pods,
            reports: BTreeMap::new(),
        }
    }

    /// Ready pods `db-<ordinal>` with no node report yet: the start of the unit tests' worlds.
    #[cfg(test)]
    pub(crate) fn all_ready(ordinals: &[i32]) -> Self {
        Self::new(
            ordinals
                .iter()
                .map(|i| PodView {
                    name: format!("db-{i}"),
                    ordinal: *i,
                    ready: true,
                    ..PodView::default()
                })
                .collect(),
        )
    }

    pub fn pod(&self, ordinal: i32) -> Option<&PodView> {
        self.pods.iter().find(|p| p.ordinal == ordinal)
    }

    /// Pods Ready and not being deleted, by ordinal.
    pub fn ready_pods(&self) -> impl Iterator<Item = &PodView> {
        self.pods.iter().filter(|p| p.ready && !p.terminating)
    }

    /// Ready, and the node says it applied the stream to within `MAX_ROLL_LAG` messages.
    pub fn caught_up(&self, pod: &PodView) -> Result<(), String> {
        if pod.terminating {
            return Err(format!("{} is terminating", pod.name));
        }
        if !pod.ready {
            return Err(format!("{} is not ready", pod.name));
        }
        match self.reports.get(&pod.name) {
            None => Err(format!("{}: status not read", pod.name)),
            Some(Err(e)) => Err(format!("{}: {e}", pod.name)),
            Some(Ok(r)) if !r.caught_up => Err(format!("{} is catching up", pod.name)),
            Some(Ok(r)) if r.lag.unwrap_or(0) > MAX_ROLL_LAG => Err(format!(
                "{} is {} messages behind",
                pod.name,
                r.lag.unwrap_or(0)
            )),
            Some(Ok(_)) => Ok(()),
        }
    }
}

/// `<cluster>-<n>` → `n`.
pub fn ordinal_of(cluster: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(cluster)?.strip_prefix('-')?;
    if rest.is_empty()
        || !rest.bytes().all(|b| b.is_ascii_digit())
        || rest.len() > 1 && rest.starts_with('0')
    {
        return None;
    }
    rest.parse().ok()
}

/// A JetStream server name of the cluster's pods → the pod's ordinal: `<cluster>-<n>`, or
/// `<cluster>-<n>-g<generation>` (the node's `--nats-server-name generation`: a pod on a new
/// volume joins as a new server, so one ordinal may have had several).
pub fn server_ordinal(cluster: &str, server: &str) -> Option<i32> {
    let pod = match server.rsplit_once("-g") {
        Some((pod, g)) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric()) => pod,
        _ => server,
    };
    ordinal_of(cluster, pod)
}

/// The servers the meta group lists for the pod at `ordinal`: every generation of its name.
pub fn servers_at<'a>(
    meta: &'a Meta,
    cluster: &'a str,
    ordinal: i32,
) -> impl Iterator<Item = &'a MetaPeer> + 'a {
    meta.peers
        .iter()
        .filter(move |p| server_ordinal(cluster, &p.name) == Some(ordinal))
}

/// The parts of a pod the decisions need; `None` for pods not named like the cluster's.
pub fn pod_view(cluster: &str, pod: &Pod) -> Option<PodView> {
    let name = pod.metadata.name.clone()?;
    let ordinal = ordinal_of(cluster, &name)?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(PodView {
        name,
        ordinal,
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        revision: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL).cloned()),
        ip: status.and_then(|s| s.pod_ip.clone()),
    })
}

/// `http://ip:port` of a pod's HTTP API (IPv6 addresses bracketed).
pub fn node_base_url(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:{port}")
    } else {
        format!("http://{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_read_only_from_the_clusters_own_pod_names() {
        assert_eq!(ordinal_of("db", "db-0"), Some(0));
        assert_eq!(ordinal_of("db", "db-12"), Some(12));
        assert_eq!(ordinal_of("db", "db-x"), None);
        assert_eq!(ordinal_of("db", "db-"), None);
        assert_eq!(ordinal_of("db", "db-01"), None);
        assert_eq!(ordinal_of("db", "dbx-1"), None);
        assert_eq!(ordinal_of("db", "other-db-1"), None);
        // A cluster named like another's prefix does not claim its pods.
        assert_eq!(ordinal_of("db", "db-db-1"), None);
    }

    #[test]
    fn server_names_are_pod_names_with_or_without_a_generation() {
        assert_eq!(server_ordinal("db", "db-2"), Some(2));
        assert_eq!(server_ordinal("db", "db-2-gmj0k3f2a"), Some(2));
        assert_eq!(server_ordinal("my-gx", "my-gx-12-g1"), Some(12));
        assert_eq!(server_ordinal("db", "db-2-g"), None);
        assert_eq!(server_ordinal("db", "db-2-g-1"), None);
        assert_eq!(server_ordinal("db", "db-x-g1"), None);
        assert_eq!(server_ordinal("db", "other-2-g1"), None);
    }

    #[test]
    fn ipv6_pod_addresses_are_bracketed() {
        assert_eq!(node_base_url("10.0.0.7", 8080), "http://10.0.0.7:8080");
        assert_eq!(node_base_url("fd00::7", 8080), "http://[fd00::7]:8080");
    }

    #[test]
    fn a_node_counts_as_caught_up_only_when_ready_and_within_the_lag_bound() {
        let pod = PodView {
            name: "db-0".into(),
            ready: true,
            ..PodView::default()
        };
        let mut o = Observed::new(vec![pod.clone()]);
        assert!(o.caught_up(&pod).unwrap_err().contains("status not read"));
        o.reports.insert(
            "db-0".into(),
            Ok(NodeReport {
                ready: true,
                caught_up: true,
                lag: Some(MAX_ROLL_LAG + 1),
                ..NodeReport::default()
            }),
        );
        assert!(o.caught_up(&pod).unwrap_err().contains("behind"));
        o.reports.insert(
            "db-0".into(),
            Ok(NodeReport {
                ready: true,
                caught_up: true,
                lag: Some(3),
                ..NodeReport::default()
            }),
        );
        assert_eq!(o.caught_up(&pod), Ok(()));
        let unready = PodView {
            ready: false,
            ..pod
        };
        assert!(o.caught_up(&unready).is_err());
    }
}
