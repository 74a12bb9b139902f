//! Owns how the node's NATS client proves who it is and whom it trusts: credentials from the
//! URL (`nats://user:pass@host`, `nats://token@host`), `--nats-user/--nats-pass`, `--nats-token`,
//! `--nats-nkey-seed`, `--nats-creds`, and TLS (`--nats-tls-ca/-cert/-key`), applied to
//! async-nats' `ConnectOptions`.
//! Must not log a credential; errors name the flag and the file, never the content.
//! Invariant: credentials in a URL win over the flags (async-nats itself ignores URL user info,
//! which is why a node could not join a password-protected NATS before).

use async_nats::ConnectOptions;
use percent_encoding::percent_decode_str;

use crate::config::NatsFlags;

/// Credentials found in the user-info part of a NATS URL.
#[derive(Debug, PartialEq, Eq)]
enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

/// The credentials of the first URL that carries any.
fn url_credentials(urls: &[String]) -> Option<UrlCredentials> {
    urls.iter().find_map(|u| {
        let addr: async_nats::ServerAddr = u.parse().ok()?;
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = decode(addr.username()?);
        Some(match addr.password() {
            Some(p) => UrlCredentials::UserPassword(user, decode(p)),
            None => UrlCredentials::Token(user),
        })
    })
}

/// Adds the configured credentials and TLS settings to `opts`. `urls` are the URLs the client
/// connects to. Errors are ready for the operator to read (flag and file named).
pub fn apply(
    mut opts: ConnectOptions,
    n: &NatsFlags,
    urls: &[String],
) -> Result<ConnectOptions, String> {
    let c = &n.client;
    match url_credentials(urls) {
        Some(UrlCredentials::UserPassword(user, pass)) => {
            opts = opts.user_and_password(user, pass);
        }
        Some(UrlCredentials::Token(token)) => opts = opts.token(token),
        None => {
            if let Some((user, pass)) = &n.auth {
                opts = opts.user_and_password(user.clone(), pass.expose().to_string());
            }
        }
    }
    if let Some(t) = &c.token {
        opts = opts.token(t.expose().to_string());
    }
    if let Some(path) = &c.nkey_seed {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| format!("--nats-nkey-seed {}: {e}", path.display()))?;
        let seed = seed
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("SU"))
            .ok_or_else(|| {
                format!(
                    "--nats-nkey-seed {}: no user NKey seed (a line starting with SU) in the file",
                    path.display()
                )
            })?;
        opts = opts.nkey(seed.to_string());
    }
    if let Some(path) = &c.creds {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--nats-creds {}: {e}", path.display()))?;
        opts = opts
            .credentials(&text)
            .map_err(|e| format!("--nats-creds {}: not a .creds file: {e}", path.display()))?;
    }
    if let Some(ca) = &c.tls_ca {
        check_readable("--nats-tls-ca", ca)?;
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &c.tls_cert {
        check_readable("--nats-tls-cert", cert)?;
        check_readable("--nats-tls-key", key)?;
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(opts)
}

/// async-nats reads TLS files only when it connects, and then retries forever: a missing
/// file must stop start-up with its name instead.
fn check_readable(flag: &str, path: &std::path::Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn url_user_info_becomes_credentials_decoded() {
        let urls = |u: &str| vec!["nats://127.0.0.1:4222".to_string(), u.to_string()];
        assert_eq!(
            url_credentials(&urls("nats://bar:bar%40pass@h:4222")),
            Some(UrlCredentials::UserPassword(
                "bar".into(),
                "bar@pass".into()
            ))
        );
        assert_eq!(
            url_credentials(&urls("nats://s3cr3t@h:4222")),
            Some(UrlCredentials::Token("s3cr3t".into()))
        );
        assert_eq!(url_credentials(&urls("nats://h:4222")), None);
    }

    #[test]
    fn missing_credential_files_name_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::for_test(dir.path());
        c.nats.client.creds = Some(dir.path().join("none.creds"));
        let e = apply(ConnectOptions::new(), &c.nats, &[]).err().unwrap();
        assert!(e.starts_with("--nats-creds"), "{e}");
        c.nats.client.creds = None;
        std::fs::write(dir.path().join("seed"), "not a seed\n").unwrap();
        c.nats.client.nkey_seed = Some(dir.path().join("seed"));
        let e = apply(ConnectOptions::new(), &c.nats, &[]).err().unwrap();
        assert!(
            e.contains("no user NKey seed") && !e.contains("not a seed"),
            "{e}"
        );
        c.nats.client.nkey_seed = None;
        c.nats.client.tls_ca = Some(dir.path().join("ca.pem"));
        let e = apply(ConnectOptions::new(), &c.nats, &[]).err().unwrap();
        assert!(e.starts_with("--nats-tls-ca"), "{e}");
    }
}
