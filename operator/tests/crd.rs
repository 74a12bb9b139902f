//! The CRD file matches the code; every example is valid against the CRD's own openAPIV3Schema
//! (check-jsonschema, unknown fields rejected as kubectl's strict field validation does) and its
//! CEL rules (evaluated client-side with kube's CEL validator); invalid specs are rejected by the
//! layer the API server would use and by `crd::validate`, which mirrors the CEL rules.

mod common;

use std::path::Path;
use std::process::Command;

use ha_operator::crd::{HaCluster, validate};
use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema};
use serde_json::{Value, json};

const CRD_FILE: &str = "crds/haclusters.ha.sqlite.dev.yaml";

fn crd_yaml() -> String {
    serde_yaml::to_string(&HaCluster::crd()).unwrap_or_else(|e| panic!("{e}"))
}

fn open_api_schema() -> Value {
    let crd = HaCluster::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap_or_else(|| panic!("the CRD has an openAPIV3Schema"));
    serde_json::to_value(schema).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn crd_file_matches_the_rust_types() {
    let path = common::workspace_root().join(CRD_FILE);
    let on_disk =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        on_disk == crd_yaml(),
        "{CRD_FILE} is out of date with operator/src/crd.rs; regenerate it with\n  \
         cargo run -p ha-operator -- crd > {CRD_FILE}"
    );
}

/// The schema as the API server applies it with strict field validation: objects reject
/// properties they do not declare; the root also allows apiVersion, kind and metadata.
fn strict_schema() -> Value {
    fn close(s: &mut Value) {
        let Some(obj) = s.as_object_mut() else { return };
        let preserve = obj
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !preserve
        {
            obj.insert("additionalProperties".into(), Value::Bool(false));
        }
        for key in ["properties"] {
            if let Some(Value::Object(props)) = obj.get_mut(key) {
                props.values_mut().for_each(close);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(sub) = obj.get_mut(key) {
                close(sub);
            }
        }
    }
    let mut s = open_api_schema();
    close(&mut s);
    if let Some(Value::Object(props)) = s.get_mut("properties") {
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert("metadata".into(), json!({"type": "object"}));
    }
    s
}

/// check-jsonschema on `instances` (YAML files); (passed, output).
fn check_schema(instances: &[&Path]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let schema = dir.path().join("haclusters.schema.json");
    std::fs::write(&schema, strict_schema().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let out = common::run(
        Command::new(common::tool("check-jsonschema"))
            .arg("--schemafile")
            .arg(&schema)
            .args(instances),
    );
    (out.status.success(), common::text(&out))
}

fn as_json(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The CEL rules of the CRD on a whole object (defaults applied first, as the API server does).
fn check_cel(object: &Value) -> Result<(), String> {
    Validator::new()
        .validate(&open_api_schema(), object, None)
        .map_err(|e| e.to_string())
}

#[test]
fn every_cel_rule_of_the_crd_compiles() {
    let schema = open_api_schema();
    let compiled = compile_schema(&schema);
    let errors: Vec<String> = compiled
        .compilation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let rules = serde_json::to_string(&schema)
        .unwrap_or_default()
        .matches("\"rule\":")
        .count();
    assert!(rules >= 3, "expected the CRD's CEL rules, found {rules}");
}

#[test]
fn examples_are_valid_against_the_crd_schema_and_its_cel_rules() {
    let examples = common::examples();
    let paths: Vec<&Path> = examples.iter().map(|p| p.as_path()).collect();
    let (ok, out) = check_schema(&paths);
    assert!(ok, "check-jsonschema:\n{out}");
    for path in &examples {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        check_cel(&as_json(&text)).unwrap_or_else(|e| panic!("{}: CEL: {e}", path.display()));
        let cluster = common::read_cluster(path);
        validate(&cluster.spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    /// A type, range or pattern of the openAPIV3Schema.
    Schema,
    /// An `x-kubernetes-validations` rule.
    Cel,
}

fn cluster_yaml(spec: &str) -> String {
    format!(
        "apiVersion: ha.sqlite.dev/v1alpha1\nkind: HaCluster\nmetadata:\n  name: db\nspec:\n{spec}\n"
    )
}

#[test]
fn invalid_specs_are_rejected_by_the_crd_and_by_validate() {
    let cases: &[(&str, &str, Layer)] = &[
        ("replicas 0", "  replicas: 0", Layer::Schema),
        ("replicas 100", "  replicas: 100", Layer::Schema),
        (
            "bad duration",
            "  replication:\n    maxAge: soon",
            Layer::Schema,
        ),
        (
            "fractional duration",
            "  replication:\n    maxAge: 1.5h",
            Layer::Schema,
        ),
        (
            "zero timeout",
            "  replication:\n    timeout: 0s",
            Layer::Cel,
        ),
        (
            "bad policy",
            "  replication:\n    policy: first",
            Layer::Schema,
        ),
        (
            "bad cron",
            "  snapshots:\n    schedule: not a cron",
            Layer::Schema,
        ),
        (
            "cron macro",
            "  snapshots:\n    schedule: \"@every 1h\"",
            Layer::Schema,
        ),
        (
            "external and embedded",
            "  nats:\n    embedded: {}\n    external:\n      url: nats://n:4222",
            Layer::Cel,
        ),
        (
            "requireTls without TLS",
            "  postgres:\n    requireTls: true",
            Layer::Cel,
        ),
        (
            "relative extension path",
            "  database:\n    extensions: [x.so]",
            Layer::Schema,
        ),
        ("log level", "  logLevel: loud", Layer::Schema),
        (
            "service type",
            "  service:\n    type: ExternalName",
            Layer::Schema,
        ),
        ("port range", "  http:\n    port: 70000", Layer::Schema),
        (
            "more stream replicas than replicas",
            "  replicas: 2\n  replication:\n    streamReplicas: 3",
            Layer::Cel,
        ),
        ("http port = pg port", "  http:\n    port: 5432", Layer::Cel),
        (
            "pg port = nats cluster port",
            "  postgres:\n    port: 6222",
            Layer::Cel,
        ),
        (
            "nats ports equal",
            "  nats:\n    embedded:\n      port: 7000\n      clusterPort: 7000",
            Layer::Cel,
        ),
        (
            "ingress path without /",
            "  http:\n    ingress:\n      host: h\n      path: api",
            Layer::Cel,
        ),
        (
            "maxUnavailable lots",
            "  disruptionBudget:\n    maxUnavailable: lots",
            Layer::Cel,
        ),
        (
            "maxUnavailable negative",
            "  disruptionBudget:\n    maxUnavailable: -1",
            Layer::Cel,
        ),
        (
            "storage size zero",
            "  storage:\n    size: \"0\"",
            Layer::Cel,
        ),
        (
            "storage size lots",
            "  storage:\n    size: lots",
            Layer::Cel,
        ),
        (
            "ingress without a token",
            "  http:\n    disableToken: true\n    ingress:\n      host: h",
            Layer::Cel,
        ),
        (
            "token secret and no token",
            "  http:\n    disableToken: true\n    tokenSecret: t",
            Layer::Cel,
        ),
        (
            "backup url not s3",
            "  backup:\n    url: https://bucket.example.com/db",
            Layer::Cel,
        ),
        (
            "backup interval",
            "  backup:\n    url: s3://b/p\n    interval: hourly",
            Layer::Schema,
        ),
        (
            "bootstrap url not s3",
            "  bootstrap:\n    fromBackup:\n      url: /backups/db",
            Layer::Cel,
        ),
        (
            "bootstrap to a sequence and a time",
            "  bootstrap:\n    fromBackup:\n      url: s3://b/p\n      toSeq: 10\n      toTime: \"2026-12-07T01:00:00Z\"",
            Layer::Cel,
        ),
        (
            "bootstrap time not RFC 3339",
            "  bootstrap:\n    fromBackup:\n      url: s3://b/p\n      toTime: yesterday",
            Layer::Schema,
        ),
        (
            "bootstrap sequence 0",
            "  bootstrap:\n    fromBackup:\n      url: s3://b/p\n      toSeq: 0",
            Layer::Schema,
        ),
        (
            "bootstrap and backup on two endpoints",
            "  backup:\n    url: s3://b/new\n    endpoint: http://a:9000\n  bootstrap:\n    fromBackup:\n      url: s3://b/old\n      endpoint: http://b:9000",
            Layer::Cel,
        ),
        (
            "monitoring interval",
            "  monitoring:\n    serviceMonitor: true\n    interval: often",
            Layer::Schema,
        ),
    ];
    // One check-jsonschema run over every case; it names each failing file in its report.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<std::path::PathBuf> = (0..cases.len())
        .map(|i| dir.path().join(format!("case-{i}.yaml")))
        .collect();
    for (file, (_, spec, _)) in files.iter().zip(cases) {
        std::fs::write(file, cluster_yaml(spec)).unwrap_or_else(|e| panic!("{e}"));
    }
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let (all_ok, report) = check_schema(&paths);
    assert!(!all_ok, "{report}");
    for (i, (what, spec, layer)) in cases.iter().enumerate() {
        let yaml = cluster_yaml(spec);
        let schema_rejects = report.contains(&format!("case-{i}.yaml::"));
        let cel = check_cel(&as_json(&yaml));
        match layer {
            Layer::Schema => assert!(schema_rejects, "{what}: the schema accepted it\n{report}"),
            Layer::Cel => {
                assert!(!schema_rejects, "{what}: the schema rejected it\n{report}");
                assert!(cel.is_err(), "{what}: no CEL rule rejected it");
            }
        }
        let spec: ha_operator::crd::HaClusterSpec =
            serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(validate(&spec).is_err(), "{what}: validate accepted it");
    }
}

/// `validate` gives the CEL rules' own verdicts and messages.
#[test]
fn validate_mirrors_every_cel_rule() {
    let specs = [
        "{}",
        "nats: {embedded: {}}",
        "nats: {external: {url: 'nats://n:4222'}}",
        "nats: {embedded: {}, external: {url: 'nats://n:4222'}}",
        "postgres: {requireTls: true}",
        "postgres: {requireTls: true, tlsSecret: t}",
        "postgres: {requireTls: false}",
        "replication: {timeout: '0'}",
        "replication: {timeout: 0ms}",
        "replication: {timeout: 10s}",
        "replication: {timeout: 1m0s}",
        "database: {extensions: []}",
        "database: {extensions: [/a.so]}",
        "{replicas: 2, replication: {streamReplicas: 3}}",
        "{replicas: 3, replication: {streamReplicas: 3}}",
        "{replicas: 1, nats: {external: {url: 'nats://n:4222'}}, replication: {streamReplicas: 3}}",
        "http: {ingress: {host: h, path: api}}",
        "http: {ingress: {host: h, path: /api}}",
        "http: {ingress: {host: h}, disableToken: true}",
        "http: {tokenSecret: t, disableToken: true}",
        "http: {disableToken: true}",
        "disruptionBudget: {maxUnavailable: lots}",
        "disruptionBudget: {maxUnavailable: '25%'}",
        "disruptionBudget: {maxUnavailable: 0}",
        "disruptionBudget: {maxUnavailable: -1}",
        "storage: {size: 20Gi}",
        "storage: {size: '0'}",
        "storage: {size: lots}",
        "backup: {url: 's3://b/p'}",
        "backup: {url: 'gs://b/p'}",
        "backup: {url: 's3://b/p', endpoint: 'http://minio:9000', credentialsSecret: c, interval: 30m, retention: 7d}",
        "bootstrap: {fromBackup: {url: 's3://b/p'}}",
        "bootstrap: {fromBackup: {url: 'b/p'}}",
        "bootstrap: {fromBackup: {url: 's3://b/p', toSeq: 5}}",
        "bootstrap: {fromBackup: {url: 's3://b/p', toTime: '2026-12-07T01:00:00Z'}}",
        "bootstrap: {fromBackup: {url: 's3://b/p', toSeq: 5, toTime: '2026-12-07T01:00:00Z'}}",
        "bootstrap: {}",
        "{backup: {url: 's3://b/n', region: a}, bootstrap: {fromBackup: {url: 's3://b/o', region: b}}}",
        "{backup: {url: 's3://b/n', region: a}, bootstrap: {fromBackup: {url: 's3://b/o', region: a}}}",
        "{backup: {url: 's3://b/n', credentialsSecret: a}, bootstrap: {fromBackup: {url: 's3://b/o'}}}",
        "{backup: {url: 's3://b/n', credentialsSecret: a}, bootstrap: {fromBackup: {url: 's3://b/o', credentialsSecret: b}}}",
        "{backup: {url: 's3://b/n'}, bootstrap: {fromBackup: {url: 's3://b/o', endpoint: 'http://m:9000'}}}",
    ];
    for spec in specs {
        let object = json!({
            "apiVersion": "ha.sqlite.dev/v1alpha1",
            "kind": "HaCluster",
            "metadata": {"name": "db"},
            "spec": as_json(spec),
        });
        let parsed: ha_operator::crd::HaClusterSpec =
            serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let cel = check_cel(&object);
        let rust = validate(&parsed);
        assert_eq!(
            cel.is_ok(),
            rust.is_ok(),
            "{spec}: CEL {cel:?}, validate {rust:?}"
        );
        if let (Err(c), Err(r)) = (&cel, &rust) {
            assert!(
                c.contains(r.as_str()),
                "{spec}: CEL says {c:?}, validate says {r:?}"
            );
        }
    }
}

/// The CEL rules of an update from `old` to `new` (transition rules see `oldSelf`).
fn check_cel_update(old: &str, new: &str) -> Result<(), String> {
    let object = |spec: &str| {
        json!({
            "apiVersion": "ha.sqlite.dev/v1alpha1",
            "kind": "HaCluster",
            "metadata": {"name": "db"},
            "spec": as_json(spec),
        })
    };
    Validator::new()
        .validate(&open_api_schema(), &object(new), Some(&object(old)))
        .map_err(|e| e.to_string())
}

#[test]
fn transition_rules_refuse_what_a_running_cluster_cannot_take() {
    let ext = "nats: {external: {url: 'nats://n:4222'}}";
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("{replicas: 3}", "{replicas: 5}", None),
        ("{replicas: 5}", "{replicas: 2}", None),
        (
            "{replicas: 3}",
            "{replicas: 1}",
            Some("between 1 and more than 1"),
        ),
        (
            "{replicas: 1}",
            "{replicas: 3}",
            Some("create a new HaCluster"),
        ),
        ("{}", "{replicas: 1}", Some("between 1 and more than 1")),
        ("{replicas: 1}", "{replicas: 1, logLevel: debug}", None),
        (
            &format!("{{replicas: 1, {ext}}}"),
            &format!("{{replicas: 3, {ext}}}"),
            None,
        ),
        ("{storage: {size: 10Gi}}", "{storage: {size: 20Gi}}", None),
        (
            "{}",
            "{storage: {size: 5Gi}}",
            Some("storage.size cannot shrink"),
        ),
        (
            "{storage: {size: 10Gi}}",
            "{storage: {size: 10240Mi}}",
            None,
        ),
        (
            "{storage: {storageClassName: a}}",
            "{storage: {storageClassName: b}}",
            Some("storage.storageClassName cannot change"),
        ),
        (
            "{}",
            "{storage: {storageClassName: b}}",
            Some("storage.storageClassName cannot change"),
        ),
        (
            "{}",
            "{database: {name: other.db}}",
            Some("database.name cannot change"),
        ),
        (
            "{}",
            "{replication: {stream: other}}",
            Some("replication.stream cannot change"),
        ),
        ("{}", ext, Some("nats.external cannot be added or removed")),
        ("{}", "{snapshots: {schedule: '@daily'}}", None),
        ("{}", "{backup: {url: 's3://b/p'}}", None),
        (
            "{backup: {url: 's3://b/p'}}",
            "{backup: {url: 's3://b/q', interval: 5m}}",
            None,
        ),
        (
            "{bootstrap: {fromBackup: {url: 's3://b/p'}}}",
            "{bootstrap: {fromBackup: {url: 's3://b/p', toSeq: 9}}}",
            Some("bootstrap cannot change"),
        ),
        (
            "{bootstrap: {fromBackup: {url: 's3://b/p'}}}",
            "{bootstrap: {fromBackup: {url: 's3://b/p'}}, logLevel: debug}",
            None,
        ),
        ("{bootstrap: {fromBackup: {url: 's3://b/p'}}}", "{}", None),
    ];
    for (old, new, want) in cases {
        let got = check_cel_update(old, new);
        match want {
            None => assert!(got.is_ok(), "{old} → {new}: {got:?}"),
            Some(w) => {
                let e = got.expect_err(&format!("{old} → {new} was accepted"));
                assert!(e.contains(w), "{old} → {new}: {e}");
            }
        }
        // The same spec as a create is fine: these rules are about changes only.
        assert!(
            check_cel(&json!({
            "apiVersion": "ha.sqlite.dev/v1alpha1", "kind": "HaCluster",
            "metadata": {"name": "db"}, "spec": as_json(new)}))
            .is_ok(),
            "{new}"
        );
    }
}

#[test]
fn the_crd_scales_like_a_workload_and_describes_itself() {
    let crd = HaCluster::crd();
    let version = &crd.spec.versions[0];
    let scale = version
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .unwrap_or_else(|| panic!("a scale subresource"));
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let ready = version
        .additional_printer_columns
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == "Ready"))
        .unwrap_or_else(|| panic!("a Ready column"));
    assert_eq!(ready.json_path, ".status.ready");
    // Every field of ours says what it is, the resource too (not kube's generated line).
    let schema = open_api_schema();
    let top = schema["description"].as_str().unwrap_or_default();
    assert!(top.contains("SQLite cluster"), "{top}");
    fn walk(node: &Value, path: &str, depth: usize, missing: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in props {
            let p = format!("{path}.{k}");
            if v.get("description").is_none() {
                missing.push(p.clone());
            }
            if depth < 3 {
                walk(v, &p, depth + 1, missing);
                if let Some(items) = v.get("items") {
                    walk(items, &format!("{p}[]"), depth + 1, missing);
                }
            }
        }
    }
    let mut missing = Vec::new();
    walk(&schema, "", 0, &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}
