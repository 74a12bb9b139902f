//! Owns the `ha-operator` library: the `HaCluster` resource, the pure `render` of its objects and
//! the controller that applies them.
//! Must not depend on the `ha` node crate: the node is reached only through its flags and HTTP API.
//! Invariant: `render` stays pure so the controller, the `render` command and the e2e simulation
//! produce the same objects.
//! See `crd` (the resource), `render` (its objects), `credentials` (the generated Secret values),
//! `controller` (the reconcile loop).
//!
//! # Layout
//!
//! - `crd`, `render`, `manifest`, `syntax`: the resource and the objects it becomes (pure).
//! - `controller`: the reconcile loop, its `Context` and `run`; one file per step (its `mod.rs`
//!   lists them).
//! - `observed`: what one reconcile saw (pods, what each node's `/status` said).
//! - `status`, `scaling`, `rollout`, `members`, `snapshots`: pure decisions — the status to report,
//!   the StatefulSet replicas of the next scale step, the partition of a rolling update, the departed nodes to clean up, the snapshot tick.
//! - `backups`: `status.backup`, the BackupFailing condition and its Events (pure).
//! - `node_client`: HTTP calls to the nodes; `credentials`: the generated credentials Secret.
//! - `lease`: leader election; `metrics`, `telemetry`, `web`: what the process exposes.

pub mod crd;
pub mod credentials;
pub mod manifest;
pub mod render;
pub mod syntax;

pub mod backups;
pub mod controller;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod node_client;
pub mod observed;
pub mod rollout;
pub mod scaling;
pub mod snapshots;
pub mod status;
pub mod storage;
pub mod telemetry;
pub mod web;

/// The reconciler's scenarios against the mocked API server (`fixtures`).
#[cfg(test)]
mod controller_tests;
#[cfg(test)]
mod fixtures;

/// Everything that can go wrong in the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid in a way the schema cannot express.
    #[error("invalid HaCluster: {0}")]
    InvalidSpec(String),

    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// The API server refused or failed to apply one of the cluster's objects.
    #[error("applying {what}: {source}{hint}")]
    Apply {
        /// `Kind name`.
        what: String,
        #[source]
        source: Box<kube::Error>,
        /// What to do about it, when known (starts with "; ").
        hint: String,
    },

    /// An object could not be serialized.
    #[error("serialize: {0}")]
    Serialize(#[from] serde_json::Error),

    /// An object lacks a field the operator relies on (name, namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),

    /// A Secret the cluster depends on exists but cannot be used.
    #[error("secret {secret}: {message}")]
    Secret { secret: String, message: String },

    /// A node's HTTP API refused or failed a call the reconcile needs.
    #[error("node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: node_client::NodeError,
    },

    /// This operator replica lost its leader Lease during the reconcile, which stopped before
    /// its next write: another replica takes over.
    #[error(
        "this operator replica ({identity}) lost its leader lease; it stopped before its next \
         write, and the replica that holds the lease takes over"
    )]
    LeaseLost { identity: String },

    /// Adding or removing the finalizer failed, or the work inside it did (boxed: it embeds
    /// this type).
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
    /// Short label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Kube(_) | Error::Apply { .. } => "kube",
            Error::Serialize(_) => "serialize",
            Error::MissingField(_) => "missing_field",
            Error::Secret { .. } => "secret",
            Error::Node { .. } => "node_api",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.metric_label(),
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => "finalizer",
                F::UnnamedObject | F::InvalidFinalizer => "finalizer",
            },
        }
    }
}

impl Error {
    /// The reason of the Warning Event and status conditions that report this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Secret { .. } => "SecretUnusable",
            Error::Apply { source, .. } => match source.as_ref() {
                kube::Error::Api(e) if e.code == 422 || e.code == 400 => "ApplyRejected",
                kube::Error::Api(e) if e.code == 403 => "Forbidden",
                _ => "ApiError",
            },
            Error::Kube(_) => "ApiError",
            Error::Node { .. } => "NodeError",
            Error::LeaseLost { .. } => "LeaderLeaseLost",
            _ => "ReconcileError",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
