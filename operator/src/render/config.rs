//! Owns the ConfigMap `<name>-config`: the settings that depend on the replica count (NATS
//! routes to every pod, stream replicas), read by the pods through `envFrom` at start, and the
//! hash of those that need a restart to apply (`restart_hash`, in the pod template).
//! Must not hold a setting that needs a restart without it being in the hash.
//! Invariant: a new route list alone restarts nothing (new pods read it, route gossip meshes
//! the rest); a new stream replica count rolls the pods, one at a time, gated like any update.
//! See `container` for the consumer and `names` for the keys.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::labels::{cluster_name, object_meta};
use super::names;
use crate::crd::HaCluster;

pub fn build(cluster: &HaCluster, namespace: &str) -> ConfigMap {
    let name = cluster_name(cluster);
    let spec = &cluster.spec;
    let mut data = BTreeMap::new();
    // `--replicas`: how many copies JetStream keeps of the stream and the snapshot bucket. The
    // node that starts last writes the stream config, so pods added by a scale-up apply it.
    data.insert(
        names::ENV_REPLICAS.to_string(),
        spec.effective_stream_replicas().to_string(),
    );
    if spec.nats_clustered() {
        // `--nats-routes`: every pod, itself included (a route to itself is harmless), by its
        // stable DNS name through the headless Service.
        data.insert(
            names::ENV_NATS_ROUTES.to_string(),
            routes(cluster, namespace).join(","),
        );
    }
    ConfigMap {
        metadata: object_meta(cluster, names::config_map(&name), namespace),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// A hash of the settings a running pod only takes at a restart (every key but the routes): in
/// the pod template, so a change rolls the pods.
pub fn restart_hash(cm: &ConfigMap) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for (k, v) in cm.data.iter().flatten() {
        if k != names::ENV_NATS_ROUTES {
            ctx.update(k.as_bytes());
            ctx.update(b"=");
            ctx.update(v.as_bytes());
            ctx.update(b"\n");
        }
    }
    ctx.finish()
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `nats-route://<pod>.<name>-peers.<ns>.svc.cluster.local:<cluster port>` for every replica.
pub fn routes(cluster: &HaCluster, namespace: &str) -> Vec<String> {
    let name = cluster_name(cluster);
    let port = cluster.spec.effective_nats_cluster_port();
    (0..cluster.spec.replicas)
        .map(|i| {
            format!(
                "nats-route://{}:{port}",
                names::pod_dns(&name, namespace, i)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;

    fn data(c: &HaCluster) -> BTreeMap<String, String> {
        build(c, "prod").data.unwrap_or_default()
    }

    #[test]
    fn routes_list_every_replica_through_the_headless_service() {
        let d = data(&cluster("db", "replicas: 5"));
        assert_eq!(
            d.get("HA_NATS_ROUTES").map(String::as_str),
            Some(
                "nats-route://db-0.db-peers.prod.svc.cluster.local:6222,\
                 nats-route://db-1.db-peers.prod.svc.cluster.local:6222,\
                 nats-route://db-2.db-peers.prod.svc.cluster.local:6222,\
                 nats-route://db-3.db-peers.prod.svc.cluster.local:6222,\
                 nats-route://db-4.db-peers.prod.svc.cluster.local:6222"
            )
        );
        let d = data(&cluster(
            "db",
            "replicas: 2\nnats:\n  embedded:\n    clusterPort: 7000",
        ));
        assert_eq!(
            d.get("HA_NATS_ROUTES").map(String::as_str),
            Some(
                "nats-route://db-0.db-peers.prod.svc.cluster.local:7000,\
                 nats-route://db-1.db-peers.prod.svc.cluster.local:7000"
            )
        );
    }

    #[test]
    fn stream_replicas_are_min_3_and_replicas_unless_set() {
        for (replicas, want) in [(1, "1"), (2, "2"), (3, "3"), (5, "3"), (7, "3")] {
            let d = data(&cluster("db", &format!("replicas: {replicas}")));
            assert_eq!(
                d.get("HA_REPLICAS").map(String::as_str),
                Some(want),
                "{replicas}"
            );
        }
        let d = data(&cluster(
            "db",
            "replicas: 5\nreplication:\n  streamReplicas: 5",
        ));
        assert_eq!(d.get("HA_REPLICAS").map(String::as_str), Some("5"));
    }

    #[test]
    fn no_routes_for_one_replica_or_external_nats() {
        assert!(!data(&cluster("db", "replicas: 1")).contains_key("HA_NATS_ROUTES"));
        let ext = cluster("db", "nats:\n  external:\n    url: nats://n:4222");
        assert!(!data(&ext).contains_key("HA_NATS_ROUTES"));
        assert_eq!(
            build(&ext, "prod").metadata.name.as_deref(),
            Some("db-config")
        );
    }

    #[test]
    fn the_restart_hash_follows_stream_replicas_not_routes() {
        let hash = |spec: &str| restart_hash(&build(&cluster("db", spec), "prod"));
        assert_eq!(
            hash("replicas: 3"),
            hash("replicas: 5"),
            "routes alone roll nothing"
        );
        assert_ne!(
            hash("replicas: 3"),
            hash("replicas: 2"),
            "HA_REPLICAS 3 → 2 rolls the pods"
        );
        assert_eq!(hash("replicas: 3").len(), 16);
    }
}
