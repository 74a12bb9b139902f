//! Owns reading one snapshot object: its chunks (`$O.<bucket>.C.<nuid>`) as a stream, read with
//! an ordered consumer of our own (`chunks`, which `GET /snapshot` serves as it is), and
//! downloading them into a file (`download`): handed as they arrive (no copy) to a blocking
//! thread that hashes and writes them, so receiving, hashing and writing overlap.
//! Must not judge the content beyond its bytes: the SHA-256 and size checks are the caller's
//! (`store::download_verified`), which gets the digest of exactly what arrived. The one change
//! made to it: a WAL header's two file format bytes are written as "rollback journal", what
//! the caller otherwise did by opening the file (`file_check::make_loadable`) after the checks.
//! Why not the client's `ObjectStore::get`: it waits forever when an object's chunks are gone,
//! and its reader hashes each chunk on the receiving task and copies it twice (into the
//! reader's buffer, then into the writer's channel) — in a bare receive loop of 100 MB it was
//! about a third slower than the consumer alone; in a restore the server's reads of the
//! compressed bucket bound both about equally.

use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::push::OrderedConfig, object_store::ObjectInfo};
use futures::StreamExt;

use super::{SnapError, io, nats};

/// How long the download waits for the next chunk before it gives up.
const STALL: Duration = Duration::from_secs(30);

/// What `download` wrote.
pub struct Downloaded {
    /// SHA-256 of the bytes written.
    pub digest: ring::digest::Digest,
    /// Bytes received and written.
    pub bytes: u64,
    /// From the start until the first chunk arrived.
    pub first_byte_ms: u64,
    /// From the start until the last chunk arrived.
    pub receive_ms: u64,
    /// The file's header says "rollback journal" (a WAL header was rewritten so, as
    /// `PRAGMA journal_mode = DELETE` would): it can be loaded into memory as it is.
    pub rollback_journal: bool,
}

/// Downloads the chunks of `info` (an object of `bucket`) into a new file at `path`, hashing
/// them on the writing thread, and syncs the file (see `chunks` for when the chunks are
/// refused); the caller compares sizes and digests.
pub async fn download(
    js: &jetstream::Context,
    bucket: &str,
    info: &ObjectInfo,
    path: &Path,
) -> Result<Downloaded, SnapError> {
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let out = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || write_and_hash(&out, &mut rx));
    let received = receive(js, bucket, info, tx).await;
    let receive_ms = start.elapsed().as_millis() as u64;
    let written = writer
        .await
        .map_err(|e| io("writing the download")(std::io::Error::other(e)))?;
    let (bytes, first_byte_ms) = received?;
    let (digest, written, rollback_journal) = written?;
    if written != bytes {
        return Err(SnapError::Size {
            name: info.name.clone(),
            expected: bytes,
            actual: written,
        });
    }
    Ok(Downloaded {
        digest,
        bytes,
        first_byte_ms,
        receive_ms,
        rollback_journal,
    })
}

/// Receives the chunks and sends them to the writer; returns the bytes received and the time
/// to the first chunk (ms).
async fn receive(
    js: &jetstream::Context,
    bucket: &str,
    info: &ObjectInfo,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<(u64, u64), SnapError> {
    let start = Instant::now();
    let mut chunks = chunks(js, bucket, info).await?;
    let mut bytes = 0u64;
    let mut first_byte_ms = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        first_byte_ms.get_or_insert_with(|| start.elapsed().as_millis() as u64);
        bytes += chunk.len() as u64;
        if tx.send(chunk).await.is_err() {
            break; // the writer failed: its error is the caller's
        }
    }
    Ok((bytes, first_byte_ms.unwrap_or(0)))
}

/// An object's chunks in order (see `chunks`).
pub type Chunks = Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, SnapError>> + Send>>;

/// The chunks of `info` (an object of `bucket`), in order. An object whose chunks are gone
/// (purged, or never stored) is refused before anything is read (`SnapError::Size`, 0 bytes):
/// nothing would ever arrive. The stream ends after the consumer's last pending chunk, and ends
/// with an error when the next chunk takes longer than `STALL`, when the chunks stop early, or
/// when more than the object's size arrived.
pub async fn chunks(
    js: &jetstream::Context,
    bucket: &str,
    info: &ObjectInfo,
) -> Result<Chunks, SnapError> {
    if info.chunks == 0 {
        return Ok(Box::pin(futures::stream::empty()));
    }
    let stream = js
        .get_stream_no_info(format!("OBJ_{bucket}"))
        .await
        .map_err(nats("download"))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: format!("$O.{bucket}.C.{}", info.nuid),
            ..Default::default()
        })
        .await
        .map_err(nats("download"))?;
    let (name, size) = (info.name.clone(), info.size as u64);
    if consumer.cached_info().num_pending == 0 {
        return Err(SnapError::Size {
            name,
            expected: size,
            actual: 0,
        });
    }
    let messages = consumer.messages().await.map_err(nats("download"))?;
    // State: the consumer (none once the last chunk or an error went out) and the bytes so far.
    Ok(Box::pin(futures::stream::unfold(
        (Some(messages), 0u64),
        move |(messages, bytes)| {
            let name = name.clone();
            async move {
                let mut messages = messages?;
                let next = match tokio::time::timeout(STALL, messages.next()).await {
                    Err(_) => Err(format!("no chunk for {}s", STALL.as_secs())),
                    Ok(None) => Err("the chunks ended early".to_string()),
                    Ok(Some(Err(e))) => Err(e.to_string()),
                    Ok(Some(Ok(m))) => m
                        .info()
                        .map(|i| (i.pending, m.message.payload.clone()))
                        .map_err(|e| e.to_string()),
                };
                let (pending, chunk) = match next {
                    Ok(got) => got,
                    Err(why) => {
                        let e = SnapError::Nats {
                            what: "download",
                            reason: format!("{name}: {why} after {bytes} bytes"),
                        };
                        return Some((Err(e), (None, bytes)));
                    }
                };
                let bytes = bytes + chunk.len() as u64;
                if bytes > size {
                    let e = SnapError::Size {
                        name,
                        expected: size,
                        actual: bytes,
                    };
                    return Some((Err(e), (None, bytes)));
                }
                Some((Ok(chunk), ((pending > 0).then_some(messages), bytes)))
            }
        },
    )))
}

/// Writes what arrives on `rx` to a new file at `path`, hashing it, and syncs it. Returns the
/// SHA-256 of what arrived, the bytes written and whether the header written says "rollback
/// journal" (see `rollback_journal`; the digest is of the content as stored, before that).
fn write_and_hash(
    path: &Path,
    rx: &mut tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> Result<(ring::digest::Digest, u64, bool), SnapError> {
    use std::io::Write;
    let mut out = std::fs::File::create(path).map_err(io("writing the download"))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0u64;
    let mut flushed = 0u64;
    let mut rollback = None;
    while let Some(mut chunk) = rx.blocking_recv() {
        ctx.update(&chunk);
        if rollback.is_none() {
            let (first, is) = rollback_journal(chunk);
            chunk = first;
            rollback = Some(is);
        }
        out.write_all(&chunk).map_err(io("writing the download"))?;
        n += chunk.len() as u64;
        if n - flushed >= WRITEBACK_EVERY {
            start_writeback(&out, flushed, n - flushed);
            flushed = n;
        }
    }
    out.sync_all().map_err(io("writing the download"))?;
    Ok((ctx.finish(), n, rollback.unwrap_or(false)))
}

/// The first chunk of an SQLite database with its header's file format bytes (18 and 19) set
/// from WAL (2) to rollback journal (1) — the change `PRAGMA journal_mode = DELETE` makes, done
/// here without opening the file — and whether the header now says rollback journal. Anything
/// else (not a database header, other values) is left as it is, for the checks to judge.
fn rollback_journal(chunk: bytes::Bytes) -> (bytes::Bytes, bool) {
    if chunk.len() < 100 || !chunk.starts_with(b"SQLite format 3\0") {
        return (chunk, false);
    }
    match (chunk[18], chunk[19]) {
        (1, 1) => (chunk, true),
        (2, 2) => {
            let mut v = chunk.to_vec();
            v[18] = 1;
            v[19] = 1;
            (bytes::Bytes::from(v), true)
        }
        _ => (chunk, false),
    }
}

/// Bytes written to a download between two starts of their write-back.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Starts writing `len` bytes of `file` from `offset` to the disk without waiting for them, so
/// the `fsync` after the last chunk has only the tail left to wait for (Linux; elsewhere the
/// `fsync` does it all).
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // Advisory: a failure only leaves the work to the `fsync`, which reports real errors.
        // SAFETY: the descriptor is open for the call's length; no memory is passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}
