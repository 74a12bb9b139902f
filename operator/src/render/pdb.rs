//! Owns the PodDisruptionBudget `<name>`: how many pods voluntary disruptions (drains) may take.
//! Must not exist for a single replica (a PDB there would only block drains) or when disabled.
//! Invariant: `maxUnavailable` defaults to 1, which keeps a JetStream majority for 3+ nodes.
//! See `statefulset` for the pods it protects.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{cluster_name, object_meta, selector};
use super::names;
use crate::crd::HaCluster;

/// `None` for one replica or `disruptionBudget.enabled: false`.
pub fn build(cluster: &HaCluster, namespace: &str) -> Option<PodDisruptionBudget> {
    let spec = &cluster.spec;
    if !spec.disruption_budget.enabled || spec.replicas <= 1 {
        return None;
    }
    let name = cluster_name(cluster);
    Some(PodDisruptionBudget {
        metadata: object_meta(cluster, names::pdb(&name), namespace),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(
                spec.disruption_budget
                    .max_unavailable
                    .clone()
                    .unwrap_or(IntOrString::Int(1)),
            ),
            selector: Some(selector(&name)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::labels::selector_labels;
    use crate::render::tests::cluster;

    #[test]
    fn pdb_allows_one_pod_down_by_default() {
        let p = build(&cluster("db", ""), "prod").unwrap_or_default();
        assert_eq!(p.metadata.name.as_deref(), Some("db"));
        let spec = p.spec.unwrap_or_default();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels("db"))
        );
    }

    #[test]
    fn pdb_takes_max_unavailable_from_the_spec() {
        let c = cluster(
            "db",
            "replicas: 5\ndisruptionBudget:\n  maxUnavailable: 40%",
        );
        let spec = build(&c, "prod")
            .unwrap_or_default()
            .spec
            .unwrap_or_default();
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::String("40%".into()))
        );
    }

    #[test]
    fn no_pdb_for_one_replica_or_when_disabled() {
        assert!(build(&cluster("db", "replicas: 1"), "prod").is_none());
        assert!(
            build(
                &cluster("db", "disruptionBudget:\n  enabled: false"),
                "prod"
            )
            .is_none()
        );
    }
}
