//! Owns "only one uploader per cluster": a lease in a JetStream KV bucket whose entries expire
//! (`max_age`); the holder renews it, writing its backup state as the value so every node can
//! report it; when the holder dies the entry expires and another node takes over.
//! Must not upload anything; `service` runs the uploads while the lease is held.
//! Invariant: a node uploads only between a successful create/renew and the next renew that
//! fails; renewals are conditional on the revision it wrote last.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use super::BackupError;
use super::status::Shared;

const KEY: &str = "uploader";

/// How long a lease lives without renewal.
pub const TTL: Duration = Duration::from_secs(10);

pub struct Lease {
    kv: kv::Store,
    node: String,
    revision: Option<u64>,
}

/// The KV bucket of a stream's backup lease.
pub fn bucket(stream: &str) -> String {
    format!("{stream}_BACKUP_LEASE")
}

impl Lease {
    pub async fn open(
        js: &jetstream::Context,
        stream: &str,
        replicas: usize,
        node: &str,
    ) -> Result<Lease, BackupError> {
        let name = bucket(stream);
        let kv = match js.get_key_value(&name).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.clone(),
                    description: "ha backup uploader lease".into(),
                    history: 1,
                    max_age: TTL,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| BackupError::Nats(format!("lease bucket {name}: {e}")))?,
        };
        Ok(Lease {
            kv,
            node: node.to_string(),
            revision: None,
        })
    }

    pub fn held(&self) -> bool {
        self.revision.is_some()
    }

    /// Takes or renews the lease, writing `state`. `Ok(None)`: another node holds it (its
    /// state returned when readable).
    pub async fn try_hold(&mut self, state: &Shared) -> Result<Option<Shared>, BackupError> {
        let value = Bytes::from(serde_json::to_vec(state).unwrap_or_default());
        let r = match self.revision {
            Some(rev) => self
                .kv
                .update(KEY, value.clone(), rev)
                .await
                .map_err(|e| e.to_string()),
            None => self
                .kv
                .create(KEY, value.clone())
                .await
                .map_err(|e| e.to_string()),
        };
        match r {
            Ok(rev) => {
                if self.revision.is_none() {
                    tracing::info!(node = %self.node, "backup uploader lease taken: this node uploads");
                }
                self.revision = Some(rev);
                Ok(None)
            }
            Err(e) => {
                if self.revision.take().is_some() {
                    tracing::warn!(node = %self.node, error = %e, "backup uploader lease lost");
                }
                let seen = self
                    .kv
                    .get(KEY)
                    .await
                    .map_err(|e| BackupError::Nats(format!("lease: {e}")))?;
                Ok(Some(
                    seen.and_then(|b| serde_json::from_slice::<Shared>(&b).ok())
                        .unwrap_or_default(),
                ))
            }
        }
    }

    /// Gives the lease up (shutdown), so another node takes over at once.
    pub async fn release(&mut self) {
        if let Some(rev) = self.revision.take() {
            let _ = self.kv.delete_expect_revision(KEY, Some(rev)).await;
        }
    }
}
