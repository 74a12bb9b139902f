//! Owns the probe and introspection routes: `/healthz`, `/readyz`, `/status`, `/metrics`.
//! Must not change anything; these only read state.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// The process is alive and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "The process serves HTTP")))]
pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// The node can take reads and writes now.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready for reads and writes", body = super::schema::Readiness),
        (status = 503, description = "Not ready (shutting down, database broken, catching up, …): see `reasons`", body = super::schema::Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    if state.shutdown.is_cancelled() {
        reasons.push("shutting down".to_string());
    }
    if !state.exec.is_healthy() {
        reasons.push("database reported a fatal error".to_string());
    }
    if let Some(r) = &state.replication {
        reasons.extend(r.status.not_ready_reasons());
    }
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": reasons.is_empty(), "reasons": reasons })),
    )
}

#[utoipa::path(get, path = "/status", tag = "probes",
    responses(
        (status = 200, description = "Node name, version, database, writer queue, read-your-writes position (`read_your_writes.applied_seq`, `waiting`), replication and backup state", body = Object),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn status(State(state): State<AppState>) -> impl IntoResponse {
    let target = state.exec.target();
    let size = state.exec.size_bytes().await.ok();
    Json(json!({
        "node": &*state.node_name,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("HA_COMMIT"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "ready": state.exec.is_healthy()
            && !state.shutdown.is_cancelled()
            && state.replication.as_ref().is_none_or(|r| r.status.not_ready_reasons().is_empty()),
        "database": {
            "file": target.file_name(),
            "location": target.to_string(),
            "memory": target.is_memory(),
            "dsn": target.dsn,
            "size_bytes": size,
        },
        "write_queue": state.exec.write_queue_len(),
        // Read-your-writes: the applied position reads wait on, and how many wait now.
        "read_your_writes": {
            "applied_seq": state.exec.applied_position().0,
            "waiting": state.exec.waiting_for_seq(),
        },
        "replication": state.replication.as_ref().map(|r| r.status_json()),
        "backup": state.backup.as_ref().map(|b| b.json()),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(size) = state.exec.size_bytes().await {
        state.metrics.db_size.set(size as i64);
    }
    state
        .metrics
        .write_queue
        .set(state.exec.write_queue_len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
