//! Every example, rendered, and the CRD pass `kubernetes-validate --strict` (the official
//! Kubernetes OpenAPI schemas, unknown fields rejected) for the oldest and newest Kubernetes we
//! support; a broken object fails it, so the check is known to bite.

mod common;

use std::path::Path;
use std::process::Command;

const VERSIONS: [&str; 2] = ["1.29.0", "1.33.0"];

fn validate(files: &[&Path], version: &str) -> (bool, String) {
    let out = common::run(
        Command::new(common::tool("kubernetes-validate"))
            .args(["--strict", "--no-warn", "-k", version])
            .args(files),
    );
    (out.status.success(), common::text(&out))
}

#[test]
fn rendered_examples_and_the_crd_pass_strict_validation_for_1_29_and_1_33() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut files = vec![common::workspace_root().join("crds/haclusters.ha.sqlite.dev.yaml")];
    let mut objects = 0;
    for example in common::examples() {
        let (_, rendered) = common::render_example(&example);
        let yaml = ha_operator::render::to_yaml_stream(&rendered).unwrap_or_else(|e| panic!("{e}"));
        objects += yaml.matches("\nkind: ").count() + usize::from(yaml.starts_with("kind: "));
        let path = dir.path().join(example.file_name().unwrap_or_default());
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
        files.push(path);
    }
    let files: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    for version in VERSIONS {
        let (ok, out) = validate(&files, version);
        assert!(ok, "kubernetes-validate -k {version} failed:\n{out}");
        // One "passed" line per object (and the CRD): nothing was skipped as unknown.
        let passed = out.matches(" passed for resource ").count();
        assert_eq!(passed, objects + 1, "{out}");
    }
}

#[test]
fn a_broken_statefulset_fails_strict_validation() {
    let example = common::workspace_root().join("examples/minimal.yaml");
    let (_, rendered) = common::render_example(&example);
    let mut sts = serde_json::to_value(&rendered.stateful_set).unwrap_or_else(|e| panic!("{e}"));
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] =
        serde_json::json!("/healthz");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("broken.yaml");
    let yaml = serde_yaml::to_string(&sts).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = validate(&[&path], "1.33.0");
    assert!(!ok, "an unknown field passed --strict:\n{out}");
    assert!(out.contains("pathh"), "{out}");
}
