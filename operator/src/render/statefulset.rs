//! Owns the StatefulSet `<name>`: the pod template around the ha container (volumes, security,
//! scheduling), one PersistentVolumeClaim per pod, and how pods start and roll.
//! Must not put anything that changes with the replica count into the pod template (that would
//! restart every pod on a scale); such settings live in the ConfigMap (`config`), and only the
//! hash of those that need a restart (stream replicas, not routes) is annotated here.
//! Invariant: the selector and `serviceName` never change for a cluster (both are immutable).
//! See `container` for the ha container and `services` for the headless Service.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, EmptyDirVolumeSource, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, SeccompProfile, SecretVolumeSource, Volume, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

use super::container;
use super::labels::{cluster_name, object_meta, pod_labels, selector, selector_labels};
use super::names;
use crate::crd::HaCluster;

/// User and group the node runs as (the distroless "nonroot" ids).
pub const RUN_AS: i64 = 65532;

pub fn build(cluster: &HaCluster, namespace: &str) -> StatefulSet {
    let name = cluster_name(cluster);
    let spec = &cluster.spec;
    StatefulSet {
        metadata: object_meta(cluster, names::stateful_set(&name), namespace),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            selector: selector(&name),
            service_name: Some(names::peers_service(&name)),
            // All pods start at once: every node is equal, and the nats-servers of a cluster
            // need each other to elect a JetStream leader, so waiting for pod 0 to be ready
            // before starting pod 1 would never finish.
            pod_management_policy: Some("Parallel".into()),
            // One pod at a time (the StatefulSet default, made explicit): each new pod must be
            // ready, i.e. caught up with the stream, before the next one is replaced.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            template: pod_template(cluster),
            volume_claim_templates: Some(vec![data_claim(cluster)]),
            // A pod scaled away takes its volume with it: its data lives on in the stream and
            // the other nodes, its JetStream peer was removed, and a pod added later under the
            // same name starts clean from the latest snapshot instead of a removed peer's store.
            // Deleting the HaCluster keeps the volumes (delete them yourself when sure).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".into()),
                    when_scaled: Some("Delete".into()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Pod template annotation: the hash of the ConfigMap settings that need a restart.
pub const CONFIG_HASH_ANNOTATION: &str = "ha.sqlite.dev/config-hash";

/// Puts the ConfigMap's restart hash into the pod template: a change makes a new revision,
/// which the operator rolls one pod at a time.
pub fn annotate_config(sts: &mut StatefulSet, hash: &str) {
    if let Some(meta) = sts.spec.as_mut().and_then(|s| s.template.metadata.as_mut()) {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(CONFIG_HASH_ANNOTATION.into(), hash.into());
    }
}

fn pod_template(cluster: &HaCluster) -> PodTemplateSpec {
    let spec = &cluster.spec;
    let pod = &spec.pod;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(cluster)),
            annotations: (!pod.annotations.is_empty()).then(|| pod.annotations.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container::build(cluster)],
            volumes: Some(volumes(cluster)),
            // No `<SERVICE>_PORT`-style variables: a Service named `ha-token` or `ha` would
            // otherwise inject `HA_TOKEN` or `HA_PORT`, which the node reads as settings.
            enable_service_links: Some(false),
            // The pods talk to nothing in the Kubernetes API.
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(spec.effective_termination_grace_seconds()),
            security_context: Some(
                pod.security_context
                    .clone()
                    .unwrap_or_else(default_pod_security_context),
            ),
            affinity: Some(
                pod.affinity
                    .clone()
                    .unwrap_or_else(|| default_affinity(&cluster_name(cluster))),
            ),
            node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
            tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
            topology_spread_constraints: (!pod.topology_spread_constraints.is_empty())
                .then(|| pod.topology_spread_constraints.clone()),
            priority_class_name: pod.priority_class_name.clone(),
            image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                .then(|| spec.image_pull_secrets.clone()),
            ..PodSpec::default()
        }),
    }
}

/// Non-root with a fixed uid/gid; `fsGroup` makes the data volume writable for it (changed only
/// when the volume root does not match, so a large volume does not slow every start).
fn default_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Prefer one pod per host, so a node failure takes one replica; only preferred, so a cluster
/// with fewer hosts than replicas still schedules (`pod.affinity` replaces this).
fn default_affinity(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn volumes(cluster: &HaCluster) -> Vec<Volume> {
    let pg = &cluster.spec.postgres;
    // Writable scratch space under a read-only root: nats-server's generated config, and the
    // staging copies of memory databases during snapshots.
    let mut v = vec![Volume {
        name: names::VOLUME_TMP.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let (true, Some(secret)) = (pg.enabled, &pg.tls_secret) {
        v.push(Volume {
            name: names::VOLUME_PG_TLS.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                // Owner root, group = fsGroup: readable by the node, by nobody else.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let (true, Some(secret)) = (
        cluster.spec.nats_clustered(),
        cluster.spec.nats_cluster_tls_secret(),
    ) {
        v.push(Volume {
            name: names::VOLUME_NATS_CLUSTER_TLS.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(i) = &cluster.spec.database.interceptor {
        v.push(Volume {
            name: names::VOLUME_INTERCEPTOR.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: i.config_map.clone(),
                // Only the script, under its key's name; a missing ConfigMap or key keeps the
                // pod from starting (and `kubectl describe` says why).
                items: Some(vec![KeyToPath {
                    key: i.key.clone(),
                    path: i.key.clone(),
                    mode: None,
                }]),
                optional: Some(false),
                default_mode: Some(0o444),
            }),
            ..Volume::default()
        });
    }
    v
}

/// The per-pod volume (`data`): database file and JetStream store.
fn data_claim(cluster: &HaCluster) -> PersistentVolumeClaim {
    let storage = &cluster.spec.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names::VOLUME_DATA.into()),
            labels: Some(selector_labels(&cluster_name(cluster))),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    storage.size.clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod_spec(s: &StatefulSet) -> PodSpec {
        s.spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .unwrap_or_default()
    }

    #[test]
    fn statefulset_starts_pods_in_parallel_behind_the_peers_service() {
        let s = build(&cluster("db", "replicas: 5"), "prod");
        assert_eq!(s.metadata.name.as_deref(), Some("db"));
        let spec = s.spec.clone().unwrap_or_default();
        assert_eq!(spec.replicas, Some(5));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("db-peers"));
        assert_eq!(spec.selector.match_labels, Some(selector_labels("db")));
        assert_eq!(
            spec.update_strategy.and_then(|u| u.type_).as_deref(),
            Some("RollingUpdate")
        );
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for (k, v) in selector_labels("db") {
            assert_eq!(labels.get(&k), Some(&v), "pod label {k}");
        }
    }

    #[test]
    fn data_claim_takes_size_and_class_from_the_spec() {
        let c = cluster("db", "storage:\n  size: 50Gi\n  storageClassName: fast");
        let spec = build(&c, "prod").spec.unwrap_or_default();
        let claims = spec.volume_claim_templates.unwrap_or_default();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let cs = claims[0].spec.clone().unwrap_or_default();
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            cs.resources
                .and_then(|r| r.requests)
                .unwrap_or_default()
                .get("storage"),
            Some(&Quantity("50Gi".into()))
        );
        let default = build(&cluster("db", ""), "prod").spec.unwrap_or_default();
        let cs = default.volume_claim_templates.unwrap_or_default()[0]
            .spec
            .clone()
            .unwrap_or_default();
        assert_eq!(cs.storage_class_name, None);
    }

    #[test]
    fn pods_run_non_root_with_a_read_only_root_and_writable_tmp() {
        let p = pod_spec(&build(&cluster("db", ""), "prod"));
        let sc = p.security_context.clone().unwrap_or_default();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(65532));
        assert_eq!(sc.run_as_group, Some(65532));
        assert_eq!(sc.fs_group, Some(65532));
        assert_eq!(
            sc.seccomp_profile.map(|s| s.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let vols = p.volumes.clone().unwrap_or_default();
        assert!(
            vols.iter()
                .any(|v| v.name == "tmp" && v.empty_dir.is_some())
        );
        assert_eq!(p.enable_service_links, Some(false));
        assert_eq!(p.termination_grace_period_seconds, Some(30));
        let c = &p.containers[0];
        assert_eq!(
            c.security_context
                .clone()
                .unwrap_or_default()
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn default_anti_affinity_prefers_one_pod_per_host_and_is_replaceable() {
        let p = pod_spec(&build(&cluster("db", ""), "prod"));
        let terms = p
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .unwrap_or_default();
        assert_eq!(terms.len(), 1);
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            terms[0]
                .pod_affinity_term
                .label_selector
                .clone()
                .and_then(|s| s.match_labels),
            Some(selector_labels("db"))
        );
        let c = cluster(
            "db",
            "pod:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        \
             nodeSelectorTerms:\n        - matchExpressions:\n          - {key: disk, operator: In, values: [ssd]}",
        );
        let a = pod_spec(&build(&c, "prod")).affinity.unwrap_or_default();
        assert!(a.pod_anti_affinity.is_none());
        assert!(a.node_affinity.is_some());
    }

    #[test]
    fn pod_settings_are_passed_through() {
        let c = cluster(
            "db",
            "imagePullPolicy: Always\nimagePullSecrets: [{name: reg}]\nimage: example/ha:1\n\
             pod:\n  nodeSelector: {disk: ssd}\n  priorityClassName: high\n  \
             terminationGracePeriodSeconds: 60\n  annotations: {a: b}\n  \
             tolerations: [{key: k, operator: Exists}]\n  \
             resources: {requests: {cpu: 500m}}\n  securityContext: {runAsUser: 1000}",
        );
        let s = build(&c, "prod");
        let t = s.spec.clone().unwrap_or_default().template;
        assert_eq!(
            t.metadata
                .and_then(|m| m.annotations)
                .unwrap_or_default()
                .get("a")
                .map(String::as_str),
            Some("b")
        );
        let p = pod_spec(&s);
        assert_eq!(
            p.node_selector
                .unwrap_or_default()
                .get("disk")
                .map(String::as_str),
            Some("ssd")
        );
        assert_eq!(p.priority_class_name.as_deref(), Some("high"));
        assert_eq!(p.termination_grace_period_seconds, Some(60));
        assert_eq!(p.tolerations.unwrap_or_default().len(), 1);
        assert_eq!(p.image_pull_secrets.unwrap_or_default()[0].name, "reg");
        assert_eq!(p.security_context.and_then(|s| s.run_as_user), Some(1000));
        let c = &p.containers[0];
        assert_eq!(c.image.as_deref(), Some("example/ha:1"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert!(c.resources.is_some());
    }

    #[test]
    fn pg_tls_secret_is_mounted_only_when_pg_is_enabled() {
        let with = pod_spec(&build(&cluster("db", "postgres:\n  tlsSecret: t"), "prod"));
        let vols = with.volumes.unwrap_or_default();
        let tls = vols
            .iter()
            .find(|v| v.name == "pg-tls")
            .and_then(|v| v.secret.clone());
        assert_eq!(tls.and_then(|s| s.secret_name).as_deref(), Some("t"));
        let without = pod_spec(&build(
            &cluster("db", "postgres:\n  enabled: false\n  tlsSecret: t"),
            "prod",
        ));
        assert!(
            !without
                .volumes
                .unwrap_or_default()
                .iter()
                .any(|v| v.name == "pg-tls")
        );
    }
}
