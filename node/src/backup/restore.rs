//! Owns point-in-time restore: the newest snapshot at or before the target, then the archived
//! change sets after it up to the target, applied by the node's own apply path
//! (`Executor::apply_batch` on the restored file, split change sets reassembled as the
//! consumer does). Used by `ha restore` and by the `--restore-from` bootstrap.
//! Must not write the output file until the whole restore is done: it is built beside it
//! under a temporary name and renamed.
//! Invariant: a corrupt or missing segment stops the replay at the last consistent point, and
//! the outcome says which sequence that is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::layout::{self, SegmentManifest, SnapshotManifest};
use super::{BackupError, Storage, archive, io, upload};
use crate::changeset::{self, ChangeSet, Reassembler, Seq};
use crate::config::RestoreTarget;
use crate::exec::{ExecConfig, ExecError, Executor, file_check};

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub snapshot_seq: u64,
    /// The applied sequence of the restored database.
    pub reached_seq: u64,
    pub applied_change_sets: u64,
    /// Why the replay stopped before the target (a corrupt or missing segment, the archive
    /// ends before the target sequence); `None` when the target was reached.
    pub incomplete: Option<String>,
}

/// Picks the snapshot a restore to `target` starts from.
pub fn choose(
    snaps: &[SnapshotManifest],
    target: RestoreTarget,
    url: &str,
) -> Result<SnapshotManifest, BackupError> {
    let Some(oldest) = snaps.first() else {
        return Err(BackupError::Invalid(format!(
            "no snapshot in {url}: nothing to restore from"
        )));
    };
    let pick = match target {
        RestoreTarget::Latest => snaps.last(),
        RestoreTarget::Seq(n) => snaps.iter().rev().find(|s| s.seq <= n),
        RestoreTarget::TimeNs(t) => snaps.iter().rev().find(|s| s.time_ns <= t),
    };
    pick.cloned().ok_or_else(|| {
        let what = match target {
            RestoreTarget::Seq(n) => format!("sequence {n}"),
            RestoreTarget::TimeNs(t) => super::rfc3339(t),
            RestoreTarget::Latest => String::new(),
        };
        BackupError::Invalid(format!(
            "cannot restore to {what}: it is before the oldest snapshot in {url} (sequence {}, taken {})",
            oldest.seq,
            super::rfc3339(oldest.time_ns)
        ))
    })
}

/// Downloads the snapshot `m` into `dest` (verified: sha256, then SQLite's integrity check).
pub async fn fetch_snapshot(
    storage: &Storage,
    m: &SnapshotManifest,
    dest: &Path,
) -> Result<(), BackupError> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let zst = upload::temp(dir, ".db.zst")?;
    let (sha, n) = storage.get_to_file(&m.object(), &zst).await?;
    if sha != m.sha256 || n != m.stored_bytes {
        return Err(BackupError::Corrupt(format!(
            "snapshot {} is corrupt: sha256 {sha} ({n} bytes), manifest says {} ({} bytes)",
            m.object(),
            m.sha256,
            m.stored_bytes
        )));
    }
    let (src, dst, name) = (zst.to_path_buf(), dest.to_path_buf(), m.object());
    tokio::task::spawn_blocking(move || {
        let input = std::fs::File::open(&src).map_err(io("reading the download"))?;
        let mut out =
            std::fs::File::create(&dst).map_err(io(format!("writing {}", dst.display())))?;
        zstd::stream::copy_decode(input, &mut out)
            .map_err(|e| BackupError::Corrupt(format!("snapshot {name}: {e}")))?;
        out.sync_all()
            .map_err(io(format!("writing {}", dst.display())))?;
        file_check::verify(&dst)
            .map_err(|e| BackupError::Corrupt(format!("snapshot {name}: {e}")))?;
        Ok::<_, BackupError>(())
    })
    .await
    .map_err(|e| io("decompressing")(std::io::Error::other(e)))?
}

/// Restores to `target` into `out` (replaced only when the restore got somewhere).
pub async fn restore(
    storage: &Storage,
    target: RestoreTarget,
    out: &Path,
) -> Result<Outcome, BackupError> {
    restore_base(storage, target, out, false).await
}

/// `restore`; with `for_new_stream` the result is a base for a new stream (bootstrap): its
/// applied sequence is 0 and the old stream's identity is gone.
pub async fn restore_base(
    storage: &Storage,
    target: RestoreTarget,
    out: &Path,
    for_new_stream: bool,
) -> Result<Outcome, BackupError> {
    let snaps = layout::snapshots(storage).await?;
    let snap = choose(&snaps, target, &storage.url)?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let work = upload::temp(&dir, ".db")?;
    fetch_snapshot(storage, &snap, &work).await?;
    tracing::info!(seq = snap.seq, url = %storage.url, "snapshot fetched; replaying the archive");
    let dsn = format!("file:{}", work.display());
    let exec = Executor::open(ExecConfig {
        target: crate::db::DbTarget::parse(Some(&dsn), false)
            .map_err(|e| BackupError::Invalid(e.to_string()))?,
        read_connections: 1,
        replication: Some(replay_hooks()),
        query_timeout: None,
        max_result_bytes: None,
    })
    .await?;
    let replay = replay(storage, &exec, &snap, target).await;
    let forget = if for_new_stream && replay.is_ok() {
        exec.set_meta(crate::replication::identity::KEY, None).await
    } else {
        Ok(())
    };
    exec.close().await;
    let (applied_change_sets, incomplete) = replay?;
    forget?;
    let reached_seq = {
        let p = work.to_path_buf();
        tokio::task::spawn_blocking(move || file_check::applied_seq_of(&p))
            .await
            .map_err(|e| io("reading the result")(std::io::Error::other(e)))?
            .map_err(|e| BackupError::Db(ExecError::Db(e)))?
    };
    if for_new_stream {
        let p = work.to_path_buf();
        tokio::task::spawn_blocking(move || file_check::stamp_applied_seq(&p, 0))
            .await
            .map_err(|e| io("resetting the result")(std::io::Error::other(e)))?
            .map_err(|e| BackupError::Db(ExecError::Db(e)))?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = out.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    work.persist(out)
        .map_err(|e| io(format!("writing {}", out.display()))(e.error))?;
    Ok(Outcome {
        snapshot_seq: snap.seq,
        reached_seq,
        applied_change_sets,
        incomplete,
    })
}

/// A restore applies like a node but publishes nothing: the writer's apply path needs the
/// replication hooks, whose sink here refuses.
struct NoPublish;

impl crate::db::sink::ChangeSink for NoPublish {
    fn publish(&self, _: &ChangeSet) -> Result<Seq, crate::db::sink::PublishError> {
        Err(crate::db::sink::PublishError(
            "a restore does not publish".into(),
        ))
    }
}

fn replay_hooks() -> crate::db::sink::ReplicationHooks {
    crate::db::sink::ReplicationHooks {
        sink: Arc::new(NoPublish),
        origin: crate::db::sink::Origin {
            node: "ha-restore".into(),
            process_id: 0,
            filename: "restore".into(),
        },
        ddl_sync: true,
        dedupe_window: std::time::Duration::from_secs(24 * 3600),
        subject: "restore".into(),
        interceptor: None,
    }
}

/// Applies the archive after `snap` up to `target`; returns how many change sets were applied
/// and why it stopped short, if it did.
async fn replay(
    storage: &Storage,
    exec: &Executor,
    snap: &SnapshotManifest,
    target: RestoreTarget,
) -> Result<(u64, Option<String>), BackupError> {
    let segs: Vec<SegmentManifest> = layout::segments(storage)
        .await?
        .into_iter()
        .filter(|s| s.last > snap.seq)
        .collect();
    let mut applier = Applier {
        exec,
        parts: Reassembler::default(),
        held: BTreeMap::new(),
        applied: 0,
    };
    // The chain: what the segments applied so far cover, from the snapshot on.
    let mut covered = snap.seq;
    let mut last_seen = snap.seq;
    let past = |seq: u64, time_ns: i128| match target {
        RestoreTarget::Latest => false,
        RestoreTarget::Seq(n) => seq > n,
        RestoreTarget::TimeNs(t) => time_ns > t,
    };
    let mut reached_target = matches!(target, RestoreTarget::Seq(n) if n <= snap.seq);
    let mut stop: Option<String> = None;
    for seg in &segs {
        if reached_target || past(seg.first, seg.first_time_ns) {
            // Nothing in this segment is wanted: the target lies before it.
            reached_target = true;
            break;
        }
        if seg.last <= covered {
            // Overlaps what is applied already (two uploaders around a lease hand-over).
            continue;
        }
        // Each segment holds every message of (prev, last]: it links when it starts at or
        // before what is covered so far.
        if seg.prev > covered {
            stop = Some(format!(
                "the archive is missing the messages after sequence {covered} (the next segment stored starts after {})",
                seg.prev
            ));
            break;
        }
        let lines = match archive::read_segment(storage, seg).await {
            Ok(l) => l,
            Err(e) => {
                stop = Some(e.to_string());
                break;
            }
        };
        for line in lines {
            if line.seq <= last_seen {
                continue;
            }
            if past(line.seq, line.time_ns) {
                reached_target = true;
                break;
            }
            last_seen = line.seq;
            applier.push(Seq(line.seq), &line.data).await?;
        }
        covered = seg.last;
        if matches!(target, RestoreTarget::Seq(n) if seg.last >= n) {
            reached_target = true;
        }
    }
    applier.release(None).await?;
    if let (None, RestoreTarget::Seq(n)) = (&stop, target)
        && !reached_target
        && covered < n
    {
        stop = Some(format!(
            "the archive ends at sequence {covered}, before {n}"
        ));
    }
    if let Some(s) = &stop {
        tracing::warn!(reason = %s, "restore stopped before its target");
    }
    Ok((applier.applied, stop))
}

/// The consumer's ordering rules for a replay: split change sets reassembled, nothing applied
/// past the first part of one still incomplete.
struct Applier<'a> {
    exec: &'a Executor,
    parts: Reassembler,
    held: BTreeMap<Seq, ChangeSet>,
    applied: u64,
}

impl Applier<'_> {
    async fn push(&mut self, seq: Seq, data: &[u8]) -> Result<(), BackupError> {
        let cs = changeset::decode(data).map_err(|e| {
            BackupError::Corrupt(format!("archived message {} cannot be decoded: {e}", seq.0))
        })?;
        if cs.part.is_some() {
            match self.parts.push(seq, cs) {
                Ok(Some(done)) => {
                    self.held.insert(done.last_seq, done.changeset);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(seq = seq.0, error = %e, "ignoring a change-set part"),
            }
        } else {
            self.held.insert(seq, cs);
        }
        if self.held.len() >= 256 {
            self.release(self.parts.oldest_pending_seq()).await?;
        }
        Ok(())
    }

    async fn release(&mut self, limit: Option<Seq>) -> Result<(), BackupError> {
        let limit = limit.or(self.parts.oldest_pending_seq());
        let later = match limit {
            Some(l) => self.held.split_off(&l),
            None => BTreeMap::new(),
        };
        let now = std::mem::replace(&mut self.held, later);
        if now.is_empty() {
            return Ok(());
        }
        let items: Vec<(Seq, Arc<ChangeSet>)> =
            now.into_iter().map(|(s, c)| (s, Arc::new(c))).collect();
        for (r, (seq, _)) in self
            .exec
            .apply_batch(items.clone())
            .await
            .into_iter()
            .zip(&items)
        {
            r.map_err(|e| {
                BackupError::Corrupt(format!("archived change set {} does not apply: {e}", seq.0))
            })?;
            self.applied += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64, time_ns: i128) -> SnapshotManifest {
        SnapshotManifest {
            seq,
            time_ns,
            bytes: 0,
            stored_bytes: 0,
            sha256: String::new(),
            node: "n".into(),
        }
    }

    #[test]
    fn the_newest_snapshot_at_or_before_the_target_is_chosen() {
        let s = vec![snap(10, 100), snap(20, 200), snap(30, 300)];
        assert_eq!(choose(&s, RestoreTarget::Latest, "u").unwrap().seq, 30);
        assert_eq!(choose(&s, RestoreTarget::Seq(25), "u").unwrap().seq, 20);
        assert_eq!(choose(&s, RestoreTarget::Seq(20), "u").unwrap().seq, 20);
        assert_eq!(choose(&s, RestoreTarget::TimeNs(299), "u").unwrap().seq, 20);
        let e = choose(&s, RestoreTarget::Seq(5), "s3://b/p")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("before the oldest snapshot") && e.contains("sequence 10"),
            "{e}"
        );
        assert!(choose(&[], RestoreTarget::Latest, "u").is_err());
    }
}
