//! Owns `--restore-from`: before the database opens, a node whose database is empty and whose
//! stream holds nothing that came before it builds its database from the backup.
//! Must not touch a database that has data (it logs at INFO and leaves it alone).
//! Invariant: the restored file is a base for the *new* stream: its applied sequence is reset
//! to 0 and the old stream's identity removed, so the node consumes the new stream from its
//! start. Every node bootstrapped from the same backup and target gets the same base.

use std::path::Path;

use super::{BackupError, Storage, restore};
use crate::config::RestoreConfig;

/// Whether the database file at `path` is empty (missing or zero bytes).
fn is_empty(path: &Path) -> Result<bool, BackupError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len() == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(super::io(format!("reading {}", path.display()))(e)),
    }
}

/// Restores into `db` (a file) when it is empty and `stream_first_seq <= 1` (the stream is
/// empty or holds the new cluster's history from its start). Returns the outcome, or `None`
/// when it did nothing.
pub async fn run(
    cfg: &RestoreConfig,
    db: &Path,
    stream_first_seq: u64,
) -> Result<Option<restore::Outcome>, BackupError> {
    let path = db.to_path_buf();
    let empty = tokio::task::spawn_blocking(move || is_empty(&path))
        .await
        .map_err(|e| super::io("reading the database")(std::io::Error::other(e)))??;
    if !empty {
        tracing::info!(url = %cfg.storage.url, "--restore-from ignored: the database has data");
        return Ok(None);
    }
    if stream_first_seq > 1 {
        tracing::info!(url = %cfg.storage.url, stream_first_seq, "--restore-from ignored: the stream has history this node recovers from instead");
        return Ok(None);
    }
    let storage = Storage::open(&cfg.storage)?;
    tracing::warn!(url = %cfg.storage.url, target = ?cfg.target, "--restore-from: building the database from the backup before serving");
    let outcome = restore::restore_base(&storage, cfg.target, db, true).await?;
    match &outcome.incomplete {
        None => tracing::warn!(
            snapshot_seq = outcome.snapshot_seq,
            reached_seq = outcome.reached_seq,
            "--restore-from: database restored"
        ),
        Some(why) => {
            tracing::error!(reached_seq = outcome.reached_seq, reason = %why, "--restore-from: restored only up to an earlier point")
        }
    }
    Ok(Some(outcome))
}

/// Start-up's call: bootstraps when asked and possible. An error stops start-up: a node told
/// to start from a backup must not serve an empty database instead.
pub async fn at_start(
    cfg: &RestoreConfig,
    target: &crate::db::DbTarget,
    replication: Option<&crate::replication::ReplicationHandle>,
) -> Result<(), BackupError> {
    let crate::db::Location::File(path) = &target.location else {
        return Err(BackupError::Invalid(
            "--restore-from needs a file database (not --memory)".into(),
        ));
    };
    let first = match replication {
        None => 0,
        Some(r) => {
            let (js, stream) = r.jetstream();
            match js.get_stream(stream).await {
                Ok(s) => {
                    let st = &s.cached_info().state;
                    if st.messages == 0 {
                        0
                    } else {
                        st.first_sequence
                    }
                }
                // No stream yet: a new cluster.
                Err(_) => 0,
            }
        }
    };
    run(cfg, path, first).await.map(|_| ())
}
