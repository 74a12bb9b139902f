//! Owns the pure translation of an `HaCluster` into the Kubernetes objects that run it.
//! Must not do I/O, read clocks or draw random numbers: the caller passes in everything that varies
//! (namespace, generated credentials).
//! Invariant: the same input renders byte-identical objects; every object carries the cluster's
//! labels and (when the cluster has a uid) a controller owner reference.
//! See `controller` (server-side apply of each object) and `main.rs` (`ha-operator render`).

mod config;
mod container;
mod ingress;
pub mod labels;
pub mod monitoring;
pub mod names;
mod output;
mod pdb;
mod secret;
pub(crate) mod services;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::HaCluster;
use crate::{Error, Result};

pub use config::routes;
pub use container::{ENV_EXTERNAL_NATS_PASSWORD, ENV_EXTERNAL_NATS_USERNAME};
pub use output::to_yaml_stream;

/// Credentials the operator generates once per cluster and keeps in `<name>-credentials`
/// (drawn by `Credentials::generate`, in the credentials module, which uses this type).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub pg_user: String,
    pub pg_password: String,
    /// The embedded nats-servers' client user (nodes and other NATS clients).
    pub nats_user: String,
    pub nats_password: String,
    /// The user the embedded nats-servers' routes authenticate each other with.
    pub nats_cluster_user: String,
    pub nats_cluster_password: String,
    /// The HTTP API's bearer token, unless `http.tokenSecret` names another or
    /// `http.disableToken` turns it off.
    pub http_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("pg_user", &self.pg_user)
            .field("nats_user", &self.nats_user)
            .field("nats_cluster_user", &self.nats_cluster_user)
            .finish_non_exhaustive()
    }
}

/// Every object of one cluster.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub config_map: ConfigMap,
    /// The generated credentials Secret; the controller creates it only when absent.
    pub secret: Secret,
    /// Headless Service for the pods' stable DNS names and NATS routes.
    pub peers_service: Service,
    /// Service clients use (pg and http).
    pub client_service: Service,
    pub ingress: Option<Ingress>,
    pub stateful_set: StatefulSet,
    pub pdb: Option<PodDisruptionBudget>,
    /// prometheus-operator's ServiceMonitor (`spec.monitoring.serviceMonitor`).
    pub service_monitor: Option<kube::api::DynamicObject>,
}

/// Renders every object of `cluster` in `namespace`. Fails (`Error::InvalidSpec`) when the spec
/// breaks a rule of the CRD (`crd::validate`) or the name cannot prefix the objects' names.
pub fn render(cluster: &HaCluster, namespace: &str, credentials: &Credentials) -> Result<Rendered> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| Error::InvalidSpec("metadata.name is missing".into()))?;
    names::check_cluster_name(name).map_err(Error::InvalidSpec)?;
    if namespace.is_empty() {
        return Err(Error::InvalidSpec("the namespace is empty".into()));
    }
    crate::crd::validate(&cluster.spec).map_err(Error::InvalidSpec)?;
    let config_map = config::build(cluster, namespace);
    let mut stateful_set = statefulset::build(cluster, namespace);
    statefulset::annotate_config(&mut stateful_set, &config::restart_hash(&config_map));
    Ok(Rendered {
        config_map,
        secret: secret::build(cluster, namespace, credentials),
        peers_service: services::peers(cluster, namespace),
        client_service: services::client(cluster, namespace),
        ingress: ingress::build(cluster, namespace),
        stateful_set,
        pdb: pdb::build(cluster, namespace),
        service_monitor: monitoring::build(cluster, namespace),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::HaClusterSpec;
    use kube::Resource;

    /// A cluster named `name` whose spec is the YAML `spec` (defaults filled in by serde).
    pub(crate) fn cluster(name: &str, spec: &str) -> HaCluster {
        let spec: HaClusterSpec = serde_yaml::from_str(if spec.is_empty() { "{}" } else { spec })
            .unwrap_or_else(|e| panic!("test spec does not parse: {e}\n{spec}"));
        HaCluster::new(name, spec)
    }

    pub(crate) fn creds() -> Credentials {
        Credentials {
            pg_user: "pguser".into(),
            pg_password: "pgpass".into(),
            nats_user: "natsuser".into(),
            nats_password: "natspass".into(),
            nats_cluster_user: "routeuser".into(),
            nats_cluster_password: "routepass".into(),
            http_token: "httptoken".into(),
        }
    }

    fn all_metadata(
        r: &Rendered,
    ) -> Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
        let mut m = vec![
            r.config_map.meta(),
            r.secret.meta(),
            r.peers_service.meta(),
            r.client_service.meta(),
            r.stateful_set.meta(),
        ];
        m.extend(r.ingress.as_ref().map(|i| i.meta()));
        m.extend(r.pdb.as_ref().map(|p| p.meta()));
        m
    }

    #[test]
    fn every_object_has_labels_namespace_and_owner() {
        let mut c = cluster("db", "http:\n  ingress:\n    host: h");
        c.metadata.uid = Some("u-1".into());
        let r = render(&c, "prod", &creds()).unwrap_or_else(|e| panic!("{e}"));
        let metas = all_metadata(&r);
        assert_eq!(metas.len(), 7);
        for m in metas {
            let name = m.name.clone().unwrap_or_default();
            assert_eq!(m.namespace.as_deref(), Some("prod"), "{name}");
            // Every object carries the cluster's labels; the peers Service also its role (what
            // the ServiceMonitor selects).
            let mut labels = m.labels.clone().unwrap_or_default();
            if name == "db-peers" {
                assert_eq!(
                    labels.remove(labels::SERVICE_ROLE).as_deref(),
                    Some(labels::ROLE_PEERS)
                );
            }
            assert_eq!(labels, labels::common_labels("db"), "{name}");
            let owners = m.owner_references.clone().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{name}");
            assert_eq!(owners[0].uid, "u-1", "{name}");
        }
    }

    #[test]
    fn render_is_deterministic() {
        let c = cluster("db", "replicas: 5");
        let a = to_yaml_stream(&render(&c, "prod", &creds()).unwrap_or_else(|e| panic!("{e}")));
        let b = to_yaml_stream(&render(&c, "prod", &creds()).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(a.ok(), b.ok());
    }

    #[test]
    fn invalid_specs_and_names_are_refused() {
        let cases = [
            ("db", "replicas: 0", "replicas"),
            ("db", "replication:\n  maxAge: soon", "maxAge"),
            ("db", "snapshots:\n  schedule: 0 25 * * *", "schedule"),
            (
                "db",
                "nats:\n  embedded: {}\n  external:\n    url: nats://x",
                "mutually exclusive",
            ),
            ("db", "postgres:\n  requireTls: true", "tlsSecret"),
            (
                "db",
                "replicas: 2\nreplication:\n  streamReplicas: 3",
                "cannot exceed",
            ),
            ("db", "database:\n  extensions: [x.so]", "absolute path"),
            ("db", "http:\n  port: 4222", "port 4222"),
            ("Db", "", "metadata.name"),
            (
                "db-peers-and-a-name-that-is-much-too-long-for-a-pod-name",
                "",
                "metadata.name",
            ),
        ];
        for (name, spec, want) in cases {
            match render(&cluster(name, spec), "prod", &creds()) {
                Err(Error::InvalidSpec(m)) => assert!(m.contains(want), "{spec}: {m}"),
                other => panic!("{spec}: expected InvalidSpec, got {other:?}"),
            }
        }
        assert!(render(&cluster("db", ""), "", &creds()).is_err());
        let mut nameless = cluster("db", "");
        nameless.metadata.name = None;
        assert!(render(&nameless, "prod", &creds()).is_err());
    }

    #[test]
    fn optional_objects_follow_the_spec() {
        let r = render(&cluster("db", "replicas: 1"), "prod", &creds())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.ingress.is_none());
        assert!(r.pdb.is_none());
        let r = render(
            &cluster("db", "http:\n  ingress:\n    host: h"),
            "prod",
            &creds(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.ingress.is_some());
        assert!(r.pdb.is_some());
    }

    #[test]
    fn credentials_debug_hides_passwords() {
        let d = format!("{:?}", creds());
        assert!(d.contains("pguser") && !d.contains("pgpass") && !d.contains("natspass"));
        assert!(!d.contains("routepass") && !d.contains("httptoken"));
    }
}
