//! Test helper for backups: a real S3 API (`moto_server` from the pinned Python venv, see
//! scripts/install-deps.sh) on a free port, with a bucket, and the environment a node or the
//! `ha backup` CLI needs to reach it.
//! Must not fake S3 itself: object_store talks HTTP to moto as it would to AWS or MinIO.
//! Invariant: the server dies with its handle.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{NodeSpec, TestNode, eventually, free_port, repo_root};

/// The credentials tests use (moto accepts any unless started with `with_auth`).
pub const ACCESS_KEY: &str = "AKIAHATESTKEY0000000";
pub const SECRET_KEY: &str = "ha-test-secret-never-logged";

pub struct S3Server {
    child: Child,
    pub port: u16,
}

impl S3Server {
    /// moto_server on a free port, answering.
    pub async fn start() -> Result<S3Server> {
        Self::start_with(&[]).await
    }

    /// A server that checks credentials from its second request on (the first creates
    /// `bucket`): every key it is given is unknown to it, as a wrong key is to AWS.
    pub async fn with_auth(bucket: &str) -> Result<S3Server> {
        let s = Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]).await?;
        s.create_bucket(bucket).await?;
        Ok(s)
    }

    /// moto_server on `port` (e.g. one a node was already told about, to end an outage).
    pub async fn start_on(port: u16) -> Result<S3Server> {
        Self::spawn(port, &[]).await
    }

    async fn start_with(env: &[(&str, &str)]) -> Result<S3Server> {
        Self::spawn(free_port(), env).await
    }

    async fn spawn(port: u16, env: &[(&str, &str)]) -> Result<S3Server> {
        let bin = repo_root().join(".tools/bin/moto_server");
        if !bin.exists() {
            bail!(
                "{} is missing: run scripts/install-deps.sh (moto[server] is pinned there)",
                bin.display()
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("spawning moto_server")?;
        let s = S3Server { child, port };
        eventually(Duration::from_secs(30), "moto_server listening", || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(s)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (unsigned: moto without auth accepts it).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating bucket {bucket}: {}", r.status());
        }
        Ok(())
    }

    /// The environment a node or the CLI needs: endpoint, region and credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HA_BACKUP_ENDPOINT".into(), self.endpoint()),
            ("HA_BACKUP_REGION".into(), "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// A client of the backup storage at `url` on this server (for tests that damage it).
    pub fn storage(&self, url: &str) -> Result<ha::backup::Storage> {
        Ok(ha::backup::Storage::open_with_keys(
            &ha::config::StorageConfig {
                url: url.into(),
                endpoint: Some(self.endpoint()),
                region: "us-east-1".into(),
            },
            ACCESS_KEY,
            SECRET_KEY,
        )?)
    }

    /// Kills the server (storage unreachable); `restart` brings it back, empty.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts node `name` on database `file:t.db` in `dir` (kept across restarts), replicating
/// through `nats_url`, with `extra` flags and `env` (e.g. `S3Server::env`).
pub async fn start_node(
    nats_url: &str,
    name: &str,
    dir: &std::path::Path,
    extra: &[&str],
    env: &[(String, String)],
) -> Result<TestNode> {
    let mut args: Vec<String> = vec![
        "file:t.db".into(),
        "--name".into(),
        name.into(),
        "--replication-url".into(),
        nats_url.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut spec = NodeSpec::new(&args).dir(dir);
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    TestNode::start_spec(spec).await
}

/// `/status` `backup` of a node.
pub async fn backup_status(n: &TestNode) -> Result<serde_json::Value> {
    let s: serde_json::Value = n.client.get(n.url("/status")).send().await?.json().await?;
    Ok(s["backup"].clone())
}

/// `GET /checksum`: the applied sequence and the per-table checksums.
pub async fn checksum(n: &TestNode) -> Result<(u64, serde_json::Value)> {
    let c: serde_json::Value = n
        .client
        .get(n.url("/checksum"))
        .send()
        .await?
        .json()
        .await?;
    Ok((c["applied_seq"].as_u64().unwrap_or(0), c["tables"].clone()))
}
