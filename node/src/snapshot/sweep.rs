//! Owns the snapshot bucket's hygiene: chunks of uploads that never completed (the uploader was
//! killed, or lost NATS mid-way), chunks of deletes cut short, broken objects and tombstones.
//! Must not touch a complete snapshot, nor chunks that an upload in progress (on any node) may
//! still reference: unreferenced chunks are removed only once their newest chunk is older than
//! `--snapshot-orphan-age`, longer than any live upload waits between two chunks.
//! Invariant: purges are bounded by subject (chunks: one upload's `nuid`; metadata: only up to
//! the tombstone read), so a sweep racing another node's upload or delete never removes what
//! that node wrote after the sweep looked.
//!
//! Object-store layout (stream `OBJ_<bucket>`): chunks on `$O.<bucket>.C.<nuid>`, one metadata
//! message per object on `$O.<bucket>.M.<base64 name>` (the last one counts; `deleted: true`
//! for a tombstone). An object is visible once its metadata is stored, which happens only after
//! all of its chunks are. See `snapshot` for uploads and docs/operations.md.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, object_store::ObjectInfo};
use futures::StreamExt;

use super::SnapError;

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Swept {
    /// Unreferenced chunk sets (one per unfinished upload or unfinished delete) purged.
    pub orphan_uploads: usize,
    /// Chunks (messages) in them.
    pub chunks: u64,
    /// Stored objects of this database whose chunks were missing, deleted.
    pub broken: usize,
    /// Tombstones of deleted snapshots of this database purged.
    pub tombstones: usize,
    /// Unreferenced chunk sets left alone because they are younger than the orphan age
    /// (maybe an upload in progress).
    pub young: usize,
}

fn nats<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> SnapError {
    move |e| SnapError::Nats {
        what,
        reason: e.to_string(),
    }
}

/// One object's metadata as last stored, with where it lives.
struct Meta {
    subject: String,
    sequence: u64,
    info: ObjectInfo,
}

/// Cleans `bucket`: see the module comment. `key` is the database file name; only its own
/// snapshots (`<key>.<seq>`) are ever deleted as broken or have their tombstones purged, while
/// orphaned chunks are removed whoever left them.
pub async fn sweep(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    orphan_age: Duration,
) -> Result<Swept, SnapError> {
    let mut out = Swept::default();
    let stream = match js.get_stream(format!("OBJ_{bucket}")).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Ok(out); // no bucket: nothing to clean
        }
        Err(e) => return Err(nats("open bucket stream")(e)),
    };
    let chunk_prefix = format!("$O.{bucket}.C.");
    let metas = metas(&stream, bucket).await?;
    let chunk_sets = subjects(&stream, &format!("{chunk_prefix}>")).await?;
    let live: HashMap<&str, &Meta> = metas
        .iter()
        .filter(|m| !m.info.deleted)
        .map(|m| (m.info.nuid.as_str(), m))
        .collect();
    let deleted: HashSet<&str> = metas
        .iter()
        .filter(|m| m.info.deleted)
        .map(|m| m.info.nuid.as_str())
        .collect();
    let ours = |name: &str| {
        name.strip_prefix(key)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|s| s.parse::<u64>().is_ok())
    };

    // Complete objects whose chunks are not all there (purged by hand, a damaged store). The
    // metadata was read before the chunks, and an object's chunks are all stored before its
    // metadata, so a shortfall is real unless the object was deleted meanwhile (checked again).
    let broken: Vec<(String, String)> = live
        .values()
        .filter(|m| m.info.chunks > 0 && ours(&m.info.name))
        .filter(|m| {
            let have = chunk_sets
                .get(&format!("{chunk_prefix}{}", m.info.nuid))
                .copied()
                .unwrap_or(0);
            have < m.info.chunks
        })
        .map(|m| (m.info.name.clone(), m.info.nuid.clone()))
        .collect();
    if !broken.is_empty() {
        let store = js
            .get_object_store(bucket)
            .await
            .map_err(nats("open bucket"))?;
        for (name, nuid) in broken {
            match store.info(&name).await {
                Ok(i) if !i.deleted && i.nuid == nuid => {
                    tracing::warn!(%name, "snapshot is missing chunks (unusable); deleting it");
                    store.delete(&name).await.map_err(nats("delete"))?;
                    out.broken += 1;
                }
                _ => {} // deleted or replaced meanwhile
            }
        }
    }

    let now = time::OffsetDateTime::now_utc();
    for (subject, count) in &chunk_sets {
        let Some(nuid) = subject.strip_prefix(&chunk_prefix) else {
            continue;
        };
        if live.contains_key(nuid) {
            continue;
        }
        // A delete cut short left its chunks: nothing will ever read them.
        let dead = deleted.contains(nuid) || {
            match stream.get_last_raw_message_by_subject(subject).await {
                Ok(last) => {
                    let age = now - last.time;
                    age >= time::Duration::try_from(orphan_age).unwrap_or(time::Duration::MAX)
                }
                Err(e) => {
                    tracing::debug!(%subject, error = %e, "chunk set vanished while sweeping");
                    false
                }
            }
        };
        if !dead {
            out.young += 1;
            continue;
        }
        stream
            .purge()
            .filter(subject.as_str())
            .await
            .map_err(nats("purge orphaned chunks"))?;
        out.orphan_uploads += 1;
        out.chunks += *count as u64;
        tracing::info!(%nuid, chunks = count, "orphaned snapshot chunks deleted (an upload or delete that never completed)");
    }

    // Tombstones of our deleted snapshots (their chunks are gone now): purged only up to the
    // tombstone read, so a snapshot stored again under the same name right now survives.
    for m in metas
        .iter()
        .filter(|m| m.info.deleted && ours(&m.info.name))
    {
        stream
            .purge()
            .filter(m.subject.as_str())
            .sequence(m.sequence + 1)
            .await
            .map_err(nats("purge tombstone"))?;
        out.tombstones += 1;
    }
    Ok(out)
}

/// Every object's last metadata message in the bucket.
async fn metas(stream: &jetstream::stream::Stream, bucket: &str) -> Result<Vec<Meta>, SnapError> {
    let mut out = Vec::new();
    for subject in subjects(stream, &format!("$O.{bucket}.M.>"))
        .await?
        .into_keys()
    {
        let msg = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%subject, error = %e, "metadata vanished while sweeping");
                continue;
            }
        };
        match serde_json::from_slice::<ObjectInfo>(&msg.payload) {
            Ok(info) => out.push(Meta {
                subject,
                sequence: msg.sequence,
                info,
            }),
            Err(e) => {
                tracing::warn!(%subject, error = %e, "unreadable object metadata; left alone")
            }
        }
    }
    Ok(out)
}

/// The subjects matching `filter` in `stream`, with their message counts.
async fn subjects(
    stream: &jetstream::stream::Stream,
    filter: &str,
) -> Result<HashMap<String, usize>, SnapError> {
    let mut list = stream
        .info_builder()
        .subjects(filter)
        .fetch()
        .await
        .map_err(nats("list subjects"))?;
    let mut out = HashMap::new();
    while let Some(item) = list.next().await {
        let (subject, count) = item.map_err(nats("list subjects"))?;
        out.insert(subject, count);
    }
    Ok(out)
}
