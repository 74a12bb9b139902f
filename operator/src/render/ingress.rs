//! Owns the optional Ingress `<name>`: the HTTP API from outside the cluster.
//! Must not expose the PostgreSQL port (an Ingress carries HTTP only; use `service.type`).
//! Invariant: the Ingress points at the client Service's `http` port by name.
//! See `services` for the backend.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::labels::{cluster_name, object_meta};
use super::names;
use crate::crd::HaCluster;

/// `None` unless `http.ingress` is set.
pub fn build(cluster: &HaCluster, namespace: &str) -> Option<Ingress> {
    let spec = cluster.spec.http.ingress.as_ref()?;
    let name = cluster_name(cluster);
    let mut metadata = object_meta(cluster, names::ingress(&name), namespace);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: names::client_service(&name),
            port: Some(ServiceBackendPort {
                name: Some(names::PORT_HTTP.into()),
                number: None,
            }),
        }),
        resource: None,
    };
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path.clone().unwrap_or_else(|| "/".into())),
                        path_type: "Prefix".into(),
                        backend,
                    }],
                }),
            }]),
            tls: spec.tls_secret.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;

    #[test]
    fn no_ingress_unless_asked_for() {
        assert!(build(&cluster("db", ""), "prod").is_none());
    }

    #[test]
    fn ingress_routes_the_host_to_the_client_service_http_port() {
        let c = cluster(
            "db",
            "http:\n  ingress:\n    host: db.example.com\n    className: nginx\n    \
             tlsSecret: db-tls\n    annotations:\n      cert-manager.io/cluster-issuer: le",
        );
        let i = build(&c, "prod").unwrap_or_default();
        assert_eq!(i.metadata.name.as_deref(), Some("db"));
        assert!(
            i.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("cert-manager.io/cluster-issuer")
        );
        let spec = i.spec.unwrap_or_default();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rule = &spec.rules.unwrap_or_default()[0];
        assert_eq!(rule.host.as_deref(), Some("db.example.com"));
        let path = &rule.http.clone().unwrap_or_default().paths[0];
        assert_eq!(path.path.as_deref(), Some("/"));
        assert_eq!(path.path_type, "Prefix");
        let svc = path.backend.service.clone().unwrap_or_default();
        assert_eq!(svc.name, "db");
        assert_eq!(svc.port.and_then(|p| p.name).as_deref(), Some("http"));
        let tls = &spec.tls.unwrap_or_default()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("db-tls"));
        assert_eq!(tls.hosts, Some(vec!["db.example.com".to_string()]));
    }

    #[test]
    fn no_tls_without_a_tls_secret() {
        let c = cluster("db", "http:\n  ingress:\n    host: h\n    path: /api");
        let spec = build(&c, "prod")
            .unwrap_or_default()
            .spec
            .unwrap_or_default();
        assert!(spec.tls.is_none());
        let rule = &spec.rules.unwrap_or_default()[0];
        assert_eq!(
            rule.http.clone().unwrap_or_default().paths[0]
                .path
                .as_deref(),
            Some("/api")
        );
    }
}
