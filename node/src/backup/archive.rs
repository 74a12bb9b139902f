//! Owns the change-log archive: the stream's messages of this database's subject, read with
//! an ordered consumer of its own (raw, as published) and written in segments of at most
//! `--archive-max-messages`, each closed within `--archive-interval` of its first message.
//! Must not decode or apply anything: restore does, with the node's decoder and apply path.
//! Invariant: a segment holds every message of the subject in (`prev`, `last`]; a hole the
//! stream no longer fills shows as a `prev` past the previous segment's `last`,
//! so the archive has no silent holes; a failed upload is retried with the same messages.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::layout::{self, Line, SegmentManifest};
use super::{BackupError, BackupStatus, Storage};

pub struct Archiver {
    pub js: jetstream::Context,
    pub stream: String,
    pub subject: String,
    pub storage: Storage,
    pub interval: Duration,
    pub max_messages: usize,
    pub status: Arc<BackupStatus>,
}

fn nats(what: &'static str) -> impl FnOnce(String) -> BackupError {
    move |e| BackupError::Nats(format!("{what}: {e}"))
}

impl Archiver {
    /// Runs until `stop`; errors are reported in the status and the archiver starts again
    /// after a back-off from what the storage holds.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.run_once(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    self.status.failed("archive", &e);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn run_once(&self, stop: &CancellationToken) -> Result<(), BackupError> {
        let segs = layout::segments(&self.storage).await?;
        let mut prev = segs.last().map(|s| s.last).unwrap_or(0);
        self.status.update(|s| s.archived_seq = prev);
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| nats("stream")(e.to_string()))?;
        let first = stream.cached_info().state.first_sequence.max(1);
        let start = (prev + 1).max(first);
        if start > prev + 1 {
            // The stream no longer holds what comes after the archive: the next segment's
            // `prev` says so, and restore does not pass this hole without a newer snapshot.
            if prev > 0 {
                tracing::warn!(
                    archived = prev,
                    stream_first = first,
                    "the archive ends before the stream begins: messages in between were never archived (restore cannot pass this point; a newer snapshot can)"
                );
            }
            prev = start - 1;
        }
        let c = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| nats("archive consumer")(e.to_string()))?;
        let mut messages = c
            .messages()
            .await
            .map_err(|e| nats("archive consumer")(e.to_string()))?;
        tracing::info!(from = start, url = %self.storage.url, "change-log archive running");
        let mut batch: Vec<Line> = Vec::new();
        // A segment closes this long after its first message arrived; half the interval so
        // the upload fits in the promised bound.
        let close_after = self.interval / 2;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let flush = tokio::select! {
                _ = stop.cancelled() => {
                    // Hand over what is here: the next uploader reads it again otherwise.
                    if !batch.is_empty() {
                        let _ = self.upload(&mut batch, &mut prev, stop).await;
                    }
                    return Ok(());
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => futures::future::pending().await } } => true,
                m = messages.next() => {
                    let m = m.ok_or_else(|| BackupError::Nats("archive consumer ended".into()))?
                        .map_err(|e| nats("archive receive")(e.to_string()))?;
                    let info = m.info().map_err(|e| nats("message metadata")(e.to_string()))?;
                    let line = Line {
                        seq: info.stream_sequence,
                        time_ns: info.published.unix_timestamp_nanos(),
                        data: m.payload.to_vec(),
                    };
                    if line.seq > prev && batch.last().is_none_or(|l| line.seq > l.seq) {
                        if batch.is_empty() {
                            deadline = Some(tokio::time::Instant::now() + close_after);
                            self.status.update(|s| s.oldest_unarchived_ns = Some(line.time_ns));
                        }
                        batch.push(line);
                    }
                    batch.len() >= self.max_messages
                }
            };
            if flush && !batch.is_empty() {
                self.upload(&mut batch, &mut prev, stop).await?;
                deadline = None;
            }
        }
    }

    /// Writes `batch` as one segment (object, then manifest), retrying with back-off until it
    /// is stored or the archiver stops; clears it on success.
    async fn upload(
        &self,
        batch: &mut Vec<Line>,
        prev: &mut u64,
        stop: &CancellationToken,
    ) -> Result<(), BackupError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            match write_segment(&self.storage, batch, *prev).await {
                Ok(m) => {
                    *prev = m.last;
                    batch.clear();
                    self.status.update(|s| {
                        s.archived_seq = m.last;
                        s.oldest_unarchived_ns = None;
                        if s.last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("archive"))
                        {
                            s.last_error = None;
                            s.attempt_failed = false;
                        }
                    });
                    tracing::debug!(
                        first = m.first,
                        last = m.last,
                        messages = m.messages,
                        "archive segment stored"
                    );
                    return Ok(());
                }
                Err(e) => {
                    self.status.failed("archive", &e);
                    tokio::select! {
                        _ = stop.cancelled() => return Err(e),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Compresses and stores one segment, then its manifest.
pub async fn write_segment(
    storage: &Storage,
    batch: &[Line],
    prev: u64,
) -> Result<SegmentManifest, BackupError> {
    let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
        return Err(BackupError::Invalid("empty segment".into()));
    };
    let mut text = Vec::new();
    for l in batch {
        serde_json::to_writer(&mut text, l).map_err(|e| BackupError::Invalid(e.to_string()))?;
        text.push(b'\n');
    }
    let bytes = text.len() as u64;
    let packed = zstd::bulk::compress(&text, 3).map_err(super::io("zstd"))?;
    let m = SegmentManifest {
        first: first.seq,
        last: last.seq,
        prev,
        messages: batch.len() as u64,
        first_time_ns: first.time_ns,
        last_time_ns: last.time_ns,
        bytes,
        stored_bytes: packed.len() as u64,
        sha256: layout::sha256(&packed),
    };
    storage.put(&m.object(), Bytes::from(packed)).await?;
    let body = serde_json::to_vec_pretty(&m).map_err(|e| BackupError::Invalid(e.to_string()))?;
    storage
        .put(
            &layout::segment_manifest(m.first, m.last),
            Bytes::from(body),
        )
        .await?;
    Ok(m)
}

/// Reads a segment back: checks its sha256 against the manifest and decodes its lines.
pub async fn read_segment(
    storage: &Storage,
    m: &SegmentManifest,
) -> Result<Vec<Line>, BackupError> {
    let packed = storage.get(&m.object()).await?;
    let actual = layout::sha256(&packed);
    if actual != m.sha256 {
        return Err(BackupError::Corrupt(format!(
            "segment {} is corrupt: sha256 {actual}, manifest says {}",
            m.object(),
            m.sha256
        )));
    }
    let text = zstd::stream::decode_all(&packed[..])
        .map_err(|e| BackupError::Corrupt(format!("segment {}: {e}", m.object())))?;
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .map_err(|e| BackupError::Corrupt(format!("segment {}: {e}", m.object())))
        })
        .collect()
}
