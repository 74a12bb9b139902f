//! Owns the storage client: an `object_store` S3 client for `s3://bucket/prefix` (endpoint,
//! region, and the standard `AWS_*` credential variables), and errors a person can act on.
//! Must not know backup layout; `layout` names the objects.
//! Invariant: credentials are read from the environment by the client and never logged; an
//! S3 error body (XML) is reduced to its code and message.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};

use super::BackupError;
use crate::config::StorageConfig;

/// One backup location.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for messages.
    pub url: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.url)
    }
}

impl Storage {
    /// A client for `cfg` (no request is made yet); credentials from the `AWS_*` variables.
    pub fn open(cfg: &StorageConfig) -> Result<Storage, BackupError> {
        Self::open_with(cfg, None)
    }

    /// A client with the given key and secret instead of the environment's (tests, benches).
    pub fn open_with_keys(
        cfg: &StorageConfig,
        key: &str,
        secret: &str,
    ) -> Result<Storage, BackupError> {
        Self::open_with(cfg, Some((key, secret)))
    }

    fn open_with(cfg: &StorageConfig, keys: Option<(&str, &str)>) -> Result<Storage, BackupError> {
        let rest = cfg.url.trim().strip_prefix("s3://").ok_or_else(|| {
            BackupError::Invalid(format!("{:?}: expected s3://bucket/prefix", cfg.url))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BackupError::Invalid(format!(
                "{:?}: the bucket name is missing",
                cfg.url
            )));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(&cfg.region)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..Default::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some((key, secret)) = keys {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        if let Some(e) = &cfg.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let s3 = b
            .build()
            .map_err(|e| BackupError::Storage(format!("{}: {}", cfg.url, describe(&e))))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Storage {
            store,
            url: cfg.url.clone(),
        })
    }

    fn err(&self, what: &str, key: &str) -> impl FnOnce(object_store::Error) -> BackupError {
        let msg = format!("{what} {}/{key}", self.url.trim_end_matches('/'));
        move |e| BackupError::Storage(format!("{msg}: {}", describe(&e)))
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), BackupError> {
        self.store
            .put(&Path::from(key), PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(self.err("uploading", key))
    }

    /// Uploads a file in parts (memory stays bounded whatever its size).
    pub async fn put_file(&self, key: &str, file: &std::path::Path) -> Result<(), BackupError> {
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(super::io(format!("reading {}", file.display())))?;
        let mut w = object_store::buffered::BufWriter::new(self.store.clone(), Path::from(key));
        if let Err(e) = tokio::io::copy(&mut f, &mut w).await {
            let _ = w.abort().await;
            return Err(BackupError::Storage(format!(
                "uploading {}/{key}: {}",
                self.url.trim_end_matches('/'),
                clean(&e.to_string())
            )));
        }
        tokio::io::AsyncWriteExt::shutdown(&mut w)
            .await
            .map_err(|e| {
                BackupError::Storage(format!(
                    "uploading {}/{key}: {}",
                    self.url.trim_end_matches('/'),
                    clean(&e.to_string())
                ))
            })
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, BackupError> {
        let r = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(self.err("downloading", key))?;
        r.bytes().await.map_err(self.err("downloading", key))
    }

    /// Streams an object into `file`, returning its sha256 (hex) and size.
    pub async fn get_to_file(
        &self,
        key: &str,
        file: &std::path::Path,
    ) -> Result<(String, u64), BackupError> {
        use tokio::io::AsyncWriteExt;
        let r = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(self.err("downloading", key))?;
        let mut stream = r.into_stream();
        let mut out = tokio::fs::File::create(file)
            .await
            .map_err(super::io(format!("writing {}", file.display())))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut n = 0u64;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(self.err("downloading", key))?
        {
            ctx.update(&chunk);
            n += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(super::io(format!("writing {}", file.display())))?;
        }
        out.sync_all()
            .await
            .map_err(super::io(format!("writing {}", file.display())))?;
        Ok((crate::snapshot::hex(ctx.finish().as_ref()), n))
    }

    /// Keys under `prefix` (relative to the backup URL).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, BackupError> {
        let p = Path::from(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(self.err("listing", prefix))?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }

    pub async fn delete(&self, key: &str) -> Result<(), BackupError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("deleting", key)(e)),
        }
    }
}

/// An `object_store` error in a person's words: the S3 code and message instead of an XML
/// body, and what to check for the usual causes.
pub fn describe(e: &object_store::Error) -> String {
    clean(&e.to_string())
}

fn clean(raw: &str) -> String {
    let code = tag(raw, "Code");
    let message = tag(raw, "Message");
    let hint = match code.as_deref() {
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidToken"
            | "ExpiredToken",
        ) => " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN)",
        Some("NoSuchBucket") => " (create the bucket, or fix the URL)",
        _ if raw.contains("403 Forbidden") => {
            " (access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN)"
        }
        _ if raw.contains("error sending request") || raw.contains("Connection refused") => {
            " (storage unreachable: check --backup-endpoint and the network)"
        }
        _ => "",
    };
    // The text before any XML body, which names the operation and status.
    let head = raw.split("<?xml").next().unwrap_or(raw).trim();
    let head = head.trim_end_matches([':', ' ']);
    let head: String = head.chars().take(400).collect();
    match (code, message) {
        (Some(c), Some(m)) => format!("{head}: {c}: {m}{hint}"),
        (Some(c), None) => format!("{head}: {c}{hint}"),
        _ => format!("{head}{hint}"),
    }
}

fn tag(s: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&close)? + start;
    Some(s[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_xml_error_becomes_its_code_and_a_hint() {
        let raw = "Generic S3 error: Error performing PUT http://x/b/k in 1ms - Server returned non-2XX status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>";
        let c = clean(raw);
        assert!(!c.contains("<?xml"), "{c}");
        assert!(
            c.contains("InvalidAccessKeyId: The AWS Access Key Id"),
            "{c}"
        );
        assert!(c.contains("check AWS_ACCESS_KEY_ID"), "{c}");
    }
}
