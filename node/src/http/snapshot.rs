//! Owns `POST /snapshot` (take one now) and `GET /snapshot` (stream the latest), with the
//! original's headers (`X-Sequence`, `Content-Disposition: attachment; filename="…_ha_snapshot_<seq>.db"`).
//! Must not store or verify anything itself: `snapshot` does.
//! Invariant: a node without NATS answers 404 `not_replicating`; no snapshot is 404 `not_found`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};
use crate::snapshot::{SnapError, Snapshots};

fn snapshots(state: &AppState) -> Result<std::sync::Arc<Snapshots>, ApiError> {
    state
        .replication
        .as_ref()
        .map(|r| r.snapshots.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_replicating",
                "this node does not replicate (no NATS), so it has no snapshots",
            )
        })
}

fn api_error(e: SnapError, doing: &str) -> ApiError {
    match e {
        SnapError::NotFound => ApiError::not_found("no snapshot of this database yet"),
        SnapError::Db(e) => {
            let mut a = ApiError::from(e);
            a.message = format!("failed to {doing}: {}", a.message);
            a
        }
        SnapError::Nats { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("failed to {doing}: {e}"),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("failed to {doing}: {other}"),
        ),
    }
}

/// `POST /snapshot`: `{seq, bytes, duration_ms, skipped}` and `X-Sequence` (0 when skipped).
#[utoipa::path(
    post,
    path = "/snapshot",
    operation_id = "take_snapshot",
    tag = "snapshots",
    responses(
        (status = 200, description = "Taken (or skipped: nothing new since the last one)", body = super::schema::SnapshotTaken,
         headers(("X-Sequence" = u64, description = "The snapshot's stream sequence (0 when skipped)"))),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 404, description = "The node does not replicate (`not_replicating`)", body = super::schema::ErrorBody),
        (status = 500, description = "The snapshot failed (`internal`)", body = super::schema::ErrorBody),
        (status = 503, description = "JetStream did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn take(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snaps = snapshots(&state)?;
    let taken = snaps
        .take(&state.exec)
        .await
        .map_err(|e| api_error(e, "take snapshot"))?;
    Ok((
        [("x-sequence", taken.seq.to_string())],
        Json(json!({
            "seq": taken.seq,
            "bytes": taken.bytes,
            "duration_ms": taken.duration_ms,
            "skipped": taken.skipped,
        })),
    )
        .into_response())
}

/// `GET /snapshot`: the latest snapshot as a file download.
#[utoipa::path(
    get,
    path = "/snapshot",
    operation_id = "latest_snapshot",
    tag = "snapshots",
    responses(
        (status = 200, description = "The latest snapshot (an SQLite file)", content_type = "application/octet-stream",
         headers(("X-Sequence" = u64, description = "The snapshot's stream sequence"),
                 ("Content-Disposition" = String, description = "attachment; filename=\"<UTC time>_ha_snapshot_<seq>.db\""))),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 404, description = "The node does not replicate (`not_replicating`) or there is no snapshot (`not_found`)", body = super::schema::ErrorBody),
        (status = 500, description = "Reading the snapshot failed (`internal`)", body = super::schema::ErrorBody),
        (status = 503, description = "JetStream did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn latest(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snaps = snapshots(&state)?;
    let (c, chunks) = snaps
        .open_latest()
        .await
        .map_err(|e| api_error(e, "get latest snapshot"))?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    let disposition = format!("attachment; filename=\"{stamp}_ha_snapshot_{}.db\"", c.seq);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, c.size.to_string()),
            (
                header::HeaderName::from_static("x-sequence"),
                c.seq.to_string(),
            ),
        ],
        // A chunk that does not come ends the body early with an error (see `chunks`): the
        // client gets fewer bytes than `Content-Length`, which every HTTP client reports.
        Body::from_stream(chunks),
    )
        .into_response())
}
