//! Owns uploading snapshots to the backup storage and the retention rule.
//! Must not make its own copy of the database: `Executor::backup_to` does (the same consistent
//! copy the NATS object store gets), and the sequence is read from the copy.
//! Invariant: the object goes first and its manifest (with sha256) second; retention never
//! deletes the newest snapshot, nor a segment a kept snapshot needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::layout::{self, SnapshotManifest};
use super::{BackupError, Storage, io};
use crate::exec::{ExecError, Executor, file_check};

/// Compresses `src` into `dst` with zstd, returning the sha256 (hex) and size of `dst`.
pub fn compress_file(src: &Path, dst: &Path) -> Result<(String, u64), BackupError> {
    let input = std::fs::File::open(src).map_err(io(format!("reading {}", src.display())))?;
    let out = std::fs::File::create(dst).map_err(io(format!("writing {}", dst.display())))?;
    let mut enc = zstd::stream::Encoder::new(out, 3).map_err(io("zstd"))?;
    std::io::copy(&mut std::io::BufReader::new(input), &mut enc).map_err(io("compressing"))?;
    enc.finish()
        .and_then(|f| f.sync_all())
        .map_err(io("compressing"))?;
    let data = std::fs::read(dst).map_err(io(format!("reading {}", dst.display())))?;
    Ok((layout::sha256(&data), data.len() as u64))
}

/// Takes a consistent copy and uploads it unless a snapshot at its sequence is stored already.
/// Returns the manifest stored (or the existing one) and whether anything was uploaded.
pub async fn upload_snapshot(
    exec: &Executor,
    storage: &Storage,
    tmp_dir: &Path,
    node: &str,
    known: Option<u64>,
) -> Result<(SnapshotManifest, bool), BackupError> {
    let tmp = temp(tmp_dir, ".db")?;
    exec.backup_to(tmp.to_path_buf()).await?;
    let zst = temp(tmp_dir, ".db.zst")?;
    let (src, dst) = (tmp.to_path_buf(), zst.to_path_buf());
    let (seq, bytes, sha, stored_bytes) = tokio::task::spawn_blocking(move || {
        let seq =
            file_check::applied_seq_of(&src).map_err(|e| BackupError::Db(ExecError::Db(e)))?;
        let bytes = std::fs::metadata(&src)
            .map_err(io("reading the copy"))?
            .len();
        let (sha, stored) = compress_file(&src, &dst)?;
        Ok::<_, BackupError>((seq, bytes, sha, stored))
    })
    .await
    .map_err(|e| io("compressing the copy")(std::io::Error::other(e)))??;
    drop(tmp);
    let manifest = SnapshotManifest {
        seq,
        time_ns: super::now_ns(),
        bytes,
        stored_bytes,
        sha256: sha,
        node: node.to_string(),
    };
    if known == Some(seq) {
        return Ok((manifest, false));
    }
    storage.put_file(&manifest.object(), &zst).await?;
    let body =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Invalid(e.to_string()))?;
    storage
        .put(&layout::snapshot_manifest(seq), Bytes::from(body))
        .await?;
    tracing::info!(seq, bytes, stored_bytes, url = %storage.url, "snapshot uploaded to the backup storage");
    Ok((manifest, true))
}

/// Deletes snapshots older than `retention` (the newest always stays) and the archive segments
/// that end at or before the oldest kept snapshot. Returns (snapshots, segments) deleted.
pub async fn apply_retention(
    storage: &Storage,
    retention: Duration,
) -> Result<(usize, usize), BackupError> {
    let snaps = layout::snapshots(storage).await?;
    let Some(newest) = snaps.last().cloned() else {
        return Ok((0, 0));
    };
    let cutoff = super::now_ns() - retention.as_nanos() as i128;
    let mut deleted = 0;
    let mut oldest_kept = newest.seq;
    for s in &snaps {
        if s.seq != newest.seq && s.time_ns < cutoff {
            // Manifest first: restore never sees a manifest without its object.
            storage.delete(&layout::snapshot_manifest(s.seq)).await?;
            storage.delete(&s.object()).await?;
            deleted += 1;
            tracing::info!(
                seq = s.seq,
                "old snapshot deleted from the backup storage (--backup-retention)"
            );
        } else {
            oldest_kept = oldest_kept.min(s.seq);
        }
    }
    let mut segs = 0;
    for g in layout::segments(storage).await? {
        if g.last <= oldest_kept {
            storage
                .delete(&layout::segment_manifest(g.first, g.last))
                .await?;
            storage.delete(&g.object()).await?;
            segs += 1;
        }
    }
    Ok((deleted, segs))
}

pub(crate) fn temp(dir: &Path, suffix: &str) -> Result<tempfile::TempPath, BackupError> {
    Ok(tempfile::Builder::new()
        .prefix(".ha-backup-")
        .suffix(suffix)
        .tempfile_in(dir)
        .map_err(io(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?
        .into_temp_path())
}

/// Where temporary copies go when the database has no directory of its own.
pub fn scratch(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(std::env::temp_dir)
}
