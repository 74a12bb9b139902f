//! `ha-operator render` and `ha-operator crd` as users run them: output on stdout, errors as one
//! clear line on stderr with a non-zero exit.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ha-operator"))
}

#[test]
fn render_prints_every_object_with_fresh_credentials() {
    let example = common::workspace_root().join("examples/production.yaml");
    let render_once = || {
        let out = common::run(operator().arg("render").arg("-f").arg(&example));
        assert!(out.status.success(), "{}", common::text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let a = render_once();
    for kind in [
        "kind: ConfigMap",
        "kind: Secret",
        "kind: Service",
        "kind: StatefulSet",
        "kind: PodDisruptionBudget",
        "kind: Ingress",
    ] {
        assert!(a.contains(kind), "{kind} missing");
    }
    assert!(
        a.contains("namespace: shop"),
        "the file's namespace is used"
    );
    assert!(
        a.contains("never overwrites"),
        "the Secret comment is there"
    );
    let b = render_once();
    assert_ne!(a, b, "each render draws new credentials");
    let strip = |s: &str| {
        s.lines()
            .filter(|l| {
                let l = l.trim_start();
                ![
                    "password:",
                    "nats-password:",
                    "nats-cluster-password:",
                    "http-token:",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&a),
        strip(&b),
        "only the passwords and the token differ"
    );
}

#[test]
fn render_takes_the_namespace_flag_and_stdin() {
    let mut child = operator()
        .args(["render", "-f", "-", "-n", "team-a"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let minimal = std::fs::read(common::workspace_root().join("examples/minimal.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(&minimal))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", common::text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("namespace: team-a"));
    assert!(text.contains("demo-0.demo-peers.team-a.svc.cluster.local:6222"));
}

#[test]
fn render_refuses_bad_files_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let head = "apiVersion: ha.sqlite.dev/v1alpha1\nkind: HaCluster\nmetadata:\n  name: db\n";
    let cases = [
        ("missing", None, "No such file"),
        (
            "garbage.yaml",
            Some("spec: [\n".to_string()),
            "not valid YAML",
        ),
        (
            "kind.yaml",
            Some("apiVersion: v1\nkind: Pod\n".to_string()),
            "not an HaCluster",
        ),
        (
            "typo.yaml",
            Some(format!("{head}spec:\n  replica: 3\n")),
            "unknown field: spec.replica",
        ),
        (
            "zero.yaml",
            Some(format!("{head}spec:\n  replicas: 0\n")),
            "replicas must be between 1 and 99",
        ),
        (
            "cron.yaml",
            Some(format!(
                "{head}spec:\n  snapshots:\n    schedule: '0 25 * * *'\n"
            )),
            "hour field",
        ),
    ];
    for (name, content, want) in cases {
        let path = dir.path().join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap_or_else(|e| panic!("{e}"));
        }
        let out = common::run(operator().arg("render").arg("-f").arg(&path));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(out.stdout.is_empty(), "{name}: printed objects");
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.starts_with("ha-operator: "), "{name}: {err}");
        assert!(!err.contains("Stack backtrace"), "{name}: {err}");
    }
}

#[test]
fn crd_command_prints_the_checked_in_crd() {
    let out = common::run(operator().arg("crd"));
    assert!(out.status.success());
    let on_disk =
        std::fs::read(common::workspace_root().join("crds/haclusters.ha.sqlite.dev.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.stdout == on_disk,
        "crds/ is stale: cargo run -p ha-operator -- crd > crds/haclusters.ha.sqlite.dev.yaml"
    );
}
