//! Owns the list of every HTTP route (`ROUTES`): method, path, whether it needs the token, and
//! its handler. The router is built from this table and nothing else, so the table is the
//! truth about what the node serves; the `openapi` test checks each entry is in
//! `/openapi.json`.
//! Must not hold handler logic: each entry only names a handler of a sibling module.
//! Invariant: one entry per (method, path); paths use axum's `{param}` syntax, which is also
//! OpenAPI's.

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{AppState, backup, checksum, openapi, peers, replications, snapshot, status, streams};

/// One route of the node.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// Needs `Authorization: Bearer <token>` when `--token` is set.
    pub protected: bool,
    handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Route {
    fn method_router(&self) -> MethodRouter<AppState> {
        let method = Method::from_bytes(self.method.as_bytes()).expect("a method of ROUTES");
        let filter = MethodFilter::try_from(method).expect("a method axum routes");
        (self.handler)(filter)
    }
}

/// Every route the node serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/",
        protected: true,
        handler: |f| on(f, super::query),
    },
    Route {
        method: "GET",
        path: "/",
        protected: true,
        handler: |f| on(f, backup::download),
    },
    Route {
        method: "POST",
        path: "/snapshot",
        protected: true,
        handler: |f| on(f, snapshot::take),
    },
    Route {
        method: "GET",
        path: "/snapshot",
        protected: true,
        handler: |f| on(f, snapshot::latest),
    },
    Route {
        method: "GET",
        path: "/status",
        protected: true,
        handler: |f| on(f, status::status),
    },
    Route {
        method: "GET",
        path: "/checksum",
        protected: true,
        handler: |f| on(f, checksum::checksum),
    },
    Route {
        method: "GET",
        path: "/metrics",
        protected: true,
        handler: |f| on(f, status::metrics),
    },
    Route {
        method: "GET",
        path: "/replications",
        protected: true,
        handler: |f| on(f, replications::list),
    },
    Route {
        method: "GET",
        path: "/replications/{name}",
        protected: true,
        handler: |f| on(f, replications::show),
    },
    Route {
        method: "DELETE",
        path: "/replications/{name}",
        protected: true,
        handler: |f| on(f, replications::remove),
    },
    Route {
        method: "GET",
        path: "/cluster/peers",
        protected: true,
        handler: |f| on(f, peers::list),
    },
    Route {
        method: "DELETE",
        path: "/cluster/peers/{name}",
        protected: true,
        handler: |f| on(f, peers::remove),
    },
    Route {
        method: "GET",
        path: "/cluster/streams",
        protected: true,
        handler: |f| on(f, streams::list),
    },
    Route {
        method: "GET",
        path: "/healthz",
        protected: false,
        handler: |f| on(f, status::healthz),
    },
    Route {
        method: "GET",
        path: "/readyz",
        protected: false,
        handler: |f| on(f, status::readyz),
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        protected: false,
        handler: |f| on(f, openapi::openapi_json),
    },
];

/// The routes that need the token (`protected`) or those that do not, as one router.
pub fn router(protected: bool) -> Router<AppState> {
    ROUTES
        .iter()
        .filter(|r| r.protected == protected)
        .fold(Router::new(), |router, r| {
            router.route(r.path, r.method_router())
        })
}
