//! Owns what the operator's integration tests share: paths (workspace, examples, tools, the
//! `ha` binary), rendering an example with fixed credentials, and running a tool.
//! Must not skip: a missing tool or binary fails the test with how to get it (CI installs them).
//! See `scripts/install-deps.sh` for the tools and `make test` for the build order.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ha_operator::crd::HaCluster;
use ha_operator::render::{Credentials, Rendered};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("the operator crate lives inside the workspace"))
}

/// `examples/*.yaml`, sorted, at least the four documented ones.
pub fn examples() -> Vec<PathBuf> {
    let dir = workspace_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for name in ["minimal", "production", "external-nats", "in-memory"] {
        assert!(
            files
                .iter()
                .any(|f| f.file_stem().is_some_and(|s| s == name)),
            "examples/{name}.yaml is missing"
        );
    }
    files
}

pub fn read_cluster(path: &Path) -> HaCluster {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ha_operator::manifest::parse_cluster(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Fixed credentials (URL- and config-safe, like the generated ones).
pub fn credentials() -> Credentials {
    Credentials {
        pg_user: "ha".into(),
        pg_password: "pgPassw0rd".into(),
        nats_user: "ha-nats".into(),
        nats_password: "natsPassw0rd".into(),
        nats_cluster_user: "ha-route".into(),
        nats_cluster_password: "routePassw0rd".into(),
        http_token: "httpT0ken".into(),
    }
}

pub fn namespace_of(cluster: &HaCluster) -> String {
    cluster
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

pub fn render_example(path: &Path) -> (HaCluster, Rendered) {
    let cluster = read_cluster(path);
    let ns = namespace_of(&cluster);
    let rendered = ha_operator::render::render(&cluster, &ns, &credentials())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (cluster, rendered)
}

/// A Python tool from the `.tools` venv that `scripts/install-deps.sh` fills.
pub fn tool(name: &str) -> PathBuf {
    let path = workspace_root().join(".tools/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps.sh (make test does)",
        path.display()
    );
    path
}

/// The `ha` binary: `$HA_BIN`, else the one built beside this test executable.
pub fn ha_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("test executable path: {e}"));
    // target/<profile>/deps/<test> → target/<profile>/ha
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ha"))
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p ha --bin ha; make test does) or set HA_BIN",
        bin.display()
    );
    bin
}

/// Runs `cmd`, returning its output; panics only if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
