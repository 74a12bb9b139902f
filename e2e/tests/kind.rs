//! Runs e2e/kind/run.sh: the pod simulation's scenarios against a real cluster from KUBECONFIG
//! (build images, load them, helm install the operator, apply an HaCluster, psql/curl, delete a
//! pod, scale). Opt-in: it needs a Kubernetes cluster and Docker, which `make test` does not
//! have; run it with `cargo test -p ha-e2e --test kind -- --ignored`, where it must pass (a
//! missing cluster is a failure then, not a skip).

use std::process::Command;

#[test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG) and Docker: cargo test -p ha-e2e --test kind -- --ignored"]
fn scenarios_pass_on_a_real_cluster() {
    let script = ha_e2e::repo_root().join("e2e/kind/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run e2e/kind/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2e/kind failed:\n{stdout}\n{stderr}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("SKIP")),
        "asked to run on a real cluster, but none was reachable:\n{stdout}"
    );
    assert!(stdout.contains("PASS e2e/kind"), "no verdict:\n{stdout}");
}
