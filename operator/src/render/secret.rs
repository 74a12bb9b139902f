//! Owns the Secret `<name>-credentials`: the PostgreSQL login, the embedded NATS servers'
//! client and route users, the HTTP token, from the `Credentials` the caller generated.
//! Must not generate anything (no randomness here: see `credentials`).
//! Invariant: the controller creates this Secret only when it is absent and never overwrites it,
//! so the credentials a cluster started with stay valid; the keys are in `names`.
//! See `container` for the `secretKeyRef`s that read it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::Credentials;
use super::labels::{cluster_name, object_meta};
use super::names;
use crate::crd::HaCluster;

pub fn build(cluster: &HaCluster, namespace: &str, credentials: &Credentials) -> Secret {
    let name = cluster_name(cluster);
    let entry = |k: &str, v: &str| (k.to_string(), ByteString(v.as_bytes().to_vec()));
    Secret {
        metadata: object_meta(cluster, names::credentials_secret(&name), namespace),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            entry(names::KEY_USERNAME, &credentials.pg_user),
            entry(names::KEY_PASSWORD, &credentials.pg_password),
            entry(names::KEY_NATS_USERNAME, &credentials.nats_user),
            entry(names::KEY_NATS_PASSWORD, &credentials.nats_password),
            entry(
                names::KEY_NATS_CLUSTER_USERNAME,
                &credentials.nats_cluster_user,
            ),
            entry(
                names::KEY_NATS_CLUSTER_PASSWORD,
                &credentials.nats_cluster_password,
            ),
            entry(names::KEY_HTTP_TOKEN, &credentials.http_token),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::{cluster, creds};

    #[test]
    fn the_secret_holds_the_seven_keys() {
        let s = build(&cluster("db", ""), "prod", &creds());
        assert_eq!(s.metadata.name.as_deref(), Some("db-credentials"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("prod"));
        let data = s.data.unwrap_or_default();
        let get = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).to_string())
        };
        assert_eq!(get("username").as_deref(), Some("pguser"));
        assert_eq!(get("password").as_deref(), Some("pgpass"));
        assert_eq!(get("nats-username").as_deref(), Some("natsuser"));
        assert_eq!(get("nats-password").as_deref(), Some("natspass"));
        assert_eq!(get("nats-cluster-username").as_deref(), Some("routeuser"));
        assert_eq!(get("nats-cluster-password").as_deref(), Some("routepass"));
        assert_eq!(get("http-token").as_deref(), Some("httptoken"));
        assert_eq!(data.len(), 7);
    }
}
