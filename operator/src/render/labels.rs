//! Owns the labels every object carries, the pod selector, and the `ObjectMeta` of each object
//! (name, namespace, labels, controller owner reference).
//! Must not hold object-specific settings; builders add annotations themselves.
//! Invariant: the selector labels never change for a cluster (a StatefulSet's selector is
//! immutable) and user labels can never replace them.
//! See `names` for the names and `mod.rs` for the callers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Resource;

use crate::crd::HaCluster;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const CLUSTER: &str = "ha.sqlite.dev/cluster";
/// Label that tells the peers Service from the client Service (both carry the cluster's labels).
pub const SERVICE_ROLE: &str = "ha.sqlite.dev/service";
pub const ROLE_PEERS: &str = "peers";

/// Value of `app.kubernetes.io/name`.
pub const APP: &str = "ha";
/// Value of `app.kubernetes.io/managed-by`; also the server-side apply field manager.
pub const MANAGER: &str = "ha-operator";

/// Labels that select the cluster's pods (StatefulSet, Services, PDB, anti-affinity).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), APP.to_string()),
        (INSTANCE.to_string(), cluster.to_string()),
        (CLUSTER.to_string(), cluster.to_string()),
    ])
}

/// Labels on every object of the cluster: the selector labels plus `managed-by`.
pub fn common_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(MANAGED_BY.to_string(), MANAGER.to_string());
    l
}

/// Pod labels: the user's `pod.labels`, then ours on top (a user label cannot break selection).
pub fn pod_labels(cluster: &HaCluster) -> BTreeMap<String, String> {
    let mut l = cluster.spec.pod.labels.clone();
    l.extend(common_labels(&cluster_name(cluster)));
    l
}

/// The selector of the cluster's pods.
pub fn selector(cluster: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(cluster)),
        ..LabelSelector::default()
    }
}

/// The cluster's name (`metadata.name`; empty when missing, which `render` refuses first).
pub fn cluster_name(cluster: &HaCluster) -> String {
    cluster.metadata.name.clone().unwrap_or_default()
}

/// Metadata of a child object: name, namespace, common labels and, when the cluster has a uid
/// (it came from the API server), a controller owner reference so that deleting the cluster
/// garbage-collects the object and the controller is woken by its changes.
pub fn object_meta(cluster: &HaCluster, name: String, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(common_labels(&cluster_name(cluster))),
        owner_references: cluster.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;

    #[test]
    fn every_object_gets_the_four_labels() {
        let l = common_labels("db");
        assert_eq!(l.get(NAME).map(String::as_str), Some("ha"));
        assert_eq!(l.get(INSTANCE).map(String::as_str), Some("db"));
        assert_eq!(l.get(MANAGED_BY).map(String::as_str), Some("ha-operator"));
        assert_eq!(l.get(CLUSTER).map(String::as_str), Some("db"));
        assert!(!selector_labels("db").contains_key(MANAGED_BY));
    }

    #[test]
    fn owner_reference_only_when_the_cluster_has_a_uid() {
        let mut c = cluster("db", "");
        assert!(object_meta(&c, "x".into(), "ns").owner_references.is_none());
        c.metadata.uid = Some("1234".into());
        let refs = object_meta(&c, "x".into(), "ns")
            .owner_references
            .unwrap_or_default();
        assert_eq!(refs.len(), 1);
        let r = &refs[0];
        assert_eq!(r.api_version, "ha.sqlite.dev/v1alpha1");
        assert_eq!(r.kind, "HaCluster");
        assert_eq!(r.name, "db");
        assert_eq!(r.uid, "1234");
        assert_eq!(r.controller, Some(true));
    }

    #[test]
    fn user_pod_labels_cannot_replace_the_selector_labels() {
        let c = cluster(
            "db",
            "pod:\n  labels:\n    team: data\n    app.kubernetes.io/instance: other\n",
        );
        let l = pod_labels(&c);
        assert_eq!(l.get("team").map(String::as_str), Some("data"));
        assert_eq!(l.get(INSTANCE).map(String::as_str), Some("db"));
    }
}
