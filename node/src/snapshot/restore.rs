//! Owns `--from-latest-snapshot`: installing the newest usable snapshot before the database is
//! opened (a file is replaced, a memory database loads the download).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Fetched, SnapError, Snapshots, io};
use crate::exec::{ExecError, file_check};

/// How long the start keeps trying to read the bucket while NATS or JetStream does not answer
/// (down, or a growing cluster still electing its meta leader); then the node starts from its
/// local data and the stream, which is slower but converges the same.
const REACH_BUCKET_FOR: Duration = Duration::from_secs(120);
/// The pauses between tries: 250 ms doubling to 5 s.
fn pauses() -> ha_follow::Backoff {
    ha_follow::Backoff::new(Duration::from_millis(250), Duration::from_secs(5))
}

/// What `restore_at_start` did.
pub enum StartRestore {
    /// Nothing restored (no snapshot, none newer than the local data, or none usable).
    Kept,
    /// A file database was replaced by the snapshot at `seq`.
    File { seq: u64 },
    /// A memory database will load the snapshot at `seq` from this file; keep it until the
    /// database is open.
    Memory { seq: u64, file: tempfile::TempPath },
}

/// `--from-latest-snapshot`: before the database is opened, install the newest usable snapshot
/// if it is newer than the local data. File database: the verified download replaces the file
/// by a rename (stale `-wal`/`-shm` removed first); memory database: `db.location` is pointed
/// at the download. Never goes backwards.
pub async fn restore_at_start(
    snaps: &Snapshots,
    db: &mut crate::db::DbTarget,
) -> Result<StartRestore, SnapError> {
    use crate::db::Location;
    let local_file = match &db.location {
        Location::File(p) => Some(p.clone()),
        Location::Memory { load_from, .. } => load_from.clone(),
    };
    let local = match local_file.clone() {
        None => 0,
        Some(p) => tokio::task::spawn_blocking(move || file_check::applied_seq_of(&p))
            .await
            .map_err(|e| io("reading the local database")(std::io::Error::other(e)))?
            .map_err(|e| SnapError::Db(ExecError::Db(e)))?,
    };
    let dir = db.scratch_dir();
    let started = std::time::Instant::now();
    let (fetched, refused) = fetch_retrying(snaps, local, &dir).await?;
    let fetch_ms = started.elapsed().as_millis() as u64;
    let Some(f) = fetched else {
        if refused.is_empty() {
            tracing::info!(local_seq = local, bucket = %snaps.bucket(), "--from-latest-snapshot: no snapshot newer than the local data; starting normally");
        } else {
            tracing::error!(local_seq = local, refused = ?refused, "--from-latest-snapshot: NO USABLE SNAPSHOT (every candidate failed a check); starting normally from the local data and the stream");
        }
        return Ok(StartRestore::Kept);
    };
    match &mut db.location {
        Location::File(p) => {
            let target = p.clone();
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut side = target.clone().into_os_string();
                side.push(suffix);
                match std::fs::remove_file(&side) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(io(format!("removing {}", PathBuf::from(side).display()))(e));
                    }
                }
            }
            f.path
                .persist(&target)
                .map_err(|e| io(format!("replacing {}", target.display()))(e.error))?;
            if let Some(d) = target.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(dir) = std::fs::File::open(d)
            {
                let _ = dir.sync_all();
            }
            let restore_ms = started.elapsed().as_millis() as u64;
            tracing::warn!(snapshot = %f.name, seq = f.seq, local_seq = local, bytes = f.bytes, restore_ms, fetch_ms, file = %target.display(), "restored the database file from the latest snapshot");
            Ok(StartRestore::File { seq: f.seq })
        }
        Location::Memory { load_from, .. } => {
            *load_from = Some(f.path.to_path_buf());
            tracing::warn!(snapshot = %f.name, seq = f.seq, local_seq = local, bytes = f.bytes, "loading the in-memory database from the latest snapshot");
            Ok(StartRestore::Memory {
                seq: f.seq,
                file: f.path,
            })
        }
    }
}

/// `fetch_usable`, tried again while the bucket cannot be opened or listed (every `Nats` error
/// comes from there: a refused download is a refusal, not an error) until `REACH_BUCKET_FOR`.
async fn fetch_retrying(
    snaps: &Snapshots,
    local: u64,
    dir: &Path,
) -> Result<(Option<Fetched>, Vec<String>), SnapError> {
    let deadline = Instant::now() + REACH_BUCKET_FOR;
    let (mut pauses, mut attempt) = (pauses(), 0u32);
    loop {
        attempt += 1;
        let pause = pauses.next_pause();
        match snaps.fetch_usable(local, 0, dir).await {
            Err(e @ SnapError::Nats { .. }) if Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, attempt, retry_in_ms = pause.as_millis() as u64, bucket = %snaps.bucket(), "--from-latest-snapshot: the snapshot bucket cannot be read yet (NATS or JetStream not answering); trying again");
                tokio::time::sleep(pause).await;
            }
            r => return r,
        }
    }
}
