//! Owns the operator's HTTP calls to the ha nodes: `GET /status`, `GET /cluster/peers`,
//! `GET /cluster/streams`, `POST /snapshot`,
//! `DELETE /replications/{name}` and `DELETE /cluster/peers/{server_name}`.
//! Must not decide anything: callers choose which node to ask and what a failure means.
//! Invariant: every call has a timeout, so an unreachable pod costs seconds, never a stuck reconcile.
//! See docs/http-api.md for the node side, `members` and `snapshots` for the callers.

use std::time::Duration;

use serde::Deserialize;

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No answer: connection refused, DNS, timeout.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The node answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// The node answered 2xx with a body we cannot read.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// Where one node's HTTP API is, and how to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTarget {
    /// Pod name (also the node name, durable consumer name and NATS server name).
    pub name: String,
    /// `http://host:port`, no trailing slash.
    pub base_url: String,
    /// Bearer token from `spec.http.tokenSecret`, when set.
    pub token: Option<String>,
}

/// The parts of a node's `GET /status` the operator reports and decides on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The node's own view of readiness (what `/readyz` answers).
    pub ready: bool,
    /// Last stream sequence applied.
    pub applied_seq: Option<u64>,
    /// Last sequence in the stream, as the node last saw it.
    pub stream_last_seq: Option<u64>,
    /// Messages in the stream the node has not applied yet.
    pub lag: Option<u64>,
    /// The node applied everything the stream held when it started.
    pub caught_up: bool,
    /// A history gap the node reports (it resynchronises from a snapshot).
    pub gap: Option<String>,
    /// The node's off-cluster backup state (`None`: backups are off on that node).
    pub backup: Option<BackupReport>,
}

/// A node's `/status` `backup` object (docs/operations.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct BackupReport {
    #[serde(default)]
    pub url: String,
    /// This node holds the upload lease (one node uploads at a time).
    #[serde(default)]
    pub uploader: bool,
    /// RFC 3339.
    #[serde(default)]
    pub last_upload_time: Option<String>,
    #[serde(default)]
    pub last_snapshot_seq: Option<u64>,
    #[serde(default)]
    pub archived_seq: Option<u64>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The last upload or archive attempt failed, or nothing was uploaded for 2 × interval.
    #[serde(default)]
    pub failing: bool,
}

/// What `POST /snapshot` answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct SnapshotTaken {
    /// Stream sequence the snapshot contains.
    pub seq: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub duration_ms: u64,
    /// Nothing changed since the last snapshot; none was written.
    #[serde(default)]
    pub skipped: bool,
}

/// Whether a removal found something to remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    AlreadyGone,
}

/// A cheap handle on one HTTP client with the operator's timeouts.
#[derive(Clone, Debug)]
pub struct NodeClient {
    http: reqwest::Client,
    /// For `/status` and removals: a slow node is reported, not waited for.
    short_timeout: Duration,
    /// For `POST /snapshot`, which uploads the whole database.
    snapshot_timeout: Duration,
}

impl Default for NodeClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(3), Duration::from_secs(300))
    }
}

impl NodeClient {
    pub fn new(short_timeout: Duration, snapshot_timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(short_timeout)
                .build()
                .unwrap_or_default(),
            short_timeout,
            snapshot_timeout,
        }
    }

    pub async fn status(&self, node: &NodeTarget) -> Result<NodeReport, NodeError> {
        let body: StatusBody = self
            .send(node, reqwest::Method::GET, "/status", self.short_timeout)
            .await?
            .json()
            .await
            .map_err(|e| NodeError::Decode(e.to_string()))?;
        Ok(body.into_report())
    }

    pub async fn snapshot(&self, node: &NodeTarget) -> Result<SnapshotTaken, NodeError> {
        self.send(
            node,
            reqwest::Method::POST,
            "/snapshot",
            self.snapshot_timeout,
        )
        .await?
        .json()
        .await
        .map_err(|e| NodeError::Decode(e.to_string()))
    }

    /// The JetStream meta group as `node`'s server sees it (`GET /cluster/peers`).
    pub async fn peers(&self, node: &NodeTarget) -> Result<Meta, NodeError> {
        self.send(
            node,
            reqwest::Method::GET,
            "/cluster/peers",
            self.short_timeout,
        )
        .await?
        .json()
        .await
        .map_err(|e| NodeError::Decode(e.to_string()))
    }

    /// The replica state of the replication stream and the snapshot bucket
    /// (`GET /cluster/streams`); a node without the route (an older image) reports none.
    pub async fn streams(&self, node: &NodeTarget) -> Result<Vec<StreamState>, NodeError> {
        #[derive(Deserialize)]
        struct Body {
            streams: Vec<StreamState>,
        }
        match self
            .send(
                node,
                reqwest::Method::GET,
                "/cluster/streams",
                self.short_timeout,
            )
            .await
        {
            Ok(resp) => resp
                .json::<Body>()
                .await
                .map(|b| b.streams)
                .map_err(|e| NodeError::Decode(e.to_string())),
            Err(NodeError::Status { status: 404, .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the durable consumer `name` (a departed node's) through `node`.
    pub async fn remove_consumer(
        &self,
        node: &NodeTarget,
        name: &str,
    ) -> Result<Removal, NodeError> {
        let path = format!("/replications/{name}");
        self.remove(node, &path).await
    }

    /// Removes the JetStream peer `server_name` (a departed node's nats-server) through `node`.
    pub async fn remove_peer(
        &self,
        node: &NodeTarget,
        server_name: &str,
    ) -> Result<Removal, NodeError> {
        let path = format!("/cluster/peers/{server_name}");
        self.remove(node, &path).await
    }

    async fn remove(&self, node: &NodeTarget, path: &str) -> Result<Removal, NodeError> {
        match self
            .send(node, reqwest::Method::DELETE, path, self.short_timeout)
            .await
        {
            Ok(_) => Ok(Removal::Removed),
            // A missing consumer or peer is what we want; a missing *route* is an old node.
            Err(NodeError::Status {
                status: 404,
                message,
            }) if !message.contains("no route") => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn send(
        &self,
        node: &NodeTarget,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, NodeError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", node.base_url))
            .timeout(timeout);
        if let Some(t) = &node.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| NodeError::Unreachable(without_url(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        Err(NodeError::Status {
            status: status.as_u16(),
            message: error_message(&text),
        })
    }
}

/// reqwest's error text names the URL; the node name already says which node it was.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = None;
    while let Some(s) = source {
        detail = Some(s.to_string());
        source = s.source();
    }
    match detail {
        Some(d) if !e.is_timeout() => format!("{kind}: {d}"),
        _ => kind.to_string(),
    }
}

/// The node's error JSON is `{"error": {"code", "message"}}`; anything else is shown as is.
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_str::<Wrapper>(body) {
        Ok(w) => w.error.message,
        Err(_) => body.chars().take(200).collect(),
    }
}

#[derive(Deserialize)]
struct StatusBody {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    replication: Option<ReplicationBody>,
    #[serde(default)]
    backup: Option<BackupReport>,
}

#[derive(Deserialize)]
struct ReplicationBody {
    #[serde(default)]
    applied_seq: Option<u64>,
    #[serde(default)]
    stream_last_seq: Option<u64>,
    #[serde(default)]
    lag_messages: Option<u64>,
    #[serde(default)]
    caught_up: bool,
    #[serde(default)]
    gap: Option<String>,
}

impl StatusBody {
    fn into_report(self) -> NodeReport {
        let Some(r) = self.replication else {
            // A node without replication has nothing to catch up with.
            return NodeReport {
                ready: self.ready,
                caught_up: true,
                backup: self.backup,
                ..NodeReport::default()
            };
        };
        NodeReport {
            ready: self.ready,
            applied_seq: r.applied_seq,
            stream_last_seq: r.stream_last_seq,
            lag: r.lag_messages,
            caught_up: r.caught_up,
            gap: r.gap,
            backup: self.backup,
        }
    }
}

/// One JetStream stream's replicas, as `GET /cluster/streams` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct StreamState {
    pub name: String,
    /// `false`: not created yet (e.g. no snapshot taken), nothing to wait for.
    #[serde(default)]
    pub exists: bool,
    #[serde(default)]
    pub leader: Option<String>,
    /// There is a leader and every replica is online and current (JetStream's own judgement;
    /// `lag` moves under writes and is only shown).
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub peers: Vec<StreamPeer>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct StreamPeer {
    pub name: String,
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub offline: bool,
    /// Operations behind the leader (JetStream leaves it out, as null, when it does not know).
    #[serde(default)]
    pub lag: Option<u64>,
}

/// One member of the JetStream meta group, as `GET /cluster/peers` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct MetaPeer {
    pub name: String,
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub offline: bool,
}

/// The meta group as its leader sees it (`cluster: None`: a standalone server).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub peers: Vec<MetaPeer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_of_a_replicating_node_becomes_a_report() {
        let body: StatusBody = serde_json::from_value(serde_json::json!({
            "node": "db-0", "ready": true,
            "replication": {"applied_seq": 40, "stream_last_seq": 42, "lag_messages": 2,
                            "caught_up": true, "gap": null, "stream": "ha_replication"}
        }))
        .unwrap();
        assert_eq!(
            body.into_report(),
            NodeReport {
                ready: true,
                applied_seq: Some(40),
                stream_last_seq: Some(42),
                lag: Some(2),
                caught_up: true,
                gap: None,
                backup: None,
            }
        );
    }

    #[test]
    fn the_backup_object_of_status_is_read() {
        let body: StatusBody = serde_json::from_value(serde_json::json!({
            "ready": true, "replication": null,
            "backup": {"url": "s3://b/p", "uploader": true,
                       "last_upload_time": "2026-12-07T01:00:00Z", "last_snapshot_seq": 12,
                       "archived_seq": 40, "archive_lag_seconds": 1.5,
                       "last_error": null, "failing": false}
        }))
        .unwrap();
        let b = body.into_report().backup.expect("backup read");
        assert!(b.uploader && !b.failing);
        assert_eq!(b.last_upload_time.as_deref(), Some("2026-12-07T01:00:00Z"));
        assert_eq!((b.last_snapshot_seq, b.archived_seq), (Some(12), Some(40)));
        let off: StatusBody =
            serde_json::from_value(serde_json::json!({"ready": true, "backup": null})).unwrap();
        assert_eq!(off.into_report().backup, None);
    }

    #[test]
    fn a_node_without_replication_counts_as_caught_up() {
        let body: StatusBody =
            serde_json::from_value(serde_json::json!({"ready": true, "replication": null}))
                .unwrap();
        let r = body.into_report();
        assert!(r.caught_up && r.ready && r.applied_seq.is_none());
    }

    #[test]
    fn stream_replicas_decode_with_and_without_a_lag() {
        let s: StreamState = serde_json::from_value(serde_json::json!({
            "kind": "stream", "name": "ha_replication", "exists": true, "replicas": 3,
            "leader": "db-0", "current": false, "messages": 9, "last_seq": 9,
            "peers": [{"name": "db-1", "current": true, "offline": false, "lag": null, "active_ms": 3},
                      {"name": "db-2", "current": false, "offline": false, "lag": 4, "active_ms": 3}]
        }))
        .unwrap();
        assert_eq!(s.peers[0].lag, None);
        assert_eq!(s.peers[1].lag, Some(4));
        let missing: StreamState = serde_json::from_value(
            serde_json::json!({"kind": "snapshot_bucket", "name": "OBJ_x", "exists": false}),
        )
        .unwrap();
        assert!(!missing.exists);
    }

    #[test]
    fn error_bodies_are_reduced_to_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"code":"not_found","message":"no consumer"}}"#),
            "no consumer"
        );
        assert_eq!(error_message("plain"), "plain");
    }
}
