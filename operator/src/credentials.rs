//! Owns the cluster's generated credentials: drawing fresh ones for a new cluster's
//! `<name>-credentials` Secret, and reading them back from an existing one.
//! Must not be called from `render` (which stays pure), nor write the Secret (`controller`
//! creates it once, never updates it).
//! Invariant: passwords are 32 characters from [A-Za-z0-9] (about 190 bits) from the OS generator.
//! See `render::Credentials` for the type, `render::secret` for the Secret.

use k8s_openapi::api::core::v1::Secret;
use ring::rand::{SecureRandom, SystemRandom};

use crate::render::{Credentials, names};
use crate::{Error, Result};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const PASSWORD_LEN: usize = 32;

/// The operating system's random generator failed (it does not on Linux once booted).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

impl Credentials {
    /// User names `ha` (PostgreSQL, the node's default) and `ha-nats`, with random passwords.
    pub fn generate() -> Result<Credentials, RandomError> {
        let rng = SystemRandom::new();
        Ok(Credentials {
            pg_user: "ha".into(),
            pg_password: password(&rng)?,
            nats_user: "ha-nats".into(),
            nats_password: password(&rng)?,
            nats_cluster_user: "ha-route".into(),
            nats_cluster_password: password(&rng)?,
            http_token: password(&rng)?,
        })
    }
}

/// The credentials stored in an existing Secret, with the keys it lacks (a Secret written by an
/// older operator: route user, HTTP token) filled in from `fresh`. Returns the keys filled in,
/// which the caller adds to the Secret (never replacing a key it has).
pub fn read(secret: &Secret, fresh: &Credentials) -> Result<(Credentials, Vec<&'static str>)> {
    let mut creds = from_secret_required(secret)?;
    let mut added = Vec::new();
    let optional = [
        (names::KEY_NATS_CLUSTER_USERNAME, &fresh.nats_cluster_user),
        (
            names::KEY_NATS_CLUSTER_PASSWORD,
            &fresh.nats_cluster_password,
        ),
        (names::KEY_HTTP_TOKEN, &fresh.http_token),
    ];
    for (key, fresh_value) in optional {
        let value = match get(secret, key)? {
            Some(v) => v,
            None => {
                added.push(key);
                fresh_value.clone()
            }
        };
        match key {
            names::KEY_NATS_CLUSTER_USERNAME => creds.nats_cluster_user = value,
            names::KEY_NATS_CLUSTER_PASSWORD => creds.nats_cluster_password = value,
            _ => creds.http_token = value,
        }
    }
    Ok((creds, added))
}

/// Every key of an existing Secret (the tests' and `render`'s reading; the controller uses
/// `read`, which also fills in the keys added later).
pub fn from_secret(secret: &Secret) -> Result<Credentials> {
    let (creds, added) = read(secret, &Credentials::placeholder())?;
    match added.first() {
        None => Ok(creds),
        Some(key) => Err(missing(secret, key)),
    }
}

impl Credentials {
    fn placeholder() -> Credentials {
        Credentials {
            pg_user: String::new(),
            pg_password: String::new(),
            nats_user: String::new(),
            nats_password: String::new(),
            nats_cluster_user: String::new(),
            nats_cluster_password: String::new(),
            http_token: String::new(),
        }
    }
}

fn missing(secret: &Secret, key: &str) -> Error {
    Error::Secret {
        secret: secret.metadata.name.clone().unwrap_or_default(),
        message: format!("has no key {key:?}; delete it to have new credentials generated"),
    }
}

/// A key's UTF-8 value (`data` or `stringData`), `None` when absent.
fn get(secret: &Secret, key: &str) -> Result<Option<String>> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        });
    bytes
        .map(|b| {
            String::from_utf8(b).map_err(|_| Error::Secret {
                secret: secret.metadata.name.clone().unwrap_or_default(),
                message: format!("key {key:?} is not UTF-8"),
            })
        })
        .transpose()
}

/// The keys every credentials Secret has had since the first operator.
fn from_secret_required(secret: &Secret) -> Result<Credentials> {
    let req = |key: &str| get(secret, key)?.ok_or_else(|| missing(secret, key));
    Ok(Credentials {
        pg_user: req(names::KEY_USERNAME)?,
        pg_password: req(names::KEY_PASSWORD)?,
        nats_user: req(names::KEY_NATS_USERNAME)?,
        nats_password: req(names::KEY_NATS_PASSWORD)?,
        ..Credentials::placeholder()
    })
}

fn password(rng: &SystemRandom) -> Result<String, RandomError> {
    let mut out = String::with_capacity(PASSWORD_LEN);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LEN {
        rng.fill(&mut buf).map_err(|_| RandomError)?;
        // Rejection sampling keeps every character equally likely: 248 = 4 * 62.
        for b in buf {
            if out.len() < PASSWORD_LEN && b < 248 {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_differ() {
        let a = Credentials::generate().unwrap_or_else(|e| panic!("{e}"));
        let b = Credentials::generate().unwrap_or_else(|e| panic!("{e}"));
        for p in [&a.pg_password, &a.nats_password] {
            assert_eq!(p.len(), 32);
            assert!(p.bytes().all(|c| c.is_ascii_alphanumeric()), "{p}");
        }
        assert_ne!(a.pg_password, a.nats_password);
        assert_ne!(a.pg_password, b.pg_password);
        assert_eq!(a.pg_user, "ha");
        assert_eq!(a.nats_user, "ha-nats");
    }

    #[test]
    fn the_rendered_secret_is_read_back_key_by_key() {
        let creds = crate::render::tests::creds();
        let rendered =
            crate::render::render(&crate::render::tests::cluster("db", ""), "prod", &creds)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            from_secret(&rendered.secret).unwrap_or_else(|e| panic!("{e}")),
            creds
        );
    }

    #[test]
    fn a_secret_missing_a_key_is_an_error_that_says_which() {
        let mut s = Secret::default();
        s.metadata.name = Some("db-credentials".into());
        let e = from_secret(&s)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("db-credentials") && e.contains("\"username\""),
            "{e}"
        );
    }

    #[test]
    fn a_secret_from_an_older_operator_gets_only_the_keys_it_lacks() {
        let creds = crate::render::tests::creds();
        let mut secret =
            crate::render::render(&crate::render::tests::cluster("db", ""), "prod", &creds)
                .unwrap_or_else(|e| panic!("{e}"))
                .secret;
        let data = secret.data.get_or_insert_with(Default::default);
        for key in [
            names::KEY_NATS_CLUSTER_USERNAME,
            names::KEY_NATS_CLUSTER_PASSWORD,
            names::KEY_HTTP_TOKEN,
        ] {
            data.remove(key);
        }
        let fresh = Credentials::generate().unwrap_or_else(|e| panic!("{e}"));
        let (read_back, added) = read(&secret, &fresh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            added,
            [
                "nats-cluster-username",
                "nats-cluster-password",
                "http-token"
            ]
        );
        assert_eq!(read_back.pg_password, creds.pg_password, "kept");
        assert_eq!(read_back.http_token, fresh.http_token, "filled in");
        assert!(from_secret(&secret).is_err());
    }
}
