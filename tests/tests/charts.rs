//! Checks the Helm charts with the real Helm SDK: every chart rendered and linted (strict) for each
//! values file in its ci/ folder, the output validated with kubernetes-validate --strict for
//! Kubernetes 1.29 and 1.33 (e2e/check_charts.py), and the operator chart's CRD equal to crds/.

use std::process::Command;

use ha_tests::repo_root;

#[test]
fn charts_render_lint_and_validate_for_every_ci_values_file() {
    let python = repo_root().join(".tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh",
        python.display()
    );
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(&python)
        .arg(repo_root().join("e2e/check_charts.py"))
        .args(["--kube", "1.29.0", "--kube", "1.33.0", "--out"])
        .arg(out_dir.path())
        .output()
        .expect("run e2e/check_charts.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chart checks failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every chart and values file produced a manifest: the script did check something.
    let manifests = std::fs::read_dir(out_dir.path()).expect("out dir").count();
    assert!(
        manifests >= 3,
        "only {manifests} manifests rendered:\n{stdout}"
    );
}

#[test]
fn operator_chart_ships_the_generated_crd() {
    let generated = repo_root().join("crds/haclusters.ha.sqlite.dev.yaml");
    let shipped = repo_root().join("charts/ha-operator/crds/haclusters.ha.sqlite.dev.yaml");
    let a = std::fs::read_to_string(&generated).expect("crds/ file");
    let b = std::fs::read_to_string(&shipped).expect("chart CRD file");
    assert!(
        a == b,
        "charts/ha-operator/crds differs from crds/: run `cp {} {}`",
        generated.display(),
        shipped.display()
    );
}

/// `target/<profile>/ha-operator`, built by `make test` (cargo build --workspace --bins).
fn operator_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("ha-operator");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

#[test]
fn ha_chart_runs_the_nodes_exactly_as_the_operator_would() {
    let out = Command::new(repo_root().join(".tools/bin/python"))
        .arg(repo_root().join("e2e/chart_parity.py"))
        .arg(operator_bin())
        .output()
        .expect("run e2e/chart_parity.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "charts/ha and ha-operator render differently:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().filter(|l| l.contains(": OK")).count() >= 4,
        "fewer cases than expected were compared:\n{stdout}"
    );
}

/// The operator chart's container arguments, rendered by the Helm SDK with `values` (JSON).
fn operator_chart_args(values: &str) -> Vec<String> {
    let script = r#"
import json, sys, yaml, helm_python
chart = helm_python.Chart.load(sys.argv[1])
out = chart.render(json.loads(sys.argv[2]), name="op", namespace="ops", is_install=True)
for path, text in out.items():
    if path.endswith("NOTES.txt"):
        continue
    for d in yaml.safe_load_all(text):
        if d and d.get("kind") == "Deployment":
            print(json.dumps(d["spec"]["template"]["spec"]["containers"][0]["args"]))
"#;
    let out = Command::new(repo_root().join(".tools/bin/python"))
        .args(["-c", script])
        .arg(repo_root().join("charts/ha-operator"))
        .arg(values)
        .output()
        .expect("render the operator chart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("args as JSON")
}

#[test]
fn operator_chart_arguments_are_accepted_by_the_real_operator() {
    for values in [
        "{}",
        r#"{"watchNamespace": "databases", "leaderElection": {"enabled": false}, "logLevel": "debug"}"#,
    ] {
        let args = operator_chart_args(values);
        assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
        // clap rejects an unknown or malformed argument before it reaches --help.
        let out = Command::new(operator_bin())
            .args(&args)
            .arg("--help")
            .output()
            .expect("run ha-operator");
        assert!(
            out.status.success(),
            "ha-operator refused the chart's arguments {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
