//! Owns the validation of the `--nats-*` security and durability settings: where the embedded
//! server listens, that it is never anonymous beyond loopback, route and client credentials,
//! TLS files, and `--nats-sync`.
//! Must not read files or start anything: paths are checked when the node connects.
//! Invariant: an embedded server reachable from the network (non-loopback `--nats-host`, or
//! clustered) always has client credentials, or the configuration is refused.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, NatsFlags, Secret};

/// A certificate, its key and optionally the CA to verify the other side with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// The node's NATS client credentials besides user/password (which come from `--nats-user` or
/// the URL). Files are read when the node connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsClientAuth {
    pub token: Option<Secret>,
    pub nkey_seed: Option<PathBuf>,
    pub creds: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key, both or neither.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
}

/// When the embedded nats-server syncs JetStream writes to disk (`sync_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsSync {
    /// Before acknowledging each write (the default).
    Always,
    /// Lazily, this often (nats-server's own default is 2 minutes).
    Every(Duration),
}

/// Whether `host` only accepts connections from this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The raw `--nats-*` security flags, for `nats_security`.
pub(super) struct NatsSecurityArgs<'a> {
    pub(super) host: Option<String>,
    /// `--listen-addr` when given explicitly.
    pub(super) listen_addr: Option<IpAddr>,
    pub(super) auth: Option<&'a (String, Secret)>,
    pub(super) cluster_user: Option<String>,
    pub(super) cluster_pass: Option<String>,
    /// cert, key, ca
    pub(super) cluster_tls: (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
    pub(super) token: Option<String>,
    pub(super) nkey_seed: Option<PathBuf>,
    pub(super) creds: Option<PathBuf>,
    /// ca, cert, key
    pub(super) tls: (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
}

/// The validated NATS security settings.
pub(super) struct NatsSecurity {
    pub(super) host: String,
    pub(super) cluster_auth: Option<(String, Secret)>,
    pub(super) cluster_tls: Option<TlsFiles>,
    pub(super) client: NatsClientAuth,
}

pub(super) fn nats_security(a: NatsSecurityArgs<'_>) -> Result<NatsSecurity, ConfigError> {
    let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
    let host = match a.host.map(|h| h.trim().to_string()) {
        Some(h) if h.is_empty() => return invalid("--nats-host must not be empty"),
        Some(h) => h,
        // Without credentials only this machine may connect; with them, where HTTP listens
        // when that was chosen, else every interface (clients must authenticate).
        None if a.auth.is_none() => "127.0.0.1".to_string(),
        None => a
            .listen_addr
            .map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string()),
    };
    let cluster_auth = match (a.cluster_user, a.cluster_pass) {
        (None, None) => a.auth.cloned(),
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, Secret(p))),
        _ => {
            return invalid(
                "--nats-cluster-user and --nats-cluster-pass go together, and neither may be empty",
            );
        }
    };
    let cluster_tls = match a.cluster_tls {
        (None, None, None) => None,
        (Some(cert), Some(key), ca) => Some(TlsFiles { cert, key, ca }),
        _ => {
            return invalid(
                "--nats-cluster-tls-cert and --nats-cluster-tls-key go together (--nats-cluster-tls-ca is optional with them)",
            );
        }
    };
    let token = match a.token {
        Some(t) if t.trim().is_empty() => return invalid("--nats-token must not be empty"),
        t => t.map(Secret),
    };
    let (tls_ca, tls_cert, tls_key) = a.tls;
    let tls_cert = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c, k)),
        _ => return invalid("--nats-tls-cert and --nats-tls-key go together"),
    };
    let given = [
        a.auth.is_some(),
        token.is_some(),
        a.nkey_seed.is_some(),
        a.creds.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return invalid(
            "the node's NATS client authenticates one way: set one of --nats-user/--nats-pass, --nats-token, --nats-nkey-seed or --nats-creds",
        );
    }
    Ok(NatsSecurity {
        host,
        cluster_auth,
        cluster_tls,
        client: NatsClientAuth {
            token,
            nkey_seed: a.nkey_seed,
            creds: a.creds,
            tls_ca,
            tls_cert,
        },
    })
}

/// Refuses an embedded nats-server that would let anonymous clients in from the network:
/// listening beyond loopback, or clustered (its routes reach other machines), without client
/// credentials. `--nats-config` files are the operator's business.
pub(super) fn check_embedded_nats_exposure(n: &NatsFlags) -> Result<(), ConfigError> {
    if n.port == 0 || n.config_file.is_some() || n.auth.is_some() {
        return Ok(());
    }
    let why = if n.clustered() {
        "is clustered (--nats-cluster-name/--nats-cluster-port/--nats-routes)".to_string()
    } else if !is_loopback_host(&n.host) {
        format!("listens on {} (--nats-host), beyond loopback", n.host)
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid(format!(
        "the embedded nats-server {why} but has no client credentials: anyone who reaches it could write to every node. \
         Set --nats-user and --nats-pass (HA_NATS_USER/HA_NATS_PASS){}",
        if n.clustered() {
            ""
        } else {
            ", or listen on loopback only with --nats-host 127.0.0.1"
        }
    )))
}

pub(super) fn parse_nats_sync(s: &str) -> Result<NatsSync, String> {
    match s.trim() {
        "always" => Ok(NatsSync::Always),
        d => match humantime::parse_duration(d) {
            Ok(d) if !d.is_zero() => Ok(NatsSync::Every(d)),
            _ => Err(format!(
                "not \"always\" or a duration: {d:?}; write \"always\" (sync before every acknowledgement) or e.g. 2m (lazy)"
            )),
        },
    }
}

/// URLs for logs: credentials removed.
pub fn redact(urls: &[String]) -> String {
    urls.iter()
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***@{}", &u[..s + 3], &u[at + 1..]),
            _ => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The embedded nats-server's name in its JetStream cluster (`--nats-server-name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// The node's name (the default).
    Node,
    /// The node's name plus a generation kept in the JetStream store directory, new when the
    /// store is new (`nats::generation`): a node back on an empty volume joins as a new server.
    Generation,
    /// This name.
    Fixed(String),
}

/// `--nats-server-name`: empty or absent = the node's name.
pub(super) fn server_name(raw: Option<String>) -> Result<ServerName, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(ServerName::Node),
        Some("generation") => Ok(ServerName::Generation),
        Some(n) if n.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(
            ConfigError::Invalid(format!("--nats-server-name {n:?}: no spaces or controls")),
        ),
        Some(n) => Ok(ServerName::Fixed(n.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::*;

    #[test]
    fn the_server_name_is_the_node_name_a_generation_of_it_or_a_given_one() {
        assert_eq!(run(&[]).unwrap().nats.server_name, ServerName::Node);
        let c = run(&["--nats-server-name", "generation"]).unwrap();
        assert_eq!(c.nats.server_name, ServerName::Generation);
        let c = run(&["--nats-server-name", "js-1"]).unwrap();
        assert_eq!(c.nats.server_name, ServerName::Fixed("js-1".into()));
        let e = run(&["--nats-server-name", "a b"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--nats-server-name"), "{e}");
    }

    #[test]
    fn an_embedded_nats_beyond_loopback_needs_credentials() {
        // Alone and without credentials: loopback only.
        let c = run(&[]).unwrap();
        assert_eq!(c.nats.host, "127.0.0.1");
        // With credentials: where HTTP listens (all interfaces by default).
        let c = run(&["--nats-user", "u", "--nats-pass", "p"]).unwrap();
        assert_eq!(c.nats.host, "0.0.0.0");
        assert_eq!(c.nats.cluster_auth, Some(("u".into(), Secret::new("p"))));
        for args in [
            &["--nats-host", "0.0.0.0"][..],
            &["--nats-host", "10.1.2.3"],
            &["--nats-routes", "nats-route://a:6222"],
            &["--nats-cluster-port", "6222", "--nats-host", "127.0.0.1"],
        ] {
            let e = run(args).err().unwrap().to_string();
            assert!(
                e.contains("--nats-user") && e.contains("--nats-pass"),
                "{args:?}: {e}"
            );
        }
        let e = run(&["--nats-host", "0.0.0.0"]).err().unwrap().to_string();
        assert!(e.contains("--nats-host 127.0.0.1"), "{e}");
        // No embedded server, or the operator's own config file: not ours to judge.
        assert!(run(&["--nats-port", "0", "--nats-host", "0.0.0.0"]).is_ok());
        assert!(
            run(&[
                "--nats-config",
                "/x.conf",
                "--nats-routes",
                "nats-route://a:1"
            ])
            .is_ok()
        );
        assert!(run(&["--nats-host", "::1"]).is_ok());
        assert!(run(&["--nats-host", "localhost"]).is_ok());
        assert!(run(&["--nats-host", " "]).is_err());
    }

    #[test]
    fn route_and_client_credentials_and_tls_are_read_and_checked() {
        let c = run(&[
            "--nats-user",
            "u",
            "--nats-pass",
            "p",
            "--nats-cluster-user",
            "r",
            "--nats-cluster-pass",
            "rp",
            "--nats-cluster-tls-cert",
            "/c.pem",
            "--nats-cluster-tls-key",
            "/k.pem",
            "--nats-cluster-tls-ca",
            "/ca.pem",
            "--nats-tls-ca",
            "/nca.pem",
            "--nats-tls-cert",
            "/nc.pem",
            "--nats-tls-key",
            "/nk.pem",
        ])
        .unwrap();
        assert_eq!(c.nats.cluster_auth, Some(("r".into(), Secret::new("rp"))));
        let tls = c.nats.cluster_tls.unwrap();
        assert_eq!(
            (tls.cert, tls.key, tls.ca),
            ("/c.pem".into(), "/k.pem".into(), Some("/ca.pem".into()))
        );
        assert_eq!(c.nats.client.tls_ca, Some("/nca.pem".into()));
        assert_eq!(
            c.nats.client.tls_cert,
            Some(("/nc.pem".into(), "/nk.pem".into()))
        );
        let c = run(&["--nats-port", "0", "--nats-token", "t0k"]).unwrap();
        assert_eq!(c.nats.client.token, Some(Secret::new("t0k")));
        assert!(!format!("{c:?}").contains("t0k"));
        for bad in [
            &["--nats-cluster-user", "r"][..],
            &["--nats-cluster-tls-cert", "/c.pem"],
            &["--nats-cluster-tls-ca", "/ca.pem"],
            &["--nats-tls-cert", "/c.pem"],
            &["--nats-token", ""],
            &[
                "--nats-port",
                "0",
                "--nats-token",
                "t",
                "--nats-creds",
                "/x.creds",
            ],
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.yaml");
        std::fs::write(
            &path,
            "nats-port: 0\nnats-creds: /a.creds\nnats-tls-ca: /ca.pem\nnats-sync: 1s\n",
        )
        .unwrap();
        let c = run(&["-c", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.nats.client.creds, Some("/a.creds".into()));
        assert_eq!(c.nats.sync, NatsSync::Every(Duration::from_secs(1)));
    }

    #[test]
    fn nats_sync_is_always_unless_a_lazy_interval_is_asked_for() {
        assert_eq!(run(&[]).unwrap().nats.sync, NatsSync::Always);
        assert_eq!(
            run(&["--nats-sync", "2m"]).unwrap().nats.sync,
            NatsSync::Every(Duration::from_secs(120))
        );
        assert!(run(&["--nats-sync", "0s"]).is_err());
        assert!(run(&["--nats-sync", "sometimes"]).is_err());
    }
}
