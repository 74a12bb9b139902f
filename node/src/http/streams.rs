//! Owns `GET /cluster/streams`: the replica state of the node's JetStream assets — the
//! replication stream and the snapshot bucket's stream — for the operator, which steps a scale
//! change only once every replica of both is current.
//! Must not change anything; it asks JetStream (`$JS.API.STREAM.INFO`) through the node's own
//! connection and reports.
//! Invariant: a bucket that does not exist yet (no snapshot taken) is reported as such, not as
//! an error; only "cannot reach JetStream" is 503.
//! See docs/http-api.md and the operator's `scaling` (the caller's decision).

use async_nats::jetstream;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value as Json_, json};

use super::{ApiError, AppState};

/// `GET /cluster/streams`.
#[utoipa::path(get, path = "/cluster/streams", operation_id = "list_streams", tag = "cluster",
    responses(
        (status = 200, description = "The replica state of the replication stream and the snapshot bucket's stream", body = super::schema::StreamList),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody), (status = 404, description = "The node does not replicate (`not_replicating`)", body = super::schema::ErrorBody),
        (status = 503, description = "JetStream did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Json_>, ApiError> {
    let handle = state.replication.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_replicating",
            "this node has no NATS (--nats-port 0 and no --replication-url), so no streams",
        )
    })?;
    let (js, stream) = handle.jetstream();
    let bucket_stream = format!("OBJ_{}", handle.snapshots.bucket());
    let mut out = Vec::new();
    for (kind, name) in [
        ("stream", stream),
        ("snapshot_bucket", bucket_stream.as_str()),
    ] {
        out.push(describe(js, kind, name).await?);
    }
    Ok(Json(json!({ "streams": out })))
}

/// One stream's replica state: configured replicas, leader, and each replica's currency.
async fn describe(js: &jetstream::Context, kind: &str, name: &str) -> Result<Json_, ApiError> {
    let unavailable = |e: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("stream {name}: {e}"),
        )
    };
    let mut stream = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Ok(json!({"kind": kind, "name": name, "exists": false}));
        }
        Err(e) => return Err(unavailable(e.to_string())),
    };
    let info = stream
        .info()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let cluster = info.cluster.as_ref();
    let replicas: Vec<Json_> = cluster
        .map(|c| {
            c.replicas
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "current": r.current,
                        "offline": r.offline,
                        "lag": r.lag,
                        "active_ms": r.active.as_millis() as u64,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // The leader is current by definition; every other replica must say so itself (JetStream's
    // `current`: caught up with the leader; `lag` moves under writes and is only reported).
    let all_current = cluster.is_some_and(|c| c.leader.is_some())
        && replicas
            .iter()
            .all(|r| r["current"] == true && r["offline"] == false);
    Ok(json!({
        "kind": kind,
        "name": name,
        "exists": true,
        "replicas": info.config.num_replicas,
        "leader": cluster.and_then(|c| c.leader.clone()),
        "peers": replicas,
        "messages": info.state.messages,
        "last_seq": info.state.last_sequence,
        "current": all_current || (info.config.num_replicas <= 1 && cluster.is_none_or(|c| c.leader.is_some())),
    }))
}
