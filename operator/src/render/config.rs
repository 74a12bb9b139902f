//! Owns the ConfigMap `<name>-config`: the settings that depend on the replica count (NATS
//! routes to every pod, stream replicas), read by the pods through `envFrom` at start.
//! Must not hold settings whose change should roll the pods: those go into the pod template.
//! Invariant: scaling changes this ConfigMap only, so running pods are not restarted; new pods
//! read the full route list and route gossip meshes the rest.
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
}
