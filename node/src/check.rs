//! Owns `ha check --nodes URL,URL,…`: fetches every node's `GET /checksum`, waits (within a
//! deadline) until they all report the same applied stream sequence, and says whether their
//! per-table checksums agree. Exit status 0: agree; 1: diverged or never at one sequence;
//! 2: bad arguments.
//! Must not write to any node; it only reads `/checksum`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value as Json;

/// Compare the data of several ha nodes.
#[derive(Debug, Parser)]
#[command(name = "ha check", version)]
pub struct CheckArgs {
    /// The nodes' HTTP base URLs, comma-separated (e.g. http://n1:8080,http://n2:8080).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Bearer token of the nodes' HTTP API.
    #[arg(long, env = "HA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for the nodes to reach the same applied sequence.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Whether `argv` asks for `ha check` (its first argument is `check`).
pub fn wanted(argv: &[std::ffi::OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "check")
}

/// Runs `ha check` with `argv` (`ha check …`) and returns the exit status.
pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let args = match CheckArgs::try_parse_from(argv.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ha check: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(Verdict::Agree { seq, tables }) => {
            println!(
                "agree: {} nodes at applied sequence {seq}, {tables} tables identical",
                args.nodes.len()
            );
            ExitCode::SUCCESS
        }
        Ok(Verdict::Diverged(report)) => {
            println!("diverged:\n{report}");
            ExitCode::from(1)
        }
        Err(e) => {
            println!("diverged: cannot compare: {e}");
            ExitCode::from(1)
        }
    }
}

pub enum Verdict {
    Agree { seq: u64, tables: usize },
    Diverged(String),
}

/// How many polls in a row must see the nodes at the stream's head and still differing before
/// the answer is "diverged" without waiting for the deadline.
const SETTLED_POLLS: u32 = 3;

/// Fetches the checksums until every node is at one applied sequence and they agree, or the
/// deadline passes. A node's own commits are in its data before its applied sequence reaches
/// them, so a difference only counts once it stays while every node is at the stream's head.
pub async fn run(args: &CheckArgs) -> Result<Verdict, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + args.timeout;
    let mut settled_differences = 0;
    let mut last = None;
    loop {
        let mut sums = Vec::new();
        let mut failure = None;
        for url in &args.nodes {
            match fetch(&client, url, args.token.as_deref()).await {
                Ok(j) => sums.push((url.clone(), j)),
                Err(e) => failure = Some(format!("{url}: {e}")),
            }
        }
        let seqs: BTreeSet<u64> = sums
            .iter()
            .filter_map(|(_, j)| j["applied_seq"].as_u64())
            .collect();
        let head = sums
            .iter()
            .filter_map(|(_, j)| j["stream_last_seq"].as_u64())
            .max()
            .unwrap_or(0);
        if failure.is_none() && seqs.len() == 1 {
            match compare(&sums) {
                agree @ Verdict::Agree { .. } => return Ok(agree),
                diverged => {
                    let seq = seqs.first().copied().unwrap_or(0);
                    settled_differences = if seq >= head {
                        settled_differences + 1
                    } else {
                        0
                    };
                    if settled_differences >= SETTLED_POLLS {
                        return Ok(diverged);
                    }
                    last = Some(diverged);
                }
            }
        }
        if Instant::now() >= deadline {
            if let Some(d) = last {
                return Ok(d);
            }
            return Err(failure.unwrap_or_else(|| {
                let at: Vec<String> = sums
                    .iter()
                    .map(|(u, j)| format!("{u} at {}", j["applied_seq"]))
                    .collect();
                format!(
                    "the nodes did not reach the same applied sequence within {:?}: {}",
                    args.timeout,
                    at.join(", ")
                )
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn fetch(client: &reqwest::Client, base: &str, token: Option<&str>) -> Result<Json, String> {
    let url = format!("{}/checksum", base.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
}

/// Compares checksums taken at one applied sequence.
fn compare(sums: &[(String, Json)]) -> Verdict {
    let seq = sums[0].1["applied_seq"].as_u64().unwrap_or(0);
    let mut report = Vec::new();
    let (first_url, first) = &sums[0];
    for (url, j) in &sums[1..] {
        if j["schema_sha256"] != first["schema_sha256"] {
            report.push(format!("  schema differs between {first_url} and {url}"));
        }
        let tables = |j: &Json| -> BTreeMap<String, Json> {
            j["tables"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let (a, b) = (tables(first), tables(j));
        let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for t in names {
            match (a.get(t), b.get(t)) {
                (Some(x), Some(y)) if x == y => {}
                (x, y) => report.push(format!(
                    "  table {t}: {first_url} {} vs {url} {}",
                    x.map(|v| v.to_string()).unwrap_or_else(|| "missing".into()),
                    y.map(|v| v.to_string()).unwrap_or_else(|| "missing".into()),
                )),
            }
        }
    }
    if report.is_empty() {
        let tables = first["tables"].as_object().map(|m| m.len()).unwrap_or(0);
        Verdict::Agree { seq, tables }
    } else {
        Verdict::Diverged(format!("at applied sequence {seq}\n{}", report.join("\n")))
    }
}
