//! Owns `GET /checksum`: the node's consistency checksum (per-table SHA-256 at its applied
//! stream sequence), which `ha check` compares across nodes.
//! Must not block writes: the executor computes it on a read connection.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};

#[utoipa::path(get, path = "/checksum", tag = "probes",
    responses(
        (status = 200, description = "Per-table SHA-256 of the database at its applied sequence (`applied_seq`, `tables`), as `ha check` compares", body = Object),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 500, description = "The checksum failed (`internal`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn checksum(State(state): State<AppState>) -> Response {
    match state.exec.checksum().await {
        Ok(c) => Json(json!({
            "node": &*state.node_name,
            "applied_seq": c.applied_seq,
            // The stream's head as this node last saw it (refreshed every second): at that
            // sequence, with nothing in flight, every node must give the same checksums.
            "stream_last_seq": state.replication.as_ref().map(|r| {
                r.status.stream_last_seq.load(std::sync::atomic::Ordering::Acquire)
            }),
            "schema_sha256": c.schema_sha256,
            "tables": c.tables,
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
