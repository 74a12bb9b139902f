//! Owns the controller's test fixtures: `HaCluster`s that read like prose, a mocked API server
//! (`ApiServerVerifier`, tower-test) answering the requests of a `Scenario`, and a stand-in ha
//! node over real HTTP (`NodeMock`).
//! Must not be compiled outside tests, nor sleep to synchronise: every wait has a timeout.
//! Invariant: a scenario answers exactly the requests it expects, in order; anything else panics
//! the verifier, and a missing request is caught by `timeout_after_1s`.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetStatus,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::controller::{CLUSTER_LABEL, Context, FINALIZER};
use crate::crd::{HaCluster, HaClusterSpec, HaClusterStatus, IngressSpec, NodeStatus};
use crate::credentials;
use crate::render::names;

pub const NS: &str = "default";
pub const NAME: &str = "db";
pub const UID: &str = "5d6e3c1a-0000-4000-8000-000000000001";
/// The fixed clock of test contexts.
pub const NOW: &str = "2026-01-01T12:00:30Z";

pub fn now() -> Timestamp {
    NOW.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

impl HaCluster {
    /// Three replicas in `default`, created at noon, generation 1, no finalizer yet.
    pub fn test() -> Self {
        let mut c = HaCluster::new(
            NAME,
            HaClusterSpec {
                replicas: 3,
                ..HaClusterSpec::default()
            },
        );
        c.spec.log_level = "info".into();
        let meta = c.meta_mut();
        meta.namespace = Some(NS.into());
        meta.uid = Some(UID.into());
        meta.generation = Some(1);
        meta.creation_timestamp = Some(Time("2026-01-01T12:00:00Z".parse().unwrap()));
        c
    }

    pub fn finalized(mut self) -> Self {
        self.finalizers_mut().push(FINALIZER.to_string());
        self
    }

    pub fn deleting(mut self) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time(now()));
        self
    }

    pub fn replicas(mut self, n: i32) -> Self {
        self.spec.replicas = n;
        self
    }

    /// Nodes' HTTP port: the stand-in node's, so pods at 127.0.0.1 reach it.
    pub fn http_port(mut self, port: u16) -> Self {
        self.spec.http.port = i32::from(port);
        self
    }

    pub fn schedule(mut self, cron: &str) -> Self {
        self.spec.snapshots.schedule = Some(cron.into());
        self
    }

    pub fn with_ingress(mut self) -> Self {
        self.spec.http.ingress = Some(IngressSpec {
            host: "db.example.com".into(),
            ..IngressSpec::default()
        });
        self
    }

    /// Off-cluster backups to a bucket with a credentials Secret.
    pub fn with_backup(mut self) -> Self {
        self.spec.backup = Some(crate::crd::BackupSpec {
            url: "s3://backups/db".into(),
            credentials_secret: Some("s3-creds".into()),
            ..crate::crd::BackupSpec::default()
        });
        self
    }

    pub fn without_pdb(mut self) -> Self {
        self.spec.disruption_budget.enabled = false;
        self
    }

    pub fn with_status(mut self, status: HaClusterStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// A status as a running cluster of these nodes would have.
    pub fn running_with_nodes(self, names: &[&str]) -> Self {
        self.with_status(HaClusterStatus {
            observed_generation: Some(1),
            phase: Some("Running".into()),
            nodes: names
                .iter()
                .map(|n| NodeStatus {
                    name: n.to_string(),
                    ready: true,
                    ..NodeStatus::default()
                })
                .collect(),
            ..HaClusterStatus::default()
        })
    }
}

/// The render the test context and the scenarios use (the scenarios read every name and
/// selector from its output).
pub const RENDER: crate::controller::RenderFn = crate::render::render;

/// A pod of the test cluster at 127.0.0.1 (where the stand-in node listens).
pub fn pod(ordinal: i32, ready: bool, revision: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-{ordinal}")),
            namespace: Some(NS.into()),
            labels: Some(
                [
                    (CLUSTER_LABEL.to_string(), NAME.to_string()),
                    (
                        crate::observed::REVISION_LABEL.to_string(),
                        revision.to_string(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            pod_ip: Some("127.0.0.1".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

/// The live StatefulSet as the API server would return it.
pub fn live_sts(
    replicas: i32,
    ready: i32,
    current: &str,
    update: &str,
    partition: i32,
) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(partition),
                    max_unavailable: None,
                }),
            }),
            ..StatefulSetSpec::default()
        }),
        status: Some(StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            current_revision: Some(current.into()),
            update_revision: Some(update.into()),
            ..StatefulSetStatus::default()
        }),
    }
}

/// A claim `data-db-<ordinal>` of the test cluster requesting `size` of class `standard`.
pub fn pvc(ordinal: i32, size: &str) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": format!("data-{NAME}-{ordinal}"), "namespace": NS,
                     "labels": {CLUSTER_LABEL: NAME}},
        "spec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": size}}}
    }))
    .expect("a valid claim")
}

/// The stored credentials Secret of the test cluster.
pub fn credentials_secret() -> Secret {
    let data = [
        (names::KEY_USERNAME, "ha"),
        (names::KEY_PASSWORD, "pw"),
        (names::KEY_NATS_USERNAME, "ha-nats"),
        (names::KEY_NATS_PASSWORD, "npw"),
        (names::KEY_NATS_CLUSTER_USERNAME, "ha-route"),
        (names::KEY_NATS_CLUSTER_PASSWORD, "rpw"),
        (names::KEY_HTTP_TOKEN, "generated-token"),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_string(),
            k8s_openapi::ByteString(v.as_bytes().to_vec()),
        )
    })
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(names::credentials_secret(NAME)),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The mocked API server.

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Answers the client's requests one by one, asserting each.
pub struct ApiServerVerifier(ApiServerHandle);

/// A request received and checked, waiting for its answer.
pub struct Pending {
    verifier: ApiServerVerifier,
    body: Value,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

pub async fn timeout_after_1s<T>(handle: JoinHandle<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(1), handle)
        .await
        .expect("the mocked API server timed out: a request it expected was not made")
        .expect("the scenario's assertions held")
}

impl ApiServerVerifier {
    /// A kube client wired to a new verifier.
    pub fn new() -> (Client, Self) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, NS), ApiServerVerifier(handle))
    }

    /// Takes the next request and asserts its method and URI (path and query, as sent).
    pub async fn expect(mut self, method: Method, uri: &str) -> Pending {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("the client went away before {method} {uri}"));
        assert_eq!(
            (request.method(), request.uri().to_string().as_str()),
            (&method, uri),
            "unexpected request"
        );
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("a readable request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        Pending {
            verifier: self,
            body,
            send,
        }
    }

    /// No further request may come (the client is dropped after the reconcile).
    pub async fn expect_no_more(mut self) {
        if let Some((r, _)) = self.0.next_request().await {
            panic!("unexpected request {} {}", r.method(), r.uri());
        }
    }

    pub fn run(self, scenario: Scenario) -> JoinHandle<Recorded> {
        tokio::spawn(scenario.serve(self))
    }
}

impl Pending {
    pub fn body(&self) -> &Value {
        &self.body
    }

    pub fn check_body(self, check: impl FnOnce(&Value)) -> Self {
        check(&self.body);
        self
    }

    pub fn respond<T: Serialize>(self, obj: &T) -> ApiServerVerifier {
        let v = serde_json::to_value(obj).expect("a serializable response");
        self.respond_json(StatusCode::OK, v)
    }

    pub fn respond_json(self, status: StatusCode, v: Value) -> ApiServerVerifier {
        let bytes = serde_json::to_vec(&v).expect("a serializable response");
        self.send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(bytes))
                .expect("a valid response"),
        );
        self.verifier
    }

    /// Answers with the request body, as the API server does for a create or an apply.
    pub fn echo(self) -> ApiServerVerifier {
        let body = self.body.clone();
        self.respond_json(StatusCode::OK, body)
    }

    pub fn error(self, code: u16, reason: &str) -> ApiServerVerifier {
        let status = StatusCode::from_u16(code).expect("a valid status code");
        self.respond_json(
            status,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": format!("{reason} (mocked)"), "reason": reason, "code": code}),
        )
    }

    pub fn not_found(self) -> ApiServerVerifier {
        self.error(404, "NotFound")
    }

    pub fn conflict(self) -> ApiServerVerifier {
        self.error(409, "AlreadyExists")
    }
}

/// What the API server holds before an Apply reconcile, and what the scenario expects.
#[derive(Clone, Default)]
pub struct World {
    /// The credentials Secret exists.
    pub secret_exists: bool,
    /// Another writer creates the Secret between our read and our create.
    pub secret_race: bool,
    pub live_sts: Option<StatefulSet>,
    /// The status the API server reports on the applied StatefulSet.
    pub applied_status: Option<StatefulSetStatus>,
    pub pods: Vec<Pod>,
    /// Objects the prune of a disabled PDB / Ingress finds (already labelled and owned).
    pub stale_pdb: Option<PodDisruptionBudget>,
    /// Event reasons the reconcile publishes, in order.
    pub events: Vec<&'static str>,
    /// The `token` of `spec.http.tokenSecret`, when the cluster names one.
    pub token: Option<&'static str>,
    /// The StatefulSet replicas the reconcile applies, when not `spec.replicas` (a scale step
    /// or a refused change): the objects are rendered for that many pods.
    pub step: Option<i32>,
    /// The API server refuses the StatefulSet apply with this status code: the reconcile
    /// stops there and reports it.
    pub sts_error: Option<u16>,
    /// `spec.http.tokenSecret` names a Secret that does not exist.
    pub token_missing: bool,
    /// The cluster's PersistentVolumeClaims, listed when `spec.storage.size` grew.
    pub pvcs: Vec<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    /// Whether the claims' StorageClass (`standard`) allows expansion.
    pub expandable: bool,
    /// The cluster carries the finalizer of older operators: first a patch removes it.
    pub legacy_finalizer: bool,
    /// The credentials Secret exists as an older operator wrote it (four keys): the reconcile
    /// adds the three it lacks.
    pub old_secret: bool,
}

impl World {
    /// A cluster of `n` nodes that runs as it should: the Secret exists, the StatefulSet has
    /// `n` replicas at revision `r1`, every pod is ready at it.
    pub fn running(n: i32) -> Self {
        World {
            secret_exists: true,
            live_sts: Some(live_sts(n, n, "r1", "r1", n)),
            applied_status: Some(sts_status(n, n, "r1", "r1")),
            pods: (0..n).map(|i| pod(i, true, "r1")).collect(),
            ..World::default()
        }
    }

    /// The Event reasons the reconcile publishes, in order.
    pub fn with_events(mut self, reasons: &[&'static str]) -> Self {
        self.events = reasons.to_vec();
        self
    }
}

/// The status the API server reports on a StatefulSet.
pub fn sts_status(replicas: i32, ready: i32, current: &str, update: &str) -> StatefulSetStatus {
    StatefulSetStatus {
        replicas,
        ready_replicas: Some(ready),
        current_revision: Some(current.into()),
        update_revision: Some(update.into()),
        ..StatefulSetStatus::default()
    }
}

/// The calls the verifier saw, for the test to assert on afterwards.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// `METHOD URI` of every request, in order.
    pub requests: Vec<String>,
    /// The status subresource patch.
    pub status_patch: Option<Value>,
    /// The StatefulSet apply body.
    pub sts_apply: Option<Value>,
}

impl Recorded {
    pub fn status(&self) -> HaClusterStatus {
        let v = self.status_patch.as_ref().expect("a status patch");
        serde_json::from_value(v["status"].clone()).expect("a valid HaClusterStatus")
    }
}

/// The request sequences the controller tests expect.
pub enum Scenario {
    /// A full Apply reconcile in `World`.
    Apply(HaCluster, Box<World>),
    /// The render fails on the spec: a Failed status and an InvalidSpec Event.
    InvalidSpec(HaCluster),
    /// Deleting with the old finalizer: one merge patch removes it, nothing else.
    Cleanup(HaCluster),
    /// The API server answers the first request with 500; the reconcile reports it in the
    /// status and an `ApiError` Event.
    ApiServerError(HaCluster),
    /// A running cluster of 3 whose operator replica loses its leader Lease (`lease` is the
    /// replica's view of it) while the API server answers the first write, the ConfigMap
    /// apply: then only a `LeaderLeaseLost` Event may come — no other object, no status.
    LeaseLost(HaCluster, tokio::sync::watch::Sender<bool>),
}

const BASE: &str = "/apis/ha.sqlite.dev/v1alpha1/namespaces/default/haclusters";
const APPLY_QUERY: &str = "?&force=true&fieldManager=ha-operator";

fn core(kind: &str) -> String {
    format!("/api/v1/namespaces/{NS}/{kind}")
}
fn apps(kind: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/{kind}")
}
fn policy(kind: &str) -> String {
    format!("/apis/policy/v1/namespaces/{NS}/{kind}")
}
fn networking(kind: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{NS}/{kind}")
}

struct Serving {
    v: ApiServerVerifier,
    rec: Recorded,
}

impl Serving {
    async fn take(mut self, method: Method, uri: &str) -> (Pending, Recorded) {
        self.rec.requests.push(format!("{method} {uri}"));
        (self.v.expect(method, uri).await, self.rec)
    }

    /// An SSA PATCH of `kind/name` with our field manager and force: echoes the body.
    async fn apply(self, url: String, name: &str) -> Serving {
        let (p, rec) = self
            .take(Method::PATCH, &format!("{url}/{name}{APPLY_QUERY}"))
            .await;
        let p = p.check_body(|b| {
            assert_eq!(b["metadata"]["name"], name, "applied object name");
            assert!(b.get("kind").is_some(), "SSA bodies carry their kind");
        });
        Serving { v: p.echo(), rec }
    }

    async fn events(mut self, reasons: &[&str]) -> Serving {
        for reason in reasons {
            let (p, rec) = self
                .take(
                    Method::POST,
                    &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
                )
                .await;
            let p = p.check_body(|b| assert_eq!(b["reason"], *reason, "event reason"));
            self = Serving { v: p.echo(), rec };
        }
        self
    }
}

impl Scenario {
    async fn serve(self, v: ApiServerVerifier) -> Recorded {
        let s = Serving {
            v,
            rec: Recorded::default(),
        };
        match self {
            Scenario::ApiServerError(c) => {
                let (p, rec) = s
                    .take(
                        Method::GET,
                        &format!("{}/{}", core("secrets"), names::credentials_secret(NAME)),
                    )
                    .await;
                let s = Serving {
                    v: p.error(500, "InternalError"),
                    rec,
                };
                finish_with_status(s, c, &["ApiError"]).await
            }
            Scenario::InvalidSpec(c) => {
                let (p, rec) = s
                    .take(
                        Method::GET,
                        &format!("{}/{}", core("secrets"), names::credentials_secret(NAME)),
                    )
                    .await;
                let s = Serving {
                    v: p.respond(&credentials_secret()),
                    rec,
                };
                let (p, mut rec) = s
                    .take(Method::PATCH, &format!("{BASE}/{NAME}/status{APPLY_QUERY}"))
                    .await;
                rec.status_patch = Some(p.body().clone());
                let s = Serving {
                    v: respond_with_status(p, c),
                    rec,
                };
                let s = s.events(&["InvalidSpec"]).await;
                s.v.expect_no_more().await;
                s.rec
            }
            Scenario::Cleanup(c) => {
                let s = remove_finalizer(s, &c).await;
                s.v.expect_no_more().await;
                s.rec
            }
            Scenario::Apply(c, w) => serve_apply(s, c, *w).await,
            Scenario::LeaseLost(c, lease) => serve_lease_lost(s, c, lease).await,
        }
    }
}

fn name_of<K: Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

/// `k=v,…` of the StatefulSet's selector, URL-encoded as kube sends it.
fn pod_selector(sts: &StatefulSet) -> String {
    let labels = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let plain = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    plain
        .replace('/', "%2F")
        .replace('=', "%3D")
        .replace(',', "%2C")
}

/// The merge patch that drops the old finalizer (guarded by the resourceVersion).
async fn remove_finalizer(s: Serving, c: &HaCluster) -> Serving {
    let (p, rec) = s.take(Method::PATCH, &format!("{BASE}/{NAME}?")).await;
    let p = p.check_body(|b| {
        assert_eq!(b["metadata"]["finalizers"], json!([]));
        assert!(b["metadata"].get("resourceVersion").is_some());
    });
    let mut gone = c.clone();
    gone.finalizers_mut().clear();
    Serving {
        v: p.respond(&gone),
        rec,
    }
}

async fn serve_apply(s: Serving, c: HaCluster, w: World) -> Recorded {
    let s = if w.legacy_finalizer {
        remove_finalizer(s, &c).await
    } else {
        s
    };
    let creds = credentials::from_secret(&credentials_secret()).expect("fixture credentials");
    let at = match w.step {
        Some(n) => crate::scaling::at_step(&c, n),
        None => c.clone(),
    };
    let r = RENDER(&at, NS, &creds).expect("the scenario's cluster renders");
    let secret = names::credentials_secret(NAME);
    // 1. The credentials Secret: read, and created only when absent.
    let (p, rec) = s
        .take(Method::GET, &format!("{}/{secret}", core("secrets")))
        .await;
    let mut s = Serving {
        v: if w.old_secret {
            let mut old = credentials_secret();
            old.metadata.resource_version = Some("41".into());
            if let Some(d) = old.data.as_mut() {
                for k in [
                    names::KEY_NATS_CLUSTER_USERNAME,
                    names::KEY_NATS_CLUSTER_PASSWORD,
                    names::KEY_HTTP_TOKEN,
                ] {
                    d.remove(k);
                }
            }
            p.respond(&old)
        } else if w.secret_exists {
            p.respond(&credentials_secret())
        } else {
            p.not_found()
        },
        rec,
    };
    if w.old_secret {
        let (p, rec) = s
            .take(Method::PATCH, &format!("{}/{secret}?", core("secrets")))
            .await;
        let p = p.check_body(|b| {
            assert_eq!(
                b["metadata"]["resourceVersion"], "41",
                "guarded by the version read"
            );
            let keys: Vec<&String> = b["data"].as_object().expect("data").keys().collect();
            assert_eq!(
                keys,
                [
                    "http-token",
                    "nats-cluster-password",
                    "nats-cluster-username"
                ],
                "only the missing keys"
            );
        });
        s = Serving { v: p.echo(), rec };
    }
    if !w.secret_exists && !w.old_secret {
        let (p, rec) = s
            .take(
                Method::POST,
                &format!("{}?&fieldManager=ha-operator", core("secrets")),
            )
            .await;
        let p = p.check_body(|b| {
            assert_eq!(b["metadata"]["name"], secret.as_str());
            for key in [
                names::KEY_USERNAME,
                names::KEY_PASSWORD,
                names::KEY_NATS_USERNAME,
                names::KEY_NATS_PASSWORD,
                names::KEY_NATS_CLUSTER_USERNAME,
                names::KEY_NATS_CLUSTER_PASSWORD,
                names::KEY_HTTP_TOKEN,
            ] {
                assert!(b["data"][key].is_string(), "secret key {key}");
            }
        });
        s = if w.secret_race {
            let s = Serving {
                v: p.conflict(),
                rec,
            };
            let (p, rec) = s
                .take(Method::GET, &format!("{}/{secret}", core("secrets")))
                .await;
            Serving {
                v: p.respond(&credentials_secret()),
                rec,
            }
        } else {
            Serving { v: p.echo(), rec }
        };
    }
    if let Some(token_secret) = &c.spec.http.token_secret {
        let (p, rec) = s
            .take(Method::GET, &format!("{}/{token_secret}", core("secrets")))
            .await;
        if w.token_missing {
            let s = Serving {
                v: p.not_found(),
                rec,
            };
            return finish_with_status(s, c, &w.events).await;
        }
        let token = w.token.unwrap_or_default();
        s = Serving {
            v: p.respond_json(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": token_secret, "namespace": NS},
                       "data": {"token": k8s_openapi::ByteString(token.as_bytes().to_vec())}}),
            ),
            rec,
        };
    }
    // 2. Observe.
    let (p, rec) = s
        .take(
            Method::GET,
            &format!("{}/{}", apps("statefulsets"), name_of(&r.stateful_set)),
        )
        .await;
    let s = Serving {
        v: match &w.live_sts {
            Some(sts) => p.respond(sts),
            None => p.not_found(),
        },
        rec,
    };
    let (p, rec) = s
        .take(
            Method::GET,
            &format!(
                "{}?&labelSelector={}",
                core("pods"),
                pod_selector(&r.stateful_set)
            ),
        )
        .await;
    let mut s = Serving {
        v: p.respond(
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": w.pods}),
        ),
        rec,
    };
    // 3. Apply every object.
    s = s.apply(core("configmaps"), &name_of(&r.config_map)).await;
    s = s.apply(core("services"), &name_of(&r.peers_service)).await;
    s = s.apply(core("services"), &name_of(&r.client_service)).await;
    let (p, mut rec) = s
        .take(
            Method::PATCH,
            &format!(
                "{}/{}{APPLY_QUERY}",
                apps("statefulsets"),
                name_of(&r.stateful_set)
            ),
        )
        .await;
    rec.sts_apply = Some(p.body().clone());
    if let Some(code) = w.sts_error {
        let s = Serving {
            v: p.error(code, "Invalid"),
            rec,
        };
        return finish_with_status(s, c, &w.events).await;
    }
    let mut applied = p.body().clone();
    applied["status"] = serde_json::to_value(&w.applied_status).unwrap_or(Value::Null);
    s = Serving {
        v: p.respond_json(StatusCode::OK, applied),
        rec,
    };
    match &r.pdb {
        Some(pdb) => s = s.apply(policy("poddisruptionbudgets"), &name_of(pdb)).await,
        None => s = prune_list(s, policy("poddisruptionbudgets"), w.stale_pdb.clone()).await,
    }
    if let Some(ing) = &r.ingress {
        s = s.apply(networking("ingresses"), &name_of(ing)).await;
    } else {
        s = prune_list::<Ingress>(s, networking("ingresses"), None).await;
    }
    // A storage size that grew: list the claims, read their class, expand them.
    if !w.pvcs.is_empty() {
        let (p, rec) = s
            .take(
                Method::GET,
                &format!(
                    "{}?&labelSelector=ha.sqlite.dev%2Fcluster%3D{NAME}",
                    core("persistentvolumeclaims")
                ),
            )
            .await;
        s = Serving {
            v: p.respond(
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": w.pvcs}),
            ),
            rec,
        };
        let (p, rec) = s
            .take(
                Method::GET,
                "/apis/storage.k8s.io/v1/storageclasses/standard",
            )
            .await;
        s = Serving {
            v: p.respond(
                &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "standard"}, "provisioner": "p",
                "allowVolumeExpansion": w.expandable}),
            ),
            rec,
        };
        if w.expandable {
            for pvc in &w.pvcs {
                let (p, rec) = s
                    .take(
                        Method::PATCH,
                        &format!("{}/{}?", core("persistentvolumeclaims"), name_of(pvc)),
                    )
                    .await;
                let p = p.check_body(|b| {
                    assert_eq!(b["spec"]["resources"]["requests"]["storage"], "20Gi")
                });
                s = Serving { v: p.echo(), rec };
            }
        }
    }
    // 4. The status, then the Events.
    let (p, mut rec) = s
        .take(Method::PATCH, &format!("{BASE}/{NAME}/status{APPLY_QUERY}"))
        .await;
    rec.status_patch = Some(p.body().clone());
    let s = Serving {
        v: respond_with_status(p, c),
        rec,
    };
    let s = s.events(&w.events).await;
    s.v.expect_no_more().await;
    s.rec
}

async fn serve_lease_lost(
    s: Serving,
    c: HaCluster,
    lease: tokio::sync::watch::Sender<bool>,
) -> Recorded {
    let w = World::running(3);
    let creds = credentials::from_secret(&credentials_secret()).expect("fixture credentials");
    let r = RENDER(&c, NS, &creds).expect("the scenario's cluster renders");
    let secret = names::credentials_secret(NAME);
    let (p, rec) = s
        .take(Method::GET, &format!("{}/{secret}", core("secrets")))
        .await;
    let s = Serving {
        v: p.respond(&credentials_secret()),
        rec,
    };
    let (p, rec) = s
        .take(
            Method::GET,
            &format!("{}/{}", apps("statefulsets"), name_of(&r.stateful_set)),
        )
        .await;
    let s = Serving {
        v: p.respond(&w.live_sts),
        rec,
    };
    let (p, rec) = s
        .take(
            Method::GET,
            &format!(
                "{}?&labelSelector={}",
                core("pods"),
                pod_selector(&r.stateful_set)
            ),
        )
        .await;
    let s = Serving {
        v: p.respond(
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": w.pods}),
        ),
        rec,
    };
    let (p, rec) = s
        .take(
            Method::PATCH,
            &format!(
                "{}/{}{APPLY_QUERY}",
                core("configmaps"),
                name_of(&r.config_map)
            ),
        )
        .await;
    // The Lease is lost while this write is in flight (it lands: the API server took it).
    lease.send_replace(false);
    let s = Serving { v: p.echo(), rec };
    let s = s.events(&["LeaderLeaseLost"]).await;
    s.v.expect_no_more().await;
    s.rec
}

/// The end of a reconcile that stopped on an error: its status patch, then its Events.
async fn finish_with_status(s: Serving, c: HaCluster, events: &[&str]) -> Recorded {
    let (p, mut rec) = s
        .take(Method::PATCH, &format!("{BASE}/{NAME}/status{APPLY_QUERY}"))
        .await;
    rec.status_patch = Some(p.body().clone());
    let s = Serving {
        v: respond_with_status(p, c),
        rec,
    };
    let s = s.events(events).await;
    s.v.expect_no_more().await;
    s.rec
}

/// Answers a status patch as the API server does: the whole object with the new status.
fn respond_with_status(p: Pending, mut c: HaCluster) -> ApiServerVerifier {
    c.status = serde_json::from_value(p.body()["status"].clone()).ok();
    p.respond(&c)
}

async fn prune_list<K: Serialize + Resource<DynamicType = ()>>(
    s: Serving,
    url: String,
    stale: Option<K>,
) -> Serving {
    let (p, rec) = s
        .take(
            Method::GET,
            &format!("{url}?&labelSelector=ha.sqlite.dev%2Fcluster%3D{NAME}"),
        )
        .await;
    let name = stale.as_ref().and_then(|o| o.meta().name.clone());
    let items: Vec<Value> = stale
        .iter()
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
        .collect();
    let s = Serving {
        v: p.respond(&json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})),
        rec,
    };
    match name {
        None => s,
        Some(n) => {
            let (p, rec) = s.take(Method::DELETE, &format!("{url}/{n}?")).await;
            Serving {
                v: p.respond_json(
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                ),
                rec,
            }
        }
    }
}

impl Context {
    /// A context on a mocked API server, with the render stand-in and the fixed clock.
    pub fn test() -> (Arc<Self>, ApiServerVerifier) {
        let (client, verifier) = ApiServerVerifier::new();
        let mut ctx = Context::new(client, Arc::default(), "test-operator");
        ctx.render = RENDER;
        ctx.clock = now;
        (Arc::new(ctx), verifier)
    }

    /// `test()` with leader election: the context follows `leading`.
    pub fn test_leading(
        leading: tokio::sync::watch::Receiver<bool>,
    ) -> (Arc<Self>, ApiServerVerifier) {
        let (client, verifier) = ApiServerVerifier::new();
        let mut ctx = Context::new(client, Arc::default(), "test-operator").follow_lease(leading);
        ctx.render = RENDER;
        ctx.clock = now;
        (Arc::new(ctx), verifier)
    }
}

// ---------------------------------------------------------------------------------------------
// A stand-in ha node: the few routes the operator calls, over real HTTP on 127.0.0.1.

/// How the stand-in node answers.
#[derive(Clone, Debug)]
pub struct NodeBehaviour {
    pub applied_seq: u64,
    pub lag: u64,
    pub caught_up: bool,
    /// Status code of `DELETE /cluster/peers/{name}`.
    pub peer_removal: u16,
    pub snapshot_seq: u64,
    /// Members of the JetStream meta group `GET /cluster/peers` lists (`db-0` leads).
    pub members: Vec<String>,
    /// Those of `members` the meta group reports offline.
    pub offline: Vec<String>,
    /// The `backup` object of `/status` (null: backups off).
    pub backup: Value,
}

impl Default for NodeBehaviour {
    fn default() -> Self {
        Self {
            applied_seq: 42,
            lag: 0,
            caught_up: true,
            peer_removal: 204,
            snapshot_seq: 42,
            members: (0..3).map(|i| format!("{NAME}-{i}")).collect(),
            offline: Vec::new(),
            backup: Value::Null,
        }
    }
}

/// A running stand-in node; `calls()` lists `METHOD /path` of every request but `/status`
/// (which is listed only when it lacks the generated token: with another one, or none).
pub struct NodeMock {
    pub port: u16,
    calls: Arc<Mutex<Vec<String>>>,
    _server: JoinHandle<()>,
}

impl NodeMock {
    pub async fn start(behaviour: NodeBehaviour) -> NodeMock {
        use axum::extract::{Path, State};
        use axum::routing::{delete, get, post};

        #[derive(Clone)]
        struct S {
            b: NodeBehaviour,
            calls: Arc<Mutex<Vec<String>>>,
        }
        fn log(s: &S, what: String) {
            if let Ok(mut c) = s.calls.lock() {
                c.push(what);
            }
        }
        let calls = Arc::new(Mutex::new(Vec::new()));
        let state = S {
            b: behaviour,
            calls: calls.clone(),
        };
        let app = axum::Router::new()
            .route(
                "/status",
                get(|State(s): State<S>, headers: http::HeaderMap| async move {
                    // The generated token (the fixture Secret's) is the norm: only others, or
                    // none, are logged.
                    match headers.get(http::header::AUTHORIZATION) {
                        None => log(&s, "GET /status without a token".into()),
                        Some(a) if a.to_str().ok() != Some("Bearer generated-token") => {
                            log(&s, format!("GET /status {}", a.to_str().unwrap_or("?")))
                        }
                        Some(_) => {}
                    }
                    axum::Json(json!({
                        "node": "mock", "ready": true,
                        "replication": {
                            "applied_seq": s.b.applied_seq,
                            "stream_last_seq": s.b.applied_seq + s.b.lag,
                            "lag_messages": s.b.lag,
                            "caught_up": s.b.caught_up,
                            "gap": null,
                        },
                        "backup": s.b.backup,
                    }))
                }),
            )
            .route(
                "/cluster/peers",
                get(|State(s): State<S>| async move {
                    let peers: Vec<Value> = s
                        .b
                        .members
                        .iter()
                        .map(|n| {
                            let offline = s.b.offline.contains(n);
                            json!({"name": n, "current": !offline, "offline": offline})
                        })
                        .collect();
                    axum::Json(json!({"cluster": "ha", "leader": "db-0", "self": "db-0", "peers": peers}))
                }),
            )
            .route(
                "/snapshot",
                post(|State(s): State<S>| async move {
                    log(&s, "POST /snapshot".into());
                    axum::Json(json!({"seq": s.b.snapshot_seq, "bytes": 8192, "duration_ms": 5, "skipped": false}))
                }),
            )
            .route(
                "/replications/{name}",
                delete(|State(s): State<S>, Path(name): Path<String>| async move {
                    log(&s, format!("DELETE /replications/{name}"));
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/cluster/peers/{name}",
                delete(|State(s): State<S>, Path(name): Path<String>| async move {
                    log(&s, format!("DELETE /cluster/peers/{name}"));
                    let code = StatusCode::from_u16(s.b.peer_removal)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let body = if code.is_success() {
                        String::new()
                    } else {
                        json!({"error": {"code": "unavailable", "message": "no JetStream meta leader"}})
                            .to_string()
                    };
                    (code, body)
                }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in node");
        let port = listener.local_addr().expect("a local address").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        NodeMock {
            port,
            calls,
            _server: server,
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for NodeMock {
    fn drop(&mut self) {
        self._server.abort();
    }
}
