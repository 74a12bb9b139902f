//! Owns the wiring of one node: what starts in which order and how it stops, in reverse.
//! Must not contain feature logic; each step calls into the module that owns it.
//! Invariant: the database is closed (WAL checkpointed) only after the front ends have stopped
//! and their in-flight requests have finished or timed out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PgPort};
use crate::exec::{ExecConfig, Executor};
use crate::http;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open the database: {0}")]
    Db(#[from] crate::exec::ExecError),
    #[error("postgres front end: {0}")]
    Pg(#[from] crate::pgwire::PgError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started node: where it listens, and the handle that stops it.
pub struct RunningNode {
    pub http_addr: SocketAddr,
    /// `None` when `--pg-port 0` disabled the PostgreSQL front end.
    pub pg_addr: Option<SocketAddr>,
    pg: Option<crate::pgwire::PgServer>,
    pub executor: Executor,
    shutdown: CancellationToken,
    http: http::HttpServer,
    shutdown_timeout: std::time::Duration,
}

/// Opens the database and starts every front end. Returns once the node serves.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<RunningNode, NodeError> {
    // 1. The database first: nothing can serve without it, and a bad DSN should fail before
    //    any port is taken.
    let executor = Executor::open(ExecConfig {
        target: config.db.clone(),
        read_connections: config.concurrent_queries,
        replication: None,
    })
    .await?;
    tracing::info!(node = %config.name, database = %config.db, "database open");

    // 2. HTTP: probes answer as soon as the database is there.
    let addr = SocketAddr::new(config.listen_addr, config.http_port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Listen { addr, source })?;
    let state = http::AppState {
        exec: executor.clone(),
        metrics: Arc::new(Metrics::new()),
        node_name: config.name.clone().into(),
        started: Instant::now(),
        token: config.token.clone(),
        shutdown: shutdown.clone(),
    };
    let http = http::start(listener, state, config.max_body_size)
        .map_err(|source| NodeError::Listen { addr, source })?;
    tracing::info!(http_addr = %http.local_addr, "http listening");

    // 3. PostgreSQL wire, beside HTTP, on the same executor.
    let pg_port = match config.pg_port {
        PgPort::Disabled => None,
        PgPort::Ephemeral => Some(0),
        PgPort::Port(p) => Some(p),
    };
    let pg = match pg_port {
        None => None,
        Some(port) => {
            let addr = SocketAddr::new(config.listen_addr, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Listen { addr, source })?;
            let server = crate::pgwire::start(
                listener,
                executor.clone(),
                config.pg.clone(),
                shutdown.clone(),
            )?;
            tracing::info!(pg_addr = %server.local_addr, auth = ?config.pg.auth, tls = config.pg.cert.is_some(), "pg listening");
            Some(server)
        }
    };

    Ok(RunningNode {
        http_addr: http.local_addr,
        pg_addr: pg.as_ref().map(|p| p.local_addr),
        pg,
        executor,
        shutdown,
        http,
        shutdown_timeout: config.shutdown_timeout,
    })
}

impl RunningNode {
    /// Waits for the shutdown signal, then stops in reverse order of start.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down");
        // 1. Front ends stop accepting and drain, within the bound.
        match tokio::time::timeout(self.shutdown_timeout, self.http.task).await {
            Ok(_) => tracing::info!("http stopped"),
            Err(_) => tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "in-flight http requests did not finish in time"
            ),
        }
        if let Some(pg) = self.pg {
            match tokio::time::timeout(self.shutdown_timeout, pg.task).await {
                Ok(_) => tracing::info!("pg stopped"),
                Err(_) => tracing::warn!("pg connections did not finish in time"),
            }
        }
        // 2. The writer finishes its queue, checkpoints the WAL and closes.
        self.executor.close().await;
        tracing::info!("database closed");
    }
}

/// Runs a node until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NodeError> {
    let node = start(config, shutdown).await?;
    node.wait().await;
    Ok(())
}
