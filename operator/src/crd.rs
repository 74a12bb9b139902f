//! Owns the `HaCluster` custom resource: its spec, status, defaults and schema validation.
//! Must not talk to the API server or build child objects (that is `render` and `controller`).
//! Invariant: every default lives here (serde defaults + `effective_*` helpers), so the CRD schema,
//! `render` and the controller agree on what an omitted field means.
//! See `render` for how a spec becomes objects and `crds/` for the generated YAML.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements,
    SecurityContext, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "ha.sqlite.dev";
/// Image used when `spec.image` is omitted.
pub const DEFAULT_IMAGE: &str = "ghcr.io/ha-sqlite/ha:0.1.0";

/// A duration as the node reads it (humantime, no fractions): `30s`, `15m`, `24h`, `1h30m`,
/// `500ms`, or `0`. `syntax::check_duration` is the same grammar in Rust.
const DURATION_PATTERN: &str = r"^(0|([0-9]+(ns|us|ms|s|m|h|d))+)$";
/// A 5-field cron expression (minute hour day-of-month month day-of-week) or a `@` macro; value
/// ranges are checked by `syntax::check_cron` (and so by `validate`).
const CRON_PATTERN: &str = r"^\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|([0-9A-Za-z*,/-]+\s+){4}[0-9A-Za-z*,/-]+)\s*$";
/// What `--replication-policy` accepts (`syntax::check_policy`).
const POLICY_PATTERN: &str = r"^(|all|last|new|by_start_sequence=[0-9]*[1-9][0-9]*|by_start_time=[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})$";

/// `replication.streamReplicas` ≤ `replicas` with embedded NATS (the defaults always comply).
const STREAM_REPLICAS_RULE: &str = "has(self.nats.external) || !has(self.replication.streamReplicas) || self.replication.streamReplicas <= self.replicas";
pub const STREAM_REPLICAS_MSG: &str =
    "replication.streamReplicas cannot exceed replicas with embedded NATS";
/// A transition rule: between 1 and more replicas only with external NATS.
const CROSSING_RULE: &str =
    "has(self.nats.external) || (self.replicas == 1) == (oldSelf.replicas == 1)";
pub const PORTS_MSG: &str = "the ports must be distinct: http.port, postgres.port (when enabled), nats.embedded.port (4222) and nats.embedded.clusterPort (6222, both with embedded NATS)";
pub const INGRESS_PATH_MSG: &str = "http.ingress.path must start with '/'";
pub const MAX_UNAVAILABLE_MSG: &str =
    "disruptionBudget.maxUnavailable must be a number >= 0 or a percentage like \"25%\"";
pub const STORAGE_SIZE_MSG: &str = "storage.size must be a positive quantity like 10Gi";
pub const STORAGE_SHRINK_MSG: &str = "storage.size cannot shrink: a volume cannot be made smaller; set it back to at least its current size";
pub const STORAGE_CLASS_MSG: &str = "storage.storageClassName cannot change: volumes do not move between storage classes; create a new HaCluster with the new class and copy the data into it (docs/kubernetes.md, \"Storage\")";
pub const DB_NAME_MSG: &str =
    "database.name cannot change: the nodes would start a new, empty database under the new name";
pub const STREAM_NAME_MSG: &str =
    "replication.stream cannot change: the nodes would start a new, empty stream";
pub const NATS_KIND_MSG: &str = "nats.external cannot be added or removed: the stream lives on the NATS that holds it; create a new HaCluster and copy the data into it";
pub const INGRESS_TOKEN_MSG: &str = "http.ingress exposes the HTTP API and needs a token: remove http.disableToken (the operator then generates one) or name http.tokenSecret";
pub const BACKUP_URL_MSG: &str = "backup.url must start with s3:// (s3://bucket/prefix)";
pub const BOOTSTRAP_URL_MSG: &str =
    "bootstrap.fromBackup.url must start with s3:// (s3://bucket/prefix)";
pub const BOOTSTRAP_TARGET_MSG: &str =
    "bootstrap.fromBackup: set at most one of toSeq and toTime (neither restores the latest)";
pub const BOOTSTRAP_IMMUTABLE_MSG: &str = "bootstrap cannot change: it is only read when the cluster is first created; remove it, or create a new HaCluster to restore another backup";
/// The node reads one endpoint, region and set of AWS credentials for both its backups and its
/// bootstrap restore, so the two sections must agree where both say something.
const BACKUP_STORE_RULE: &str = "!has(self.backup) || !has(self.bootstrap) || !has(self.bootstrap.fromBackup) || ((!has(self.bootstrap.fromBackup.endpoint) || !has(self.backup.endpoint) || self.bootstrap.fromBackup.endpoint == self.backup.endpoint) && (!has(self.bootstrap.fromBackup.region) || !has(self.backup.region) || self.bootstrap.fromBackup.region == self.backup.region) && (!has(self.bootstrap.fromBackup.credentialsSecret) || !has(self.backup.credentialsSecret) || self.bootstrap.fromBackup.credentialsSecret == self.backup.credentialsSecret))";
pub const BACKUP_STORE_MSG: &str = "bootstrap.fromBackup and backup must use the same endpoint, region and credentialsSecret (a node has one set of object-storage settings); omit them in bootstrap.fromBackup to use backup's";
pub const TOKEN_EXCLUSIVE_MSG: &str = "http.tokenSecret and http.disableToken exclude each other";

/// Every pair of the ports the ha container listens on differs (the defaults filled in).
fn ports_rule() -> String {
    let h = "self.http.port";
    let g = "self.postgres.port";
    let n = "(has(self.nats.embedded) && has(self.nats.embedded.port) ? self.nats.embedded.port : 4222)";
    let c = "(has(self.nats.embedded) && has(self.nats.embedded.clusterPort) ? self.nats.embedded.clusterPort : 6222)";
    format!(
        "(!self.postgres.enabled || {h} != {g}) && (has(self.nats.external) || ({h} != {n} && {h} != {c} && {n} != {c} && (!self.postgres.enabled || ({g} != {n} && {g} != {c}))))"
    )
}

/// A highly available SQLite cluster: a StatefulSet of ha nodes replicating through NATS JetStream.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[cfg_attr(test, derive(Default))]
#[kube(
    group = "ha.sqlite.dev",
    version = "v1alpha1",
    kind = "HaCluster",
    plural = "haclusters",
    shortname = "hac",
    namespaced,
    status = "HaClusterStatus",
    doc = "A highly available SQLite cluster: a StatefulSet of ha nodes, each with a full copy of the database, that accept reads and writes over PostgreSQL and HTTP and replicate every transaction through NATS JetStream. `kubectl scale hac/NAME --replicas N` changes the node count one pod at a time.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Last snapshot","type":"date","jsonPath":".status.lastSnapshot.time"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(STREAM_REPLICAS_RULE).message(STREAM_REPLICAS_MSG))]
#[x_kube(validation = Rule::new(ports_rule()).message(PORTS_MSG))]
#[x_kube(validation = Rule::new(CROSSING_RULE).message(CROSSING_REFUSED))]
#[x_kube(validation = Rule::new(BACKUP_STORE_RULE).message(BACKUP_STORE_MSG))]
pub struct HaClusterSpec {
    /// Number of ha nodes (pods). Every node accepts writes.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 99))]
    pub replicas: i32,

    /// Container image of the ha node (it must contain `ha` and `nats-server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Image pull policy: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Always|IfNotPresent|Never)$"))]
    pub image_pull_policy: Option<String>,

    /// Secrets used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// The SQLite database each node serves.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// The per-pod volume holding the database file and the JetStream store.
    #[serde(default)]
    pub storage: StorageSpec,

    /// How change sets are replicated through JetStream.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// Which NATS carries replication: the pods' embedded servers (default) or an external one.
    #[serde(default)]
    pub nats: NatsSpec,

    /// The PostgreSQL wire protocol front end.
    #[serde(default)]
    pub postgres: PostgresSpec,

    /// The HTTP API front end and its optional Ingress.
    #[serde(default)]
    pub http: HttpSpec,

    /// Scheduled snapshots into the JetStream Object Store.
    #[serde(default)]
    pub snapshots: SnapshotsSpec,

    /// Off-cluster backups to S3-compatible object storage: snapshots on an interval and a
    /// continuous archive of the change log, so the data outlives the cluster's volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// How a new cluster gets its first data. Only read when the cluster is first created: a
    /// node with data (or a stream with messages) ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,

    /// Prometheus scraping of the nodes' `/metrics`.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// The client Service (pg and http).
    #[serde(default)]
    pub service: ServiceSpec,

    /// Scheduling and runtime settings of the pods.
    #[serde(default)]
    pub pod: PodSettings,

    /// The PodDisruptionBudget of the cluster.
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,

    /// Log level of the nodes: error, warn, info, debug or trace.
    #[serde(default = "default_log_level")]
    #[schemars(regex(pattern = r"^(error|warn|info|debug|trace)$"))]
    pub log_level: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.name == oldSelf.name").message(DB_NAME_MSG))]
pub struct DatabaseSpec {
    /// File name of the database inside the data volume (also the snapshot key).
    #[serde(default = "default_db_name")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"))]
    pub name: String,

    /// Keep the database in memory (the JetStream store stays on the volume); a restarted pod
    /// rebuilds it from the latest snapshot and the stream.
    #[serde(default)]
    pub memory: bool,

    /// SQLite extensions loaded on every connection (`--extensions`): absolute paths of shared
    /// libraries inside the image (build an image `FROM` the ha image that adds them). A node
    /// that cannot load one refuses to start and says which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^/[^,]+$")))]
    pub extensions: Vec<String>,

    /// An interceptor script (Rhai, `--interceptor`) from a ConfigMap, mounted read-only. The
    /// node reads it at start: restart the pods after changing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interceptor: Option<InterceptorSource>,

    /// Restore the latest snapshot before serving when it is newer than the local data.
    #[serde(default = "default_true")]
    pub from_latest_snapshot: bool,
}

/// Where the interceptor script comes from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterceptorSource {
    /// ConfigMap in the cluster's namespace that holds the script.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub config_map: String,

    /// Key of the script in the ConfigMap (default `interceptor.rhai`).
    #[serde(default = "default_interceptor_key")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_interceptor_key() -> String {
    "interceptor.rhai".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("isQuantity(string(self.size)) && quantity(string(self.size)).isGreaterThan(quantity('0'))").message(STORAGE_SIZE_MSG))]
#[x_kube(validation = Rule::new("!isQuantity(string(self.size)) || !isQuantity(string(oldSelf.size)) || quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0").message(STORAGE_SHRINK_MSG))]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message(STORAGE_CLASS_MSG))]
pub struct StorageSpec {
    /// Size of each pod's PersistentVolumeClaim.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,

    /// StorageClass of the claims (cluster default when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.timeout) || self.timeout.matches('[1-9]')").message("replication.timeout must be more than 0"))]
#[x_kube(validation = Rule::new("has(self.stream) == has(oldSelf.stream) && (!has(self.stream) || self.stream == oldSelf.stream)").message(STREAM_NAME_MSG))]
pub struct ReplicationSpec {
    /// JetStream stream name (default `ha_replication`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub stream: Option<String>,

    /// Replicas of the stream and snapshot bucket (default `min(3, replicas)`; at most 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub stream_replicas: Option<i32>,

    /// How long the stream keeps change sets, e.g. `24h` (`0` = forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_age: Option<String>,

    /// Where a node without history starts: all, last, new, by_start_sequence=N, by_start_time=….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = POLICY_PATTERN))]
    pub policy: Option<String>,

    /// How long a commit waits for the stream's acknowledgement, e.g. `15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: Option<String>,

    /// Replicate DDL (CREATE/ALTER/DROP) as well as rows.
    #[serde(default = "default_true")]
    pub ddl_sync: bool,
}

/// Embedded (default) or external NATS; setting both is rejected by the schema.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.external) && has(self.embedded))").message("nats.external and nats.embedded are mutually exclusive"))]
#[x_kube(validation = Rule::new("has(self.external) == has(oldSelf.external)").message(NATS_KIND_MSG))]
pub struct NatsSpec {
    /// Settings of the nats-server each pod runs (used when `external` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedNats>,

    /// An existing NATS JetStream cluster to replicate through instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalNats>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedNats {
    /// Client port of the embedded nats-server (default 4222).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Route (cluster) port (default 6222).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub cluster_port: Option<i32>,

    /// Log the nats-server's own output.
    #[serde(default)]
    pub logs: bool,

    /// A Secret with `tls.crt`, `tls.key` and `ca.crt` (e.g. from cert-manager) for TLS between
    /// the pods' nats-servers (routes); the certificate must be valid for the pods' names
    /// (`*.<name>-peers.<namespace>.svc.cluster.local`). Routes authenticate with a generated
    /// user either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_tls_secret: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalNats {
    /// NATS URL(s), comma separated, e.g. `nats://nats.nats.svc:4222`.
    #[schemars(length(min = 1))]
    pub url: String,

    /// Secret with keys `username` and `password` for the NATS connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.requireTls) || !self.requireTls || has(self.tlsSecret)").message("postgres.requireTls needs postgres.tlsSecret"))]
pub struct PostgresSpec {
    /// Serve the PostgreSQL wire protocol.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Port of the PostgreSQL front end (pods and client Service).
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Secret with keys `username` and `password`; generated (`<name>-credentials`) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,

    /// Password authentication: scram-sha-256 (default), md5 or password (cleartext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(scram-sha-256|md5|password)$"))]
    pub auth_method: Option<String>,

    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) enabling TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,

    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub require_tls: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.ingress) || !self.disableToken").message(INGRESS_TOKEN_MSG))]
#[x_kube(validation = Rule::new("!has(self.tokenSecret) || !self.disableToken").message(TOKEN_EXCLUSIVE_MSG))]
pub struct HttpSpec {
    /// Port of the HTTP API (pods and client Service).
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Secret with key `token`: the bearer token the HTTP API requires. When omitted, the
    /// operator generates one (key `http-token` of `<name>-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,

    /// Serve the HTTP API without a token (no generated one either). Refused with an Ingress.
    #[serde(default)]
    pub disable_token: bool,

    /// An Ingress in front of the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.path) || self.path.startsWith('/')").message(INGRESS_PATH_MSG))]
pub struct IngressSpec {
    /// IngressClass name (cluster default when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,

    /// Host name the Ingress answers for.
    #[schemars(length(min = 1))]
    pub host: String,

    /// Path prefix (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,

    /// TLS Secret for the host (no TLS when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,

    /// Annotations of the Ingress (e.g. for cert-manager or the controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotsSpec {
    /// Cron schedule (5 fields, UTC, or `@hourly`/`@daily`…) on which one ready node snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,

    /// How many snapshots the object store keeps.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 1000))]
    pub retain: i32,
}

/// Off-cluster backups (`--backup-url` and friends).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.url.startsWith('s3://')").message(BACKUP_URL_MSG))]
pub struct BackupSpec {
    /// Where backups go: `s3://bucket/prefix`.
    pub url: String,

    /// S3-compatible endpoint (MinIO, …), e.g. `http://minio.minio:9000`; AWS when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Region of the bucket (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub region: Option<String>,

    /// Secret with keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`, given to the pods as environment variables (never in a ConfigMap).
    /// When omitted the pods use whatever credentials their environment provides (e.g. IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// How often a snapshot is uploaded, e.g. `1h` (the node's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,

    /// How long snapshots are kept, e.g. `7d` (the node's default); the newest always stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retention: Option<String>,
}

/// Where a new cluster's first data comes from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message(BOOTSTRAP_IMMUTABLE_MSG))]
pub struct BootstrapSpec {
    /// Restore a backup (point in time optional) before the first node serves; the other nodes
    /// then restore from the snapshot it publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// A backup to restore (`--restore-from`, `--restore-to-seq`, `--restore-to-time`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.url.startsWith('s3://')").message(BOOTSTRAP_URL_MSG))]
#[x_kube(validation = Rule::new("!(has(self.toSeq) && has(self.toTime))").message(BOOTSTRAP_TARGET_MSG))]
pub struct FromBackup {
    /// The backup: `s3://bucket/prefix`.
    pub url: String,

    /// S3-compatible endpoint; `backup.endpoint` when omitted, else AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Region of the bucket; `backup.region` when omitted, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub region: Option<String>,

    /// Secret with the AWS credentials (keys as in `backup.credentialsSecret`, which is used
    /// when this is omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,

    /// Restore up to and including this stream sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub to_seq: Option<i64>,

    /// Restore the database as it was at this time (RFC 3339, e.g. `2026-12-07T01:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
    ))]
    pub to_time: Option<String>,
}

/// Prometheus scraping.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a prometheus-operator `ServiceMonitor` that scrapes every node's `/metrics` with
    /// the HTTP token (the CRD must be installed). Off by default.
    #[serde(default)]
    pub service_monitor: bool,

    /// Extra labels of the ServiceMonitor (e.g. the `release` label a Prometheus selects on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Scrape interval, e.g. `30s` (Prometheus' own when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Type of the client Service: ClusterIP, NodePort or LoadBalancer.
    #[serde(default = "default_service_type", rename = "type")]
    #[schemars(regex(pattern = r"^(ClusterIP|NodePort|LoadBalancer)$"))]
    pub type_: String,

    /// Annotations of the client Service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Pod-level settings; anything omitted gets a safe default (e.g. anti-affinity across hosts).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// CPU/memory requests and limits of the ha container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Nodes the pods may run on, by label (as in a pod spec).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate (as in a pod spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Replaces the default preferred anti-affinity across hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods spread across zones or hosts (as in a pod spec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Replaces the default pod security context (non-root, fsGroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// Replaces the default container security context (no privilege escalation, read-only root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,

    /// Extra labels on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations on the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// Extra environment variables of the ha container (`HA_*` settings among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Extra command-line arguments of the ha container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Seconds a pod gets to finish in-flight work when stopped (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxUnavailable) || string(self.maxUnavailable).matches('^[0-9]+%?$')").message(MAX_UNAVAILABLE_MSG))]
pub struct DisruptionBudgetSpec {
    /// Create a PodDisruptionBudget.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Pods that may be down at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// What the operator observed; always overwritten as a whole.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HaClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Creating, Running, Scaling, Updating, Degraded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// Pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Pods of the StatefulSet (the scale subresource's `status.replicas`).
    #[serde(default)]
    pub replicas: i32,

    /// `ready/desired` nodes, e.g. `3/3` (the Ready column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,

    /// The pods' label selector as a string (the scale subresource's, for the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Ready, Progressing, Degraded, SnapshotSucceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Per node: applied sequence and lag, read from the node's `/status`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,

    /// The last time the Progressing condition's message changed (a step was made): an
    /// operation without progress for 10 minutes turns Progressing False
    /// (`ProgressDeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<ProgressMark>,

    /// The last scheduled snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<SnapshotStatus>,

    /// Off-cluster backups as the uploading node reports them (when `spec.backup` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,

    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Pod name (also the node name and durable consumer name).
    pub name: String,
    /// The pod passes its readiness probe.
    pub ready: bool,
    /// Last stream sequence the node applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_seq: Option<i64>,
    /// Stream sequences the node is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Why the node's status could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the operator was doing, and since when.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressMark {
    /// The Progressing message of that step.
    pub message: String,
    /// When it was first reported (RFC 3339).
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// When the snapshot was attempted (RFC 3339).
    pub time: String,
    /// Stream sequence contained in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// Node that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Succeeded or Failed.
    pub result: String,
    /// Size in bytes, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the nodes' `/status` `backup` objects say, merged: the uploader's view first.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the last snapshot upload succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upload_time: Option<String>,
    /// Stream sequence contained in the last uploaded snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot_seq: Option<i64>,
    /// Last stream sequence in the change-log archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_seq: Option<i64>,
    /// The node that uploads (one at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    /// The last upload or archive error, with the node that had it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `host:port` of the PostgreSQL front end through the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// URL of the HTTP API through the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// URL through the Ingress, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
}

fn default_replicas() -> i32 {
    3
}
fn default_true() -> bool {
    true
}
fn default_log_level() -> String {
    "info".into()
}
fn default_db_name() -> String {
    "ha.db".into()
}
fn default_storage_size() -> Quantity {
    Quantity("10Gi".into())
}
fn default_pg_port() -> i32 {
    5432
}
fn default_http_port() -> i32 {
    8080
}
fn default_retain() -> i32 {
    3
}
fn default_service_type() -> String {
    "ClusterIP".into()
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        Self {
            name: default_db_name(),
            memory: false,
            extensions: Vec::new(),
            interceptor: None,
            from_latest_snapshot: true,
        }
    }
}

// Written out: a derived Default would turn DDL replication off when `replication` is omitted.
impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            stream: None,
            stream_replicas: None,
            max_age: None,
            policy: None,
            timeout: None,
            ddl_sync: true,
        }
    }
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

impl Default for PostgresSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            port: default_pg_port(),
            auth_secret: None,
            auth_method: None,
            tls_secret: None,
            require_tls: false,
        }
    }
}

impl Default for HttpSpec {
    fn default() -> Self {
        Self {
            port: default_http_port(),
            token_secret: None,
            disable_token: false,
            ingress: None,
        }
    }
}

impl Default for SnapshotsSpec {
    fn default() -> Self {
        Self {
            schedule: None,
            retain: default_retain(),
        }
    }
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: default_service_type(),
            annotations: BTreeMap::new(),
        }
    }
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: None,
        }
    }
}

impl HaClusterSpec {
    /// Stream (and snapshot bucket) replicas: the explicit value, else `min(3, replicas)`.
    pub fn effective_stream_replicas(&self) -> i32 {
        self.replication
            .stream_replicas
            .unwrap_or_else(|| self.replicas.clamp(1, 3))
    }

    /// The image to run.
    pub fn effective_image(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_IMAGE)
    }

    /// True when the pods run their own nats-server (no external NATS configured).
    pub fn embedded_nats(&self) -> bool {
        self.nats.external.is_none()
    }

    /// True when the embedded nats-servers form one JetStream cluster through routes. A single
    /// replica runs a standalone server: a clustered nats-server without a peer never finishes
    /// "waiting for routing" and JetStream never becomes ready.
    pub fn nats_clustered(&self) -> bool {
        self.embedded_nats() && self.replicas > 1
    }

    /// Client port of the embedded nats-server.
    pub fn effective_nats_port(&self) -> i32 {
        self.nats
            .embedded
            .as_ref()
            .and_then(|e| e.port)
            .unwrap_or(4222)
    }

    /// The Secret of the routes' TLS (`nats.embedded.clusterTlsSecret`).
    pub fn nats_cluster_tls_secret(&self) -> Option<&str> {
        self.nats.embedded.as_ref()?.cluster_tls_secret.as_deref()
    }

    /// Route (cluster) port of the embedded nats-server.
    pub fn effective_nats_cluster_port(&self) -> i32 {
        self.nats
            .embedded
            .as_ref()
            .and_then(|e| e.cluster_port)
            .unwrap_or(6222)
    }

    /// The object-storage settings the pods get: `backup`'s, filled in by the bootstrap's where
    /// `backup` says nothing (validation makes sure they never disagree).
    pub fn object_store(&self) -> ObjectStore<'_> {
        fn pick<'a>(
            a: Option<&'a Option<String>>,
            b: Option<&'a Option<String>>,
        ) -> Option<&'a str> {
            a.and_then(|x| x.as_deref())
                .or_else(|| b.and_then(|x| x.as_deref()))
        }
        let backup = self.backup.as_ref();
        let from = self.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref());
        ObjectStore {
            endpoint: pick(backup.map(|b| &b.endpoint), from.map(|f| &f.endpoint)),
            region: pick(backup.map(|b| &b.region), from.map(|f| &f.region)),
            credentials_secret: pick(
                backup.map(|b| &b.credentials_secret),
                from.map(|f| &f.credentials_secret),
            ),
        }
    }

    /// Seconds a pod gets to stop.
    pub fn effective_termination_grace_seconds(&self) -> i64 {
        self.pod.termination_grace_period_seconds.unwrap_or(30)
    }

    /// The ports the ha container listens on, by port name (pg and NATS only when in use).
    pub fn container_ports(&self) -> Vec<(&'static str, i32)> {
        let mut ports = vec![("http", self.http.port)];
        if self.postgres.enabled {
            ports.push(("pg", self.postgres.port));
        }
        if self.embedded_nats() {
            ports.push(("nats", self.effective_nats_port()));
            ports.push(("nats-cluster", self.effective_nats_cluster_port()));
        }
        ports
    }
}

/// Endpoint, region and credentials of the object storage the nodes back up to and restore from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectStore<'a> {
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub credentials_secret: Option<&'a str>,
}

/// Checks everything the CRD schema checks (patterns, ranges, CEL rules) plus what it cannot
/// express, so that a spec that never went through the API server (`ha-operator render -f`) is
/// held to the same rules. The first problem found is returned.
pub fn validate(spec: &HaClusterSpec) -> Result<(), String> {
    use crate::syntax::{check_cron, check_duration, check_policy, duration_is_zero};

    // The CEL rules of the schema (`x-kubernetes-validations`), in the same words.
    if spec.nats.external.is_some() && spec.nats.embedded.is_some() {
        return Err("nats.external and nats.embedded are mutually exclusive".into());
    }
    if spec.postgres.require_tls && spec.postgres.tls_secret.is_none() {
        return Err("postgres.requireTls needs postgres.tlsSecret".into());
    }
    if let Some(e) = spec
        .database
        .extensions
        .iter()
        .find(|e| !e.starts_with('/') || e.contains(','))
    {
        return Err(format!(
            "database.extensions: {e:?} must be an absolute path without commas"
        ));
    }
    if let Some(t) = &spec.replication.timeout {
        check_duration(t).map_err(|e| format!("replication.timeout: {e}"))?;
        if duration_is_zero(t) {
            return Err("replication.timeout must be more than 0".into());
        }
    }

    // Ranges and patterns of the schema.
    in_range("replicas", spec.replicas, 1, 99)?;
    if let Some(n) = spec.replication.stream_replicas {
        in_range("replication.streamReplicas", n, 1, 5)?;
    }
    in_range("snapshots.retain", spec.snapshots.retain, 1, 1000)?;
    in_range("postgres.port", spec.postgres.port, 1, 65535)?;
    in_range("http.port", spec.http.port, 1, 65535)?;
    if let Some(e) = &spec.nats.embedded {
        if let Some(p) = e.port {
            in_range("nats.embedded.port", p, 1, 65535)?;
        }
        if let Some(p) = e.cluster_port {
            in_range("nats.embedded.clusterPort", p, 1, 65535)?;
        }
    }
    if let Some(g) = spec.pod.termination_grace_period_seconds
        && g < 0
    {
        return Err(format!(
            "pod.terminationGracePeriodSeconds must be >= 0, got {g}"
        ));
    }
    one_of(
        "logLevel",
        &spec.log_level,
        &["error", "warn", "info", "debug", "trace"],
    )?;
    if let Some(p) = &spec.image_pull_policy {
        one_of("imagePullPolicy", p, &["Always", "IfNotPresent", "Never"])?;
    }
    if let Some(m) = &spec.postgres.auth_method {
        one_of(
            "postgres.authMethod",
            m,
            &["scram-sha-256", "md5", "password"],
        )?;
    }
    one_of(
        "service.type",
        &spec.service.type_,
        &["ClusterIP", "NodePort", "LoadBalancer"],
    )?;
    let db = &spec.database.name;
    let db_ok = db.len() <= 128
        && db.starts_with(|c: char| c.is_ascii_alphanumeric())
        && db
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !db_ok {
        return Err(format!(
            "database.name {db:?}: a file name of letters, digits, '.', '_' and '-'"
        ));
    }
    if let Some(s) = &spec.replication.stream {
        let ok = (1..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !ok {
            return Err(format!(
                "replication.stream {s:?}: 1-64 letters, digits, '_' or '-'"
            ));
        }
    }
    if let Some(a) = &spec.replication.max_age {
        check_duration(a).map_err(|e| format!("replication.maxAge: {e}"))?;
    }
    if let Some(p) = &spec.replication.policy {
        check_policy(p)?;
    }
    if let Some(c) = &spec.snapshots.schedule {
        check_cron(c)?;
    }
    if let Some(x) = &spec.nats.external
        && x.url.trim().is_empty()
    {
        return Err("nats.external.url must not be empty".into());
    }
    if let Some(i) = &spec.http.ingress
        && i.host.trim().is_empty()
    {
        return Err("http.ingress.host must not be empty".into());
    }

    backup_checks(spec)?;
    if let Some(i) = &spec.monitoring.interval {
        check_duration(i).map_err(|e| format!("monitoring.interval: {e}"))?;
    }

    // What the schema cannot express.
    if spec.embedded_nats() && spec.effective_stream_replicas() > spec.replicas {
        return Err(STREAM_REPLICAS_MSG.into());
    }
    if let Some(path) = spec.http.ingress.as_ref().and_then(|i| i.path.as_deref())
        && !path.starts_with('/')
    {
        return Err(INGRESS_PATH_MSG.into());
    }
    if spec.http.ingress.is_some() && spec.http.disable_token {
        return Err(INGRESS_TOKEN_MSG.into());
    }
    if spec.http.token_secret.is_some() && spec.http.disable_token {
        return Err(TOKEN_EXCLUSIVE_MSG.into());
    }
    let max_unavailable_ok = match &spec.disruption_budget.max_unavailable {
        None => true,
        Some(IntOrString::Int(n)) => *n >= 0,
        Some(IntOrString::String(s)) => {
            s.ends_with('%') && s.len() > 1 && s[..s.len() - 1].bytes().all(|b| b.is_ascii_digit())
        }
    };
    if !max_unavailable_ok {
        return Err(MAX_UNAVAILABLE_MSG.into());
    }
    if !crate::syntax::is_positive_quantity(&spec.storage.size.0) {
        return Err(STORAGE_SIZE_MSG.into());
    }
    let ports = spec.container_ports();
    for (i, (a, pa)) in ports.iter().enumerate() {
        if let Some((b, _)) = ports[i + 1..].iter().find(|(_, pb)| pb == pa) {
            return Err(format!("{PORTS_MSG}; {a} and {b} are both port {pa}"));
        }
    }
    Ok(())
}

/// The schema's and CEL rules' checks of `backup` and `bootstrap`, in their words.
fn backup_checks(spec: &HaClusterSpec) -> Result<(), String> {
    use crate::syntax::check_duration;
    if let Some(b) = &spec.backup {
        if !b.url.starts_with("s3://") {
            return Err(BACKUP_URL_MSG.into());
        }
        if let Some(i) = &b.interval {
            check_duration(i).map_err(|e| format!("backup.interval: {e}"))?;
        }
        if let Some(r) = &b.retention {
            check_duration(r).map_err(|e| format!("backup.retention: {e}"))?;
        }
        if b.region.as_deref() == Some("") {
            return Err("backup.region must not be empty".into());
        }
    }
    let Some(from) = spec.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref()) else {
        return Ok(());
    };
    if !from.url.starts_with("s3://") {
        return Err(BOOTSTRAP_URL_MSG.into());
    }
    if from.to_seq.is_some() && from.to_time.is_some() {
        return Err(BOOTSTRAP_TARGET_MSG.into());
    }
    if let Some(n) = from.to_seq
        && n < 1
    {
        return Err(format!(
            "bootstrap.fromBackup.toSeq must be at least 1, got {n}"
        ));
    }
    if let Some(t) = &from.to_time
        && t.parse::<k8s_openapi::jiff::Timestamp>().is_err()
    {
        return Err(format!(
            "bootstrap.fromBackup.toTime {t:?} must be an RFC 3339 time like 2026-12-07T01:00:00Z"
        ));
    }
    if from.region.as_deref() == Some("") {
        return Err("bootstrap.fromBackup.region must not be empty".into());
    }
    if let Some(b) = &spec.backup {
        let differs =
            |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(x), Some(y)) if x != y);
        if differs(&from.endpoint, &b.endpoint)
            || differs(&from.region, &b.region)
            || differs(&from.credentials_secret, &b.credentials_secret)
        {
            return Err(BACKUP_STORE_MSG.into());
        }
    }
    Ok(())
}

fn in_range(field: &str, value: i32, min: i32, max: i32) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} must be between {min} and {max}, got {value}"
        ))
    }
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{field} {value:?} must be one of {}",
            allowed.join(", ")
        ))
    }
}

/// Why a cluster with embedded NATS cannot go between 1 and more replicas (the CRD's CEL rule
/// says the same at admission).
pub const CROSSING_REFUSED: &str = "with embedded NATS, replicas cannot change between 1 and more than 1: a standalone \
     nats-server's stream and snapshot bucket are not adopted by a clustered one, so the data \
     would be left behind; create a new HaCluster with the replicas you want and copy the data \
     into it (docs/kubernetes.md, \"One replica and more\")";

#[cfg(test)]
mod defaults_tests {
    use super::*;

    #[test]
    fn an_empty_spec_gets_the_documented_defaults() {
        let spec: HaClusterSpec = serde_json::from_str("{}").expect("empty spec");
        assert_eq!(spec.replicas, 3);
        assert!(
            spec.replication.ddl_sync,
            "DDL replicates unless turned off"
        );
        assert!(spec.database.from_latest_snapshot);
        assert!(spec.postgres.enabled);
        assert!(spec.disruption_budget.enabled);
        assert_eq!(spec.effective_stream_replicas(), 3);
        // An omitted section and an empty one mean the same, so the CRD's schema defaults (the
        // sections' Default, serialized) and the operator agree.
        fn same<T: Default + PartialEq + std::fmt::Debug + serde::de::DeserializeOwned>() {
            let empty: T = serde_json::from_str("{}").expect("empty section");
            assert_eq!(empty, T::default(), "{}", std::any::type_name::<T>());
        }
        same::<ReplicationSpec>();
        same::<DatabaseSpec>();
        same::<PostgresSpec>();
        same::<HttpSpec>();
        same::<SnapshotsSpec>();
        same::<ServiceSpec>();
        same::<DisruptionBudgetSpec>();
        same::<StorageSpec>();
        same::<NatsSpec>();
        same::<PodSettings>();
        same::<MonitoringSpec>();
        assert!(spec.backup.is_none() && spec.bootstrap.is_none());
        assert!(!spec.monitoring.service_monitor, "ServiceMonitor is opt-in");
    }
}
