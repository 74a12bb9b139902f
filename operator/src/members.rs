//! Owns scale-down bookkeeping: which departed nodes (`<cluster>-k..` after scaling to `k`) still
//! have a durable consumer and a JetStream peer, and removing them through a ready node.
//! Must not remove anything while a departed pod still runs, nor through a node that is not ready.
//! Invariant: a departed node stays in `status.nodes` until both removals succeeded, so the last
//! status records what is left: each node is cleaned once, failures are retried with back-off.
//! See `node_client` for the calls and `status` for how the list is reported.

use std::collections::BTreeSet;

use crate::crd::HaClusterStatus;
use crate::node_client::{Meta, NodeClient, NodeError, NodeTarget, Removal};
use crate::observed::{Observed, ordinal_of, servers_at};

/// What scale-down work this reconcile finds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Departed nodes whose pods are gone: remove their consumer and peer now (highest first).
    pub clean: Vec<String>,
    /// Pods beyond the desired replicas that still exist (the StatefulSet is removing them).
    pub leaving: Vec<String>,
}

/// Departed nodes are those the previous status listed, or pods that exist, at an ordinal at or
/// beyond `replicas`.
pub fn plan(
    cluster: &str,
    replicas: i32,
    previous: Option<&HaClusterStatus>,
    seen: &Observed,
) -> Plan {
    let leaving: Vec<String> = seen
        .pods
        .iter()
        .filter(|p| p.ordinal >= replicas)
        .map(|p| p.name.clone())
        .collect();
    if !leaving.is_empty() {
        // Wait until every departing pod is gone: their nats-servers still take part.
        return Plan {
            clean: Vec::new(),
            leaving,
        };
    }
    let departed: BTreeSet<(i32, String)> = previous
        .map(|s| s.nodes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| ordinal_of(cluster, &n.name).map(|o| (o, n.name.clone())))
        .filter(|(o, _)| *o >= replicas)
        .collect();
    Plan {
        clean: departed.into_iter().rev().map(|(_, n)| n).collect(),
        leaving,
    }
}

/// The outcome of cleaning one departed node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cleaned {
    pub name: String,
    /// `Ok` when both removals are done; the error keeps the node listed.
    pub result: Result<(), String>,
}

/// The servers of node `node` (a pod name) in the meta group: every generation of its name.
/// When the meta group lists none (or could not be read), the plain pod name: what a node
/// without generations uses, and removing a server that is gone already is a no-op.
pub fn servers_of(cluster: &str, node: &str, meta: Option<&Meta>) -> Vec<String> {
    let listed: Vec<String> = match (meta, ordinal_of(cluster, node)) {
        (Some(m), Some(ordinal)) => servers_at(m, cluster, ordinal)
            .map(|p| p.name.clone())
            .collect(),
        _ => Vec::new(),
    };
    if listed.is_empty() {
        vec![node.to_string()]
    } else {
        listed
    }
}

/// Servers that earlier generations of live pods (ordinal below `live`) left in the meta group:
/// offline while another server of the same pod, its current generation, is online. A pod
/// whose volume was replaced starts as a new server (`--nats-server-name generation`); the old
/// name never comes back, yet JetStream keeps it as a peer — it counts toward the meta group's
/// quorum and keeps its stream replicas assigned to a dead server until it is removed.
pub fn stale_generations(cluster: &str, live: i32, meta: Option<&Meta>) -> Vec<String> {
    let Some(m) = meta else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ordinal in 0..live {
        let servers: Vec<_> = servers_at(m, cluster, ordinal).collect();
        if servers.iter().any(|p| !p.offline) {
            out.extend(servers.iter().filter(|p| p.offline).map(|p| p.name.clone()));
        }
    }
    out
}

/// Removes `servers` (stale generations, see `stale_generations`) from the meta group through
/// `via`; returns the first failure after trying them all.
pub async fn remove_stale(
    nodes: &NodeClient,
    via: &NodeTarget,
    servers: &[String],
) -> Result<(), NodeError> {
    let mut first_error = None;
    for server in servers {
        match nodes.remove_peer(via, server).await {
            Ok(r) => {
                tracing::info!(%server, via = %via.name, removed = r == Removal::Removed, "JetStream peer left by an earlier generation of a live pod");
            }
            Err(e) => {
                tracing::warn!(%server, via = %via.name, error = %e, "removing a stale server generation failed");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The durable consumer of node `node` for database file `db_file`, as the node names it (and
/// the Go original before it): one rule, in the `ha-names` crate the node uses too.
pub use ha_names::durable_name;

/// What the cleanup removes of each departed node.
#[derive(Clone, Copy, Debug)]
pub struct Cleanup<'a> {
    /// The HaCluster's name (pods are `<cluster>-<ordinal>`).
    pub cluster: &'a str,
    /// `spec.database.name`: with the node name it gives the durable consumer's name.
    pub db_file: &'a str,
    /// The pods' own nats-servers form a JetStream cluster, so each departed pod was a peer in
    /// it (server name = pod name, or a generation of it). False with external NATS and for a
    /// single standalone node.
    pub jetstream_peers: bool,
    /// The meta group as read this reconcile: which servers each departed pod was.
    pub meta: Option<&'a Meta>,
}

/// Removes each departed node's durable consumer and (with clustered embedded NATS) its JetStream peer
/// through `via`, stopping at the first failure of a node but trying every node.
pub async fn clean(
    nodes: &NodeClient,
    via: &NodeTarget,
    departed: &[String],
    what: Cleanup<'_>,
) -> (Vec<Cleaned>, Option<NodeError>) {
    let mut out = Vec::new();
    let mut first_error = None;
    for name in departed {
        let result = clean_one(nodes, via, name, what).await;
        let shown = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = result {
            tracing::warn!(node = %name, via = %via.name, error = %e, "removing a departed node failed");
            first_error.get_or_insert(e);
        }
        out.push(Cleaned {
            name: name.clone(),
            result: shown,
        });
    }
    (out, first_error)
}

async fn clean_one(
    nodes: &NodeClient,
    via: &NodeTarget,
    name: &str,
    what: Cleanup<'_>,
) -> Result<(), NodeError> {
    let durable = durable_name(what.db_file, name);
    let consumer = nodes.remove_consumer(via, &durable).await?;
    tracing::info!(node = %name, %durable, via = %via.name, removed = consumer == Removal::Removed, "durable consumer of a departed node");
    if what.jetstream_peers {
        for server in servers_of(what.cluster, name, what.meta) {
            let peer = nodes.remove_peer(via, &server).await?;
            tracing::info!(node = %name, %server, via = %via.name, removed = peer == Removal::Removed, "JetStream peer of a departed node");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NodeStatus;

    fn listed(names: &[&str]) -> HaClusterStatus {
        HaClusterStatus {
            nodes: names
                .iter()
                .map(|n| NodeStatus {
                    name: n.to_string(),
                    ..NodeStatus::default()
                })
                .collect(),
            ..HaClusterStatus::default()
        }
    }

    fn peer(name: &str, offline: bool) -> crate::node_client::MetaPeer {
        crate::node_client::MetaPeer {
            name: name.into(),
            current: !offline,
            offline,
        }
    }

    #[test]
    fn an_offline_earlier_generation_of_a_live_pod_is_stale_only_beside_an_online_one() {
        let meta = Meta {
            cluster: Some("db".into()),
            leader: Some("db-0-gaaa".into()),
            peers: vec![
                peer("db-0-gaaa", false),
                // db-1's volume was replaced: its old server is offline, its new one online.
                peer("db-1-gold", true),
                peer("db-1-gnew", false),
                // db-2 is down: its only server is offline, nothing to remove.
                peer("db-2-gccc", true),
                // db-3 departed (scale-down cleanup owns it), and a foreign server.
                peer("db-3-gddd", true),
                peer("other-1", true),
            ],
        };
        assert_eq!(stale_generations("db", 3, Some(&meta)), ["db-1-gold"]);
        assert!(stale_generations("db", 3, None).is_empty());
        // Both generations offline: neither can be told to be the dead one.
        let down = Meta {
            peers: vec![peer("db-1-gold", true), peer("db-1-gnew", true)],
            ..meta
        };
        assert!(stale_generations("db", 3, Some(&down)).is_empty());
    }

    #[test]
    fn nothing_to_clean_when_no_node_departed() {
        let prev = listed(&["db-0", "db-1", "db-2"]);
        assert_eq!(
            plan("db", 3, Some(&prev), &Observed::all_ready(&[0, 1, 2])),
            Plan::default()
        );
        assert_eq!(
            plan("db", 3, None, &Observed::all_ready(&[0, 1, 2])),
            Plan::default()
        );
    }

    #[test]
    fn departed_nodes_are_cleaned_only_after_their_pods_are_gone() {
        let prev = listed(&["db-0", "db-1", "db-2", "db-3", "db-4"]);
        let p = plan("db", 3, Some(&prev), &Observed::all_ready(&[0, 1, 2, 4]));
        assert_eq!(p.clean, Vec::<String>::new());
        assert_eq!(p.leaving, vec!["db-4".to_string()]);

        let p = plan("db", 3, Some(&prev), &Observed::all_ready(&[0, 1, 2]));
        assert_eq!(p.clean, vec!["db-4".to_string(), "db-3".to_string()]);
        assert!(p.leaving.is_empty());
    }

    #[test]
    fn a_cleaned_node_no_longer_listed_is_not_cleaned_again() {
        // The status written after a successful cleanup lists only the remaining nodes.
        let prev = listed(&["db-0", "db-1", "db-2", "db-3"]);
        assert_eq!(
            plan("db", 3, Some(&prev), &Observed::all_ready(&[0, 1, 2])).clean,
            vec!["db-3"]
        );
        let prev = listed(&["db-0", "db-1", "db-2"]);
        assert!(
            plan("db", 3, Some(&prev), &Observed::all_ready(&[0, 1, 2]))
                .clean
                .is_empty()
        );
    }

    #[test]
    fn durable_names_follow_the_nodes_rule() {
        assert_eq!(durable_name("ha.db", "node1"), "ha_db_node1");
        assert_eq!(durable_name("ha.db", "db-3"), "ha_db_db-3");
        assert_eq!(durable_name("./data/x.db", "n"), "data_x_db_n");
        // Only the last 32 bytes are kept.
        let long = durable_name("ha.db", &format!("cluster-{}-12", "a".repeat(40)));
        assert_eq!(long.len(), 32);
        assert!(long.ends_with("-12"));
        // A cut inside a multi-byte character moves forward to the next character.
        let cut = durable_name(&format!("{}é", "a".repeat(10)), &"b".repeat(30));
        assert_eq!(cut, format!("_{}", "b".repeat(30)));
    }

    #[test]
    fn names_that_are_not_the_clusters_pods_are_ignored() {
        let prev = listed(&["db-0", "other-7", "db-x"]);
        assert!(
            plan("db", 1, Some(&prev), &Observed::all_ready(&[0]))
                .clean
                .is_empty()
        );
    }
}
