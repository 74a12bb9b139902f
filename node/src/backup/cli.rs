//! Owns the commands that work on a backup location without a running cluster:
//! `ha backup list|verify|fetch` and `ha restore`.
//! Must not start a node; endpoint, region and credentials as for the node
//! (`--endpoint`/`HA_BACKUP_ENDPOINT`, `--region`/`HA_BACKUP_REGION`, `AWS_*`).
//! Exit status: 0 done, 1 failed, 2 bad arguments, 3 a restore stopped before its target
//! (the database it wrote is consistent at the sequence it names).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::layout;
use super::restore;
use super::{BackupError, Storage};
use crate::config::{RestoreTarget, StorageConfig, check_url};

/// Whether `argv` asks for `ha backup …` or `ha restore …`.
pub fn wanted(argv: &[std::ffi::OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "backup" || a == "restore")
}

#[derive(Debug, clap::Args)]
struct Where {
    /// Backup location, s3://bucket/prefix
    #[arg(long, alias = "from", env = "HA_BACKUP_URL", value_name = "URL")]
    url: String,
    /// S3-compatible endpoint (MinIO, moto, …); empty = AWS
    #[arg(long, env = "HA_BACKUP_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// Region of the bucket
    #[arg(long, env = "HA_BACKUP_REGION", default_value = "us-east-1")]
    region: String,
}

#[derive(Debug, Parser)]
#[command(
    name = "ha",
    about = "Off-cluster backups: list, verify, fetch and restore"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Inspect a backup location
    Backup {
        #[command(subcommand)]
        what: BackupCmd,
    },
    /// Build a database from a backup, as of the latest archived change, a sequence or a time
    Restore {
        #[command(flatten)]
        at: Where,
        /// Restore everything archived
        #[arg(long, conflicts_with_all = ["to_seq", "to_time"])]
        latest: bool,
        /// Restore up to this stream sequence
        #[arg(long, value_name = "N", conflicts_with = "to_time")]
        to_seq: Option<u64>,
        /// Restore up to this time (RFC 3339)
        #[arg(long, value_name = "RFC3339")]
        to_time: Option<String>,
        /// The database file to write
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum BackupCmd {
    /// List snapshots and the archive's extent (JSON with --json)
    List {
        #[command(flatten)]
        at: Where,
        #[arg(long)]
        json: bool,
    },
    /// Check every snapshot and segment against its sha256, and the archive's chain
    Verify {
        #[command(flatten)]
        at: Where,
    },
    /// Download the newest snapshot as a database file
    Fetch {
        #[command(flatten)]
        at: Where,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn open(at: &Where) -> Result<Storage, BackupError> {
    let url = check_url("--url", &at.url).map_err(|e| BackupError::Invalid(e.to_string()))?;
    Storage::open(&StorageConfig {
        url,
        endpoint: at.endpoint.clone().filter(|e| !e.trim().is_empty()),
        region: at.region.clone(),
    })
}

pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ha: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ha: {e}");
            match e {
                BackupError::Invalid(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cmd: Cmd) -> Result<ExitCode, BackupError> {
    match cmd {
        Cmd::Backup {
            what: BackupCmd::List { at, json },
        } => {
            let s = open(&at)?;
            let snaps = layout::snapshots(&s).await?;
            let segs = layout::segments(&s).await?;
            if json {
                let v = serde_json::json!({
                    "url": s.url,
                    "snapshots": snaps.iter().map(|m| serde_json::json!({
                        "seq": m.seq, "time": super::rfc3339(m.time_ns), "bytes": m.bytes,
                        "stored_bytes": m.stored_bytes, "sha256": m.sha256, "object": m.object(),
                    })).collect::<Vec<_>>(),
                    "archive": {
                        "segments": segs.len(),
                        "first_seq": segs.first().map(|g| g.first),
                        "last_seq": segs.last().map(|g| g.last),
                        "last_time": segs.last().map(|g| super::rfc3339(g.last_time_ns)),
                    },
                });
                println!("{v:#}");
            } else {
                println!("snapshots in {}:", s.url);
                for m in &snaps {
                    println!(
                        "  seq {:>10}  {}  {} bytes ({} stored)",
                        m.seq,
                        super::rfc3339(m.time_ns),
                        m.bytes,
                        m.stored_bytes
                    );
                }
                match (segs.first(), segs.last()) {
                    (Some(a), Some(b)) => println!(
                        "archive: {} segments, sequences {}..{} (to {})",
                        segs.len(),
                        a.first,
                        b.last,
                        super::rfc3339(b.last_time_ns)
                    ),
                    _ => println!("archive: empty"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Backup {
            what: BackupCmd::Verify { at },
        } => {
            let s = open(&at)?;
            let mut bad = 0;
            let snaps = layout::snapshots(&s).await?;
            let dir = tempfile::tempdir().map_err(super::io("a temporary directory"))?;
            for m in &snaps {
                let out = dir.path().join(format!("{}.db", m.seq));
                match restore::fetch_snapshot(&s, m, &out).await {
                    Ok(()) => println!("ok       snapshot {}", m.object()),
                    Err(e) => {
                        bad += 1;
                        println!("CORRUPT  snapshot {}: {e}", m.object())
                    }
                }
                let _ = std::fs::remove_file(&out);
            }
            let segs = layout::segments(&s).await?;
            let mut covered: Option<u64> = None;
            for g in &segs {
                if let Some(c) = covered
                    && g.prev > c
                {
                    bad += 1;
                    println!("MISSING  archive between sequence {c} and {}", g.prev + 1);
                }
                covered = Some(covered.unwrap_or(0).max(g.last));
                match super::archive::read_segment(&s, g).await {
                    Ok(_) => println!("ok       segment {}", g.object()),
                    Err(e) => {
                        bad += 1;
                        println!("CORRUPT  {e}");
                    }
                }
            }
            println!(
                "{} snapshots, {} segments, {bad} problems",
                snaps.len(),
                segs.len()
            );
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Backup {
            what: BackupCmd::Fetch { at, out },
        } => {
            let s = open(&at)?;
            let snaps = layout::snapshots(&s).await?;
            let m = restore::choose(&snaps, RestoreTarget::Latest, &s.url)?;
            let dir = out
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            let tmp = super::upload::temp(&dir, ".db")?;
            restore::fetch_snapshot(&s, &m, &tmp).await?;
            tmp.persist(&out)
                .map_err(|e| super::io(format!("writing {}", out.display()))(e.error))?;
            println!(
                "fetched snapshot at sequence {} into {}",
                m.seq,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Restore {
            at,
            latest: _,
            to_seq,
            to_time,
            out,
        } => {
            let target =
                RestoreTarget::parse(to_seq, to_time.as_deref()).map_err(BackupError::Invalid)?;
            let s = open(&at)?;
            let o = restore::restore(&s, target, &out).await?;
            println!(
                "{}",
                serde_json::json!({
                    "out": out.display().to_string(),
                    "snapshot_seq": o.snapshot_seq,
                    "reached_seq": o.reached_seq,
                    "applied_change_sets": o.applied_change_sets,
                    "incomplete": o.incomplete,
                })
            );
            match &o.incomplete {
                None => Ok(ExitCode::SUCCESS),
                Some(why) => {
                    eprintln!(
                        "ha restore: stopped at sequence {} before the target: {why}",
                        o.reached_seq
                    );
                    Ok(ExitCode::from(3))
                }
            }
        }
    }
}
