//! The rendered StatefulSet's container (command, args, env) is accepted by the real `ha`
//! binary's configuration parser (`ha --check-config`), and means what the spec says: the env is
//! resolved as the kubelet would (ConfigMap `envFrom`, then `env` in order with `$(VAR)`
//! expansion, `fieldRef` → the pod name, `secretKeyRef` → stand-in values).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ha_operator::crd::HaCluster;
use ha_operator::render::{Rendered, render};
use k8s_openapi::api::core::v1::Container;

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, unknown names stay.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let (Some(body), true) = (after.strip_prefix('('), after.contains(')')) {
            let end = body.find(')').unwrap_or(0);
            let name = &body[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The environment the kubelet would give the container of pod `pod`.
fn resolve_env(container: &Container, rendered: &Rendered, pod: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in container.env_from.clone().unwrap_or_default() {
        let cm = from
            .config_map_ref
            .unwrap_or_else(|| panic!("only ConfigMap envFrom is expected"));
        assert_eq!(
            Some(cm.name.as_str()),
            rendered.config_map.metadata.name.as_deref(),
            "envFrom names the rendered ConfigMap"
        );
        env.extend(rendered.config_map.data.clone().unwrap_or_default());
    }
    for var in container.env.clone().unwrap_or_default() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), None) => expand(v, &env),
            (None, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    assert_eq!(f.field_path, "metadata.name", "{}", var.name);
                    pod.to_string()
                } else if let Some(s) = &from.secret_key_ref {
                    // Stand-ins that are safe where the real values are (URLs, config strings).
                    format!("{}-{}", s.name, s.key.replace('.', "-"))
                } else {
                    panic!("{}: unexpected valueFrom {from:?}", var.name)
                }
            }
            (None, None) => String::new(),
            (Some(_), Some(_)) => panic!("{}: both value and valueFrom", var.name),
        };
        env.insert(var.name, value);
    }
    env
}

/// `ha --check-config` with the container's args and resolved env; (success, output).
fn check(cluster: &HaCluster, rendered: &Rendered, ordinal: i32) -> (bool, String) {
    check_mounted(cluster, rendered, ordinal, None)
}

/// `check`, with the files of one mounted volume: env values under `mount.0` (a path in the
/// container) are pointed at `mount.1` (a directory here holding the volume's files).
fn check_mounted(
    cluster: &HaCluster,
    rendered: &Rendered,
    ordinal: i32,
    mount: Option<(&str, &Path)>,
) -> (bool, String) {
    let pod = rendered
        .stateful_set
        .spec
        .as_ref()
        .map(|s| &s.template)
        .and_then(|t| t.spec.as_ref())
        .unwrap_or_else(|| panic!("the StatefulSet has a pod template"));
    let container = &pod.containers[0];
    assert_eq!(container.command, Some(vec!["ha".to_string()]));
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let mut env = resolve_env(container, rendered, &format!("{name}-{ordinal}"));
    if let Some((inside, here)) = mount {
        for v in env.values_mut() {
            if let Some(rest) = v.strip_prefix(inside) {
                *v = format!("{}{rest}", here.display());
            }
        }
    }
    let out = common::run(
        Command::new(common::ha_bin())
            .args(container.args.clone().unwrap_or_default())
            .arg("--check-config")
            .env_clear()
            .envs(&env),
    );
    (out.status.success(), common::text(&out))
}

fn render_yaml(name: &str, spec: &str) -> (HaCluster, Rendered) {
    let spec = serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{e}\n{spec}"));
    let cluster = HaCluster::new(name, spec);
    let rendered =
        render(&cluster, "prod", &common::credentials()).unwrap_or_else(|e| panic!("{e}"));
    (cluster, rendered)
}

fn assert_accepted(what: &str, cluster: &HaCluster, rendered: &Rendered, ordinal: i32) -> String {
    let (ok, out) = check(cluster, rendered, ordinal);
    assert!(
        ok,
        "{what}: ha --check-config refused the rendered container:\n{out}"
    );
    out
}

#[test]
fn every_example_container_is_accepted_by_ha_check_config() {
    for path in common::examples() {
        let (cluster, rendered) = common::render_example(&path);
        let what = path.display().to_string();
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let out = assert_accepted(&what, &cluster, &rendered, 1);
        assert!(
            out.contains(&format!("name: \"{name}-1\"")),
            "{what}: node name\n{out}"
        );
        let replicas = cluster.spec.effective_stream_replicas();
        assert!(
            out.contains(&format!("replicas: {replicas},")),
            "{what}: stream replicas\n{out}"
        );
        // Secrets are not printed.
        assert!(!out.contains("credentials-password"), "{what}:\n{out}");
        if cluster.spec.nats_clustered() {
            let ns = common::namespace_of(&cluster);
            for i in 0..cluster.spec.replicas {
                let route = format!("{name}-{i}.{name}-peers.{ns}.svc.cluster.local:6222");
                assert!(out.contains(&route), "{what}: route {route}\n{out}");
            }
        }
    }
}

#[test]
fn rendered_settings_mean_what_the_spec_says() {
    let (c, r) = render_yaml("db", "replicas: 5");
    let out = assert_accepted("defaults", &c, &r, 4);
    for want in [
        "name: \"db-4\"",
        "\"/data/ha.db\"",
        "http_port: 8080",
        "port: 4222",
        "\"/data/nats\"",
        "cluster_name: Some(\n            \"db\"",
        "cluster_port: Some(\n            6222",
        // A pod on a new volume joins JetStream under a new generation of its name.
        "server_name: Generation",
        "nats-route://db-4.db-peers.prod.svc.cluster.local:6222",
        "replicas: 3,",
        "restore_at_start: true",
        "retain: 3",
        "Port(\n        5432",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }

    let (c, r) = render_yaml("one", "replicas: 1\npostgres:\n  enabled: false");
    let out = assert_accepted("one replica", &c, &r, 0);
    assert!(
        out.contains("cluster_name: None")
            && out.contains("routes: []")
            && out.contains("server_name: Node"),
        "{out}"
    );
    assert!(
        out.contains("pg_port: Disabled") && out.contains("replicas: 1,"),
        "{out}"
    );

    let (c, r) = render_yaml(
        "mem",
        "database:\n  name: m.db\n  memory: true\n  fromLatestSnapshot: false\n\
         replication:\n  stream: s_1\n  maxAge: 1h30m\n  timeout: 2s\n  ddlSync: false\n  \
         policy: by_start_sequence=7\nhttp:\n  port: 9000\n  tokenSecret: tok\n\
         logLevel: debug\npostgres:\n  port: 6432\n  authMethod: md5\n  tlsSecret: t\n  requireTls: true",
    );
    let out = assert_accepted("variant", &c, &r, 2);
    for want in [
        "Memory {",
        "\"m.db\"",
        "restore_at_start: false",
        "stream: \"s_1\"",
        "max_age: 5400s",
        "timeout: 2s",
        "ddl_sync: false",
        "ByStartSequence(\n",
        "http_port: 9000",
        "token: Some(\n        Secret(***)",
        "level: \"debug\"",
        "Port(\n        6432",
        "auth: Md5",
        "\"/etc/ha/pg-tls/tls.crt\"",
        "require_tls: true",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn extensions_and_the_interceptor_reach_the_node() {
    let (c, r) = render_yaml(
        "db",
        "database:\n  extensions: [/usr/lib/sqlite3/pcre.so]\n  \
         interceptor:\n    configMap: hooks\n    key: audit.rhai",
    );
    // The ConfigMap's key, as the kubelet would mount it (check-config compiles the script).
    let volume = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(volume.path().join("audit.rhai"), "fn before(cs) { cs }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = check_mounted(&c, &r, 0, Some(("/etc/ha/interceptor", volume.path())));
    assert!(
        ok,
        "ha --check-config refused the rendered container:\n{out}"
    );
    let script = format!("\"{}/audit.rhai\"", volume.path().display());
    for want in ["\"/usr/lib/sqlite3/pcre.so\"", script.as_str()] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    // The script's path is where the pod mounts the ConfigMap's key.
    let pod = r
        .stateful_set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_else(|| panic!("pod template"));
    let volume = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "interceptor")
        .unwrap_or_else(|| panic!("interceptor volume"));
    let cm = volume
        .config_map
        .unwrap_or_else(|| panic!("a ConfigMap volume"));
    assert_eq!(cm.name, "hooks");
    let items = cm.items.unwrap_or_default();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("audit.rhai", "audit.rhai")
    );
    let mount = pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.name == "interceptor")
        .unwrap_or_else(|| panic!("interceptor mount"));
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/ha/interceptor", Some(true))
    );
}

#[test]
fn external_nats_credentials_reach_the_replication_url() {
    let (c, r) = render_yaml(
        "ext",
        "nats:\n  external:\n    url: nats://a:4222,nats://b:4222\n    credentialsSecret: nc",
    );
    let sts = r.stateful_set.spec.clone().unwrap_or_default();
    let container = &sts.template.spec.unwrap_or_default().containers[0];
    let env = resolve_env(container, &r, "ext-0");
    assert_eq!(
        env.get("HA_REPLICATION_URL").map(String::as_str),
        Some("nats://nc-username:nc-password@a:4222,nats://nc-username:nc-password@b:4222")
    );
    let out = assert_accepted("external", &c, &r, 0);
    // The node took both URLs and prints them without the credentials.
    assert!(
        out.contains("***@a:4222") && out.contains("***@b:4222"),
        "{out}"
    );
    assert!(!out.contains("nc-password"), "{out}");
    assert!(out.contains("port: 0,"), "no embedded server\n{out}");
}

#[test]
fn user_args_override_rendered_settings_and_bad_ones_are_caught() {
    let (c, r) = render_yaml(
        "db",
        "pod:\n  args: [--log-level, trace, --concurrent-queries, '7']",
    );
    let out = assert_accepted("user args", &c, &r, 0);
    assert!(
        out.contains("level: \"trace\"") && out.contains("concurrent_queries: 7"),
        "{out}"
    );

    // The check bites: a setting the node refuses fails it.
    let (c, r) = render_yaml("db", "pod:\n  args: [--log-level, loud]");
    let (ok, out) = check(&c, &r, 0);
    assert!(!ok, "ha accepted --log-level loud:\n{out}");
    let (c, r) = render_yaml(
        "db",
        "pod:\n  env:\n  - {name: HA_REPLICATION_POLICY, value: sometimes}",
    );
    let (ok, out) = check(&c, &r, 0);
    assert!(!ok && out.contains("sometimes"), "{out}");
}

#[test]
fn kubernetes_env_expansion_is_emulated_faithfully() {
    let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
    assert_eq!(expand("$(A)-$(B)-$$(A)-$-$(A", &env), "x-$(B)-$(A)-$-$(A");
}

#[test]
fn backup_and_bootstrap_settings_reach_the_node() {
    // spec.backup: the URL, endpoint, region, interval and retention as the node reads them;
    // the AWS keys only by reference (never in the node's printed configuration).
    let (c, r) = render_yaml(
        "db",
        "backup:\n  url: s3://bkt/db\n  endpoint: http://minio:9000\n  region: eu-west-1\n  \
         credentialsSecret: s3-creds\n  interval: 30m\n  retention: 14d",
    );
    let out = assert_accepted("backup", &c, &r, 0);
    for want in [
        "url: \"s3://bkt/db\"",
        "\"http://minio:9000\"",
        "region: \"eu-west-1\"",
        "interval: 1800s",
        "retention: 1209600s",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        !out.contains("s3-creds-"),
        "a credential is printed:\n{out}"
    );
    assert!(
        out.contains("restore: None"),
        "no restore without bootstrap\n{out}"
    );

    // spec.bootstrap.fromBackup, to a sequence, in the object store of spec.backup; and alone,
    // to a time, with its own endpoint, region and credentials.
    let (c, r) = render_yaml(
        "db",
        "backup:\n  url: s3://bkt/db\n  endpoint: http://minio:9000\n  region: eu-west-1\n\
         bootstrap:\n  fromBackup:\n    url: s3://old/db\n    toSeq: 1234",
    );
    let out = assert_accepted("bootstrap to a sequence", &c, &r, 0);
    for want in ["\"s3://old/db\"", "Seq(\n", "1234", "\"s3://bkt/db\""] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    let (c, r) = render_yaml(
        "db",
        "bootstrap:\n  fromBackup:\n    url: s3://old/db\n    endpoint: http://old:9000\n    \
         region: us-west-2\n    credentialsSecret: old-creds\n    toTime: \"2026-12-07T01:00:00Z\"",
    );
    let out = assert_accepted("bootstrap to a time", &c, &r, 2);
    for want in [
        "\"s3://old/db\"",
        "TimeNs(",
        "\"http://old:9000\"",
        "region: \"us-west-2\"",
        "backup: None",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(
        !out.contains("old-creds-"),
        "a credential is printed:\n{out}"
    );
}
