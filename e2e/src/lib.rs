//! Owns the local pod simulation: the operator's rendered objects run as real processes, one
//! network namespace per pod, with the DNS names, environment, volumes and Service the objects
//! describe — so the generated configuration is proven to form a working cluster without a
//! Kubernetes API server or a container engine.
//! Must not re-derive what the objects say: commands, args, env and ports come from `render`.
//! Invariant: everything a simulation creates (namespaces, /etc/netns files, processes, mount
//! points) is removed when its owner drops, also when a test fails.
//! See `network` (namespaces, partitions), `pod` (one pod), `cluster` (a StatefulSet of pods).

pub mod client;
pub mod cluster;
pub mod compose;
pub mod image;
pub mod network;
pub mod pod;

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// A binary built by cargo beside the running test (`target/<profile>/<name>`).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The local file that stands in for the image's `/usr/local/bin/<name>`: the built `ha`
/// binaries, and the pinned nats-server of `scripts/install-deps.sh`.
pub fn local_binary(name: &str) -> Option<PathBuf> {
    match name {
        "nats-server" => Some(repo_root().join(".tools/bin/nats-server")),
        "ha" => Some(built_binary(name)),
        _ => None,
    }
}
