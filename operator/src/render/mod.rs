//! Owns the pure translation of an `HaCluster` into the Kubernetes objects that run it.
//! Must not do I/O, read clocks or draw random numbers: the caller passes in everything that varies
//! (namespace, generated credentials).
//! Invariant: the same input renders byte-identical objects; every object carries the cluster's
//! labels and (when the cluster has a uid) a controller owner reference.
//! See `controller` (server-side apply of each object) and `main.rs` (`ha-operator render`).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::crd::HaCluster;
use crate::{Error, Result};

/// Credentials the operator generates once per cluster and keeps in `<name>-credentials`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub pg_user: String,
    pub pg_password: String,
    pub nats_user: String,
    pub nats_password: String,
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
}

/// Renders every object of `cluster` in `namespace`.
pub fn render(cluster: &HaCluster, namespace: &str, credentials: &Credentials) -> Result<Rendered> {
    crate::crd::validate(&cluster.spec).map_err(Error::InvalidSpec)?;
    let _ = (namespace, credentials);
    Err(Error::InvalidSpec("render is not implemented yet".into()))
}
