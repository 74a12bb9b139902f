//! Owns the arguments of `CREATE VIRTUAL TABLE temp.ha USING HA(key=value, …)`: the original's
//! keys (reference §9), quotes stripped, `$NAME` / `${NAME}` expanded from the environment.
//! Must not connect to anything: `follow` does, with what this produces.
//! Invariant: an unknown key or a malformed value is an error naming it and listing the valid
//! keys; nothing is silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use crate::SyncError;
use crate::logger::Logger;

/// The keys `HA(...)` accepts.
pub(crate) const KEYS: &[&str] = &[
    "servers",
    "client_name",
    "timeout",
    "username",
    "password",
    "token",
    "cert_file",
    "cert_key_file",
    "ca_file",
    "logger",
];

/// Where and how to reach NATS, and where to log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Options {
    /// Comma-separated server URLs; `tls://` requires TLS.
    pub servers: String,
    pub client_name: Option<String>,
    /// Connect and JetStream request timeout (`timeout=` in milliseconds).
    pub timeout: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub cert_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub logger: Logger,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            servers: "nats://127.0.0.1:4222".into(),
            client_name: None,
            timeout: Duration::from_secs(5),
            username: None,
            password: None,
            token: None,
            cert_file: None,
            cert_key_file: None,
            ca_file: None,
            logger: Logger::Stderr,
        }
    }
}

impl Options {
    /// Parses the module arguments as SQLite hands them over (each one the text between two
    /// commas, e.g. ` servers='nats://a:4222'`), expanding variables with `env`.
    pub(crate) fn parse(
        args: &[&[u8]],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Options, SyncError> {
        let mut o = Options::default();
        for raw in args {
            let arg = std::str::from_utf8(raw)
                .map_err(|_| SyncError::Options("HA(...): an argument is not UTF-8".into()))?
                .trim();
            if arg.is_empty() {
                continue;
            }
            let Some((key, value)) = arg.split_once('=') else {
                return Err(SyncError::Options(format!(
                    "HA(...): expected key=value, got {arg:?}; keys: {}",
                    KEYS.join(", ")
                )));
            };
            let key = key.trim().to_ascii_lowercase();
            let value = expand(unquote(value.trim()), &env);
            let text = || (!value.is_empty()).then(|| value.clone());
            match key.as_str() {
                "servers" => {
                    if value.is_empty() {
                        return Err(SyncError::Options("HA(...): servers is empty".into()));
                    }
                    o.servers = value.clone();
                }
                "client_name" => o.client_name = text(),
                "timeout" => {
                    let ms: u64 = value.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        SyncError::Options(format!(
                            "HA(...): timeout must be a positive number of milliseconds, got {value:?}"
                        ))
                    })?;
                    o.timeout = Duration::from_millis(ms);
                }
                "username" => o.username = text(),
                "password" => o.password = text(),
                "token" => o.token = text(),
                "cert_file" => o.cert_file = text().map(PathBuf::from),
                "cert_key_file" => o.cert_key_file = text().map(PathBuf::from),
                "ca_file" => o.ca_file = text().map(PathBuf::from),
                "logger" => o.logger = Logger::parse(&value)?,
                other => {
                    return Err(SyncError::Options(format!(
                        "HA(...): unknown option {other:?}; keys: {}",
                        KEYS.join(", ")
                    )));
                }
            }
        }
        if o.cert_file.is_some() != o.cert_key_file.is_some() {
            return Err(SyncError::Options(
                "HA(...): cert_file and cert_key_file go together".into(),
            ));
        }
        if o.password.is_some() && o.username.is_none() {
            return Err(SyncError::Options(
                "HA(...): password without username".into(),
            ));
        }
        Ok(o)
    }

    /// Whether the servers ask for TLS (`tls://`) or TLS material was given.
    pub(crate) fn wants_tls(&self) -> bool {
        self.servers
            .split(',')
            .any(|s| s.trim().starts_with("tls://"))
            || self.cert_file.is_some()
            || self.ca_file.is_some()
    }
}

/// Strips one pair of matching single or double quotes; a doubled quote inside stands for one.
fn unquote(v: &str) -> String {
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            let doubled: String = [q, q].iter().collect();
            return v[1..v.len() - 1].replace(&doubled, &q.to_string());
        }
    }
    v.to_string()
}

/// Go's `os.ExpandEnv`: `$NAME` and `${NAME}` become the variable's value, empty when unset.
fn expand(v: String, env: &impl Fn(&str) -> Option<String>) -> String {
    if !v.contains('$') {
        return v;
    }
    let mut out = String::with_capacity(v.len());
    let mut rest = v.as_str();
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(braced) = after.strip_prefix('{')
            && let Some(end) = braced.find('}')
        {
            out.push_str(&env(&braced[..end]).unwrap_or_default());
            rest = &braced[end + 1..];
            continue;
        }
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len == 0 {
            out.push('$');
        } else {
            out.push_str(&env(&after[..len]).unwrap_or_default());
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NATS_PASS" => Some("s3cret".into()),
            "HOST" => Some("db1".into()),
            _ => None,
        }
    }

    fn parse(args: &[&str]) -> Result<Options, SyncError> {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Options::parse(&raw, env)
    }

    #[test]
    fn reads_the_original_keys_strips_quotes_and_expands_variables() {
        let o = parse(&[
            " servers='nats://$HOST:4222,nats://b:4222'",
            "timeout=2500",
            "username=\"app\"",
            " password=$NATS_PASS",
            "client_name=x${UNSET}y",
            "logger='file:/tmp/ha-sync.log'",
        ])
        .unwrap();
        assert_eq!(o.servers, "nats://db1:4222,nats://b:4222");
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.username.as_deref(), Some("app"));
        assert_eq!(o.password.as_deref(), Some("s3cret"));
        assert_eq!(o.client_name.as_deref(), Some("xy"));
        assert_eq!(o.logger, Logger::File("/tmp/ha-sync.log".into()));
        assert!(!o.wants_tls());
        assert_eq!(parse(&[]).unwrap(), Options::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let e = parse(&["server='nats://x'"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown option \"server\"") && e.contains("servers"),
            "{e}"
        );
        let e = parse(&["timeout=soon"]).unwrap_err().to_string();
        assert!(e.contains("timeout"), "{e}");
        assert!(parse(&["nats://x"]).is_err());
        assert!(parse(&["cert_file=a.pem"]).is_err());
        assert!(parse(&["password=x"]).is_err());
        assert!(parse(&["logger=syslog"]).is_err());
        assert!(parse(&["servers=tls://h:4222"]).unwrap().wants_tls());
    }

    #[test]
    fn expansion_keeps_lone_dollars_and_doubled_quotes() {
        assert_eq!(expand("a$".into(), &env), "a$");
        assert_eq!(expand("$-x".into(), &env), "$-x");
        assert_eq!(unquote("'it''s'"), "it's");
        assert_eq!(unquote("'"), "'");
    }
}
