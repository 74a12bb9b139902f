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
        })
    }
}

/// The credentials stored in an existing `<name>-credentials` Secret.
pub fn from_secret(secret: &Secret) -> Result<Credentials> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let get = |key: &str| -> Result<String> {
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
            })
            .ok_or_else(|| Error::Secret {
                secret: name.clone(),
                message: format!("has no key {key:?}; delete it to have new credentials generated"),
            })?;
        String::from_utf8(bytes).map_err(|_| Error::Secret {
            secret: name.clone(),
            message: format!("key {key:?} is not UTF-8"),
        })
    };
    Ok(Credentials {
        pg_user: get(names::KEY_USERNAME)?,
        pg_password: get(names::KEY_PASSWORD)?,
        nats_user: get(names::KEY_NATS_USERNAME)?,
        nats_password: get(names::KEY_NATS_PASSWORD)?,
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
}
