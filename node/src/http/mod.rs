//! Owns the HTTP front end (axum): the original's API (`POST /`, `GET /` backup) plus
//! `/healthz`, `/readyz`, `/status` and `/metrics`.
//! Must not touch SQLite: every request goes through `exec::Executor`.
//! Invariant: every answer, errors included, is JSON with a stable error code (except the
//! backup stream and the Prometheus text); unknown routes are 404, never a catch-all.
//! See `json` for the body shapes and `error` for statuses.

mod backup;
mod checksum;
pub mod consistency;
mod error;
pub mod json;
pub mod openapi;
mod peers;
mod replications;
pub mod routes;
pub mod schema;
mod snapshot;
mod status;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::config::Secret;
use crate::exec::Executor;
use crate::metrics::Metrics;

/// What every handler may read: a handle to `Shared`, cloned for every request (and every
/// middleware layer) at the cost of one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The node's parts the HTTP API serves from.
pub struct Shared {
    pub exec: Executor,
    /// Present when the node replicates.
    pub replication: Option<crate::replication::ReplicationHandle>,
    pub metrics: Arc<Metrics>,
    pub node_name: Arc<str>,
    pub started: Instant,
    pub token: Option<Secret>,
    /// Cancelled when the node starts shutting down; `/readyz` turns 503.
    pub shutdown: CancellationToken,
    /// Backup downloads (`GET /`) running at once are capped (`--max-concurrent-backups`).
    pub backups: Arc<tokio::sync::Semaphore>,
    /// Off-cluster backups (`--backup-url`), for `/status` `backup`.
    pub backup: Option<Arc<crate::backup::BackupStatus>>,
}

pub struct HttpServer {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// What one HTTP client may hold: how long it may take to send a request's headers (and wait
/// idle between requests), and how many connections all clients may have open.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: std::time::Duration,
    pub max_connections: usize,
}

/// Serves on `listener` until `shutdown` is cancelled, then lets in-flight requests finish.
pub fn start(
    listener: TcpListener,
    state: AppState,
    max_body: usize,
    limits: ConnLimits,
) -> std::io::Result<HttpServer> {
    let local_addr = listener.local_addr()?;
    let shutdown = state.shutdown.clone();
    let app = router(state, max_body, limits.header_timeout);
    let task = tokio::spawn(serve(listener, app, shutdown, limits));
    Ok(HttpServer { local_addr, task })
}

/// The accept loop: at most `max_connections` connections (more wait in the kernel's accept
/// queue), each served by hyper with a header-read timeout, so that a slow or silent client
/// (slowloris) holds its connection for `header_timeout` at most.
async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: ConnLimits,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let socket = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// The routes with their limits: bodies up to `max_body` bytes, and a body that stops arriving
/// for `body_idle` (a client that sends its headers, then its body a byte at a time or never) is
/// answered 408 and its connection freed.
pub fn router(state: AppState, max_body: usize, body_idle: std::time::Duration) -> Router {
    let protected = routes::router(true)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    routes::router(false)
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(body_idle))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Whether reading the body failed because it stopped arriving (`RequestBodyTimeoutLayer`).
fn body_timed_out(e: &axum::extract::rejection::BytesRejection) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Sets the request's cancel flag when dropped: axum drops the handler's future when the client
/// goes away, and the statement running for it stops (on the reader or the writer).
struct CancelOnDrop(Option<Arc<std::sync::atomic::AtomicBool>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The `timeout=` query parameter: a duration with a unit (`500ms`, `2s`) or milliseconds.
fn requested_timeout(query: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    let Some(value) = consistency::query_param(query, "timeout") else {
        return Ok(None);
    };
    consistency::parse_duration("timeout", value).map(|d| Some(d).filter(|d| !d.is_zero()))
}

/// `POST /`: one statement or an array of statements run as one transaction, within the
/// request's `timeout=` (at most `--query-timeout`), after the node has applied the request's
/// `min_seq` if it asked for one; a write's answer carries its commit's sequence (`X-Ha-Seq`).
#[utoipa::path(
    post,
    path = "/",
    tag = "sql",
    request_body = schema::QueryRequest,
    params(
        ("timeout" = Option<String>, Query, description = "Bounds the request (`500ms`, `2s`, or milliseconds); at most `--query-timeout`"),
        ("min_seq" = Option<u64>, Query, description = "Read-your-writes: first wait until this node has applied this stream sequence (as `X-Ha-Min-Seq`)"),
        ("min_seq_timeout" = Option<String>, Query, description = "How long to wait for `min_seq` (default 5s; as `X-Ha-Min-Seq-Timeout-Ms`)"),
        ("X-Ha-Min-Seq" = Option<u64>, Header, description = "Read-your-writes: first wait until this node has applied this stream sequence (a write's `X-Ha-Seq`, from any node)"),
        ("X-Ha-Min-Seq-Timeout-Ms" = Option<u64>, Header, description = "How long to wait for `X-Ha-Min-Seq`, in milliseconds (default 5000, at most `--query-timeout`)"),
    ),
    responses(
        (status = 200, description = "The results (a bare result for one statement, `results` for an array)", body = schema::QueryResponse,
         headers(("X-Ha-Seq" = u64, description = "The commit's stream sequence, when the request wrote on a replicated node: send it as `X-Ha-Min-Seq` to read this write on any node"))),
        (status = 400, description = "Malformed body, several statements in one `sql`, parameter mismatch (`bad_request`), SQL that does not compile (`invalid_sql`), transaction control (`unsupported`), a malformed `min_seq`", body = schema::ErrorBody),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = schema::ErrorBody),
        (status = 403, description = "SQL that would leave the database or change its settings (`forbidden`)", body = schema::ErrorBody),
        (status = 408, description = "The body stopped arriving for `--http-header-timeout` (`request_timeout`)", body = schema::ErrorBody),
        (status = 409, description = "A constraint refused the change (`constraint_violation`), or a schema change lost the race to the log (`serialization_failure`)", body = schema::ErrorBody),
        (status = 413, description = "Body over `--max-body-size` (`payload_too_large`) or results over `--max-result-bytes` (`result_too_large`)", body = schema::ErrorBody),
        (status = 500, description = "A bug, a broken database, or the interceptor script failed (`internal`, `interceptor_failed`)", body = schema::ErrorBody),
        (status = 503, description = "Busy, aborted for a reason outside the request, or shutting down (`unavailable`); retry", body = schema::ErrorBody),
        (status = 504, description = "Past `timeout=` or `--query-timeout` (`timeout`), or the node did not apply `min_seq` in time (`seq_not_reached`, the message names the sequence reached)", body = schema::ErrorBody),
        (status = 507, description = "The disk is full (`storage_full`)", body = schema::ErrorBody),
    ),
    security((), ("token" = [])),
)]
async fn query(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(raw_query): axum::extract::RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than --max-body-size",
            )
            .into_response();
        }
        Err(e) if body_timed_out(&e) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body stopped arriving (--http-header-timeout)",
            )
            .into_response();
        }
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    let request = match json::parse_request(&body) {
        Ok(r) => r,
        Err(m) => return ApiError::bad_request(m).into_response(),
    };
    let timeout = match requested_timeout(raw_query.as_deref()) {
        Ok(t) => t,
        Err(m) => return ApiError::bad_request(m).into_response(),
    };
    let min_seq =
        match consistency::min_seq(&headers, raw_query.as_deref(), state.exec.query_timeout()) {
            Ok(m) => m,
            Err(m) => return ApiError::bad_request(m).into_response(),
        };
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let limits = state.exec.limits(timeout, Some(cancel.clone()));
    let mut on_drop = CancelOnDrop(Some(cancel));
    let result = match min_seq {
        Some(m) => match state.exec.wait_applied(m.seq, m.wait).await {
            Ok(_) => state.exec.execute_with(request.stmts, limits).await,
            Err(e) => Err(e),
        },
        None => state.exec.execute_with(request.stmts, limits).await,
    };
    // Answered: nothing to cancel any more.
    on_drop.0 = None;
    match result {
        Ok(executed) => {
            let body =
                json::encode_response(&executed.results, request.is_array, executed.commit_seq);
            let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            if let Some(seq) = executed.commit_seq {
                resp.headers_mut()
                    .insert(consistency::SEQ_HEADER, header::HeaderValue::from(seq.0));
            }
            resp
        }
        Err(e) => {
            state
                .metrics
                .exec_errors
                .with_label_values(&[e.code().as_str()])
                .inc();
            ApiError::from(e).into_response()
        }
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// `Authorization: Bearer <token>` when `--token` is set.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.expose().as_bytes())) {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong token: send Authorization: Bearer <token>",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    next.run(req).await
}

/// Compares the SHA-256 digests of both in constant time (`subtle`): the time taken says
/// nothing about where they differ, nor about the token's length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let (da, db) = (
        ring::digest::digest(&ring::digest::SHA256, a),
        ring::digest::digest(&ring::digest::SHA256, b),
    );
    da.as_ref().ct_eq(db.as_ref()).into()
}

/// A method as a metrics label, from a fixed set: a client cannot add label values (and so
/// series) by inventing methods.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Counts and times every request by route template (one "unmatched" label for every path
/// without a route) and method.
async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &state.metrics;
    m.http_duration
        .with_label_values(&[route.as_str(), method])
        .observe(start.elapsed().as_secs_f64());
    m.http_requests
        .with_label_values(&[route.as_str(), method, resp.status().as_str()])
        .inc();
    resp
}
