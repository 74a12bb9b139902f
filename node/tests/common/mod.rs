//! Shared helpers for the in-process pg tests: start a node on free ports in a temp dir and
//! connect real clients to it.
#![allow(dead_code)]

use std::net::SocketAddr;

use ha::config::Config;
use tokio_util::sync::CancellationToken;

pub struct TestNode {
    pub pg: SocketAddr,
    pub http: SocketAddr,
    pub token: CancellationToken,
    pub dir: tempfile::TempDir,
    pub task: tokio::task::JoinHandle<()>,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_test(dir.path());
        f(&mut config);
        let token = CancellationToken::new();
        let node = ha::node::start(config, token.clone()).await.unwrap();
        let pg = node.pg_addr.expect("pg enabled");
        let http = node.http_addr;
        let task = tokio::spawn(node.wait());
        TestNode {
            pg,
            http,
            token,
            dir,
            task,
        }
    }

    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=ha password=ha dbname=ha sslmode=disable",
            self.pg.port()
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

pub fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no code: {e}"))
}

/// The pinned Python with the client libraries (psycopg, asyncpg, SQLAlchemy, pandas) that
/// scripts/install-deps.sh installs; `HA_TEST_PYTHON` picks another.
pub fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("HA_TEST_PYTHON") {
        return p.into();
    }
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/python");
    assert!(
        p.exists(),
        "{} missing: run scripts/install-deps.sh (or set HA_TEST_PYTHON)",
        p.display()
    );
    p
}

/// Runs a blocking command off the async threads and returns its stdout; fails loudly when it
/// fails (or, with `quiet`, when it writes anything to stderr).
pub async fn run_command(mut cmd: std::process::Command, quiet: bool) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && (!quiet || stderr.is_empty()),
        "command failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}
