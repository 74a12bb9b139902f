//! Owns turning parsed `Args` into a `Config`: cross-flag rules, defaults that depend on other
//! flags, and the message for each refused combination.
//! Must not start anything or read files beyond what a flag names.

use std::net::IpAddr;
use std::path::PathBuf;

use super::args::Args;
use super::nats::{NatsSecurityArgs, check_embedded_nats_exposure, nats_security};
use super::{
    Config, ConfigError, LimitFlags, LogConfig, NatsFlags, PgConfig, ReplicationFlags, Secret,
    SnapshotFlags, host_name,
};
use crate::db::DbTarget;

impl Args {
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
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
            server_name: super::nats::server_name(self.nats_server_name)?,
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
        let config = Config {
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
        };
        if config.backup.is_some() && !config.has_change_log() {
            return Err(ConfigError::Invalid(
                "--backup-url needs the change log, and --nats-port 0 without --replication-url turns it off: \
                 keep the embedded NATS (a single node with its own nats-server backs up and restores to any point) \
                 or give --replication-url"
                    .into(),
            ));
        }
        Ok(config)
    }
}
