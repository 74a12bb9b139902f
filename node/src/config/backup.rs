//! Owns the `--backup-*`, `--archive-*` and `--restore-*` settings: off-cluster backups to
//! S3-compatible storage and the bootstrap of a new cluster from them.
//! Must not start anything; `backup` runs what `BackupConfig` describes.
//! Invariant: credentials never pass through here — they come from the standard `AWS_*`
//! environment variables, read by the storage client, so they are never in flags or logs.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, parse_duration};

/// The command-line half (flattened into `Args`).
#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// Off-cluster backups (snapshots + change-log archive) to S3-compatible storage,
    /// e.g. s3://bucket/prefix; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    #[arg(long, env = "HA_BACKUP_URL", value_name = "URL")]
    backup_url: Option<String>,

    /// S3-compatible endpoint (MinIO, moto, …); empty = AWS
    #[arg(long, env = "HA_BACKUP_ENDPOINT", value_name = "URL")]
    backup_endpoint: Option<String>,

    /// Region of the backup bucket
    #[arg(long, env = "HA_BACKUP_REGION", default_value = "us-east-1")]
    backup_region: String,

    /// How often a snapshot is uploaded to the backup storage
    #[arg(long, env = "HA_BACKUP_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    backup_interval: Duration,

    /// Snapshots older than this are deleted (the newest always stays), and archive segments
    /// older than the oldest kept snapshot with them
    #[arg(long, env = "HA_BACKUP_RETENTION", default_value = "7d", value_parser = parse_duration)]
    backup_retention: Duration,

    /// The longest a committed change set waits before it is in the archive
    #[arg(long, env = "HA_ARCHIVE_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    archive_interval: Duration,

    /// An archive segment is closed at this many messages
    #[arg(long, env = "HA_ARCHIVE_MAX_MESSAGES", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    archive_max_messages: u32,

    /// Bootstrap: a node whose database and stream are empty builds its database from this
    /// backup (s3://bucket/prefix) before it serves; ignored when there is data
    #[arg(long, env = "HA_RESTORE_FROM", value_name = "URL")]
    restore_from: Option<String>,

    /// With --restore-from: restore up to this stream sequence
    #[arg(
        long,
        env = "HA_RESTORE_TO_SEQ",
        value_name = "N",
        conflicts_with = "restore_to_time"
    )]
    restore_to_seq: Option<u64>,

    /// With --restore-from: restore up to this time (RFC 3339)
    #[arg(long, env = "HA_RESTORE_TO_TIME", value_name = "RFC3339")]
    restore_to_time: Option<String>,
}

/// Where backups live and how to reach them (shared by the node and the `ha backup` CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `s3://bucket/prefix`, as given.
    pub url: String,
    /// `None`: AWS.
    pub endpoint: Option<String>,
    pub region: String,
}

/// Which point a restore stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTarget {
    Latest,
    Seq(u64),
    /// Nanoseconds since the epoch.
    TimeNs(i128),
}

impl RestoreTarget {
    /// From the optional `--to-seq` / `--to-time` (at most one).
    pub fn parse(to_seq: Option<u64>, to_time: Option<&str>) -> Result<RestoreTarget, String> {
        match (to_seq, to_time) {
            (Some(_), Some(_)) => Err("give a sequence or a time to restore to, not both".into()),
            (Some(n), None) => Ok(RestoreTarget::Seq(n)),
            (None, Some(t)) => {
                let t = time::OffsetDateTime::parse(
                    t.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| {
                    format!("{t:?} is not an RFC 3339 time (e.g. 2026-12-07T01:00:00Z): {e}")
                })?;
                Ok(RestoreTarget::TimeNs(t.unix_timestamp_nanos()))
            }
            (None, None) => Ok(RestoreTarget::Latest),
        }
    }
}

/// The validated backup settings (`Config::backup`; `None` without `--backup-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupConfig {
    pub storage: StorageConfig,
    pub interval: Duration,
    pub retention: Duration,
    pub archive_interval: Duration,
    pub archive_max_messages: usize,
}

/// `--restore-from` and its target (`Config::restore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreConfig {
    pub storage: StorageConfig,
    pub target: RestoreTarget,
}

/// Checks that `url` is `s3://bucket[/prefix]`.
pub fn check_url(flag: &str, url: &str) -> Result<String, ConfigError> {
    let u = url.trim();
    let rest = u.strip_prefix("s3://").ok_or_else(|| {
        ConfigError::Invalid(format!("{flag} {u:?}: expected s3://bucket/prefix"))
    })?;
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{flag} {u:?}: the bucket name is missing (s3://bucket/prefix)"
        )));
    }
    Ok(u.to_string())
}

impl BackupArgs {
    pub(super) fn validate(
        self,
    ) -> Result<(Option<BackupConfig>, Option<RestoreConfig>), ConfigError> {
        let endpoint = self
            .backup_endpoint
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty());
        let region = self.backup_region.trim().to_string();
        let backup = match self.backup_url.filter(|u| !u.trim().is_empty()) {
            None => None,
            Some(url) => {
                for (flag, d) in [
                    ("--backup-interval", self.backup_interval),
                    ("--backup-retention", self.backup_retention),
                    ("--archive-interval", self.archive_interval),
                ] {
                    if d.is_zero() {
                        return Err(ConfigError::Invalid(format!("{flag} must be more than 0")));
                    }
                }
                Some(BackupConfig {
                    storage: StorageConfig {
                        url: check_url("--backup-url", &url)?,
                        endpoint: endpoint.clone(),
                        region: region.clone(),
                    },
                    interval: self.backup_interval,
                    retention: self.backup_retention,
                    archive_interval: self.archive_interval,
                    archive_max_messages: self.archive_max_messages as usize,
                })
            }
        };
        let restore = match self.restore_from.filter(|u| !u.trim().is_empty()) {
            None => {
                if self.restore_to_seq.is_some() || self.restore_to_time.is_some() {
                    return Err(ConfigError::Invalid(
                        "--restore-to-seq / --restore-to-time need --restore-from".into(),
                    ));
                }
                None
            }
            Some(url) => Some(RestoreConfig {
                storage: StorageConfig {
                    url: check_url("--restore-from", &url)?,
                    endpoint,
                    region,
                },
                target: RestoreTarget::parse(self.restore_to_seq, self.restore_to_time.as_deref())
                    .map_err(|e| ConfigError::Invalid(format!("--restore-to-time: {e}")))?,
            }),
        };
        Ok((backup, restore))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(RestoreTarget::parse(None, None), Ok(RestoreTarget::Latest));
        assert_eq!(
            RestoreTarget::parse(Some(7), None),
            Ok(RestoreTarget::Seq(7))
        );
        assert_eq!(
            RestoreTarget::parse(None, Some("1970-01-01T00:00:01Z")),
            Ok(RestoreTarget::TimeNs(1_000_000_000))
        );
        assert!(
            RestoreTarget::parse(None, Some("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(RestoreTarget::parse(Some(1), Some("1970-01-01T00:00:01Z")).is_err());
    }

    fn run(args: &[&str]) -> Result<crate::config::Config, ConfigError> {
        let mut argv = vec![
            "ha",
            "--nats-port",
            "0",
            "--replication-url",
            "nats://127.0.0.1:4222",
        ];
        argv.extend_from_slice(args);
        match crate::config::Command::parse(argv)? {
            crate::config::Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backup_flags_come_from_flags_and_the_config_file() {
        let c = run(&[]).unwrap();
        assert!(c.backup.is_none() && c.restore.is_none());
        let c = run(&["--backup-url", "s3://b/p", "--archive-interval", "2s"]).unwrap();
        let b = c.backup.unwrap();
        assert_eq!(b.storage.url, "s3://b/p");
        assert_eq!(b.storage.region, "us-east-1");
        assert_eq!(b.interval, Duration::from_secs(3600));
        assert_eq!(b.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(b.archive_interval, Duration::from_secs(2));
        assert_eq!(b.archive_max_messages, 1000);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ha.yaml");
        std::fs::write(&f, "backup-url: s3://f/x\nbackup-endpoint: http://127.0.0.1:9000\nrestore-from: s3://f/y\nrestore-to-seq: 7\n").unwrap();
        let c = run(&["--config", f.to_str().unwrap()]).unwrap();
        assert_eq!(
            c.backup.unwrap().storage.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        let r = c.restore.unwrap();
        assert_eq!(
            (r.storage.url.as_str(), r.target),
            ("s3://f/y", RestoreTarget::Seq(7))
        );
        assert!(run(&["--restore-to-seq", "5"]).is_err());
        assert!(run(&["--backup-url", "http://b"]).is_err());
        assert!(run(&["--backup-url", "s3://b", "--archive-interval", "0s"]).is_err());
        assert!(run(&["--restore-from", "s3://b", "--restore-to-time", "soon"]).is_err());
    }

    #[test]
    fn backups_without_a_change_log_are_refused() {
        let argv = ["ha", "--nats-port", "0", "--backup-url", "s3://b/p"];
        let e = crate::config::Command::parse(argv).unwrap_err().to_string();
        assert!(e.contains("--backup-url needs the change log"), "{e}");
        // A restore at start needs no log of its own.
        let argv = ["ha", "--nats-port", "0", "--restore-from", "s3://b/p"];
        assert!(crate::config::Command::parse(argv).is_ok());
    }

    #[test]
    fn urls_must_name_a_bucket() {
        assert!(check_url("--backup-url", "s3://b/p").is_ok());
        assert!(check_url("--backup-url", "s3://b").is_ok());
        assert!(check_url("--backup-url", "http://b/p").is_err());
        assert!(check_url("--backup-url", "s3:///p").is_err());
    }
}
