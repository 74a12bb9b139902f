//! Owns the `ha-operator` library: the `HaCluster` resource, the pure `render` of its objects and
//! the controller that applies them.
//! Must not depend on the `ha` node crate: the node is reached only through its flags and HTTP API.
//! Invariant: `render` stays pure so the controller, the `render` command and the e2e simulation
//! produce the same objects.
//! See `crd` (the resource), `render` (its objects), `credentials` (the generated Secret values).

pub mod crd;
pub mod credentials;
pub mod manifest;
pub mod render;
pub mod syntax;

/// Everything that can go wrong in the operator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid in a way the schema cannot express.
    #[error("invalid HaCluster: {0}")]
    InvalidSpec(String),

    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// An object could not be serialized.
    #[error("serialize: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

impl Error {
    /// Short label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
