//! Owns writing one snapshot into the object store: the object store's own layout (chunks on
//! `$O.<bucket>.C.<nuid>`, then one metadata message on `$O.<bucket>.M.<base64 name>` with a
//! rollup), as `ObjectStore::put` writes it, but faster and in one read of the copy:
//! - up to `IN_FLIGHT` chunks await their acknowledgement at once (`put` waits for each chunk's
//!   ack before it sends the next, so the upload ran at one round trip per 128 KiB);
//! - chunks of `CHUNK` bytes (fewer messages; capped by the server's `max_payload`);
//! - a blocking thread reads the copy and computes its SHA-256 while this task publishes; the
//!   digest goes both into our `sha256` header (hex) and into the object store's `digest`
//!   (`SHA-256=<base64url>`, which the client's `get` checks). `put` takes the headers before it
//!   reads the data, so our header used to need a hashing pass of its own before the upload.
//!
//! Invariant (the one `put` keeps): the metadata is published only after every chunk is
//! acknowledged, so an upload cut short leaves no visible object, only chunks under a `nuid`
//! no metadata names (`sweep` removes them).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, object_store};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use bytes::Bytes;

use super::{SnapError, io, nats};

/// Bytes per chunk (the object store's default is 128 KiB).
const CHUNK: usize = 512 * 1024;
/// Chunks published and not yet acknowledged, at most.
const IN_FLIGHT: usize = 8;

/// What was stored.
pub struct Uploaded {
    pub size: u64,
    /// Hex SHA-256 of the content (as in the `sha256` header).
    pub sha256: String,
}

/// The content of one upload: chunks in order, read (and hashed) by someone else while the
/// upload publishes them, and at the end the content's SHA-256 and length.
pub struct Chunks {
    pub rx: tokio::sync::mpsc::Receiver<Bytes>,
    /// The producer's result, once it has sent its last chunk (or failed).
    pub done: futures::future::BoxFuture<'static, Result<(ring::digest::Digest, u64), SnapError>>,
    /// The bytes per chunk the producer sends.
    pub chunk_size: usize,
}

/// The bytes per chunk for `js`: `CHUNK`, with room for the protocol line under the server's
/// `max_payload`.
pub fn chunk_size(js: &jetstream::Context) -> usize {
    CHUNK.min(
        (js.client().server_info().max_payload)
            .saturating_sub(1024)
            .max(64 * 1024),
    )
}

/// A channel for `chunk_size` chunks, as many as the upload keeps in flight.
pub fn channel() -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::sync::mpsc::Receiver<Bytes>,
) {
    tokio::sync::mpsc::channel(IN_FLIGHT)
}

impl Chunks {
    /// The file at `path`, read and hashed by a blocking thread.
    pub fn from_file(path: PathBuf, chunk_size: usize) -> Chunks {
        let (tx, rx) = channel();
        let reader = tokio::task::spawn_blocking(move || read_and_hash(&path, chunk_size, tx));
        Chunks {
            rx,
            done: Box::pin(async move {
                reader
                    .await
                    .map_err(|e| io("reading the copy")(std::io::Error::other(e)))?
            }),
            chunk_size,
        }
    }
}

/// Stores `content` as object `name` in `bucket` with `headers` plus `sha256` (the hex SHA-256
/// of the content), replacing an object of the same name (its chunks are purged after the new
/// metadata is stored, as `put` does).
pub async fn upload(
    js: &jetstream::Context,
    store: &object_store::ObjectStore,
    bucket: &str,
    name: &str,
    description: String,
    mut headers: HeaderMap,
    content: Chunks,
) -> Result<Uploaded, SnapError> {
    let existing = store.info(name).await.ok().filter(|i| !i.deleted);
    let nuid = new_nuid()?;
    let chunk_subject = format!("$O.{bucket}.C.{nuid}");
    let Chunks {
        mut rx,
        done,
        chunk_size,
    } = content;
    let mut pending = VecDeque::with_capacity(IN_FLIGHT + 1);
    let mut chunks = 0usize;
    while let Some(chunk) = rx.recv().await {
        chunks += 1;
        let ack = js
            .publish(chunk_subject.clone(), chunk)
            .await
            .map_err(nats("upload chunk"))?;
        pending.push_back(ack);
        if pending.len() >= IN_FLIGHT
            && let Some(ack) = pending.pop_front()
        {
            ack.await.map_err(nats("upload chunk ack"))?;
        }
    }
    let (digest, size) = done.await?;
    for ack in pending {
        ack.await.map_err(nats("upload chunk ack"))?;
    }
    let sha256 = super::hex(digest.as_ref());
    headers.insert("sha256", sha256.as_str());
    let info = object_store::ObjectInfo {
        name: name.to_string(),
        description: Some(description),
        metadata: Default::default(),
        headers: Some(headers),
        options: Some(object_store::ObjectOptions {
            link: None,
            max_chunk_size: Some(chunk_size),
        }),
        bucket: bucket.to_string(),
        nuid,
        size: size as usize,
        chunks,
        modified: Some(time::OffsetDateTime::now_utc()),
        digest: Some(format!("SHA-256={}", URL_SAFE.encode(digest.as_ref()))),
        deleted: false,
    };
    let body = serde_json::to_vec(&info).map_err(|e| SnapError::Nats {
        what: "upload metadata",
        reason: e.to_string(),
    })?;
    let mut meta_headers = HeaderMap::new();
    meta_headers.insert(async_nats::header::NATS_ROLLUP, "sub");
    js.publish_with_headers(
        format!("$O.{bucket}.M.{}", URL_SAFE.encode(name)),
        meta_headers,
        body.into(),
    )
    .await
    .map_err(nats("upload metadata"))?
    .await
    .map_err(nats("upload metadata ack"))?;
    if let Some(old) = existing {
        let stream = js
            .get_stream(format!("OBJ_{bucket}"))
            .await
            .map_err(nats("open bucket stream"))?;
        stream
            .purge()
            .filter(format!("$O.{bucket}.C.{}", old.nuid))
            .await
            .map_err(nats("purge replaced chunks"))?;
    }
    Ok(Uploaded { size, sha256 })
}

/// Reads `path` in chunks of `chunk_size`, hashing each and sending it to the uploader; returns
/// the SHA-256 and the length. Stops early (the result is then unused) if the uploader is gone.
fn read_and_hash(
    path: &Path,
    chunk_size: usize,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(ring::digest::Digest, u64), SnapError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(io("reading the copy"))?;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    loop {
        let mut buf = vec![0u8; chunk_size];
        let mut len = 0;
        while len < chunk_size {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("reading the copy")(e)),
            }
        }
        if len == 0 {
            break;
        }
        buf.truncate(len);
        sha.update(&buf);
        size += len as u64;
        if tx.blocking_send(Bytes::from(buf)).is_err() || len < chunk_size {
            break;
        }
    }
    Ok((sha.finish(), size))
}

/// A fresh upload identity: 128 random bits, hex (any subject token will do; `put` uses a NUID).
fn new_nuid() -> Result<String, SnapError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| io("the OS random generator")(std::io::Error::other("unavailable")))?;
    Ok(super::hex(&b))
}
