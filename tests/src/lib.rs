//! Test harness for cross-process tests: runs the real `ha` binary on free ports in temp dirs,
//! talks to it with real clients, and waits on conditions with deadlines (never sleeps).
//! Must not mock anything a user would run.
//! Invariant: every process a test starts is killed when its handle drops, and its log is
//! printed if the test is failing, so a red test explains itself.

pub mod apply_bench;
pub mod bench;
pub mod bench_cluster;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value as Json;

pub mod cluster;
pub mod converge;
pub mod nats;
pub mod probes;
pub mod replica;
pub mod s3;

pub use ha_testkit::{eventually, eventually_blocking, eventually_every, free_port, poll};

/// The `ha` binary under test: `$HA_BIN`, else the one built beside this test executable.
pub fn ha_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("ha");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --bins) or set HA_BIN",
        bin.display()
    );
    bin
}

/// The repository root (for `.tools/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub use ha_testkit::nats_server_bin;

/// How to start a node.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory; a fresh temp dir when `None`.
    pub dir: Option<PathBuf>,
}

impl NodeSpec {
    pub fn new<S: AsRef<str>>(args: &[S]) -> NodeSpec {
        NodeSpec {
            args: args.iter().map(|s| s.as_ref().to_string()).collect(),
            ..NodeSpec::default()
        }
    }

    pub fn env(mut self, k: &str, v: &str) -> NodeSpec {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn dir(mut self, d: &Path) -> NodeSpec {
        self.dir = Some(d.to_path_buf());
        self
    }
}

/// One running `ha` process.
pub struct TestNode {
    child: Option<Child>,
    pub http: SocketAddr,
    /// The PostgreSQL front end, when enabled.
    pub pg: Option<SocketAddr>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
    pub client: reqwest::Client,
    pub token: Option<String>,
    /// Until `wait_listening` saw it: where the ready line's HTTP and pg addresses arrive.
    listening: Option<Listening>,
}

type Listening = (mpsc::Receiver<SocketAddr>, Arc<Mutex<Option<SocketAddr>>>);

impl TestNode {
    /// Starts `ha` with `args` plus a free HTTP port on 127.0.0.1, and waits until it listens.
    pub async fn start<S: AsRef<str>>(args: &[S]) -> Result<TestNode> {
        Self::start_spec(NodeSpec::new(args)).await
    }

    pub async fn start_spec(spec: NodeSpec) -> Result<TestNode> {
        let mut node = Self::spawn_spec(spec)?;
        node.wait_listening(Duration::from_secs(30)).await?;
        Ok(node)
    }

    /// Starts `ha` without waiting for it to listen (its log can be watched meanwhile); its
    /// addresses are known after `wait_listening`.
    pub fn spawn_spec(spec: NodeSpec) -> Result<TestNode> {
        let (tmp, dir) = match &spec.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut cmd = Command::new(ha_bin());
        let has = |flag: &str| {
            spec.args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        cmd.current_dir(&dir).args([
            "--port",
            "0",
            "--listen-addr",
            "127.0.0.1",
            "--log-format",
            "text",
        ]);
        // Defaults that would make parallel nodes fight over fixed ports.
        if !has("--pg-port") {
            cmd.args(["--pg-port", "auto"]);
        }
        if !has("--nats-port") {
            cmd.args(["--nats-port", "0"]);
        }
        if std::env::var_os("HA_NATS_SERVER_BIN").is_none() {
            cmd.env("HA_NATS_SERVER_BIN", nats_server_bin());
        }
        cmd.args(&spec.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning ha")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let pg_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        for stream in [
            Box::new(child.stderr.take().context("stderr")?) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().context("stdout")?),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            let pg_addr = pg_addr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                    // The ready line names every listener; log lines come before it.
                    if line.starts_with("ha is ready:")
                        && let Some(addr) = field(&line, "http_addr=").and_then(|a| a.parse().ok())
                    {
                        if let Some(a) = field(&line, "pg_addr=").and_then(|a| a.parse().ok())
                            && let Ok(mut p) = pg_addr.lock()
                        {
                            *p = Some(a);
                        }
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        drop(tx);
        let token = spec
            .args
            .iter()
            .position(|a| a == "--token")
            .and_then(|i| spec.args.get(i + 1).cloned());
        Ok(TestNode {
            child: Some(child),
            http: "127.0.0.1:0".parse()?,
            pg: None,
            dir,
            _tmp: tmp,
            log,
            client: reqwest::Client::new(),
            token,
            listening: Some((rx, pg_addr)),
        })
    }

    /// Waits (up to `timeout`) for the line that says the node listens, and takes its addresses
    /// from it; at once if that was already seen.
    pub async fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let Some((rx, pg_addr)) = self.listening.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    self.http = addr;
                    self.pg = pg_addr.lock().ok().and_then(|p| *p);
                    return Ok(());
                }
                Err(_) => {
                    if let Some(status) = self.try_status()? {
                        bail!(
                            "ha exited with {status} before listening:\n{}",
                            self.log_text()
                        );
                    }
                    if Instant::now() > deadline {
                        bail!("ha did not start listening in time:\n{}", self.log_text());
                    }
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `POST /` with `body`; returns the status and the JSON answer.
    pub async fn post(&self, body: &Json) -> Result<(u16, Json)> {
        let mut req = self.client.post(self.url("/")).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
        Ok((status, json))
    }

    /// Runs one statement that must succeed; returns its result object.
    pub async fn sql(&self, sql: &str) -> Result<Json> {
        let (status, json) = self.post(&serde_json::json!({ "sql": sql })).await?;
        if status != 200 {
            bail!("{sql}: HTTP {status}: {json}");
        }
        Ok(json)
    }

    /// The rows of a query that must succeed.
    pub async fn rows(&self, sql: &str) -> Result<Vec<Json>> {
        let j = self.sql(sql).await?;
        j["rows"]
            .as_array()
            .cloned()
            .ok_or_else(|| anyhow!("no rows in {j}"))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits (up to `timeout`) for the process to exit.
    pub async fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(pid) = self.pid() else {
            bail!("not running")
        };
        signal(pid, "TERM")?;
        let exited = eventually_every(Duration::from_millis(20), timeout, "ha to exit", || {
            let s = self.try_status();
            async move { s.ok().flatten() }
        })
        .await;
        match exited {
            Ok(s) => {
                self.child = None;
                Ok(s)
            }
            Err(e) => bail!("{e}:\n{}", self.log_text()),
        }
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("HA_TEST_LOGS").is_some() {
            eprintln!(
                "---- ha log ({}) ----\n{}\n----",
                self.http,
                self.log_text()
            );
        }
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()?
        .success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// The value after `key` in a log line, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    Some(rest.split_whitespace().next().unwrap_or(rest))
}

/// Runs the `ha` binary with `args` to completion (for flag and config checks).
pub fn run_ha<S: AsRef<str>>(args: &[S], env: &[(&str, &str)]) -> Result<std::process::Output> {
    let mut cmd = Command::new(ha_bin());
    cmd.args(args.iter().map(AsRef::as_ref))
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}
