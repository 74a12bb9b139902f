//! Owns the node's configuration: flags, `HA_*` environment variables and a config file, with
//! precedence flags > environment > file > default, validated into one `Config`.
//! Must not start anything; `node` does that with the `Config` it gets.
//! Invariant: every accepted setting has an effect; a bad value stops start-up with a message.
//! The table of settings is `args::Args` and docs/configuration.md.

mod args;
mod backup;
mod file;
mod nats;
mod pg;
#[cfg(test)]
mod tests;
mod validate;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};

use crate::db::{DbTarget, DsnError};
use args::Args;

pub use backup::{BackupConfig, RestoreConfig, RestoreTarget, StorageConfig, check_url};
pub use file::FileValue;
use nats::parse_nats_sync;
pub use nats::{NatsClientAuth, NatsSync, ServerName, TlsFiles, is_loopback_host, redact};
pub use pg::{AuthMethod, PgConfig};

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

impl Config {
    /// Whether this node runs a nats-server of its own (`--nats-port` other than 0, or a
    /// `--nats-config` file).
    pub fn runs_nats_server(&self) -> bool {
        self.nats.port != 0 || self.nats.config_file.is_some()
    }

    /// Whether commits go to a change log (an embedded or an external NATS); a standalone node
    /// (`--nats-port 0` and no `--replication-url`) has none.
    pub fn has_change_log(&self) -> bool {
        self.runs_nats_server() || !self.replication.urls.is_empty()
    }

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
