//! Helpers of the convergence tests: a PostgreSQL session that holds a node's writer (the way
//! to make two nodes write "at the same time" deterministically: the node cannot apply what
//! others commit meanwhile), `ha check` over a cluster, and `/status` counters.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;

use crate::cluster::{TestCluster, status};
use crate::{TestNode, eventually, run_ha};

/// A pg connection to `n` (user and password `ha`, the defaults).
pub async fn pg(n: &TestNode) -> Result<tokio_postgres::Client> {
    let addr = n.pg.context("the node has no pg listener")?;
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=ha password=ha dbname=ha",
            addr.ip(),
            addr.port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Opens a transaction on `n` and runs `first_write` in it: from then on the node's writer
/// serves only this session, so nothing that other nodes commit is applied here until
/// `commit`/`rollback`.
pub async fn hold_writer(n: &TestNode, first_write: &str) -> Result<tokio_postgres::Client> {
    let c = pg(n).await?;
    c.batch_execute("BEGIN").await?;
    c.batch_execute(first_write).await?;
    Ok(c)
}

/// A number from the `replication` object of `/status`.
pub async fn repl_counter(n: &TestNode, key: &str) -> Result<u64> {
    let s = status(n).await?;
    s["replication"][key]
        .as_u64()
        .with_context(|| format!("no replication.{key} in {s}"))
}

/// The sum of a `/status` replication counter over the cluster's running nodes.
pub async fn cluster_counter(c: &TestCluster, key: &str) -> Result<u64> {
    let mut sum = 0;
    for n in c.nodes() {
        sum += repl_counter(n, key).await?;
    }
    Ok(sum)
}

/// Waits until `/status` says `n` has `write_queue` jobs or more waiting for its writer.
pub async fn wait_write_queue(n: &TestNode, at_least: u64) -> Result<()> {
    eventually(
        Duration::from_secs(20),
        "jobs waiting for the writer",
        || async {
            let s = status(n).await.ok()?;
            (s["write_queue"].as_u64()? >= at_least).then_some(())
        },
    )
    .await
}

/// Runs `ha check --nodes …` over the running nodes; Ok(stdout) when it says they agree.
pub async fn ha_check(c: &TestCluster) -> Result<String> {
    let urls: Vec<String> = c.nodes().iter().map(|n| n.url("")).collect();
    let out = tokio::task::spawn_blocking(move || {
        let args = ["check", "--nodes", &urls.join(","), "--timeout", "60s"];
        match std::env::var_os("HA_CHECK_BIN") {
            // A checker other than the binary under test (e.g. to check nodes of an older
            // build that has no `ha check`).
            Some(bin) => Ok(std::process::Command::new(bin).args(args).output()?),
            None => run_ha(&args, &[]),
        }
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || !stdout.starts_with("agree") {
        bail!(
            "ha check: {} {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The cluster converged: every node applied the whole stream and holds the same rows
/// (`assert_converged`), `ha check` agrees, and nothing was quarantined.
pub async fn converged(c: &TestCluster) -> Result<()> {
    c.assert_converged(&[]).await?;
    ha_check(c).await?;
    let q = cluster_counter(c, "quarantined").await?;
    if q != 0 {
        bail!("{q} change sets were quarantined");
    }
    Ok(())
}

/// The rows of `sql` on every running node (they must all succeed).
pub async fn rows_everywhere(c: &TestCluster, sql: &str) -> Result<Vec<Vec<Json>>> {
    let mut out = Vec::new();
    for n in c.nodes() {
        out.push(n.rows(sql).await?);
    }
    Ok(out)
}
