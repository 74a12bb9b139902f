//! Owns the replicated clusters of the benchmark programs (`ha-bench-repl`, `ha-bench-sweep`) and
//! the measures taken on them: replicated writes beside raw JetStream publishes of the same
//! message on the same cluster, and replication lag at a steady rate. Asserts nothing.
//! The layouts: `n` nodes with embedded nats-servers clustered by routes (user/password), or `n`
//! nodes on one external nats-server (`NatsProcess`). Every node serves `file:bench.db` with the
//! tables `w(id, v, at)` (the write load) and `lag(id, v)` (the lag probe).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use crate::bench::{Sample, http_load};
use crate::nats::NatsProcess;
use crate::{NodeSpec, TestNode, free_port};

/// The user and password of the embedded servers' NATS (clients and routes).
pub const NATS_USER: &str = "bench";
pub const NATS_PASS: &str = "bench-pass";

/// A subject of the stream that no node consumes: the log alone.
pub const RAW_SUBJECT: &str = "ha_replication.rawbench";
/// The subject the nodes consume: the log and its delivery to every node (each receives,
/// decodes, recognises the copy of a transaction it has already applied, and acks).
pub const REPLICATED_SUBJECT: &str = "ha_replication.bench_db";

/// Where the change sets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `nodes` nodes, each with an embedded nats-server, the servers clustered by routes;
    /// the stream has `replicas` replicas; the servers sync as `--nats-sync` says.
    Embedded { nodes: usize, replicas: usize },
    /// `nodes` nodes with `--nats-port 0 --replication-url` of one external nats-server
    /// (stream replicas 1); the server syncs before every acknowledgement when `--nats-sync`
    /// is `always` (as the embedded default), else with nats-server's own default.
    External { nodes: usize },
}

/// A running benchmark cluster with its tables created and replicated to node 2.
pub struct BenchCluster {
    pub nodes: Vec<TestNode>,
    pub replicas: usize,
    /// The NATS client ports of the nodes' embedded servers, or the external server's.
    pub nats_ports: Vec<u16>,
    credentials: bool,
    // Dropped after the nodes: the server they replicate through, then their directories.
    _external: Option<NatsProcess>,
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    /// Starts `layout` with `--nats-sync sync` and waits until every node is ready and node 2
    /// has the tables.
    pub async fn start(layout: Layout, sync: &str) -> Result<BenchCluster> {
        let dir = tempfile::tempdir()?;
        let (n, replicas) = match layout {
            Layout::Embedded { nodes, replicas } => (nodes, replicas),
            Layout::External { nodes } => (nodes, 1),
        };
        let external = match layout {
            Layout::External { .. } if sync == "always" => {
                Some(NatsProcess::start_with_config("jetstream { sync_interval: always }\n").await?)
            }
            Layout::External { .. } => Some(NatsProcess::start().await?),
            Layout::Embedded { .. } => None,
        };
        let nats_ports: Vec<u16> = match &external {
            Some(x) => vec![x.port],
            None => (0..n).map(|_| free_port()).collect(),
        };
        let routes_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = routes_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut specs = Vec::new();
        for i in 0..n {
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d)?;
            let mut args = vec![
                "--name".to_string(),
                format!("n{i}"),
                "--log-level".into(),
                "warn".into(),
            ];
            match &external {
                Some(x) => args.extend([
                    "--nats-port".into(),
                    "0".into(),
                    "--replication-url".into(),
                    x.url(),
                ]),
                None => args.extend([
                    "--nats-port".into(),
                    nats_ports[i].to_string(),
                    "--nats-cluster-name".into(),
                    "bench".into(),
                    "--nats-cluster-port".into(),
                    routes_ports[i].to_string(),
                    "--nats-routes".into(),
                    routes.clone(),
                    "--replicas".into(),
                    replicas.to_string(),
                    "--nats-user".into(),
                    NATS_USER.into(),
                    "--nats-pass".into(),
                    NATS_PASS.into(),
                    "--nats-sync".into(),
                    sync.into(),
                ]),
            }
            args.push("file:bench.db".into());
            specs.push(NodeSpec::new(&args).dir(&d));
        }
        // The JetStream meta group needs a quorum: the servers come up together.
        let mut nodes = Vec::new();
        for started in futures::future::join_all(specs.into_iter().map(TestNode::start_spec)).await
        {
            nodes.push(started?);
        }
        for n in &nodes {
            crate::eventually(Duration::from_secs(60), "node ready", || async {
                let r = n.client.get(n.url("/readyz")).send().await.ok()?;
                r.status().is_success().then_some(())
            })
            .await?;
        }
        // Create the tables on node 1 and wait until node 2 has them.
        nodes[0]
            .sql("CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT, at INTEGER)")
            .await?;
        nodes[0]
            .sql("CREATE TABLE lag(id INTEGER PRIMARY KEY, v TEXT)")
            .await?;
        crate::eventually(Duration::from_secs(30), "schema on node 2", || async {
            nodes[1].rows("SELECT count(*) FROM lag").await.ok()
        })
        .await?;
        Ok(BenchCluster {
            nodes,
            replicas,
            nats_ports,
            credentials: external.is_none(),
            _external: external,
            _dir: dir,
        })
    }

    /// A JetStream client on node 1's server (or the external one).
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context> {
        let opts = if self.credentials {
            async_nats::ConnectOptions::with_user_and_password(NATS_USER.into(), NATS_PASS.into())
        } else {
            async_nats::ConnectOptions::new()
        };
        let client = opts
            .connect(format!("127.0.0.1:{}", self.nats_ports[0]))
            .await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Runs `body` once on node 1 and returns the message it published: a real replicated
    /// message of that shape, to publish raw at the same size.
    pub async fn sample_message(
        &self,
        js: &async_nats::jetstream::Context,
        body: &Json,
    ) -> Result<bytes::Bytes> {
        let (status, answer) = self.nodes[0].post(body).await?;
        if status != 200 {
            bail!("HTTP {status}: {answer}");
        }
        let stream = js.get_stream("ha_replication").await?;
        let sample = stream
            .get_last_raw_message_by_subject(REPLICATED_SUBJECT)
            .await
            .context("reading a replicated message")?;
        Ok(sample.payload)
    }

    /// Replicated INSERTs through HTTP on node 1 beside raw publishes, at concurrency 1, 16 and
    /// 64; one Markdown row each (`| what | concurrency | ops/s | p50 | p99 |`).
    pub async fn write_rates(&self, dur: Duration) -> Result<Vec<String>> {
        let r = self.replicas;
        let mut out = Vec::new();
        let js = self.jetstream().await?;
        let payload = self
            .sample_message(
                &js,
                &json!({"sql": "INSERT INTO w(v, at) VALUES ('a typical row of about one hundred bytes, padded to make it so: ........', 1)"}),
            )
            .await?;
        for conc in [1usize, 16, 64] {
            let s = self.insert_load(conc, dur).await?;
            out.push(format!(
                "| replicated INSERT via HTTP (node 1, R{r}) | {conc} | {:.0} | {:.3} | {:.3} |",
                s.per_second(),
                s.pct(0.5),
                s.pct(0.99)
            ));
            for (subject, label) in [
                (RAW_SUBJECT, "raw JetStream publish+ack"),
                (
                    REPLICATED_SUBJECT,
                    "raw publish+ack to the replicated subject",
                ),
            ] {
                let s = raw_publishes(&js, subject, payload.clone(), conc, dur).await?;
                out.push(format!(
                    "| {label}, {} B (R{r}) | {conc} | {:.0} | {:.3} | {:.3} |",
                    payload.len(),
                    s.per_second(),
                    s.pct(0.5),
                    s.pct(0.99)
                ));
            }
        }
        Ok(out)
    }

    /// Single-row replicated INSERTs (about 100 bytes) on node 1 from `conc` clients for `dur`.
    pub async fn insert_load(&self, conc: usize, dur: Duration) -> Result<Sample> {
        http_load(self.nodes[0].url("/"), conc, dur, |w, i| {
            json!({"sql": "INSERT INTO w(v, at) VALUES (?, ?)",
                   "params": [format!("worker {w} row {i} ......................................................"), i]})
        })
        .await
    }

    /// Single-row INSERTs into `lag` on node 1 at each of `rates` per second for `dur`, node 2
    /// watched; one Markdown row each
    /// (`| {rate} writes/s | reached | lag p50 ms | lag p99 ms | lag max ms |`).
    pub async fn lag_rows(
        &self,
        rates: &[u64],
        dur: Duration,
        next_id: &mut i64,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for &rate in rates {
            let (reached, lag) = lag_run(
                &self.nodes[0],
                &self.nodes[1],
                rate,
                dur,
                next_id,
                |id| json!({"sql": "INSERT INTO lag(id, v) VALUES (?, 'x')", "params": [id]}),
            )
            .await?;
            out.push(format!(
                "| {rate} writes/s | {reached:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                lag.after_ack.pct(0.5),
                lag.after_ack.pct(0.99),
                lag.after_ack.max(),
                lag.after_send.pct(0.5),
                lag.after_send.pct(0.99)
            ));
        }
        Ok(out)
    }
}

/// `conc` publishers of `payload` to `subject`, each waiting for its ack, back to back for `dur`.
pub async fn raw_publishes(
    js: &async_nats::jetstream::Context,
    subject: &'static str,
    payload: bytes::Bytes,
    conc: usize,
    dur: Duration,
) -> Result<Sample> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let js = js.clone();
        let payload = payload.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                js.publish(subject, payload.clone()).await?.await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok((lat.len() as u64, lat))
        }));
    }
    Sample::after(dur, &stop, tasks, start).await
}

/// What `lag_run` measured, per body: from its acknowledgement on `a` to its `lag` row's
/// visibility on `b` (the lag a client sees after its write returned), and from sending it to
/// `a` to that visibility (the whole way, which a faster acknowledgement does not lengthen).
pub struct Lag {
    pub after_ack: Sample,
    pub after_send: Sample,
}

/// Posts `body(id)` to `a` at `rate` per second for `dur` while watching `b`; every body must
/// insert the row `id` into `lag` (and may write more in the same transaction). Returns the
/// rate reached and the lags (`Lag`).
pub async fn lag_run<F>(
    a: &TestNode,
    b: &TestNode,
    rate: u64,
    dur: Duration,
    next_id: &mut i64,
    body: F,
) -> Result<(f64, Lag)>
where
    F: Fn(i64) -> Json,
{
    // Per id: when it was sent to a, and when a acknowledged it.
    let acked: Arc<Mutex<HashMap<i64, (Instant, Instant)>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let first = *next_id;
    let total = ((rate as f64 * dur.as_secs_f64()) as i64).max(1);
    *next_id += total;
    let stop = Arc::new(AtomicBool::new(false));
    // The watcher: new rows on b, as soon as they show.
    let watcher = {
        let (client, url, seen, stop) = (b.client.clone(), b.url("/"), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut low = first - 1;
            loop {
                let body = json!({"sql": "SELECT id FROM lag WHERE id > ? ORDER BY id LIMIT 5000", "params": [low]});
                if let Ok(r) = client.post(&url).json(&body).send().await
                    && let Ok(j) = r.json::<Json>().await
                {
                    let now = Instant::now();
                    let mut s = seen.lock().await;
                    for row in j["rows"].as_array().cloned().unwrap_or_default() {
                        if let Some(id) = row[0].as_i64() {
                            s.entry(id).or_insert(now);
                        }
                    }
                    while s.contains_key(&(low + 1)) {
                        low += 1;
                    }
                    if stop.load(Ordering::Relaxed) && low >= first + total - 1 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut writers = Vec::new();
    for id in first..first + total {
        tick.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let (client, url, acked) = (a.client.clone(), a.url("/"), acked.clone());
        let body = body(id);
        writers.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = Instant::now();
            let r = client.post(&url).json(&body).send().await?;
            if !r.status().is_success() {
                bail!("HTTP {}", r.status());
            }
            acked.lock().await.insert(id, (sent, Instant::now()));
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let reached = total as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), watcher).await??;
    let acked = acked.lock().await;
    let seen = seen.lock().await;
    let since = |pick: fn(&(Instant, Instant)) -> Instant| {
        let lags: Vec<u64> = acked
            .iter()
            .filter_map(|(id, t)| {
                seen.get(id)
                    .map(|s| s.saturating_duration_since(pick(t)).as_micros() as u64)
            })
            .collect();
        Sample::from_latencies(lags, dur.as_secs_f64())
    };
    let lag = Lag {
        after_ack: since(|t| t.1),
        after_send: since(|t| t.0),
    };
    Ok((reached, lag))
}
