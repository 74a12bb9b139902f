//! Owns the `logger=` option: where the extension's log lines go (`stderr` by default, `stdout`,
//! `file:/path`, or `none`), at the level `HA_SYNC_LOG` says (tracing's filter syntax, default
//! `info`).
//! Must not install a process-wide subscriber: the host process may log with tracing itself, so
//! each subscription thread sets its table's dispatcher as its own default.
//! Invariant: a file logger appends and is opened when the table is created, so a bad path fails
//! `CREATE VIRTUAL TABLE` rather than a background thread.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;

use crate::SyncError;

/// The environment variable with the log filter.
pub(crate) const FILTER_VAR: &str = "HA_SYNC_LOG";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Logger {
    Stdout,
    Stderr,
    File(PathBuf),
    Off,
}

impl Logger {
    pub(crate) fn parse(v: &str) -> Result<Logger, SyncError> {
        match v {
            "" | "stderr" => Ok(Logger::Stderr),
            "stdout" => Ok(Logger::Stdout),
            "none" | "off" => Ok(Logger::Off),
            _ => match v.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Logger::File(PathBuf::from(path))),
                _ => Err(SyncError::Options(format!(
                    "HA(...): logger must be stdout, stderr, none or file:/path, got {v:?}"
                ))),
            },
        }
    }

    /// The dispatcher the subscription threads of one table log through.
    pub(crate) fn dispatch(&self) -> Result<Dispatch, SyncError> {
        let filter = || {
            EnvFilter::try_from_env(FILTER_VAR)
                .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"))
        };
        let fmt = || {
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .with_target(false)
        };
        Ok(match self {
            Logger::Stdout => Dispatch::new(fmt().with_writer(std::io::stdout).finish()),
            Logger::Stderr => Dispatch::new(fmt().with_writer(std::io::stderr).finish()),
            Logger::Off => Dispatch::none(),
            Logger::File(path) => {
                let file = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        SyncError::Options(format!(
                            "HA(...): cannot open the log file {}: {e}",
                            path.display()
                        ))
                    })?;
                Dispatch::new(fmt().with_writer(Mutex::new(file)).finish())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_destinations_and_opens_files_eagerly() {
        assert_eq!(Logger::parse("").unwrap(), Logger::Stderr);
        assert_eq!(Logger::parse("stdout").unwrap(), Logger::Stdout);
        assert_eq!(Logger::parse("none").unwrap(), Logger::Off);
        assert!(Logger::parse("file:").is_err());
        let dir = std::env::temp_dir().join(format!("ha-sync-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        let d = Logger::File(path.clone()).dispatch().unwrap();
        tracing::dispatcher::with_default(&d, || tracing::warn!("hello file"));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("hello file")
        );
        assert!(Logger::File(dir.join("missing/x.log")).dispatch().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
