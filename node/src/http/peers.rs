//! Owns `/cluster/peers`: the JetStream cluster's members (`GET`) and removing a departed one
//! (`DELETE /cluster/peers/{server_name}[?force=true]`), for scale-down by the operator.
//! Must not talk to NATS itself: `nats::peers` and `ReplicationHandle::remove_peer` do.
//! Invariant: removal is idempotent — an unknown or already-removed peer answers 200 with
//! `removed: false` and a reason, never 5xx; only "cannot reach JetStream" is 503.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};
use crate::nats::peers::{PeerAdmin, PeerError};
use crate::replication::{RemovePeerError, ReplicationHandle};

fn handle(state: &AppState) -> Result<&ReplicationHandle, ApiError> {
    state.replication.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_replicating",
            "this node has no NATS (--nats-port 0 and no --replication-url), so no cluster peers",
        )
    })
}

fn admin(state: &AppState) -> Result<&PeerAdmin, ApiError> {
    handle(state)?
        .peers
        .as_deref()
        .ok_or_else(|| no_system_account(RemovePeerError::NoSystemAccount))
}

fn no_system_account(e: RemovePeerError) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "no_system_account", e.to_string())
}

fn peer_error(e: PeerError) -> ApiError {
    let (status, code) = match &e {
        PeerError::BadName(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        PeerError::IsSelf(_) => (StatusCode::CONFLICT, "peer_is_self"),
        PeerError::Online(_) => (StatusCode::CONFLICT, "peer_online"),
        PeerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        PeerError::Refused(_) => (StatusCode::BAD_GATEWAY, "jetstream_refused"),
    };
    ApiError::new(status, code, e.to_string())
}

/// `GET /cluster/peers`.
#[utoipa::path(get, path = "/cluster/peers", operation_id = "list_peers", tag = "cluster",
    responses(
        (status = 200, description = "The JetStream meta group as its leader sees it", body = super::schema::PeerList),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody), (status = 404, description = "The node does not replicate (`not_replicating`)", body = super::schema::ErrorBody),
        (status = 409, description = "No system account (`no_system_account`): --nats-config or no embedded server", body = super::schema::ErrorBody),
        (status = 503, description = "The system connection or the meta leader did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    let m = admin.list().await.map_err(peer_error)?;
    Ok(Json(json!({
        "cluster": m.cluster,
        "leader": m.leader,
        "self": admin.server_name,
        "peers": m.peers,
    }))
    .into_response())
}

#[derive(serde::Deserialize)]
pub struct RemoveParams {
    #[serde(default)]
    force: bool,
}

/// `DELETE /cluster/peers/{server_name}`.
#[utoipa::path(delete, path = "/cluster/peers/{name}", operation_id = "remove_peer", tag = "cluster",
    params(
        ("name" = String, Path, description = "The departed server's name (its node's --name)"),
        ("force" = Option<bool>, Query, description = "Remove it even while the meta leader still hears from it"),
    ),
    responses(
        (status = 200, description = "Removed, or not a member (idempotent: `removed` and `reason` say which)", body = super::schema::PeerRemoval),
        (status = 400, description = "A name with spaces or control characters (`bad_request`)", body = super::schema::ErrorBody),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody), (status = 404, description = "The node does not replicate (`not_replicating`)", body = super::schema::ErrorBody),
        (status = 409, description = "The node's own server (`peer_is_self`), a server still online (`peer_online`), or no system account (`no_system_account`)", body = super::schema::ErrorBody),
        (status = 502, description = "JetStream refused the removal (`jetstream_refused`)", body = super::schema::ErrorBody),
        (status = 503, description = "The system connection or the meta leader did not answer (`unavailable`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<RemoveParams>,
) -> Result<Response, ApiError> {
    match handle(&state)?.remove_peer(&name, params.force).await {
        Ok(body) => Ok(Json(body).into_response()),
        Err(RemovePeerError::Peer(e)) => Err(peer_error(e)),
        Err(e @ RemovePeerError::NoSystemAccount) => Err(no_system_account(e)),
        Err(e @ RemovePeerError::Consumer(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
    }
}
