//! Owns the ha container: command, settings (as `HA_*` environment variables), ports, probes,
//! mounts, security context. Must not use a node setting that `node/src/config/mod.rs` lacks
//! (tests run the real `ha --check-config` on it), nor put a secret value in the pod template.
//! Invariant: settings are environment variables, so the user's `pod.args` (flags) override them
//! (the node's precedence is flags > env) and `pod.env` replaces ours by name; both come last.
//! See `statefulset` for the pod around it and `config` for the `envFrom` ConfigMap.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe, SecretKeySelector, SecurityContext,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::cluster_name;
use super::names;
use crate::crd::{ExternalNats, HaCluster};

/// Env vars that carry the external NATS user and password into `HA_REPLICATION_URL` through
/// Kubernetes' `$(VAR)` expansion (the node takes credentials in the URL only). Not `HA_*`, so
/// the node never reads them directly.
pub const ENV_EXTERNAL_NATS_USERNAME: &str = "EXTERNAL_NATS_USERNAME";
pub const ENV_EXTERNAL_NATS_PASSWORD: &str = "EXTERNAL_NATS_PASSWORD";

pub fn build(cluster: &HaCluster) -> Container {
    let spec = &cluster.spec;
    let mut mounts = vec![
        mount(names::VOLUME_DATA, names::DATA_DIR, false),
        mount(names::VOLUME_TMP, names::TMP_DIR, false),
    ];
    if spec.postgres.enabled && spec.postgres.tls_secret.is_some() {
        mounts.push(mount(names::VOLUME_PG_TLS, names::PG_TLS_DIR, true));
    }
    if spec.nats_clustered() && spec.nats_cluster_tls_secret().is_some() {
        mounts.push(mount(
            names::VOLUME_NATS_CLUSTER_TLS,
            names::NATS_CLUSTER_TLS_DIR,
            true,
        ));
    }
    if spec.database.interceptor.is_some() {
        mounts.push(mount(
            names::VOLUME_INTERCEPTOR,
            names::INTERCEPTOR_DIR,
            true,
        ));
    }
    Container {
        name: names::CONTAINER.into(),
        image: Some(spec.effective_image().to_string()),
        image_pull_policy: spec.image_pull_policy.clone(),
        // The binary by name, not the image's entrypoint, so the settings below mean the same
        // whatever the image does; the image puts `ha` and `nats-server` on PATH.
        command: Some(vec!["ha".into()]),
        args: (!spec.pod.args.is_empty()).then(|| spec.pod.args.clone()),
        ports: Some(
            spec.container_ports()
                .into_iter()
                .map(|(name, port)| ContainerPort {
                    name: Some(name.into()),
                    container_port: port,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        env: Some(env(cluster)),
        // The scale-dependent settings (routes, stream replicas); read at container start only,
        // so changing them does not restart running pods.
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names::config_map(&cluster_name(cluster)),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        startup_probe: Some(probe("/healthz", 10, 180)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        resources: spec.pod.resources.clone(),
        security_context: Some(
            spec.pod
                .container_security_context
                .clone()
                .unwrap_or_else(default_security_context),
        ),
        volume_mounts: Some(mounts),
        // A node that refuses its configuration exits with the reason as its last log line;
        // this puts that line into the pod status (`kubectl describe`).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// Probes on the node's HTTP port (`/healthz` and `/readyz` need no token). The startup probe
/// allows 30 minutes: `--from-latest-snapshot` restores before HTTP listens, and liveness only
/// starts once the startup probe passed, so a long restore is never killed.
fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(names::PORT_HTTP.into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// No privilege escalation, no capabilities, read-only root file system (`/data` and `/tmp`
/// are the writable volumes: the database, the JetStream store, nats-server's generated config).
fn default_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_ref(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The node's settings, then the user's `pod.env` (which replaces ours of the same name: a
/// duplicate name would also be refused by server-side apply, where `env` is keyed by name).
pub fn env(cluster: &HaCluster) -> Vec<EnvVar> {
    let spec = &cluster.spec;
    let name = cluster_name(cluster);
    let credentials = names::credentials_secret(&name);
    let mut env = vec![
        // The pod name is the node name: unique, stable across restarts (the durable consumer
        // and the NATS server name derive from it) and resolvable through the peers Service.
        EnvVar {
            name: "HA_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        // The database lives on the pod's volume; with `memory` the same path names the database
        // (the snapshot key and stream subject) and is loaded only if such a file exists.
        value(
            "HA_DSN",
            format!("file:{}/{}", names::DATA_DIR, spec.database.name),
        ),
    ];
    if spec.database.memory {
        env.push(value("HA_MEMORY", "true"));
    }
    if !spec.database.extensions.is_empty() {
        env.push(value("HA_EXTENSIONS", spec.database.extensions.join(",")));
    }
    if let Some(i) = &spec.database.interceptor {
        env.push(value(
            "HA_INTERCEPTOR",
            format!("{}/{}", names::INTERCEPTOR_DIR, i.key),
        ));
    }
    env.push(value("HA_PORT", spec.http.port.to_string()));
    // Probes, the Service and peers reach the pod by its IP: listen on every interface (the
    // node's own default without a token is loopback).
    env.push(value("HA_LISTEN_ADDR", "0.0.0.0"));
    env.push(value("HA_LOG_LEVEL", spec.log_level.clone()));
    // Leave the node's default (15s) while the grace period allows it; a shorter grace period
    // gets half of it, so in-flight requests and nats-server both stop before SIGKILL.
    let grace = spec.effective_termination_grace_seconds();
    env.push(value(
        "HA_SHUTDOWN_TIMEOUT",
        format!("{}s", (grace / 2).clamp(1, 15)),
    ));
    // Every route but the probes needs the token: the user's Secret, else the generated one.
    match (&spec.http.token_secret, spec.http.disable_token) {
        (Some(secret), _) => env.push(secret_ref("HA_TOKEN", secret, names::KEY_TOKEN)),
        (None, false) => env.push(secret_ref("HA_TOKEN", &credentials, names::KEY_HTTP_TOKEN)),
        (None, true) => {}
    }
    pg_env(cluster, &credentials, &mut env);
    match &spec.nats.external {
        None => embedded_nats_env(cluster, &credentials, &mut env),
        Some(external) => external_nats_env(external, &mut env),
    }
    let r = &spec.replication;
    if let Some(stream) = &r.stream {
        env.push(value("HA_REPLICATION_STREAM", stream.clone()));
    }
    if let Some(age) = &r.max_age {
        env.push(value("HA_REPLICATION_MAX_AGE", age.clone()));
    }
    if let Some(timeout) = &r.timeout {
        env.push(value("HA_REPLICATION_TIMEOUT", timeout.clone()));
    }
    if let Some(policy) = &r.policy {
        env.push(value("HA_REPLICATION_POLICY", policy.clone()));
    }
    if !r.ddl_sync {
        env.push(value("HA_DISABLE_DDL_SYNC", "true"));
    }
    // A new or emptied pod restores the newest snapshot, then reads the stream from there
    // (the stream may no longer hold the beginning).
    if spec.database.from_latest_snapshot {
        env.push(value("HA_FROM_LATEST_SNAPSHOT", "true"));
    }
    // Retention is applied by the node that takes a snapshot, whichever the operator picks.
    env.push(value(
        "HA_SNAPSHOT_RETAIN",
        spec.snapshots.retain.to_string(),
    ));
    backup_env(cluster, &mut env);

    let user = &spec.pod.env;
    env.retain(|e| !user.iter().any(|u| u.name == e.name));
    env.extend(user.iter().cloned());
    env
}

/// Off-cluster backups and the bootstrap restore (docs/operations.md): URLs and schedule as
/// `HA_*` values, the AWS credentials only by reference to the user's Secret.
fn backup_env(cluster: &HaCluster, env: &mut Vec<EnvVar>) {
    let spec = &cluster.spec;
    let from = spec.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref());
    if spec.backup.is_none() && from.is_none() {
        return;
    }
    if let Some(b) = &spec.backup {
        env.push(value("HA_BACKUP_URL", b.url.clone()));
        if let Some(i) = &b.interval {
            env.push(value("HA_BACKUP_INTERVAL", i.clone()));
        }
        if let Some(r) = &b.retention {
            env.push(value("HA_BACKUP_RETENTION", r.clone()));
        }
    }
    if let Some(f) = from {
        // Read by a node only while its database and the stream are empty: the first node of
        // a new cluster restores, the others restore the snapshot it publishes.
        env.push(value("HA_RESTORE_FROM", f.url.clone()));
        if let Some(n) = f.to_seq {
            env.push(value("HA_RESTORE_TO_SEQ", n.to_string()));
        }
        if let Some(t) = &f.to_time {
            env.push(value("HA_RESTORE_TO_TIME", t.clone()));
        }
    }
    let store = spec.object_store();
    if let Some(e) = store.endpoint {
        env.push(value("HA_BACKUP_ENDPOINT", e));
    }
    if let Some(r) = store.region {
        env.push(value("HA_BACKUP_REGION", r));
    }
    if let Some(secret) = store.credentials_secret {
        env.push(secret_ref(
            "AWS_ACCESS_KEY_ID",
            secret,
            names::KEY_AWS_ACCESS_KEY_ID,
        ));
        env.push(secret_ref(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            names::KEY_AWS_SECRET_ACCESS_KEY,
        ));
        let mut token = secret_ref("AWS_SESSION_TOKEN", secret, names::KEY_AWS_SESSION_TOKEN);
        if let Some(s) = token
            .value_from
            .as_mut()
            .and_then(|f| f.secret_key_ref.as_mut())
        {
            // Only temporary credentials have one.
            s.optional = Some(true);
        }
        env.push(token);
    }
}

fn pg_env(cluster: &HaCluster, credentials: &str, env: &mut Vec<EnvVar>) {
    let pg = &cluster.spec.postgres;
    if !pg.enabled {
        // Port 0 turns the front end off.
        env.push(value("HA_PG_PORT", "0"));
        return;
    }
    env.push(value("HA_PG_PORT", pg.port.to_string()));
    // The login comes from the user's Secret, else from the generated one.
    let secret = pg.auth_secret.as_deref().unwrap_or(credentials);
    env.push(secret_ref("HA_PG_USER", secret, names::KEY_USERNAME));
    env.push(secret_ref("HA_PG_PASS", secret, names::KEY_PASSWORD));
    if let Some(method) = &pg.auth_method {
        env.push(value("HA_PG_AUTH", method.clone()));
    }
    if pg.tls_secret.is_some() {
        // The TLS Secret is mounted as files (`statefulset` adds the volume).
        env.push(value(
            "HA_PG_CERT",
            format!("{}/{}", names::PG_TLS_DIR, names::KEY_TLS_CRT),
        ));
        env.push(value(
            "HA_PG_KEY",
            format!("{}/{}", names::PG_TLS_DIR, names::KEY_TLS_KEY),
        ));
        if pg.require_tls {
            env.push(value("HA_PG_REQUIRE_TLS", "true"));
        }
    }
}

fn embedded_nats_env(cluster: &HaCluster, credentials: &str, env: &mut Vec<EnvVar>) {
    let spec = &cluster.spec;
    env.push(value(
        "HA_NATS_PORT",
        spec.effective_nats_port().to_string(),
    ));
    // Other pods reach the client port (a node's default is loopback); the user below is
    // required there.
    env.push(value("HA_NATS_HOST", "0.0.0.0"));
    // JetStream data on the volume, beside the database, so it survives restarts.
    env.push(value(
        "HA_NATS_STORE_DIR",
        format!("{}/nats", names::DATA_DIR),
    ));
    // The client port is reachable from the pod network: require the generated user.
    env.push(secret_ref(
        "HA_NATS_USER",
        credentials,
        names::KEY_NATS_USERNAME,
    ));
    env.push(secret_ref(
        "HA_NATS_PASS",
        credentials,
        names::KEY_NATS_PASSWORD,
    ));
    if spec.nats.embedded.as_ref().is_some_and(|e| e.logs) {
        env.push(value("HA_NATS_LOGS", "true"));
    }
    if spec.nats_clustered() {
        // One JetStream cluster named after the HaCluster; the routes are in the ConfigMap.
        env.push(value("HA_NATS_CLUSTER_NAME", cluster_name(cluster)));
        env.push(value(
            "HA_NATS_CLUSTER_PORT",
            spec.effective_nats_cluster_port().to_string(),
        ));
        // The server joins as `<pod>-g<generation>`, a new generation on a new volume: a pod
        // scaled away (its peer removed) and added back joins at once, where nats-server keeps
        // the removed name out for 5 minutes. The name stays across restarts of the volume.
        env.push(value("HA_NATS_SERVER_NAME", "generation"));
        // Routes authenticate each other with their own generated user.
        env.push(secret_ref(
            "HA_NATS_CLUSTER_USER",
            credentials,
            names::KEY_NATS_CLUSTER_USERNAME,
        ));
        env.push(secret_ref(
            "HA_NATS_CLUSTER_PASS",
            credentials,
            names::KEY_NATS_CLUSTER_PASSWORD,
        ));
        if spec.nats_cluster_tls_secret().is_some() {
            let file = |key: &str| format!("{}/{key}", names::NATS_CLUSTER_TLS_DIR);
            env.push(value("HA_NATS_CLUSTER_TLS_CERT", file(names::KEY_TLS_CRT)));
            env.push(value("HA_NATS_CLUSTER_TLS_KEY", file(names::KEY_TLS_KEY)));
            env.push(value("HA_NATS_CLUSTER_TLS_CA", file(names::KEY_CA_CRT)));
        }
    }
}

fn external_nats_env(external: &ExternalNats, env: &mut Vec<EnvVar>) {
    // No embedded server: the node replicates through the external URL(s).
    env.push(value("HA_NATS_PORT", "0"));
    let urls = match &external.credentials_secret {
        None => external.url.clone(),
        Some(secret) => {
            // Defined before HA_REPLICATION_URL, as `$(VAR)` expansion requires.
            env.push(secret_ref(
                ENV_EXTERNAL_NATS_USERNAME,
                secret,
                names::KEY_USERNAME,
            ));
            env.push(secret_ref(
                ENV_EXTERNAL_NATS_PASSWORD,
                secret,
                names::KEY_PASSWORD,
            ));
            with_credentials(&external.url)
        }
    };
    env.push(value("HA_REPLICATION_URL", urls));
}

/// Puts `$(EXTERNAL_NATS_USERNAME):$(EXTERNAL_NATS_PASSWORD)@` into each URL that has no
/// credentials of its own (`nats://` is assumed without a scheme).
fn with_credentials(urls: &str) -> String {
    let userinfo = format!("$({ENV_EXTERNAL_NATS_USERNAME}):$({ENV_EXTERNAL_NATS_PASSWORD})@");
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let (scheme, rest) = u.split_once("://").unwrap_or(("nats", u));
            if rest.contains('@') {
                u.to_string()
            } else {
                format!("{scheme}://{userinfo}{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;

    fn get<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a EnvVar> {
        env.iter().find(|e| e.name == name)
    }

    fn val(env: &[EnvVar], name: &str) -> Option<String> {
        get(env, name).and_then(|e| e.value.clone())
    }

    /// (secret, key) of a secretKeyRef variable.
    fn secret_of(env: &[EnvVar], name: &str) -> Option<(String, String)> {
        let s = get(env, name)?
            .value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()?;
        Some((s.name.clone(), s.key.clone()))
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.into(), b.into()))
    }

    #[test]
    fn defaults_run_a_clustered_embedded_nats_on_the_volume() {
        let env = env(&cluster("db", ""));
        let name = get(&env, "HA_NAME")
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.field_ref)
            .map(|f| f.field_path);
        assert_eq!(name.as_deref(), Some("metadata.name"));
        assert_eq!(val(&env, "HA_DSN").as_deref(), Some("file:/data/ha.db"));
        assert_eq!(val(&env, "HA_MEMORY"), None);
        assert_eq!(val(&env, "HA_PORT").as_deref(), Some("8080"));
        assert_eq!(val(&env, "HA_NATS_PORT").as_deref(), Some("4222"));
        assert_eq!(
            val(&env, "HA_NATS_STORE_DIR").as_deref(),
            Some("/data/nats")
        );
        assert_eq!(val(&env, "HA_NATS_CLUSTER_NAME").as_deref(), Some("db"));
        assert_eq!(val(&env, "HA_NATS_CLUSTER_PORT").as_deref(), Some("6222"));
        assert_eq!(
            val(&env, "HA_NATS_SERVER_NAME").as_deref(),
            Some("generation")
        );
        assert_eq!(
            secret_of(&env, "HA_NATS_USER"),
            pair("db-credentials", "nats-username")
        );
        assert_eq!(
            secret_of(&env, "HA_NATS_PASS"),
            pair("db-credentials", "nats-password")
        );
        assert_eq!(
            secret_of(&env, "HA_PG_USER"),
            pair("db-credentials", "username")
        );
        assert_eq!(
            secret_of(&env, "HA_PG_PASS"),
            pair("db-credentials", "password")
        );
        assert_eq!(val(&env, "HA_PG_PORT").as_deref(), Some("5432"));
        assert_eq!(
            val(&env, "HA_FROM_LATEST_SNAPSHOT").as_deref(),
            Some("true")
        );
        assert_eq!(val(&env, "HA_SNAPSHOT_RETAIN").as_deref(), Some("3"));
        assert_eq!(val(&env, "HA_SHUTDOWN_TIMEOUT").as_deref(), Some("15s"));
        // An omitted `replication` section keeps DDL replication on.
        assert_eq!(get(&env, "HA_DISABLE_DDL_SYNC"), None);
        // No secret value in the template, no unset option.
        assert!(env.iter().all(|e| e.value.as_deref() != Some("")));
        // Secure by default: an HTTP token, route credentials, the client port on the pod
        // network (behind the NATS user above).
        assert_eq!(
            secret_of(&env, "HA_TOKEN"),
            pair("db-credentials", "http-token")
        );
        assert_eq!(
            secret_of(&env, "HA_NATS_CLUSTER_USER"),
            pair("db-credentials", "nats-cluster-username")
        );
        assert_eq!(
            secret_of(&env, "HA_NATS_CLUSTER_PASS"),
            pair("db-credentials", "nats-cluster-password")
        );
        assert_eq!(val(&env, "HA_NATS_HOST").as_deref(), Some("0.0.0.0"));
        assert_eq!(val(&env, "HA_LISTEN_ADDR").as_deref(), Some("0.0.0.0"));
        assert_eq!(get(&env, "HA_NATS_CLUSTER_TLS_CERT"), None);
        assert_eq!(get(&env, "HA_REPLICATION_URL"), None);
        assert_eq!(
            get(&env, "HA_NATS_ROUTES"),
            None,
            "routes come from the ConfigMap"
        );
        assert_eq!(
            get(&env, "HA_REPLICAS"),
            None,
            "replicas come from the ConfigMap"
        );
    }

    #[test]
    fn backup_settings_are_values_and_its_credentials_secret_references() {
        let env = env(&cluster(
            "db",
            "backup:\n  url: s3://bkt/db\n  endpoint: http://minio:9000\n  region: eu-west-1\n  credentialsSecret: s3-creds\n  interval: 30m\n  retention: 14d",
        ));
        assert_eq!(val(&env, "HA_BACKUP_URL").as_deref(), Some("s3://bkt/db"));
        assert_eq!(
            val(&env, "HA_BACKUP_ENDPOINT").as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(val(&env, "HA_BACKUP_REGION").as_deref(), Some("eu-west-1"));
        assert_eq!(val(&env, "HA_BACKUP_INTERVAL").as_deref(), Some("30m"));
        assert_eq!(val(&env, "HA_BACKUP_RETENTION").as_deref(), Some("14d"));
        for key in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            assert_eq!(secret_of(&env, key), pair("s3-creds", key), "{key}");
            assert_eq!(val(&env, key), None, "{key} is never a value");
        }
        let optional = |name: &str| {
            get(&env, name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|f| f.secret_key_ref.as_ref())
                .and_then(|s| s.optional)
        };
        assert_eq!(optional("AWS_ACCESS_KEY_ID"), Some(false));
        assert_eq!(optional("AWS_SESSION_TOKEN"), Some(true));
        assert_eq!(get(&env, "HA_RESTORE_FROM"), None);
        // Without `backup` nothing of it is rendered.
        let plain = env_names(&cluster("db", ""));
        assert!(
            !plain.iter().any(|n| n.starts_with("HA_BACKUP")
                || n.starts_with("HA_RESTORE")
                || n.starts_with("AWS_")),
            "{plain:?}"
        );
    }

    fn env_names(c: &HaCluster) -> Vec<String> {
        env(c).into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn bootstrap_restores_to_its_target_with_backups_store_settings() {
        let env = env(&cluster(
            "db",
            "backup:\n  url: s3://bkt/new\n  endpoint: http://minio:9000\n  credentialsSecret: s3-creds\nbootstrap:\n  fromBackup:\n    url: s3://bkt/old\n    toTime: \"2026-12-07T01:00:00Z\"",
        ));
        assert_eq!(
            val(&env, "HA_RESTORE_FROM").as_deref(),
            Some("s3://bkt/old")
        );
        assert_eq!(
            val(&env, "HA_RESTORE_TO_TIME").as_deref(),
            Some("2026-12-07T01:00:00Z")
        );
        assert_eq!(get(&env, "HA_RESTORE_TO_SEQ"), None);
        assert_eq!(val(&env, "HA_BACKUP_URL").as_deref(), Some("s3://bkt/new"));
        assert_eq!(
            val(&env, "HA_BACKUP_ENDPOINT").as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(
            secret_of(&env, "AWS_ACCESS_KEY_ID"),
            pair("s3-creds", "AWS_ACCESS_KEY_ID")
        );

        // A bootstrap alone brings its own store settings; no backups are configured.
        let env = env_of(
            "bootstrap:\n  fromBackup:\n    url: s3://bkt/old\n    region: eu-north-1\n    credentialsSecret: old-creds\n    toSeq: 1234",
        );
        assert_eq!(val(&env, "HA_RESTORE_TO_SEQ").as_deref(), Some("1234"));
        assert_eq!(val(&env, "HA_BACKUP_REGION").as_deref(), Some("eu-north-1"));
        assert_eq!(get(&env, "HA_BACKUP_URL"), None);
        assert_eq!(get(&env, "HA_BACKUP_ENDPOINT"), None);
        assert_eq!(
            secret_of(&env, "AWS_SECRET_ACCESS_KEY"),
            pair("old-creds", "AWS_SECRET_ACCESS_KEY")
        );
    }

    #[test]
    fn one_replica_runs_a_standalone_nats_server() {
        let env = env(&cluster("db", "replicas: 1"));
        assert_eq!(val(&env, "HA_NATS_PORT").as_deref(), Some("4222"));
        assert_eq!(get(&env, "HA_NATS_CLUSTER_NAME"), None);
        assert_eq!(get(&env, "HA_NATS_CLUSTER_PORT"), None);
    }

    #[test]
    fn memory_keeps_the_database_name_on_the_volume_path() {
        let env = env(&cluster("db", "database:\n  name: app.db\n  memory: true"));
        assert_eq!(val(&env, "HA_MEMORY").as_deref(), Some("true"));
        assert_eq!(val(&env, "HA_DSN").as_deref(), Some("file:/data/app.db"));
    }

    #[test]
    fn external_nats_replaces_the_embedded_server_and_carries_credentials() {
        let c = cluster(
            "db",
            "nats:\n  external:\n    url: nats://a:4222, b:4222,tls://u:p@c:4222\n    \
             credentialsSecret: nats-creds",
        );
        let env = env(&c);
        assert_eq!(val(&env, "HA_NATS_PORT").as_deref(), Some("0"));
        for gone in ["HA_NATS_STORE_DIR", "HA_NATS_USER", "HA_NATS_CLUSTER_NAME"] {
            assert_eq!(get(&env, gone), None, "{gone}");
        }
        assert_eq!(
            secret_of(&env, "EXTERNAL_NATS_USERNAME"),
            pair("nats-creds", "username")
        );
        assert_eq!(
            secret_of(&env, "EXTERNAL_NATS_PASSWORD"),
            pair("nats-creds", "password")
        );
        assert_eq!(
            val(&env, "HA_REPLICATION_URL").as_deref(),
            Some(
                "nats://$(EXTERNAL_NATS_USERNAME):$(EXTERNAL_NATS_PASSWORD)@a:4222,\
                 nats://$(EXTERNAL_NATS_USERNAME):$(EXTERNAL_NATS_PASSWORD)@b:4222,\
                 tls://u:p@c:4222"
            )
        );
        let pos = |n: &str| env.iter().position(|e| e.name == n);
        assert!(pos("EXTERNAL_NATS_PASSWORD") < pos("HA_REPLICATION_URL"));

        let plain = env_of("nats:\n  external:\n    url: nats://a:4222");
        assert_eq!(
            val(&plain, "HA_REPLICATION_URL").as_deref(),
            Some("nats://a:4222")
        );
        assert_eq!(get(&plain, "EXTERNAL_NATS_USERNAME"), None);
    }

    fn env_of(spec: &str) -> Vec<EnvVar> {
        env(&cluster("db", spec))
    }

    #[test]
    fn pg_disabled_is_port_zero_without_credentials() {
        let env = env_of("postgres:\n  enabled: false");
        assert_eq!(val(&env, "HA_PG_PORT").as_deref(), Some("0"));
        assert_eq!(get(&env, "HA_PG_USER"), None);
        assert_eq!(get(&env, "HA_PG_PASS"), None);
    }

    #[test]
    fn pg_tls_auth_and_token_come_from_their_secrets() {
        let env = env_of(
            "postgres:\n  authSecret: pg-login\n  authMethod: md5\n  tlsSecret: pg-tls\n  \
             requireTls: true\nhttp:\n  tokenSecret: api-token",
        );
        assert_eq!(secret_of(&env, "HA_PG_USER"), pair("pg-login", "username"));
        assert_eq!(secret_of(&env, "HA_PG_PASS"), pair("pg-login", "password"));
        assert_eq!(val(&env, "HA_PG_AUTH").as_deref(), Some("md5"));
        assert_eq!(
            val(&env, "HA_PG_CERT").as_deref(),
            Some("/etc/ha/pg-tls/tls.crt")
        );
        assert_eq!(
            val(&env, "HA_PG_KEY").as_deref(),
            Some("/etc/ha/pg-tls/tls.key")
        );
        assert_eq!(val(&env, "HA_PG_REQUIRE_TLS").as_deref(), Some("true"));
        assert_eq!(secret_of(&env, "HA_TOKEN"), pair("api-token", "token"));
    }

    #[test]
    fn replication_settings_become_node_settings() {
        let env = env_of(
            "replication:\n  stream: s1\n  maxAge: 48h\n  timeout: 5s\n  policy: new\n  \
             ddlSync: false\nsnapshots:\n  retain: 7\ndatabase:\n  fromLatestSnapshot: false\n\
             logLevel: debug\npod:\n  terminationGracePeriodSeconds: 10",
        );
        assert_eq!(val(&env, "HA_REPLICATION_STREAM").as_deref(), Some("s1"));
        assert_eq!(val(&env, "HA_REPLICATION_MAX_AGE").as_deref(), Some("48h"));
        assert_eq!(val(&env, "HA_REPLICATION_TIMEOUT").as_deref(), Some("5s"));
        assert_eq!(val(&env, "HA_REPLICATION_POLICY").as_deref(), Some("new"));
        assert_eq!(val(&env, "HA_DISABLE_DDL_SYNC").as_deref(), Some("true"));
        assert_eq!(val(&env, "HA_SNAPSHOT_RETAIN").as_deref(), Some("7"));
        assert_eq!(get(&env, "HA_FROM_LATEST_SNAPSHOT"), None);
        assert_eq!(val(&env, "HA_LOG_LEVEL").as_deref(), Some("debug"));
        assert_eq!(val(&env, "HA_SHUTDOWN_TIMEOUT").as_deref(), Some("5s"));
    }

    #[test]
    fn user_env_comes_last_and_replaces_ours_by_name() {
        let env = env_of(
            "pod:\n  env:\n  - name: HA_LOG_LEVEL\n    value: trace\n  - name: EXTRA\n    value: x",
        );
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["HA_LOG_LEVEL", "EXTRA"]);
        assert_eq!(names.iter().filter(|n| **n == "HA_LOG_LEVEL").count(), 1);
        assert_eq!(val(&env, "HA_LOG_LEVEL").as_deref(), Some("trace"));
    }

    #[test]
    fn container_has_command_user_args_ports_probes_and_mounts() {
        let c = build(&cluster(
            "db",
            "pod:\n  args: [--concurrent-queries, '10']\npostgres:\n  tlsSecret: t",
        ));
        assert_eq!(c.command, Some(vec!["ha".to_string()]));
        assert_eq!(
            c.args,
            Some(vec!["--concurrent-queries".to_string(), "10".to_string()])
        );
        let ports: Vec<(String, i32)> = c
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        let want: Vec<(String, i32)> = [
            ("http", 8080),
            ("pg", 5432),
            ("nats", 4222),
            ("nats-cluster", 6222),
        ]
        .iter()
        .map(|(n, p)| (n.to_string(), *p))
        .collect();
        assert_eq!(ports, want);
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.startup_probe).as_deref(), Some("/healthz"));
        let startup = c.startup_probe.clone().unwrap_or_default();
        let budget = startup.period_seconds.unwrap_or(0) * startup.failure_threshold.unwrap_or(0);
        assert!(
            budget >= 1800,
            "a restore gets at least 30 minutes, got {budget}s"
        );
        let mounts: Vec<(String, String)> = c
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name, m.mount_path))
            .collect();
        assert!(mounts.contains(&("data".into(), "/data".into())));
        assert!(mounts.contains(&("tmp".into(), "/tmp".into())));
        assert!(mounts.contains(&("pg-tls".into(), "/etc/ha/pg-tls".into())));
        let from = c.env_from.clone().unwrap_or_default();
        assert_eq!(
            from[0].config_map_ref.as_ref().map(|c| c.name.as_str()),
            Some("db-config")
        );
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
    }

    #[test]
    fn routes_use_tls_from_their_secret_and_the_token_can_be_turned_off() {
        let c = cluster(
            "db",
            "nats:\n  embedded:\n    clusterTlsSecret: routes-tls\nhttp:\n  disableToken: true",
        );
        let env = env(&c);
        assert_eq!(
            val(&env, "HA_NATS_CLUSTER_TLS_CA").as_deref(),
            Some("/etc/ha/nats-cluster-tls/ca.crt")
        );
        assert_eq!(
            val(&env, "HA_NATS_CLUSTER_TLS_CERT").as_deref(),
            Some("/etc/ha/nats-cluster-tls/tls.crt")
        );
        assert_eq!(get(&env, "HA_TOKEN"), None);
        let sts = crate::render::render(&c, "prod", &crate::render::tests::creds())
            .unwrap_or_else(|e| panic!("{e}"))
            .stateful_set;
        let volumes = sts
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.volumes)
            .unwrap_or_default();
        assert!(volumes.iter().any(
            |v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("routes-tls")
        ));
        // A standalone server has no routes: no route settings.
        let one = env_of_one_replica();
        assert_eq!(get(&one, "HA_NATS_CLUSTER_USER"), None);
    }

    fn env_of_one_replica() -> Vec<EnvVar> {
        env(&cluster("db", "replicas: 1"))
    }
}
