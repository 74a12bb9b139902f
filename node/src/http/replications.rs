//! Owns `/replications[/{name}]`: the stream's consumers as JetStream reports them (the
//! original's shapes: `{"replications": [...]}` / `{"replications": {...}}`), and deleting one.
//! Must not talk to NATS itself: `replication::ReplicationHandle` does.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::replication::{ReplError, ReplicationHandle};

fn handle(state: &AppState) -> Result<&ReplicationHandle, ApiError> {
    state.replication.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_replicating",
            "subscriber not configured: this node has no NATS (--nats-port 0 and no --replication-url)",
        )
    })
}

fn api_error(e: ReplError) -> ApiError {
    match e {
        ReplError::NotFound(n) => {
            ApiError::not_found(format!("no replication consumer named {n:?}"))
        }
        other => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            other.to_string(),
        ),
    }
}

#[utoipa::path(get, path = "/replications", operation_id = "list_replications", tag = "replication",
    responses(
        (status = 200, description = "The stream's consumers as JetStream reports them", body = super::schema::ReplicationList),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody), (status = 404, description = "The node does not replicate (`not_replicating`)", body = super::schema::ErrorBody),
        (status = 503, description = "JetStream did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let j = handle(&state)?.list_consumers().await.map_err(api_error)?;
    Ok(Json(j).into_response())
}

#[utoipa::path(get, path = "/replications/{name}", operation_id = "show_replication", tag = "replication",
    params(("name" = String, Path, description = "The durable consumer's name")),
    responses(
        (status = 200, description = "One consumer as JetStream reports it", body = super::schema::ReplicationInfo),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 404, description = "The node does not replicate (`not_replicating`) or there is no such consumer (`not_found`)", body = super::schema::ErrorBody),
        (status = 503, description = "JetStream did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let j = handle(&state)?
        .consumer_info(&name)
        .await
        .map_err(api_error)?;
    Ok(Json(j).into_response())
}

#[utoipa::path(delete, path = "/replications/{name}", operation_id = "delete_replication", tag = "replication",
    params(("name" = String, Path, description = "The durable consumer's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 404, description = "The node does not replicate (`not_replicating`) or there is no such consumer (`not_found`)", body = super::schema::ErrorBody),
        (status = 503, description = "JetStream did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    handle(&state)?
        .delete_consumer(&name)
        .await
        .map_err(api_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
