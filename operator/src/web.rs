//! Owns the operator's own HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process
//! serves) and `/readyz` (initialised: API server reachable and the CRD installed).
//! Must not expose anything about the clusters beyond metrics; no write routes.
//! Invariant: `/readyz` does not depend on leadership, so standby replicas stay Ready and a
//! leader change never takes the metrics Service down.
//! See `metrics` and `main.rs` (which binds the listener and passes the shutdown signal).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the endpoint reads.
#[derive(Clone)]
pub struct WebState {
    pub metrics: Arc<Metrics>,
    /// Set once the operator checked the API server and the CRD.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<WebState>) -> StatusCode {
    if s.ready.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn probes_and_metrics_answer_over_http() {
        let state = WebState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        state.metrics.reconciliations.inc();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            state.clone(),
            stop.clone().cancelled_owned(),
        ));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(
            get(addr, "/readyz").await.0,
            503,
            "not ready before the CRD check"
        );
        state.ready.store(true, Ordering::Release);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, text) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            text.contains("ha_operator_reconciliations_total 1"),
            "{text}"
        );

        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
