//! Owns the standalone nats-server that tests start when the nodes replicate through an external
//! NATS: fixed free ports and its own store dir, so it can be killed and started again "at the
//! same place".

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{eventually, free_port, nats_server_bin};

/// A standalone nats-server with JetStream, on fixed (free) ports and its own store dir, so it
/// can be stopped and started again "at the same place".
pub struct NatsProcess {
    child: Option<Child>,
    pub port: u16,
    pub monitor_port: u16,
    pub store: PathBuf,
    /// A config file given with `-c` (before the flags, which win), from `start_with_config`.
    config: Option<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl NatsProcess {
    pub async fn start() -> Result<NatsProcess> {
        Self::start_config(None).await
    }

    /// Starts it with the config file text `conf` as well (e.g. `jetstream { sync_interval:
    /// always }`); the ports and store stay those given by flags.
    pub async fn start_with_config(conf: &str) -> Result<NatsProcess> {
        Self::start_config(Some(conf)).await
    }

    async fn start_config(conf: Option<&str>) -> Result<NatsProcess> {
        let tmp = tempfile::tempdir()?;
        let config = match conf {
            Some(text) => {
                let path = tmp.path().join("nats-server.conf");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let mut n = NatsProcess {
            child: None,
            port: free_port(),
            monitor_port: free_port(),
            store: tmp.path().join("js"),
            config,
            _tmp: tmp,
        };
        n.restart().await?;
        Ok(n)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same ports and store, and waits until JetStream answers.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("nats-server is already running");
        }
        let mut cmd = Command::new(nats_server_bin());
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        let child = cmd
            .args(["-a", "127.0.0.1", "-js", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", nats_server_bin().display()))?;
        self.child = Some(child);
        let url = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.monitor_port
        );
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(15), "nats-server healthz", || {
            let req = client.get(&url).send();
            async move { req.await.ok().filter(|r| r.status().is_success()) }
        })
        .await?;
        Ok(())
    }

    /// SIGKILL (a crash); the store stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
