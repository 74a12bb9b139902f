//! Owns every name the operator gives: object names, Secret keys, port names, paths in the pod
//! and the DNS names of the pods.
//! Must not build objects; builders and the controller read their names from here.
//! Invariant: these strings are a contract with running clusters (Services, Secrets and PVCs
//! are found by them); changing one orphans the objects of existing clusters.
//! See `labels` for the labels that go with them.

/// StatefulSet (and the pods' name prefix).
pub fn stateful_set(cluster: &str) -> String {
    cluster.to_string()
}

/// Headless Service of the pods: stable DNS names and NATS routes.
pub fn peers_service(cluster: &str) -> String {
    format!("{cluster}-peers")
}

/// Service clients connect to (pg and http).
pub fn client_service(cluster: &str) -> String {
    cluster.to_string()
}

/// Ingress in front of the HTTP API.
pub fn ingress(cluster: &str) -> String {
    cluster.to_string()
}

/// PodDisruptionBudget.
pub fn pdb(cluster: &str) -> String {
    cluster.to_string()
}

/// ConfigMap with the settings that change with the replica count (read through `envFrom`).
pub fn config_map(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// Secret with the generated credentials, created once and never overwritten.
pub fn credentials_secret(cluster: &str) -> String {
    format!("{cluster}-credentials")
}

/// Name of pod `ordinal` (also the node name, the NATS server name and the durable consumer).
pub fn pod(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}")
}

/// Fully qualified DNS name of pod `ordinal` through the headless Service.
pub fn pod_dns(cluster: &str, namespace: &str, ordinal: i32) -> String {
    format!(
        "{}.{}.{namespace}.svc.{CLUSTER_DOMAIN}",
        pod(cluster, ordinal),
        peers_service(cluster)
    )
}

/// DNS name of the client Service.
pub fn client_service_dns(cluster: &str, namespace: &str) -> String {
    format!(
        "{}.{namespace}.svc.{CLUSTER_DOMAIN}",
        client_service(cluster)
    )
}

/// The cluster's DNS domain (kubelet's default; not configurable yet).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Keys of the credentials Secret (`<name>-credentials`). `postgres.authSecret` and
/// `nats.external.credentialsSecret` use the first two as well.
pub const KEY_USERNAME: &str = "username";
pub const KEY_PASSWORD: &str = "password";
pub const KEY_NATS_USERNAME: &str = "nats-username";
pub const KEY_NATS_PASSWORD: &str = "nats-password";
/// Added by later operators to an existing Secret (never replacing a key it has).
pub const KEY_NATS_CLUSTER_USERNAME: &str = "nats-cluster-username";
pub const KEY_NATS_CLUSTER_PASSWORD: &str = "nats-cluster-password";
pub const KEY_HTTP_TOKEN: &str = "http-token";
/// Key of `http.tokenSecret`.
pub const KEY_TOKEN: &str = "token";
/// Keys of a `kubernetes.io/tls` Secret.
pub const KEY_TLS_CRT: &str = "tls.crt";
pub const KEY_TLS_KEY: &str = "tls.key";
pub const KEY_CA_CRT: &str = "ca.crt";
/// Keys of `backup.credentialsSecret`: the AWS SDK's own variable names.
pub const KEY_AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const KEY_AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const KEY_AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Port names (containers and Services).
pub const PORT_HTTP: &str = "http";
pub const PORT_PG: &str = "pg";
pub const PORT_NATS: &str = "nats";
pub const PORT_NATS_CLUSTER: &str = "nats-cluster";

/// The ha container, its volumes and where they are mounted.
pub const CONTAINER: &str = "ha";
pub const VOLUME_DATA: &str = "data";
pub const DATA_DIR: &str = "/data";
pub const VOLUME_TMP: &str = "tmp";
pub const VOLUME_NATS_CLUSTER_TLS: &str = "nats-cluster-tls";
pub const NATS_CLUSTER_TLS_DIR: &str = "/etc/ha/nats-cluster-tls";
pub const TMP_DIR: &str = "/tmp";
pub const VOLUME_PG_TLS: &str = "pg-tls";
pub const PG_TLS_DIR: &str = "/etc/ha/pg-tls";
pub const VOLUME_INTERCEPTOR: &str = "interceptor";
pub const INTERCEPTOR_DIR: &str = "/etc/ha/interceptor";

/// Keys of the ConfigMap (node environment variables).
pub const ENV_NATS_ROUTES: &str = "HA_NATS_ROUTES";
pub const ENV_REPLICAS: &str = "HA_REPLICAS";

/// Longest cluster name: pod names get `-<ordinal>` and the StatefulSet's revision label
/// `-<10-char hash>` within the 63-character label limit (the usual StatefulSet bound).
pub const MAX_CLUSTER_NAME: usize = 52;

/// Checks that `name` can be the prefix of every object name above: a DNS-1035 label (Service
/// names must start with a letter) of at most [`MAX_CLUSTER_NAME`] characters.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CLUSTER_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metadata.name {name:?}: at most {MAX_CLUSTER_NAME} lower-case letters, digits and \
             '-', starting with a letter and not ending with '-' (it prefixes Service and pod names)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_derive_from_the_cluster_name() {
        assert_eq!(stateful_set("db"), "db");
        assert_eq!(peers_service("db"), "db-peers");
        assert_eq!(client_service("db"), "db");
        assert_eq!(config_map("db"), "db-config");
        assert_eq!(credentials_secret("db"), "db-credentials");
        assert_eq!(pod("db", 2), "db-2");
        assert_eq!(
            pod_dns("db", "prod", 2),
            "db-2.db-peers.prod.svc.cluster.local"
        );
        assert_eq!(
            client_service_dns("db", "prod"),
            "db.prod.svc.cluster.local"
        );
    }

    #[test]
    fn cluster_names_must_fit_every_derived_name() {
        assert!(check_cluster_name("db").is_ok());
        assert!(check_cluster_name("my-db-2").is_ok());
        assert!(check_cluster_name(&"a".repeat(MAX_CLUSTER_NAME)).is_ok());
        for bad in [
            "",
            "2db",
            "Db",
            "db_1",
            "db-",
            "db.x",
            &"a".repeat(MAX_CLUSTER_NAME + 1),
        ] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
    }
}
