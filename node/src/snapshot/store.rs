//! Owns the snapshot bucket: taking, listing, downloading and checking snapshots, and
//! recovering the live database from one (the layout and the checks are in `snapshot`'s notes).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, object_store};
use futures::StreamExt;

use super::{SnapError, io, nats};
use crate::exec::{ExecError, Executor, file_check};

/// Why a snapshot could not be taken, read or restored.
/// What `take` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Taken {
    /// The applied sequence in the snapshot; 0 when skipped.
    pub seq: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// Nothing was applied since the last snapshot: nothing was stored.
    pub skipped: bool,
}

/// A stored snapshot, as listed.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    /// From the `seq` header (0 when missing or unreadable).
    pub seq: u64,
    pub size: u64,
    pub sha256: Option<String>,
    /// The identity (creation time) of the stream the snapshot's data was applied from
    /// (header `stream_created`; `None` for snapshots taken before it was recorded).
    pub stream_created: Option<String>,
}

/// A downloaded and verified snapshot in a temporary file.
pub struct Fetched {
    pub name: String,
    pub seq: u64,
    pub bytes: u64,
    pub path: tempfile::TempPath,
}

pub struct Snapshots {
    js: jetstream::Context,
    bucket: String,
    key: String,
    replicas: usize,
    retain: usize,
    /// Where temporary copies go (beside the database file, or the OS temp dir).
    tmp_dir: PathBuf,
    /// Serialises takes; the sequence of the last snapshot this process stored.
    last: tokio::sync::Mutex<Option<u64>>,
    /// How old unreferenced chunks must be before a sweep deletes them.
    orphan_age: Duration,
    pub taken: AtomicU64,
    pub failed: AtomicU64,
    /// Chunk sets of unfinished uploads (or deletes) removed by sweeps.
    pub orphans_deleted: AtomicU64,
    /// The identity of the stream the database's data comes from, stamped on every snapshot
    /// (set by `identity` once it is recorded; `None` until then or while it is in doubt).
    stream_created: std::sync::Mutex<Option<String>>,
}

impl Snapshots {
    pub fn new(
        js: jetstream::Context,
        stream: &str,
        db_file_name: &str,
        replicas: usize,
        retain: usize,
        orphan_age: Duration,
        tmp_dir: PathBuf,
    ) -> Snapshots {
        Snapshots {
            js,
            bucket: crate::changeset::names::snapshot_bucket(stream),
            key: db_file_name.to_string(),
            replicas,
            retain: retain.max(1),
            tmp_dir,
            last: tokio::sync::Mutex::new(None),
            orphan_age,
            taken: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            orphans_deleted: AtomicU64::new(0),
            stream_created: std::sync::Mutex::new(None),
        }
    }

    /// Which stream the database's data comes from (see `identity`); `None` while in doubt.
    pub fn set_stream_identity(&self, created: Option<String>) {
        if let Ok(mut g) = self.stream_created.lock() {
            *g = created;
        }
    }

    fn stream_identity(&self) -> Option<String> {
        self.stream_created.lock().ok().and_then(|g| g.clone())
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object name of the snapshot at `seq`.
    pub fn object_name(&self, seq: u64) -> String {
        format!("{}.{seq}", self.key)
    }

    /// Opens the bucket, creating it if it is missing.
    async fn store(&self) -> Result<object_store::ObjectStore, SnapError> {
        match self.js.get_object_store(&self.bucket).await {
            Ok(s) => {
                self.follow_replicas().await;
                Ok(s)
            }
            Err(_) => self
                .js
                .create_object_store(object_store::Config {
                    bucket: self.bucket.clone(),
                    description: Some("ha database snapshots".into()),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: self.replicas,
                    compression: true,
                    ..Default::default()
                })
                .await
                .map_err(nats("create bucket")),
        }
    }

    /// Keeps the bucket's replicas at `--replicas`, as the replication stream's are: the cluster
    /// size changes after the bucket was created. Best effort: the snapshot goes on either way.
    async fn follow_replicas(&self) {
        let name = format!("OBJ_{}", self.bucket);
        let Ok(mut stream) = self.js.get_stream(&name).await else {
            return;
        };
        let Ok(info) = stream.info().await else {
            return;
        };
        let from = info.config.num_replicas;
        if from == self.replicas {
            return;
        }
        let mut config = info.config.clone();
        config.num_replicas = self.replicas;
        match self.js.update_stream(config).await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, from, to = self.replicas, "snapshot bucket replicas follow the cluster size")
            }
            Err(e) => {
                tracing::warn!(bucket = %self.bucket, from, to = self.replicas, error = %e, "changing the snapshot bucket's replicas failed; will try again at the next snapshot")
            }
        }
    }

    /// Opens the bucket if it exists (`None`: no snapshot was ever taken).
    async fn existing_store(&self) -> Result<Option<object_store::ObjectStore>, SnapError> {
        match self.js.get_object_store(&self.bucket).await {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                // Distinguish "no such bucket" from "NATS is down": ask for its stream.
                match self.js.get_stream(format!("OBJ_{}", self.bucket)).await {
                    Err(se)
                        if matches!(
                            se.kind(),
                            jetstream::context::GetStreamErrorKind::JetStream(j)
                                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                        ) =>
                    {
                        Ok(None)
                    }
                    _ => Err(nats("open bucket")(e)),
                }
            }
        }
    }

    /// Every stored snapshot of this database, newest first.
    pub async fn list(&self) -> Result<Vec<Candidate>, SnapError> {
        let Some(store) = self.existing_store().await? else {
            return Ok(Vec::new());
        };
        list_in(&store, &self.key).await
    }

    /// Takes a snapshot: a consistent copy (while writes go on), its sequence read from the
    /// copy, a streamed upload, a read-back of what was stored, then retention.
    pub async fn take(&self, exec: &Executor) -> Result<Taken, SnapError> {
        let r = self.take_inner(exec).await;
        match &r {
            Ok(t) if !t.skipped => {
                self.taken.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    async fn take_inner(&self, exec: &Executor) -> Result<Taken, SnapError> {
        let start = Instant::now();
        let mut last = self.last.lock().await;
        let store = self.store().await?;
        let newest = last.unwrap_or(0);
        let chunk_size = super::upload::chunk_size(&self.js);
        let t = Instant::now();
        // A database in WAL mode is read as it is, in one read transaction, while it uploads;
        // otherwise (a memory database) a copy is made first, so the writer is not held back.
        let (seq, bytes, content, copy) = match super::image::start(exec, chunk_size).await? {
            Some((head, content)) => (head.seq, head.bytes, content, None),
            None => {
                let tmp = self.temp_path()?;
                exec.backup_to(tmp.to_path_buf()).await?;
                let path = tmp.to_path_buf();
                let (seq, bytes) = tokio::task::spawn_blocking(move || {
                    let seq = file_check::applied_seq_of(&path)
                        .map_err(|e| SnapError::Db(ExecError::Db(e)))?;
                    let bytes = std::fs::metadata(&path)
                        .map_err(io("reading the copy"))?
                        .len();
                    Ok::<_, SnapError>((seq, bytes))
                })
                .await
                .map_err(|e| io("reading the copy")(std::io::Error::other(e)))??;
                let content = super::upload::Chunks::from_file(tmp.to_path_buf(), chunk_size);
                (seq, bytes, content, Some(tmp))
            }
        };
        let copy_ms = t.elapsed().as_millis() as u64;
        let name = self.object_name(seq);
        // After a restart the in-process mark is gone: the bucket says whether this exact
        // sequence is already stored.
        let stored_already = seq > newest
            && seq > 0
            && store
                .info(&name)
                .await
                .is_ok_and(|i| !i.deleted && i.size as u64 == bytes);
        if seq == 0 || seq <= newest || stored_already {
            tracing::debug!(
                seq,
                newest,
                "snapshot skipped: nothing applied since the last one"
            );
            return Ok(Taken {
                seq: 0,
                bytes: 0,
                duration_ms: start.elapsed().as_millis() as u64,
                skipped: true,
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert("seq", seq.to_string().as_str());
        if let Some(created) = self.stream_identity() {
            headers.insert("stream_created", created.as_str());
        }
        let t = Instant::now();
        let up = super::upload::upload(
            &self.js,
            &store,
            &self.bucket,
            &name,
            format!("ha snapshot at stream sequence {seq}"),
            headers,
            content,
        )
        .await?;
        let read_in_place = copy.is_none();
        drop(copy);
        let sha = up.sha256;
        let upload_ms = t.elapsed().as_millis() as u64;
        // Read back what the bucket holds under the name before anything older goes.
        let stored = store.info(&name).await.map_err(nats("read back"))?;
        let stored_sha = header(&stored, "sha256");
        if stored.size as u64 != bytes || up.size != bytes {
            return Err(SnapError::Size {
                name,
                expected: bytes,
                actual: stored.size as u64,
            });
        }
        if stored_sha.as_deref() != Some(sha.as_str()) {
            return Err(SnapError::Checksum {
                name,
                expected: sha,
                actual: stored_sha.unwrap_or_default(),
            });
        }
        *last = Some(seq);
        drop(last);
        if let Err(e) = self.prune(&store).await {
            tracing::warn!(error = %e, "snapshot retention failed; older snapshots stay");
        }
        if let Err(e) = self.sweep().await {
            tracing::warn!(error = %e, "sweeping the snapshot bucket failed; will try again after the next snapshot");
        }
        let duration_ms = start.elapsed().as_millis() as u64;
        tracing::info!(%name, seq, bytes, duration_ms, copy_ms, upload_ms, read_in_place, bucket = %self.bucket, "snapshot stored");
        Ok(Taken {
            seq,
            bytes,
            duration_ms,
            skipped: false,
        })
    }

    /// Deletes all but the newest `retain` snapshots written by ha (`<key>.<seq>`).
    async fn prune(&self, store: &object_store::ObjectStore) -> Result<(), SnapError> {
        let ours: Vec<Candidate> = list_in(store, &self.key)
            .await?
            .into_iter()
            .filter(|c| c.name != self.key)
            .collect();
        for old in ours.iter().skip(self.retain) {
            store.delete(&old.name).await.map_err(nats("delete"))?;
            tracing::info!(name = %old.name, seq = old.seq, "old snapshot deleted (--snapshot-retain)");
        }
        Ok(())
    }

    /// Removes what unfinished uploads and deletes left in the bucket (see `sweep`).
    pub async fn sweep(&self) -> Result<super::sweep::Swept, SnapError> {
        let swept = super::sweep::sweep(&self.js, &self.bucket, &self.key, self.orphan_age).await?;
        self.orphans_deleted
            .fetch_add(swept.orphan_uploads as u64, Ordering::Relaxed);
        if swept != Default::default() {
            tracing::info!(?swept, bucket = %self.bucket, "snapshot bucket swept");
        }
        Ok(swept)
    }

    /// The newest snapshot's chunks (for `GET /snapshot`), with its listing. One whose chunks
    /// are gone is passed over for the next older one.
    pub async fn open_latest(&self) -> Result<(Candidate, super::download::Chunks), SnapError> {
        let Some(store) = self.existing_store().await? else {
            return Err(SnapError::NotFound);
        };
        for c in list_in(&store, &self.key).await? {
            let info = match store.info(&c.name).await {
                Ok(info) => info,
                Err(e) => {
                    tracing::debug!(name = %c.name, error = %e, "snapshot vanished while listed");
                    continue;
                }
            };
            match super::download::chunks(&self.js, &self.bucket, &info).await {
                Ok(chunks) => return Ok((c, chunks)),
                // `chunks` refuses an object whose chunks are gone as 0 bytes of its size.
                Err(SnapError::Size { actual: 0, .. }) => {
                    tracing::warn!(name = %c.name, "snapshot refused: its chunks are gone");
                }
                Err(e) => return Err(e),
            }
        }
        Err(SnapError::NotFound)
    }

    /// The newest snapshot that passes every check, is newer than `newer_than` and at least
    /// `at_least`; refused ones are logged (and returned) with the check that failed.
    pub async fn fetch_usable(
        &self,
        newer_than: u64,
        at_least: u64,
        dir: &Path,
    ) -> Result<(Option<Fetched>, Vec<String>), SnapError> {
        let mut refused = Vec::new();
        let start = Instant::now();
        let Some(store) = self.existing_store().await? else {
            return Ok((None, refused));
        };
        let listed = list_in(&store, &self.key).await?;
        let list_ms = start.elapsed().as_millis() as u64;
        tracing::info!(
            candidates = listed.len(),
            newest = listed.first().map(|c| c.seq),
            list_ms,
            "snapshots listed"
        );
        for c in listed {
            if c.seq != 0 && (c.seq <= newer_than || c.seq < at_least) {
                break;
            }
            match self.download_verified(&store, &c, dir).await {
                Ok(f) if f.seq > newer_than && f.seq >= at_least => return Ok((Some(f), refused)),
                Ok(f) => {
                    tracing::info!(name = %f.name, seq = f.seq, newer_than, at_least, "snapshot not newer than needed; not used");
                }
                Err(e) => {
                    tracing::error!(name = %c.name, error = %e, "snapshot refused; trying the previous one");
                    refused.push(e.to_string());
                }
            }
        }
        Ok((None, refused))
    }

    /// Downloads `c` into a temporary file in `dir`, hashing as it goes, and checks sha256,
    /// size and that it is an intact SQLite database; returns it with the sequence inside.
    async fn download_verified(
        &self,
        store: &object_store::ObjectStore,
        c: &Candidate,
        dir: &Path,
    ) -> Result<Fetched, SnapError> {
        let start = Instant::now();
        let info = store.info(&c.name).await.map_err(nats("download"))?;
        if info.deleted {
            return Err(SnapError::Nats {
                what: "download",
                reason: format!("{}: deleted while listed", c.name),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(".ha-snapshot-")
            .suffix(".db")
            .tempfile_in(dir)
            .map_err(io(format!(
                "creating a temporary file in {}",
                dir.display()
            )))?
            .into_temp_path();
        let got = super::download::download(&self.js, &self.bucket, &info, &tmp).await?;
        let download_ms = start.elapsed().as_millis() as u64;
        let t = Instant::now();
        let bytes = got.bytes;
        if bytes != c.size || bytes != info.size as u64 {
            return Err(SnapError::Size {
                name: c.name.clone(),
                expected: c.size,
                actual: bytes,
            });
        }
        // The content's SHA-256 against our `sha256` header, and against the object store's
        // `digest` (the check the client's `get` makes; the same SHA-256 for every snapshot ha
        // wrote, and the only one for an object without the header).
        let actual = hex(got.digest.as_ref());
        if let Some(expected) = &c.sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(SnapError::Checksum {
                name: c.name.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        if let Some(d) = info.digest.as_deref().filter(|d| d.starts_with("SHA-256="))
            && !same_digest(Some(d), &actual)
        {
            return Err(SnapError::Checksum {
                name: c.name.clone(),
                expected: format!("the object store's digest {d}"),
                actual,
            });
        }
        let path = tmp.to_path_buf();
        let rollback_journal = got.rollback_journal;
        let header_seq = c.seq;
        let name = c.name.clone();
        let seq = tokio::task::spawn_blocking(move || {
            let inside = file_check::verify(&path).map_err(|source| SnapError::File {
                name: name.clone(),
                source,
            })?;
            // A rollback journal in the copy's header, so it can be loaded into memory too
            // (a WAL-mode file database switches back to WAL when it opens); the download
            // already wrote it so when the header said WAL.
            if !rollback_journal {
                file_check::make_loadable(&path).map_err(|e| SnapError::Db(ExecError::Db(e)))?;
            }
            if inside == 0 && header_seq > 0 {
                // Made by the Go original: the sequence is only in the header.
                file_check::stamp_applied_seq(&path, header_seq)
                    .map_err(|e| SnapError::Db(ExecError::Db(e)))?;
                return Ok(header_seq);
            }
            if header_seq != 0 && inside != header_seq {
                tracing::warn!(%name, header_seq, inside, "snapshot header and content disagree; using the content's");
            }
            Ok::<_, SnapError>(inside)
        })
        .await
        .map_err(|e| io("checking the download")(std::io::Error::other(e)))??;
        let check_ms = t.elapsed().as_millis() as u64;
        tracing::info!(name = %c.name, seq, bytes, download_ms, first_byte_ms = got.first_byte_ms, receive_ms = got.receive_ms, check_ms, "snapshot downloaded and verified");
        Ok(Fetched {
            name: c.name.clone(),
            seq,
            bytes,
            path: tmp,
        })
    }

    /// Automatic recovery from a gap: restores into the live database the newest usable
    /// snapshot with `seq >= first - 1` and newer than `applied`. `Ok(None)`: none covers it.
    pub async fn recover(
        &self,
        exec: &Executor,
        applied: u64,
        first: u64,
    ) -> Result<Option<(Fetched, Vec<String>)>, SnapError> {
        let dir = self.tmp_dir.clone();
        let (fetched, refused) = self
            .fetch_usable(applied, first.saturating_sub(1), &dir)
            .await?;
        let Some(f) = fetched else {
            return Ok(None);
        };
        exec.restore_from(f.path.to_path_buf()).await?;
        Ok(Some((f, refused)))
    }

    /// Recovery from a stream that is not the one the database was applied from (recreated,
    /// or ending before the node's position): restores the newest usable snapshot taken from
    /// *this* stream (`stream_created`) at a sequence it still holds (`seq <= last`), even if it
    /// is older than the local data — what is past the stream's end is lost on every node.
    /// `Ok(None)`: no snapshot is consistent with the stream.
    pub async fn recover_consistent(
        &self,
        exec: &Executor,
        created: &str,
        last: u64,
    ) -> Result<Option<(Fetched, Vec<String>)>, SnapError> {
        let mut refused = Vec::new();
        let Some(store) = self.existing_store().await? else {
            return Ok(None);
        };
        for c in list_in(&store, &self.key).await? {
            if c.stream_created.as_deref() != Some(created) || c.seq > last {
                continue;
            }
            match self.download_verified(&store, &c, &self.tmp_dir).await {
                Ok(f) if f.seq <= last => {
                    exec.restore_from(f.path.to_path_buf()).await?;
                    // The database went back: the next snapshot may be at a lower sequence.
                    *self.last.lock().await = None;
                    return Ok(Some((f, refused)));
                }
                Ok(f) => {
                    tracing::info!(name = %f.name, seq = f.seq, last, "snapshot past the stream's end; not used")
                }
                Err(e) => {
                    tracing::error!(name = %c.name, error = %e, "snapshot refused; trying the previous one");
                    refused.push(e.to_string());
                }
            }
        }
        Ok(None)
    }

    fn temp_path(&self) -> Result<tempfile::TempPath, SnapError> {
        Ok(tempfile::Builder::new()
            .prefix(".ha-snapshot-")
            .suffix(".db")
            .tempfile_in(&self.tmp_dir)
            .map_err(io(format!(
                "creating a temporary file in {}",
                self.tmp_dir.display()
            )))?
            .into_temp_path())
    }
}

/// Snapshots of `key` in `store`, newest first: `<key>.<seq>` and the original's `<key>`.
async fn list_in(
    store: &object_store::ObjectStore,
    key: &str,
) -> Result<Vec<Candidate>, SnapError> {
    let prefix = format!("{key}.");
    let mut list = store.list().await.map_err(nats("list"))?;
    let mut out = Vec::new();
    while let Some(item) = list.next().await {
        let info = item.map_err(nats("list"))?;
        if info.deleted {
            continue;
        }
        let suffix = info
            .name
            .strip_prefix(&prefix)
            .and_then(|s| s.parse::<u64>().ok());
        if info.name != key && suffix.is_none() {
            continue;
        }
        let seq = header(&info, "seq")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .or(suffix)
            .unwrap_or(0);
        out.push(Candidate {
            name: info.name.clone(),
            seq,
            size: info.size as u64,
            sha256: header(&info, "sha256"),
            stream_created: header(&info, "stream_created"),
        });
    }
    out.sort_by(|a, b| b.seq.cmp(&a.seq).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

fn header(info: &object_store::ObjectInfo, name: &str) -> Option<String> {
    info.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

/// Whether the object store's `digest` (`SHA-256=<base64url>`) is the SHA-256 whose hex is
/// `sha256_hex` (our header).
fn same_digest(digest: Option<&str>, sha256_hex: &str) -> bool {
    use base64::Engine;
    let Some(b64) = digest.and_then(|d| d.strip_prefix("SHA-256=")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::URL_SAFE.decode(b64) else {
        return false;
    };
    raw.len() == 32 && hex(&raw).eq_ignore_ascii_case(sha256_hex)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_store_digest_is_compared_with_the_hex_header() {
        // SHA-256 of "abc".
        let hex_sum = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let digest = "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=";
        assert!(same_digest(Some(digest), hex_sum));
        assert!(same_digest(Some(digest), &hex_sum.to_uppercase()));
        assert!(!same_digest(Some(digest), &"00".repeat(32)));
        assert!(!same_digest(None, hex_sum));
        assert!(!same_digest(
            Some("SHA-512=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0="),
            hex_sum
        ));
        assert!(!same_digest(Some("SHA-256=not base64!"), hex_sum));
        assert!(!same_digest(Some("SHA-256=YWJj"), "616263"));
    }
}
