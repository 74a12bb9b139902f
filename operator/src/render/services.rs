//! Owns the two Services: the headless `<name>-peers` (stable pod DNS names, NATS routes) and
//! the client Service `<name>` (pg and http, type and annotations from the spec).
//! Must not select anything but the cluster's pods (the selector labels).
//! Invariant: the peers Service publishes not-ready pods, because a pod only becomes ready once
//! its nats-server has joined the others, which needs their DNS names first.
//! See `container` for the ports and `ingress` for the HTTP entry from outside.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{cluster_name, object_meta, selector_labels};
use super::names;
use crate::crd::HaCluster;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        // By name, so a port change in the pod template is followed without a Service edit.
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The headless Service: every container port (http, pg, nats, nats-cluster).
pub fn peers(cluster: &HaCluster, namespace: &str) -> Service {
    let name = cluster_name(cluster);
    let mut metadata = object_meta(cluster, names::peers_service(&name), namespace);
    // What the ServiceMonitor selects (the client Service has the same cluster labels).
    if let Some(l) = metadata.labels.as_mut() {
        l.insert(
            super::labels::SERVICE_ROLE.into(),
            super::labels::ROLE_PEERS.into(),
        );
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name)),
            ports: Some(
                cluster
                    .spec
                    .container_ports()
                    .into_iter()
                    .map(|(n, p)| port(n, p))
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service: pg (when enabled) and http, on the same port numbers as the pods.
pub fn client(cluster: &HaCluster, namespace: &str) -> Service {
    let name = cluster_name(cluster);
    let spec = &cluster.spec;
    let mut ports = Vec::new();
    if spec.postgres.enabled {
        ports.push(port(names::PORT_PG, spec.postgres.port));
    }
    ports.push(port(names::PORT_HTTP, spec.http.port));
    let mut metadata = object_meta(cluster, names::client_service(&name), namespace);
    if !spec.service.annotations.is_empty() {
        metadata.annotations = Some(spec.service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.clone()),
            selector: Some(selector_labels(&name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;

    fn port_list(s: &Service) -> Vec<(String, i32)> {
        s.spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect()
    }

    fn pairs(v: &[(&str, i32)]) -> Vec<(String, i32)> {
        v.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn peers_service_is_headless_and_publishes_not_ready_pods() {
        let s = peers(&cluster("db", ""), "prod");
        assert_eq!(s.metadata.name.as_deref(), Some("db-peers"));
        let spec = s.spec.clone().unwrap_or_default();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector, Some(selector_labels("db")));
        assert_eq!(
            port_list(&s),
            pairs(&[
                ("http", 8080),
                ("pg", 5432),
                ("nats", 4222),
                ("nats-cluster", 6222)
            ])
        );
    }

    #[test]
    fn peers_service_has_no_nats_ports_with_external_nats_nor_pg_when_disabled() {
        let c = cluster(
            "db",
            "nats:\n  external:\n    url: nats://n:4222\npostgres:\n  enabled: false",
        );
        assert_eq!(port_list(&peers(&c, "prod")), pairs(&[("http", 8080)]));
        assert_eq!(port_list(&client(&c, "prod")), pairs(&[("http", 8080)]));
    }

    #[test]
    fn client_service_takes_type_annotations_and_ports_from_the_spec() {
        let c = cluster(
            "db",
            "service:\n  type: LoadBalancer\n  annotations:\n    a/b: c\n\
             postgres:\n  port: 6432\nhttp:\n  port: 9000",
        );
        let s = client(&c, "prod");
        assert_eq!(s.metadata.name.as_deref(), Some("db"));
        assert_eq!(
            s.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .get("a/b")
                .map(String::as_str),
            Some("c")
        );
        let spec = s.spec.clone().unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(port_list(&s), pairs(&[("pg", 6432), ("http", 9000)]));
        let target = spec.ports.unwrap_or_default()[0].target_port.clone();
        assert_eq!(target, Some(IntOrString::String("pg".into())));
    }
}
