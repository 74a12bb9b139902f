//! Owns the optional prometheus-operator `ServiceMonitor` (`spec.monitoring.serviceMonitor`): one
//! authorized scrape of every node's `/metrics` through the headless peers Service.
//! Must not put the token in the object: the scrape names the Secret and key the pods read
//! `HA_TOKEN` from (`container`), so Prometheus and the nodes always agree.
//! Invariant: the selector matches the peers Service only (it publishes not-ready pods, so a node
//! that is down for the cluster is still scraped), never the client Service as well, which would
//! scrape each pod twice.
//! See docs/monitoring.md for the alerts and dashboard that read these metrics.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::labels::{ROLE_PEERS, SERVICE_ROLE, cluster_name, object_meta, selector_labels};
use super::names;
use crate::crd::HaCluster;

/// The ServiceMonitor kind (prometheus-operator's CRD, `monitoring.coreos.com/v1`).
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// The Secret and key holding the HTTP API's bearer token, when there is one.
pub fn token_source(cluster: &HaCluster) -> Option<(String, &'static str)> {
    let http = &cluster.spec.http;
    match (&http.token_secret, http.disable_token) {
        (Some(secret), _) => Some((secret.clone(), names::KEY_TOKEN)),
        (None, false) => Some((
            names::credentials_secret(&cluster_name(cluster)),
            names::KEY_HTTP_TOKEN,
        )),
        (None, true) => None,
    }
}

/// The ServiceMonitor, when `spec.monitoring.serviceMonitor` is on.
pub fn build(cluster: &HaCluster, namespace: &str) -> Option<DynamicObject> {
    let monitoring = &cluster.spec.monitoring;
    if !monitoring.service_monitor {
        return None;
    }
    let name = cluster_name(cluster);
    let mut metadata = object_meta(cluster, name.clone(), namespace);
    if let Some(labels) = metadata.labels.as_mut() {
        for (k, v) in &monitoring.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let mut selector = selector_labels(&name);
    selector.insert(SERVICE_ROLE.into(), ROLE_PEERS.into());
    let mut endpoint = json!({
        "port": names::PORT_HTTP,
        "path": "/metrics",
        "scheme": "http",
    });
    if let Some((secret, key)) = token_source(cluster) {
        endpoint["authorization"] = json!({
            "type": "Bearer",
            "credentials": {"name": secret, "key": key},
        });
    }
    if let Some(i) = &monitoring.interval {
        endpoint["interval"] = json!(i);
    }
    let mut obj = DynamicObject::new(&name, &service_monitor_resource()).within(namespace);
    obj.metadata = metadata;
    obj.data = json!({
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [endpoint],
        }
    });
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::cluster;

    #[test]
    fn off_by_default() {
        assert!(build(&cluster("db", ""), "shop").is_none());
    }

    #[test]
    fn scrapes_the_peers_service_with_the_generated_token() {
        let c = cluster(
            "db",
            "monitoring:\n  serviceMonitor: true\n  interval: 15s\n  labels: {release: prom}",
        );
        let sm = build(&c, "shop").expect("a ServiceMonitor");
        let v = serde_json::to_value(&sm).unwrap();
        assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(v["kind"], "ServiceMonitor");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(v["metadata"]["labels"]["release"], "prom");
        let ep = &v["spec"]["endpoints"][0];
        assert_eq!(ep["port"], "http");
        assert_eq!(ep["path"], "/metrics");
        assert_eq!(ep["interval"], "15s");
        assert_eq!(ep["authorization"]["type"], "Bearer");
        assert_eq!(ep["authorization"]["credentials"]["name"], "db-credentials");
        assert_eq!(ep["authorization"]["credentials"]["key"], "http-token");
        assert_eq!(v["spec"]["selector"]["matchLabels"][SERVICE_ROLE], "peers");
        assert_eq!(v["spec"]["namespaceSelector"]["matchNames"][0], "shop");
        // The peers Service carries the role label; the client Service does not.
        let peers = crate::render::services::peers(&c, "shop");
        let client = crate::render::services::client(&c, "shop");
        let role = |s: &k8s_openapi::api::core::v1::Service| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_ROLE).cloned())
        };
        assert_eq!(role(&peers).as_deref(), Some("peers"));
        assert_eq!(role(&client), None);
        // The Secret and key the pods read HA_TOKEN from: Prometheus and the nodes agree.
        let env = crate::render::container::env(&c);
        let token = env
            .iter()
            .find(|e| e.name == "HA_TOKEN")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|f| f.secret_key_ref.as_ref())
            .map(|s| (s.name.clone(), s.key.clone()));
        assert_eq!(
            token,
            Some(("db-credentials".to_string(), "http-token".to_string()))
        );
        // No token value anywhere in it.
        let creds = crate::render::tests::creds();
        assert!(!v.to_string().contains(&creds.http_token));
    }

    #[test]
    fn the_users_token_secret_or_none() {
        let c = cluster(
            "db",
            "monitoring: {serviceMonitor: true}\nhttp: {tokenSecret: api-token}",
        );
        let v = serde_json::to_value(build(&c, "ns").unwrap()).unwrap();
        let cred = &v["spec"]["endpoints"][0]["authorization"]["credentials"];
        assert_eq!(
            (cred["name"].as_str(), cred["key"].as_str()),
            (Some("api-token"), Some("token"))
        );
        let c = cluster(
            "db",
            "monitoring: {serviceMonitor: true}\nhttp: {disableToken: true}",
        );
        let v = serde_json::to_value(build(&c, "ns").unwrap()).unwrap();
        assert!(v["spec"]["endpoints"][0].get("authorization").is_none());
    }
}
