//! Owns the JSON shapes of the HTTP API's bodies as OpenAPI schemas (`utoipa::ToSchema`): what
//! the handlers' `#[utoipa::path]` attributes name and `openapi` lists.
//! Must not be used to build answers: the handlers write their JSON with `json` and `error`;
//! these types only describe it.
//! Invariant: a shape changed in a handler is changed here (the `openapi` test validates the
//! document and checks every route).

use serde::Serialize;
use serde_json::Value as Json_;
use utoipa::ToSchema;

/// One statement: SQL and its parameters (an object by name or number, or an array by number).
#[derive(Serialize, ToSchema)]
pub struct Statement {
    /// Exactly one SQL statement.
    pub sql: String,
    /// `{"name": v}` / `{"$1": v}` or `[v1, v2]`; a BLOB is `{"base64": "..."}`.
    #[schema(value_type = Option<Object>)]
    pub params: Option<Json_>,
}

/// `POST /`: one statement, or an array run as one transaction.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum QueryRequest {
    One(Statement),
    Many(Vec<Statement>),
}

/// One statement's result, in the original's shape. Statements that return no rows answer
/// `{"columns": ["rows_affected", "last_insert_id"], "rows": [[n, id]]}`.
#[derive(Serialize, ToSchema)]
pub struct ResultSet {
    pub columns: Vec<String>,
    /// Rows of values: integer, number, string (BLOBs as base64) or null.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Json_>>,
}

/// The answer to an array request.
#[derive(Serialize, ToSchema)]
pub struct Results {
    pub results: Vec<ResultSet>,
    /// The commit's stream sequence, when the transaction wrote on a replicated node (as in
    /// the `X-Ha-Seq` header).
    pub seq: Option<u64>,
}

/// `POST /`'s answer: a bare result for one statement, `results` for an array.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum QueryResponse {
    One(ResultSet),
    Many(Results),
}

/// Every error: a stable code and a message.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `bad_request`, `invalid_sql`, `constraint_violation`, `timeout`,
    /// `seq_not_reached`, `unauthorized`, `not_found`, … (docs/http-api.md).
    pub code: String,
    pub message: String,
    /// In an array request, the 1-based number of the statement that failed.
    pub statement: Option<usize>,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why the node is not ready (empty when it is).
    pub reasons: Vec<String>,
}

/// `POST /snapshot`.
#[derive(Serialize, ToSchema)]
pub struct SnapshotTaken {
    /// The applied stream sequence the snapshot holds (0: skipped, nothing new).
    pub seq: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub skipped: bool,
}

/// One member of the JetStream cluster.
#[derive(Serialize, ToSchema)]
pub struct Peer {
    pub name: String,
    pub leader: bool,
    pub current: bool,
    pub offline: bool,
    pub active_ms: u64,
    pub lag: u64,
}

/// `GET /cluster/peers`.
#[derive(Serialize, ToSchema)]
pub struct PeerList {
    /// The cluster's name; null on a server that is not clustered.
    pub cluster: Option<String>,
    pub leader: Option<String>,
    #[serde(rename = "self")]
    pub self_: String,
    pub peers: Vec<Peer>,
}

/// `DELETE /cluster/peers/{name}`.
#[derive(Serialize, ToSchema)]
pub struct PeerRemoval {
    pub peer: String,
    pub removed: bool,
    pub reason: Option<String>,
    pub durable: String,
    pub consumer_deleted: bool,
}

/// `GET /cluster/streams`: the replica state of the replication stream and the snapshot
/// bucket's stream.
#[derive(Serialize, ToSchema)]
pub struct StreamList {
    #[schema(value_type = Vec<Object>)]
    pub streams: Vec<Json_>,
}

/// `GET /replications`: the stream's consumers as JetStream reports them.
#[derive(Serialize, ToSchema)]
pub struct ReplicationList {
    #[schema(value_type = Vec<Object>)]
    pub replications: Vec<Json_>,
}

/// `GET /replications/{name}`: one consumer as JetStream reports it.
#[derive(Serialize, ToSchema)]
pub struct ReplicationInfo {
    #[schema(value_type = Object)]
    pub replications: Json_,
}
