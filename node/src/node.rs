//! Owns the wiring of one node: what starts in which order and how it stops, in reverse.
//! Must not contain feature logic; each step calls into the module that owns it.
//! Invariant: the database is closed (WAL checkpointed) only after the front ends have stopped
//! and their in-flight requests have finished or timed out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, PgPort};
use crate::exec::{ExecConfig, Executor};
use crate::http;
use crate::interceptor::Interceptor;
use crate::metrics::Metrics;
use crate::nats::server::{NatsServer, NatsServerConfig};
use crate::replication::{self, ReplicationHandle};
use crate::snapshot;

/// Where the embedded nats-server keeps JetStream data when `--nats-store-dir` is not given:
/// beside the database file (or the working directory for memory databases), per node name.
fn default_store_dir(config: &Config) -> std::path::PathBuf {
    let base = match &config.db.location {
        crate::db::Location::File(p) => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.to_path_buf())
            .unwrap_or_else(|| ".".into()),
        crate::db::Location::Memory { .. } => ".".into(),
    };
    base.join(format!(
        "nats-{}",
        crate::changeset::names::normalize_identifier(&config.name)
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplError),
    #[error(transparent)]
    NatsServer(#[from] crate::nats::server::NatsServerError),
    #[error("cannot open the database: {0}")]
    Db(#[from] crate::exec::ExecError),
    #[error(transparent)]
    Interceptor(#[from] crate::interceptor::LoadError),
    #[error(transparent)]
    Extension(#[from] crate::db::extensions::ExtensionError),
    #[error("--restore-from: {0}")]
    Restore(#[from] crate::backup::BackupError),
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
    /// Replication, when the node has NATS (embedded or external).
    pub replication: Option<ReplicationHandle>,
    consumer: Option<tokio::task::JoinHandle<()>>,
    /// Background work beside the consumer (periodic snapshots, the start-up sweep); each ends
    /// on the shutdown token and is awaited on shutdown.
    background: TaskTracker,
    nats_client: Option<async_nats::Client>,
    nats_server: Option<NatsServer>,
    shutdown: CancellationToken,
    http: http::HttpServer,
    shutdown_timeout: std::time::Duration,
}

/// Checks what the configuration points at beyond its own values, as start-up does and
/// `--check-config` does too: the `--extensions` load and the `--interceptor` script compiles.
/// Returns the loaded script.
pub fn preflight(
    config: &Config,
    counters: crate::metrics::InterceptorCounters,
) -> Result<Option<Interceptor>, NodeError> {
    crate::db::extensions::check(&config.db.extensions)?;
    Ok(match &config.interceptor {
        Some(path) => Some(Interceptor::load(path, counters)?),
        None => None,
    })
}

/// Opens the database and starts every front end. Returns once the node serves.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<RunningNode, NodeError> {
    let metrics = Arc::new(Metrics::new());
    // What start-up spawns stops with `shutdown`, and also when start-up fails half-way (the
    // guard cancels it unless start-up gets to the end).
    let tasks = shutdown.child_token();
    let started = tasks.clone().drop_guard();
    // 1. The files the configuration names: a script that does not compile or an extension
    //    that does not load stops start-up before anything else runs.
    let interceptor = preflight(&config, metrics.interceptor.clone())?.map(Arc::new);
    if let Some(i) = &interceptor {
        tracing::info!(script = i.script(), hooks = %i.status_json()["hooks"], "interceptor loaded");
    }
    if !config.db.extensions.is_empty() {
        tracing::info!(extensions = ?config.db.extensions, "SQLite extensions load on every connection");
    }
    // 1b. The ports: one already taken stops start-up before anything is started.
    let http_addr = SocketAddr::new(config.listen_addr, config.http_port);
    let http_listener = TcpListener::bind(http_addr)
        .await
        .map_err(|source| NodeError::Listen {
            addr: http_addr,
            source,
        })?;
    let pg_port = match config.pg_port {
        PgPort::Disabled => None,
        PgPort::Ephemeral => Some(0),
        PgPort::Port(p) => Some(p),
    };
    let pg_listener = match pg_port {
        None => None,
        Some(port) => {
            let addr = SocketAddr::new(config.listen_addr, port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Listen { addr, source })?,
            )
        }
    };
    // 2. NATS: the embedded server (a supervised child) if configured, then the connection.
    //    The connection retries in the background: a node whose NATS is down still starts,
    //    serves reads, refuses writes and says it is not ready.
    let nats_server = match NatsServerConfig::from_config(&config) {
        Some(mut cfg) => {
            if cfg.store_dir.is_none() && cfg.config_file.is_none() {
                cfg.store_dir = Some(default_store_dir(&config));
            }
            Some(NatsServer::start(cfg).await?)
        }
        None => None,
    };
    let connected = if config.has_change_log() {
        Some(
            replication::connect(&config, nats_server.as_ref(), metrics.clone(), interceptor)
                .await?,
        )
    } else {
        tracing::info!("no NATS configured (--nats-port 0, no --replication-url): standalone node");
        if interceptor.is_some() {
            tracing::warn!(
                "--interceptor has no effect on a standalone node: nothing is published or applied"
            );
        }
        None
    };

    // 3. The database's settings (it opens with the sink that publishes its commits). A
    //    replicated node's log is the stream: a commit lost to a power cut is applied again
    //    from it (its identity and the applied sequence are lost with it), so the WAL need not
    //    be synced at every commit unless the DSN asks for it (`_sync`).
    let mut target = config.db.clone();
    if connected.is_some() {
        target.default_synchronous("NORMAL");
    }
    // 4. `--from-latest-snapshot`: install the newest usable snapshot before the database is
    //    opened (never one older than the local data); the consumer then resumes after it.
    let mut _snapshot_file = None;
    if config.snapshots.restore_at_start {
        match &connected {
            Some(c) => match snapshot::restore_at_start(&c.handle.snapshots, &mut target).await {
                Ok(snapshot::StartRestore::Memory { file, .. }) => _snapshot_file = Some(file),
                Ok(_) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "--from-latest-snapshot: COULD NOT RESTORE; starting normally from the local data and the stream"
                ),
            },
            None => tracing::warn!(
                "--from-latest-snapshot needs NATS (snapshots live in its object store); ignored"
            ),
        }
    }
    // 5. Open the database. With `--restore-from`, an empty node of a new cluster first builds
    //    it from the off-cluster backup (a failure stops start-up rather than serve nothing).
    if let Some(rc) = &config.restore {
        crate::backup::bootstrap::at_start(rc, &target, connected.as_ref().map(|c| &c.handle))
            .await?;
    }
    let executor = Executor::open(ExecConfig {
        target,
        read_connections: config.concurrent_queries,
        replication: connected.as_ref().map(|c| c.hooks.clone()),
        query_timeout: config.limits.query_timeout,
        max_result_bytes: config.limits.max_result_bytes,
    })
    .await?;
    drop(_snapshot_file);
    tracing::info!(node = %config.name, database = %config.db, "database open");

    // 6. The consumer applies the stream from where the database says it is.
    let (replication, consumer, nats_client) = match connected {
        Some(c) => {
            let (h, task, client) =
                c.spawn_consumer(executor.clone(), metrics.clone(), tasks.child_token());
            (Some(h), Some(task), Some(client))
        }
        None => (None, None, None),
    };
    // 7. Periodic snapshots, in the background: never in the way of start-up.
    let background = TaskTracker::new();
    if let Some(r) = &replication
        && !config.snapshots.interval.is_zero()
    {
        background.spawn(snapshot::take_every(
            r.snapshots.clone(),
            executor.clone(),
            config.snapshots.interval,
            tasks.child_token(),
        ));
        tracing::info!(every = ?config.snapshots.interval, "periodic snapshots on");
    }
    // 8. What an upload killed mid-way left in the snapshot bucket, once, in the background.
    if let Some(r) = &replication {
        let snaps = r.snapshots.clone();
        let stop = tasks.child_token();
        background.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = snaps.sweep() => if let Err(e) = r {
                    tracing::debug!(error = %e, "sweeping the snapshot bucket at start failed; it is swept again after the next snapshot");
                },
            }
        });
    }

    // Off-cluster backups (`--backup-url`): lease, archive and uploads, in the background too.
    let backup = crate::backup::service::start(
        &config,
        replication.as_ref(),
        &executor,
        &metrics,
        tasks.child_token(),
    );
    background.close();

    // 9. HTTP: probes answer as soon as the database is there.
    let addr = http_addr;
    if config.token.is_none() && !config.listen_addr.is_loopback() {
        tracing::warn!(%addr, "the HTTP API listens beyond this machine without --token: whoever reaches it reads and writes the data");
    }
    let state = http::AppState::new(http::Shared {
        exec: executor.clone(),
        replication: replication.clone(),
        metrics: metrics.clone(),
        node_name: config.name.clone().into(),
        started: Instant::now(),
        token: config.token.clone(),
        shutdown: tasks.clone(),
        backups: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_concurrent_backups,
        )),
        backup,
    });
    let conn_limits = http::ConnLimits {
        header_timeout: config.limits.http_header_timeout,
        max_connections: config.limits.http_max_connections,
    };
    let http = http::start(http_listener, state, config.max_body_size, conn_limits)
        .map_err(|source| NodeError::Listen { addr, source })?;
    tracing::info!(http_addr = %http.local_addr, "http listening");

    // 10. PostgreSQL wire, beside HTTP, on the same executor.
    let pg = match pg_listener {
        None => None,
        Some(listener) => {
            let server =
                crate::pgwire::start(listener, executor.clone(), config.pg.clone(), tasks.clone())?;
            tracing::info!(pg_addr = %server.local_addr, auth = ?config.pg.auth, tls = config.pg.cert.is_some(), "pg listening");
            Some(server)
        }
    };

    started.disarm();
    Ok(RunningNode {
        http_addr: http.local_addr,
        pg_addr: pg.as_ref().map(|p| p.local_addr),
        pg,
        executor,
        replication,
        consumer,
        background,
        nats_client,
        nats_server,
        shutdown,
        http,
        shutdown_timeout: config.shutdown_timeout,
    })
}

impl RunningNode {
    /// Waits for the shutdown signal, then stops in reverse order of start, all within
    /// `--shutdown-timeout`: at three quarters of it, whatever still runs on the database is
    /// interrupted (clients get 57P01 / 503), so the steps after it end in the time left.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        tracing::info!("shutting down");
        let start = tokio::time::Instant::now();
        let hard = start + self.shutdown_timeout;
        let soft = start + self.shutdown_timeout.mul_f64(0.75);
        let exec = self.executor.clone();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep_until(soft).await;
            tracing::warn!("shutdown: interrupting the statements still running");
            exec.stop_all();
        });
        // 1. Front ends stop accepting and drain.
        match tokio::time::timeout_at(hard, self.http.task).await {
            Ok(_) => tracing::info!("http stopped"),
            Err(_) => tracing::warn!(
                timeout = ?self.shutdown_timeout,
                "in-flight http requests did not finish in time"
            ),
        }
        if let Some(pg) = self.pg {
            match tokio::time::timeout_at(hard, pg.task).await {
                Ok(_) => tracing::info!("pg stopped"),
                Err(_) => tracing::warn!("pg connections did not finish in time"),
            }
        }
        // 2. The consumer stops between messages (what it applied is committed); the
        //    background snapshot tasks end too (an upload in flight is abandoned: its chunks
        //    are swept later).
        if let Some(c) = self.consumer {
            let _ = tokio::time::timeout_at(hard, c).await;
        }
        if tokio::time::timeout_at(hard, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("background snapshot work did not stop in time");
        }
        // 3. The writer finishes its queue (interrupted past `soft`), checkpoints the WAL and
        //    closes.
        if tokio::time::timeout_at(hard, self.executor.close())
            .await
            .is_err()
        {
            self.executor.stop_all();
            tracing::warn!(
                "the database did not close in time; its WAL is replayed at the next start"
            );
        } else {
            tracing::info!("database closed");
        }
        stopper.abort();
        // 4. NATS last: queued writes above still needed it to publish.
        let left = || {
            hard.saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(500))
        };
        if let Some(c) = self.nats_client {
            let _ = tokio::time::timeout(left().min(Duration::from_secs(2)), c.drain()).await;
        }
        if let Some(s) = self.nats_server {
            if tokio::time::timeout(left(), s.stop()).await.is_ok() {
                tracing::info!("embedded nats-server stopped");
            } else {
                tracing::warn!("embedded nats-server did not stop in time; it dies with the node");
            }
        }
    }
}

/// Runs a node until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NodeError> {
    let node = start(config, shutdown).await?;
    node.wait().await;
    Ok(())
}
