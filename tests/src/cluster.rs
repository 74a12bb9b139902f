//! Owns multi-process replication set-ups: `TestCluster`s of `ha` nodes on real JetStream (an
//! external `NatsProcess` or the nodes' embedded servers), with the one convergence oracle.
//! Must not mock anything: every server and node is a real child process on free ports in temp dirs.
//! Invariant: `assert_converged` is the only definition of "the cluster agrees" — every
//! acknowledged write on every node and every user table identical — so tests cannot drift apart.
//! See `lib.rs` for `TestNode` and `eventually`, and `tests/tests/replication*.rs` for users.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value as Json, json};

pub use crate::nats::NatsProcess;
use crate::{NodeSpec, TestNode, eventually, free_port};

/// The client (and route) credentials of `Topology::EmbeddedRoutes` clusters: a clustered
/// embedded nats-server refuses to start without them.
pub const NATS_USER: &str = "ha-test";
pub const NATS_PASS: &str = "ha-test-pass";

/// Which replication set-up a cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Every node runs an embedded nats-server; the servers form one JetStream cluster by
    /// routes (authenticated with `NATS_USER`/`NATS_PASS`, as clients are) and the stream has
    /// 3 replicas.
    EmbeddedRoutes,
    /// Node 0 runs an embedded nats-server; the others replicate through its URL
    /// (`--replication-url`, no server of their own).
    OneEmbedded,
    /// Every node uses `--replication-url` of an external `NatsProcess`.
    External,
}

/// One node slot of a cluster: its spec (fixed ports, fixed data dir) and the running process.
pub struct Member {
    pub name: String,
    pub spec: NodeSpec,
    pub node: Option<TestNode>,
    pub nats_port: Option<u16>,
    _dir: tempfile::TempDir,
}

/// A set of `ha` nodes replicating one database (`file:t.db`) through one stream.
pub struct TestCluster {
    pub members: Vec<Member>,
    pub topology: Topology,
    /// The external server of `Topology::External`.
    pub nats: Option<NatsProcess>,
}

/// The database every cluster node serves.
pub const DB_FILE: &str = "t.db";

impl TestCluster {
    /// 3 nodes, 3 embedded nats-servers clustered by routes, R3 stream.
    pub async fn embedded_routes(extra: &[&str]) -> Result<TestCluster> {
        Self::start(Topology::EmbeddedRoutes, 3, extra).await
    }

    /// 1 node with an embedded nats-server and 2 on its URL.
    pub async fn one_embedded(extra: &[&str]) -> Result<TestCluster> {
        Self::start(Topology::OneEmbedded, 3, extra).await
    }

    /// `n` nodes on an external nats-server started here.
    pub async fn external(n: usize, extra: &[&str]) -> Result<TestCluster> {
        Self::start(Topology::External, n, extra).await
    }

    /// `n` nodes on an external nats-server, their database opened as `file:t.db?<query>`
    /// (DSN parameters such as `_fk=true` or `_busy_timeout=100`).
    pub async fn external_dsn(n: usize, query: &str, extra: &[&str]) -> Result<TestCluster> {
        let mut all = vec!["--dsn-query", query];
        all.extend_from_slice(extra);
        Self::start(Topology::External, n, &all).await
    }

    /// Starts the cluster, again on new ports when one chosen by `free_port` was taken in the
    /// meantime (by another test's process or an outgoing connection's ephemeral port).
    async fn start(topology: Topology, n: usize, extra: &[&str]) -> Result<TestCluster> {
        let mut attempt = 1;
        loop {
            let nats = match topology {
                Topology::External => Some(NatsProcess::start().await?),
                _ => None,
            };
            match Self::start_once(topology, n, extra, nats).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!(
                        "a port was taken while the cluster started; again (attempt {attempt}): {e:#}"
                    );
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn start_once(
        topology: Topology,
        n: usize,
        extra: &[&str],
        nats: Option<NatsProcess>,
    ) -> Result<TestCluster> {
        let nats_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir()?;
            let name = format!("n{}", i + 1);
            // `--dsn-query Q` (first in `extra`, from `external_dsn`) opens `file:t.db?Q`.
            let (dsn, extra) = match extra {
                ["--dsn-query", q, rest @ ..] => (format!("file:{DB_FILE}?{q}"), rest),
                _ => (format!("file:{DB_FILE}"), extra),
            };
            let mut args: Vec<String> = vec![dsn, "--name".into(), name.clone()];
            let store = dir.path().join("nats").display().to_string();
            let mut nats_port = None;
            match topology {
                Topology::EmbeddedRoutes => {
                    nats_port = Some(nats_ports[i]);
                    args.extend([
                        "--nats-port".into(),
                        nats_ports[i].to_string(),
                        "--nats-store-dir".into(),
                        store,
                        "--nats-cluster-name".into(),
                        "hatest".into(),
                        "--nats-cluster-port".into(),
                        cluster_ports[i].to_string(),
                        "--nats-routes".into(),
                        routes.clone(),
                        "--replicas".into(),
                        "3".into(),
                        "--nats-user".into(),
                        NATS_USER.into(),
                        "--nats-pass".into(),
                        NATS_PASS.into(),
                    ]);
                }
                Topology::OneEmbedded if i == 0 => {
                    nats_port = Some(nats_ports[0]);
                    args.extend([
                        "--nats-port".into(),
                        nats_ports[0].to_string(),
                        "--nats-store-dir".into(),
                        store,
                    ]);
                }
                Topology::OneEmbedded => {
                    args.extend([
                        "--nats-port".into(),
                        "0".into(),
                        "--replication-url".into(),
                        format!("nats://127.0.0.1:{}", nats_ports[0]),
                    ]);
                }
                Topology::External => {
                    let url = nats.as_ref().map(NatsProcess::url).unwrap_or_default();
                    args.extend([
                        "--nats-port".into(),
                        "0".into(),
                        "--replication-url".into(),
                        url,
                    ]);
                }
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            let spec = NodeSpec::new(&args).dir(dir.path());
            members.push(Member {
                name,
                spec,
                node: None,
                nats_port,
                _dir: dir,
            });
        }
        let mut cluster = TestCluster {
            members,
            topology,
            nats,
        };
        match topology {
            // The JetStream meta group needs a quorum: all servers come up together.
            Topology::EmbeddedRoutes => {
                let started = futures::future::join_all(
                    cluster
                        .members
                        .iter()
                        .map(|m| TestNode::start_spec(m.spec.clone())),
                )
                .await;
                for (m, n) in cluster.members.iter_mut().zip(started) {
                    m.node = Some(n?);
                }
            }
            // Node 0 holds the server the others connect to.
            _ => {
                for m in &mut cluster.members {
                    m.node = Some(TestNode::start_spec(m.spec.clone()).await?);
                }
            }
        }
        cluster.wait_all_ready(Duration::from_secs(90)).await?;
        Ok(cluster)
    }

    /// Adds a node to an `External` cluster: `file:t.db` in a fresh dir (into which `setup` may
    /// put files first), on the cluster's NATS URL, with `extra` flags; waits for `/readyz`
    /// when `ready`. Returns its index.
    pub async fn join(
        &mut self,
        extra: &[&str],
        setup: impl FnOnce(&Path) -> Result<()>,
        ready: bool,
    ) -> Result<usize> {
        let i = self.join_starting(extra, setup)?;
        let node = self.members[i].node.as_mut().expect("just started");
        node.wait_listening(Duration::from_secs(30)).await?;
        if ready {
            wait_ready(node, Duration::from_secs(60)).await?;
        }
        Ok(i)
    }

    /// `join` without waiting for anything: the new node's index, its log readable at once
    /// (`wait_listening` on it later).
    pub fn join_starting(
        &mut self,
        extra: &[&str],
        setup: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<usize> {
        if self.topology != Topology::External {
            bail!("join needs an External cluster");
        }
        let dir = tempfile::tempdir()?;
        setup(dir.path())?;
        let i = self.members.len();
        let name = format!("n{}", i + 1);
        let mut args: Vec<String> = vec![
            format!("file:{DB_FILE}"),
            "--name".into(),
            name.clone(),
            "--nats-port".into(),
            "0".into(),
            "--replication-url".into(),
            self.nats_url(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let spec = NodeSpec::new(&args).dir(dir.path());
        let node = TestNode::spawn_spec(spec.clone())?;
        self.members.push(Member {
            name,
            spec,
            node: Some(node),
            nats_port: None,
            _dir: dir,
        });
        Ok(i)
    }

    /// The running node `i` (panics if it is stopped).
    pub fn node(&self, i: usize) -> &TestNode {
        self.members[i]
            .node
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    /// The running nodes.
    pub fn nodes(&self) -> Vec<&TestNode> {
        self.members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A NATS URL that reaches the cluster's JetStream, with the credentials it needs in it
    /// (which `ha` reads; for other clients see `nats_credentials`).
    pub fn nats_url(&self) -> String {
        match (&self.nats, self.nats_credentials()) {
            (Some(n), _) => n.url(),
            (None, Some((u, p))) => format!(
                "nats://{u}:{p}@127.0.0.1:{}",
                self.members[0].nats_port.expect("node 0 has a nats-server")
            ),
            (None, None) => format!(
                "nats://127.0.0.1:{}",
                self.members[0].nats_port.expect("node 0 has a nats-server")
            ),
        }
    }

    /// The user and password the cluster's NATS requires, if any.
    pub fn nats_credentials(&self) -> Option<(&'static str, &'static str)> {
        (self.topology == Topology::EmbeddedRoutes).then_some((NATS_USER, NATS_PASS))
    }

    /// A client of the cluster's NATS, authenticated as the nodes are.
    pub async fn nats_client(&self) -> Result<async_nats::Client> {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some((u, p)) = self.nats_credentials() {
            opts = opts.user_and_password(u.into(), p.into());
        }
        let urls: Vec<async_nats::ServerAddr> = match &self.nats {
            Some(n) => vec![n.url().parse()?],
            // The embedded servers of the running nodes (node 0's may be stopped).
            None => self
                .members
                .iter()
                .filter(|m| m.node.is_some())
                .filter_map(|m| m.nats_port)
                .map(|p| format!("nats://127.0.0.1:{p}").parse())
                .collect::<Result<_, _>>()?,
        };
        Ok(opts.connect(urls).await?)
    }

    /// A JetStream context on the cluster's NATS, for reading and publishing raw messages.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.nats_client().await?))
    }

    /// Waits until every running node's `/readyz` is 200.
    pub async fn wait_all_ready(&self, timeout: Duration) -> Result<()> {
        for n in self.nodes() {
            wait_ready(n, timeout).await?;
        }
        Ok(())
    }

    /// Waits until node `i` has applied everything the stream held when this was called (the
    /// head as JetStream says): a write on it then sees every write acknowledged before.
    pub async fn wait_caught_up(&self, i: usize, timeout: Duration) -> Result<()> {
        let head = eventually(timeout, "the stream head", || async {
            let js = self.jetstream().await.ok()?;
            let mut stream = js.get_stream("ha_replication").await.ok()?;
            Some(stream.info().await.ok()?.state.last_sequence)
        })
        .await?;
        let n = self.node(i);
        eventually(
            timeout,
            &format!("node {i} to apply up to {head}"),
            || async {
                let st = status(n).await.ok()?;
                (st["replication"]["applied_seq"].as_u64()? >= head).then_some(())
            },
        )
        .await
    }

    /// SIGKILL of node `i`; its data dir stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut n) = self.members[i].node.take() {
            n.kill();
        }
    }

    /// SIGTERM of node `i`, waiting for it to exit.
    pub async fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(mut n) = self.members[i].node.take() {
            n.stop(Duration::from_secs(20)).await?;
        }
        Ok(())
    }

    /// Starts node `i` again on the same data dir and flags (plus `extra`), and waits until it
    /// is ready.
    pub async fn restart(&mut self, i: usize, extra: &[&str]) -> Result<()> {
        if self.members[i].node.is_some() {
            bail!("node {i} is running");
        }
        let mut spec = self.members[i].spec.clone();
        spec.args.extend(extra.iter().map(|s| s.to_string()));
        let n = TestNode::start_spec(spec).await?;
        wait_ready(&n, Duration::from_secs(60)).await?;
        self.members[i].node = Some(n);
        Ok(())
    }

    /// Starts node `i` again on the same data dir and flags without waiting for `/readyz`
    /// (for nodes expected not to become ready).
    pub async fn restart_unready(&mut self, i: usize) -> Result<()> {
        if self.members[i].node.is_some() {
            bail!("node {i} is running");
        }
        let n = TestNode::start_spec(self.members[i].spec.clone()).await?;
        self.members[i].node = Some(n);
        Ok(())
    }

    /// The one oracle: waits until every running node has applied the whole stream, then checks
    /// that every `acked` write is on every node and that all user tables are identical.
    /// `acked` lists `(table, key column, key)` of acknowledged inserts.
    pub async fn assert_converged(&self, acked: &[(&str, &str, Json)]) -> Result<()> {
        let nodes = self.nodes();
        // The stream head as JetStream says (a node's own view refreshes only every second).
        let js = self.jetstream().await?;
        let last: Arc<Mutex<String>> = Arc::default();
        let res = eventually(Duration::from_secs(60), "all nodes to converge", || {
            let nodes = nodes.clone();
            let last = last.clone();
            let js = js.clone();
            async move {
                let mut stream = js.get_stream("ha_replication").await.ok()?;
                let head = stream.info().await.ok()?.state.last_sequence;
                let mut dumps = Vec::new();
                let mut heads = Vec::new();
                for n in &nodes {
                    let st = status(n).await.ok()?;
                    heads.push((st["replication"]["applied_seq"].as_u64()?, head));
                }
                if heads.iter().any(|h| h.0 < head) {
                    *last.lock().ok()? = format!("applied/stream heads: {heads:?}");
                    return None;
                }
                for n in &nodes {
                    dumps.push(dump(n).await.ok()?);
                }
                if let Some(d) = dumps.iter().position(|d| *d != dumps[0]) {
                    *last.lock().ok()? = format!(
                        "node {d} differs from node 0:\n{}",
                        diff(&dumps[0], &dumps[d])
                    );
                    return None;
                }
                Some(())
            }
        })
        .await;
        if let Err(e) = res {
            bail!(
                "{e}: {}",
                last.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
        let mut by_table: BTreeMap<(&str, &str), Vec<Json>> = BTreeMap::new();
        for (t, k, v) in acked {
            by_table.entry((t, k)).or_default().push(v.clone());
        }
        for (i, n) in nodes.iter().enumerate() {
            for ((t, k), keys) in &by_table {
                for chunk in keys.chunks(500) {
                    let marks = vec!["?"; chunk.len()].join(",");
                    let sql = format!(
                        "SELECT count(DISTINCT \"{k}\") FROM \"{t}\" WHERE \"{k}\" IN ({marks})"
                    );
                    let (s, j) = n.post(&json!({"sql": sql, "params": chunk})).await?;
                    if s != 200 || j["rows"][0][0].as_u64() != Some(chunk.len() as u64) {
                        bail!(
                            "node {i}: acknowledged writes missing from {t}: {} of {} present ({s} {j})",
                            j["rows"][0][0],
                            chunk.len()
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// Waits until `/readyz` of `n` is 200.
pub async fn wait_ready(n: &TestNode, timeout: Duration) -> Result<()> {
    let url = n.url("/readyz");
    let last: Arc<Mutex<String>> = Arc::default();
    let r = eventually(timeout, "/readyz 200", || {
        let req = n.client.get(&url).send();
        let last = last.clone();
        async move {
            let resp = req.await.ok()?;
            if resp.status().is_success() {
                return Some(());
            }
            let text = resp.text().await.unwrap_or_default();
            *last.lock().ok()? = text;
            None
        }
    })
    .await;
    if let Err(e) = r {
        let last = last.lock().map(|l| l.clone()).unwrap_or_default();
        bail!("{} at {}: last answer {last}", e, n.http);
    }
    Ok(())
}

/// `GET /status` of a node (with its `--token`, if it has one).
pub async fn status(n: &TestNode) -> Result<Json> {
    let mut req = n.client.get(n.url("/status"));
    if let Some(t) = &n.token {
        req = req.bearer_auth(t);
    }
    Ok(req.send().await?.json().await?)
}

/// The user tables of a node, in name order (no `_ha_*`, no `sqlite_*`).
pub async fn user_tables(n: &TestNode) -> Result<Vec<String>> {
    let rows = n
        .rows(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND substr(name, 1, 4) <> '_ha_' AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name",
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r[0].as_str().map(str::to_string))
        .collect())
}

/// Every user table of a node: its columns, its indexes, and all rows sorted on every column
/// (a multiset comparison, independent of rowid order and of how the DDL text was written).
pub async fn dump(n: &TestNode) -> Result<BTreeMap<String, Json>> {
    let mut out = BTreeMap::new();
    for t in user_tables(n).await? {
        let q = t.replace('"', "\"\"");
        let cols = n
            .rows(&format!(
                "SELECT name, type, pk FROM pragma_table_info('{}') ORDER BY cid",
                t.replace('\'', "''")
            ))
            .await?;
        let idx = n
            .rows(&format!(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{}' \
                 AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
                t.replace('\'', "''")
            ))
            .await?;
        let order = (1..=cols.len().max(1))
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let rows = n
            .rows(&format!("SELECT * FROM \"{q}\" ORDER BY {order}"))
            .await?;
        out.insert(t, json!({"columns": cols, "indexes": idx, "rows": rows}));
    }
    Ok(out)
}

/// A short description of how two dumps differ.
fn diff(a: &BTreeMap<String, Json>, b: &BTreeMap<String, Json>) -> String {
    let mut out = Vec::new();
    for t in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (a.get(t), b.get(t)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                if x["columns"] != y["columns"] || x["indexes"] != y["indexes"] {
                    out.push(format!(
                        "{t}: schema {} {} vs {} {}",
                        x["columns"], x["indexes"], y["columns"], y["indexes"]
                    ));
                }
                let (rx, ry) = (
                    x["rows"].as_array().cloned().unwrap_or_default(),
                    y["rows"].as_array().cloned().unwrap_or_default(),
                );
                let only_x: Vec<_> = rx.iter().filter(|r| !ry.contains(r)).take(5).collect();
                let only_y: Vec<_> = ry.iter().filter(|r| !rx.contains(r)).take(5).collect();
                out.push(format!(
                    "{t}: {} vs {} rows; only in first {only_x:?}; only in second {only_y:?}",
                    rx.len(),
                    ry.len()
                ));
            }
            (x, y) => out.push(format!("{t}: present {} vs {}", x.is_some(), y.is_some())),
        }
    }
    out.join("\n")
}

/// The working directory of a member (its data dir).
pub fn member_dir(m: &Member) -> &Path {
    m.spec.dir.as_deref().expect("members have a fixed dir")
}
