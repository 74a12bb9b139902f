//! Owns the node's backup loop: hold the lease, and while it is held run the change-log
//! archiver and upload a snapshot every `--backup-interval` (then apply retention); on the
//! other nodes, mirror the uploader's state for `/status`.
//! Must not block start-up or serving: everything runs in the background and failures are
//! retried with back-off and reported in `/status` `backup`.
//! Invariant: the archiver and the snapshot loop run only while this node holds the lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use super::archive::Archiver;
use super::lease::{Lease, TTL};
use super::{BackupStatus, Storage, layout, upload};
use crate::config::BackupConfig;
use crate::exec::Executor;

pub struct Service {
    pub config: BackupConfig,
    pub storage: Storage,
    pub js: jetstream::Context,
    pub stream: String,
    pub subject: String,
    pub replicas: usize,
    pub node: String,
    pub exec: Executor,
    pub tmp_dir: PathBuf,
    pub status: Arc<BackupStatus>,
}

impl Service {
    /// Starts the loop in the background.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run(shutdown).await })
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut lease = loop {
            match Lease::open(&self.js, &self.stream, self.replicas, &self.node).await {
                Ok(l) => {
                    self.status.update(|s| {
                        if s.last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("lease"))
                        {
                            s.last_error = None;
                            s.attempt_failed = false;
                        }
                    });
                    break l;
                }
                Err(e) => {
                    self.status.failed("lease", &e);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        };
        let mut work: Option<CancellationToken> = None;
        let mut tick = tokio::time::interval(TTL / 4);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let mut mine = self.status.shared();
            if work.is_none() {
                mine = super::status::Shared {
                    node: self.node.clone(),
                    since_ns: super::now_ns(),
                    ..Default::default()
                };
            }
            match lease.try_hold(&mine).await {
                Ok(None) => {
                    if work.is_none() {
                        self.status.set_role(true, Some(mine));
                        let stop = shutdown.child_token();
                        self.start_work(stop.clone());
                        work = Some(stop);
                    }
                }
                Ok(Some(seen)) => {
                    if let Some(w) = work.take() {
                        w.cancel();
                    }
                    self.status.set_role(false, Some(seen));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "backup lease not reachable");
                    if let Some(w) = work.take() {
                        w.cancel();
                        self.status.set_role(false, None);
                    }
                }
            }
        }
        if let Some(w) = work.take() {
            w.cancel();
        }
        lease.release().await;
    }

    fn start_work(&self, stop: CancellationToken) {
        let archiver = Archiver {
            js: self.js.clone(),
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            storage: self.storage.clone(),
            interval: self.config.archive_interval,
            max_messages: self.config.archive_max_messages,
            status: self.status.clone(),
        };
        tokio::spawn(archiver.run(stop.clone()));
        let snap = Snapshotter {
            exec: self.exec.clone(),
            storage: self.storage.clone(),
            tmp_dir: self.tmp_dir.clone(),
            node: self.node.clone(),
            interval: self.config.interval,
            retention: self.config.retention,
            status: self.status.clone(),
        };
        tokio::spawn(snap.run(stop));
    }
}

struct Snapshotter {
    exec: Executor,
    storage: Storage,
    tmp_dir: PathBuf,
    node: String,
    interval: Duration,
    retention: Duration,
    status: Arc<BackupStatus>,
}

impl Snapshotter {
    async fn run(self, stop: CancellationToken) {
        // The first upload is due one interval after the newest stored snapshot (now when
        // there is none or it cannot be read).
        let mut known = None;
        let mut due = tokio::time::Instant::now();
        if let Ok(snaps) = layout::snapshots(&self.storage).await
            && let Some(newest) = snaps.last()
        {
            known = Some(newest.seq);
            let age = Duration::from_nanos((super::now_ns() - newest.time_ns).max(0) as u64);
            due += self.interval.saturating_sub(age);
            self.status.update(|s| {
                s.last_upload_ns = Some(newest.time_ns);
                s.last_snapshot_seq = Some(newest.seq);
            });
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(due) => {}
            }
            match upload::upload_snapshot(
                &self.exec,
                &self.storage,
                &self.tmp_dir,
                &self.node,
                known,
            )
            .await
            {
                Ok((m, _uploaded)) => {
                    known = Some(m.seq);
                    backoff = Duration::from_secs(1);
                    self.status.update(|s| {
                        s.last_upload_ns = Some(m.time_ns);
                        s.last_snapshot_seq = Some(m.seq);
                        if s.last_error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("snapshot"))
                        {
                            s.last_error = None;
                            s.attempt_failed = false;
                        }
                    });
                    if let Err(e) = upload::apply_retention(&self.storage, self.retention).await {
                        tracing::warn!(error = %e, "backup retention failed; older backups stay until the next upload");
                    }
                    due = tokio::time::Instant::now() + self.interval;
                }
                Err(e) => {
                    self.status.failed("snapshot upload", &e);
                    due = tokio::time::Instant::now() + backoff.min(self.interval);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// Start-up's call: with `--backup-url` and replication, starts the backup loop and returns
/// the status `/status` shows; without replication, says why nothing is uploaded.
pub fn start(
    config: &crate::config::Config,
    replication: Option<&crate::replication::ReplicationHandle>,
    exec: &Executor,
    metrics: &crate::metrics::Metrics,
    shutdown: CancellationToken,
) -> Option<Arc<BackupStatus>> {
    let cfg = config.backup.clone()?;
    let status = Arc::new(BackupStatus::new(cfg.storage.url.clone(), cfg.interval));
    metrics.register(vec![
        Box::new(status.failures.clone()),
        Box::new(status.last_success.clone()),
        Box::new(status.archived.clone()),
    ]);
    let Some(r) = replication else {
        tracing::warn!(
            "--backup-url needs replication (the archive is the stream): no backups on a standalone node"
        );
        status.update(|s| {
            s.last_error = Some("backups need replication (NATS)".into());
            s.attempt_failed = true;
        });
        return Some(status);
    };
    let storage = match Storage::open(&cfg.storage) {
        Ok(s) => s,
        Err(e) => {
            status.failed("storage", &e);
            return Some(status);
        }
    };
    let (js, stream) = r.jetstream();
    Service {
        storage,
        js: js.clone(),
        stream: stream.to_string(),
        subject: r.subject.clone(),
        replicas: config.replication.replicas,
        node: config.name.clone(),
        exec: exec.clone(),
        tmp_dir: config.db.scratch_dir(),
        status: status.clone(),
        config: cfg,
    }
    .spawn(shutdown);
    tracing::info!(url = %status.url, "off-cluster backups on");
    Some(status)
}
