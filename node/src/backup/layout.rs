//! Owns the names and manifests of what a backup location holds:
//! `snapshots/<seq>.db.zst` + `snapshots/<seq>.json`, and
//! `archive/<first>-<last>.jsonl.zst` + `archive/<first>-<last>.json` (sequences zero-padded
//! to 20 digits, so names sort in stream order). Each line of a segment is one stream message
//! as published: `{"seq":N,"time_ns":T,"data":"<base64>"}`.
//! Must not do I/O beyond listing manifests through `Storage`.
//! Invariant: a manifest is written after its object, so a listed manifest names a complete
//! object; `sha256` is of the stored (compressed) bytes.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{BackupError, Storage};

pub const SNAPSHOTS: &str = "snapshots/";
pub const ARCHIVE: &str = "archive/";

/// A stored snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// The applied sequence inside the copy.
    pub seq: u64,
    /// When the copy was taken (ns since the epoch).
    pub time_ns: i128,
    /// The database's size, and the stored (compressed) object's.
    pub bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
    pub node: String,
}

impl SnapshotManifest {
    pub fn object(&self) -> String {
        snapshot_object(self.seq)
    }
}

pub fn snapshot_object(seq: u64) -> String {
    format!("{SNAPSHOTS}{seq:020}.db.zst")
}

pub fn snapshot_manifest(seq: u64) -> String {
    format!("{SNAPSHOTS}{seq:020}.json")
}

/// A stored archive segment: the stream's messages `first..=last` of the database's subject.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentManifest {
    pub first: u64,
    pub last: u64,
    /// The `last` of the segment before it (0 for the first one): the chain restore follows.
    pub prev: u64,
    pub messages: u64,
    pub first_time_ns: i128,
    pub last_time_ns: i128,
    pub bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

impl SegmentManifest {
    pub fn object(&self) -> String {
        segment_object(self.first, self.last)
    }
}

pub fn segment_object(first: u64, last: u64) -> String {
    format!("{ARCHIVE}{first:020}-{last:020}.jsonl.zst")
}

pub fn segment_manifest(first: u64, last: u64) -> String {
    format!("{ARCHIVE}{first:020}-{last:020}.json")
}

/// One archived message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Line {
    pub seq: u64,
    pub time_ns: i128,
    #[serde(with = "b64")]
    pub data: Vec<u8>,
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Every snapshot manifest, oldest first. An unreadable manifest is skipped with a warning.
pub async fn snapshots(storage: &Storage) -> Result<Vec<SnapshotManifest>, BackupError> {
    let mut out: Vec<SnapshotManifest> = manifests(storage, SNAPSHOTS).await?;
    out.sort_by_key(|m| m.seq);
    Ok(out)
}

/// Every segment manifest, in stream order.
pub async fn segments(storage: &Storage) -> Result<Vec<SegmentManifest>, BackupError> {
    let mut out: Vec<SegmentManifest> = manifests(storage, ARCHIVE).await?;
    out.sort_by_key(|m| (m.last, m.first));
    Ok(out)
}

async fn manifests<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    prefix: &str,
) -> Result<Vec<T>, BackupError> {
    let mut out = Vec::new();
    for key in storage.list(prefix).await? {
        if !key.ends_with(".json") {
            continue;
        }
        let body = storage.get(&key).await?;
        match serde_json::from_slice(&body) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(%key, error = %e, "unreadable backup manifest; ignored"),
        }
    }
    Ok(out)
}

/// SHA-256 (hex) of bytes.
pub fn sha256(data: &[u8]) -> String {
    crate::snapshot::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_stream_order_and_lines_round_trip() {
        assert!(segment_object(9, 10) < segment_object(11, 2000));
        assert_eq!(
            segment_object(1, 1000),
            "archive/00000000000000000001-00000000000000001000.jsonl.zst"
        );
        let l = Line {
            seq: 3,
            time_ns: 5,
            data: b"{\"x\":1}".to_vec(),
        };
        let s = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Line>(&s).unwrap(), l);
    }
}
