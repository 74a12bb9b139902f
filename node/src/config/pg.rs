//! Owns the PostgreSQL front end's settings (`--pg-*`), as `config` hands them to `pgwire`.

use std::path::PathBuf;
use std::time::Duration;

use super::Secret;

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
    Password,
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "scram-sha-256" => Ok(AuthMethod::ScramSha256),
            "md5" => Ok(AuthMethod::Md5),
            "password" => Ok(AuthMethod::Password),
            other => Err(format!(
                "unknown auth method {other:?}: use scram-sha-256, md5 or password"
            )),
        }
    }
}

/// The PostgreSQL front end's settings (from `config`).
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub user: String,
    pub password: Secret,
    pub auth: AuthMethod,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub require_tls: bool,
    pub max_connections: usize,
    /// Rolls back a transaction that holds the writer and sends nothing for this long.
    pub idle_in_transaction_timeout: Option<Duration>,
    /// How long a client may take from connecting to being authenticated.
    pub auth_timeout: Duration,
    /// Connections of `max_connections` kept for the configured user once authenticated.
    pub reserved_connections: usize,
}
