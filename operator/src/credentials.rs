//! Owns drawing fresh credentials for a new cluster's `<name>-credentials` Secret.
//! Must not be called from `render` (which stays pure): callers draw once and pass them in.
//! Invariant: passwords are 32 characters from [A-Za-z0-9] (about 190 bits) drawn from the OS
//! generator, so they are safe in URLs, nats-server config strings and shell-free env values.
//! See `render::Credentials` for the type and `render::secret` for the Secret.

use ring::rand::{SecureRandom, SystemRandom};

use crate::render::Credentials;

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
}
