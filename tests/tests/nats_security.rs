//! NATS is a write door: whoever can publish to the stream writes to every node. These tests
//! attack and use the embedded nats-server as a client on the network would, against real `ha`
//! binaries and a real nats-server: a node joins a password-protected NATS, an anonymous client
//! from a non-loopback address is refused, a route without credentials cannot join, and
//! credentials (user/password, TLS) work.

use std::time::Duration;

use ha_tests::cluster::{DB_FILE, NATS_PASS, NATS_USER, TestCluster, status, wait_ready};
use ha_tests::{TestNode, eventually, free_port, nats_server_bin};
use serde_json::json;

const SUBJECT: &str = "ha_replication.t_db";

/// Waits until `SELECT v FROM t ORDER BY v` on `n` returns `want`.
async fn wait_rows(n: &TestNode, want: serde_json::Value) {
    n.wait_rows("SELECT v FROM t ORDER BY v", &want, Duration::from_secs(30))
        .await
        .unwrap();
}

/// Issue 14: node B joins node A's password-protected embedded NATS with the credentials in
/// its `--replication-url` (and, equally, with `--nats-user/--nats-pass` of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_nats_that_requires_a_password() {
    let port = free_port();
    let a = TestNode::start(&[
        "file:t.db",
        "--name",
        "a",
        "--nats-port",
        &port.to_string(),
        "--nats-user",
        "bar",
        "--nats-pass",
        "barpass",
    ])
    .await
    .unwrap();
    wait_ready(&a, Duration::from_secs(30)).await.unwrap();
    a.sql("CREATE TABLE t(v TEXT PRIMARY KEY)").await.unwrap();
    a.sql("INSERT INTO t VALUES ('a')").await.unwrap();

    let url_creds = TestNode::start(&[
        "file:t.db",
        "--name",
        "b",
        "--nats-port",
        "0",
        "--replication-url",
        &format!("nats://bar:barpass@127.0.0.1:{port}"),
    ])
    .await
    .unwrap();
    let flag_creds = TestNode::start(&[
        "file:t.db",
        "--name",
        "c",
        "--nats-port",
        "0",
        "--replication-url",
        &format!("nats://127.0.0.1:{port}"),
        "--nats-user",
        "bar",
        "--nats-pass",
        "barpass",
    ])
    .await
    .unwrap();
    for n in [&url_creds, &flag_creds] {
        wait_ready(n, Duration::from_secs(30)).await.unwrap();
        wait_rows(n, json!([["a"]])).await;
    }
    url_creds.sql("INSERT INTO t VALUES ('b')").await.unwrap();
    wait_rows(&a, json!([["a"], ["b"]])).await;
    let st = status(&url_creds).await.unwrap();
    assert_eq!(st["replication"]["nats_connected"], json!(true), "{st}");
}

/// An IPv4 address of this machine that is not loopback (what another host would connect to).
fn non_loopback_ip() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
        .map(|a| a.to_string())
}

/// A change set as an attacker would forge it: DDL every node runs.
fn forged_change_set() -> bytes::Bytes {
    let body = json!({
        "node": "mallory",
        "process_id": 1,
        "filename": DB_FILE,
        "timestamp_ns": 1,
        "changes": [{"operation": "SQL", "table": "", "command": "CREATE TABLE IF NOT EXISTS pwned(x)"}],
    });
    serde_json::to_vec(&body).unwrap().into()
}

/// Issue 14, the forge: from a non-loopback address of this machine, an anonymous client of a
/// clustered node's NATS is refused (before it can publish or read anything); with the
/// credentials it is let in and its change set applies (so the refusal is the credentials').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_client_from_the_network_cannot_write_to_a_clustered_node() {
    let Some(ip) = non_loopback_ip() else {
        panic!("this test needs a non-loopback IPv4 address (hostname -I)");
    };
    let c = TestCluster::embedded_routes(&["--nats-host", "0.0.0.0"])
        .await
        .unwrap();
    let url = format!("nats://{ip}:{}", c.members[0].nats_port.unwrap());
    let anonymous = async_nats::ConnectOptions::new().connect(&url).await;
    let Err(e) = anonymous else {
        panic!("an anonymous client from {ip} was let in");
    };
    assert!(
        e.to_string().to_lowercase().contains("authorization"),
        "{e}"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password(NATS_USER.into(), "guess".into())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");

    let client = async_nats::ConnectOptions::new()
        .user_and_password(NATS_USER.into(), NATS_PASS.into())
        .connect(&url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish(SUBJECT, forged_change_set())
        .await
        .unwrap()
        .await
        .unwrap();
    for n in c.nodes() {
        eventually(
            Duration::from_secs(30),
            "the change set to apply",
            || async { n.rows("SELECT count(*) FROM pwned").await.ok() },
        )
        .await
        .unwrap();
    }
}

/// A nats-server of our own, outside the cluster, routing to `route` (no JetStream); its log
/// goes to a file the test reads.
struct RogueServer {
    child: std::process::Child,
    monitor: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RogueServer {
    fn start(route: &str, extra: &[&str]) -> RogueServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rogue.log");
        let monitor = free_port();
        let child = std::process::Command::new(nats_server_bin())
            .args(["-a", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-m", &monitor.to_string(), "--cluster_name", "hatest"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", free_port())])
            .args(["--routes", route, "-l"])
            .arg(&log)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        RogueServer {
            child,
            monitor,
            log,
            _dir: dir,
        }
    }

    async fn num_routes(&self) -> Option<u64> {
        let url = format!("http://127.0.0.1:{}/routez", self.monitor);
        let v: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        v["num_routes"].as_u64()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RogueServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The route port of cluster member `i` (from its flags).
fn cluster_port(c: &TestCluster, i: usize) -> u16 {
    let args = &c.members[i].spec.args;
    let at = args
        .iter()
        .position(|a| a == "--nats-cluster-port")
        .unwrap();
    args[at + 1].parse().unwrap()
}

/// Issue 14: routes are authenticated. A server routing to a node without the route
/// credentials is refused; the same server with them joins (so the refusal is the credentials').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_credentials_cannot_join() {
    let c = TestCluster::embedded_routes(&[]).await.unwrap();
    let port = cluster_port(&c, 0);
    let rogue = RogueServer::start(&format!("nats-route://127.0.0.1:{port}"), &[]);
    eventually(
        Duration::from_secs(20),
        "the route to be refused",
        || async {
            let log = rogue.log_text().to_lowercase();
            (log.contains("authorization") || log.contains("authentication")).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", rogue.log_text()));
    assert_eq!(rogue.num_routes().await, Some(0), "{}", rogue.log_text());

    let member = RogueServer::start(
        &format!("nats-route://{NATS_USER}:{NATS_PASS}@127.0.0.1:{port}"),
        &[],
    );
    eventually(
        Duration::from_secs(20),
        "the route with credentials",
        || async { (member.num_routes().await? > 0).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", member.log_text()));
}

/// A CA and one certificate for 127.0.0.1/localhost (every server presents it), as PEM files.
fn route_pki(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = ["ca.pem", "route.pem", "route.key"].map(|f| dir.join(f));
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    let [ca, cert, key] = paths.map(|p| p.display().to_string());
    (ca, cert, key)
}

/// Routes over TLS (`--nats-cluster-tls-*`): the cluster forms and replicates; a server with
/// the route credentials but no TLS cannot join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_can_use_tls() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = route_pki(pki.path());
    let c = TestCluster::embedded_routes(&[
        "--nats-cluster-tls-cert",
        &cert,
        "--nats-cluster-tls-key",
        &key,
        "--nats-cluster-tls-ca",
        &ca,
    ])
    .await
    .unwrap();
    c.node(0)
        .sql("CREATE TABLE t(v TEXT PRIMARY KEY)")
        .await
        .unwrap();
    c.node(0).sql("INSERT INTO t VALUES ('tls')").await.unwrap();
    wait_rows(c.node(2), json!([["tls"]])).await;
    let plain = RogueServer::start(
        &format!(
            "nats-route://{NATS_USER}:{NATS_PASS}@127.0.0.1:{}",
            cluster_port(&c, 0)
        ),
        &[],
    );
    eventually(
        Duration::from_secs(20),
        "the plaintext route to fail",
        || async {
            let log = c.node(0).log_text();
            log.contains("TLS route handshake error").then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", plain.log_text()));
    assert_eq!(plain.num_routes().await, Some(0), "{}", plain.log_text());
}

/// The client side against an external NATS that requires a token and mutual TLS: with
/// `--nats-token` and `--nats-tls-ca/-cert/-key` the node connects and replicates; without the
/// client certificate it does not get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_with_a_token_and_client_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = route_pki(dir.path());
    let (port, monitor) = (free_port(), free_port());
    let conf = dir.path().join("nats.conf");
    let server_log = dir.path().join("nats.log");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             authorization {{ token: \"s3cr3t-token\" }}\n\
             tls {{ cert_file: \"{cert}\"\n key_file: \"{key}\"\n ca_file: \"{ca}\"\n verify: true }}\n\
             log_file: \"{}\"\n",
            dir.path().join("js").display(),
            server_log.display()
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("nats://localhost:{port}");
    let tls = [
        "--nats-tls-ca",
        ca.as_str(),
        "--nats-tls-cert",
        cert.as_str(),
        "--nats-tls-key",
        key.as_str(),
    ];
    let start = |name: &'static str, extra: Vec<&str>| {
        let mut args = vec![
            "file:t.db",
            "--name",
            name,
            "--replication-url",
            url.as_str(),
        ];
        args.extend(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move { TestNode::start(&args).await.unwrap() }
    };
    let mut both = tls.to_vec();
    both.extend(["--nats-token", "s3cr3t-token"]);
    let a = start("a", both.clone()).await;
    let b = start("b", both).await;
    for n in [&a, &b] {
        wait_ready(n, Duration::from_secs(30)).await.unwrap();
    }
    a.sql("CREATE TABLE t(v TEXT PRIMARY KEY)").await.unwrap();
    a.sql("INSERT INTO t VALUES ('tls')").await.unwrap();
    wait_rows(&b, json!([["tls"]])).await;

    // The token without a client certificate: the server does not let it in.
    let no_cert = start(
        "c",
        vec!["--nats-tls-ca", ca.as_str(), "--nats-token", "s3cr3t-token"],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the server to refuse it",
        || async {
            let log = std::fs::read_to_string(&server_log).unwrap_or_default();
            log.contains("TLS handshake error").then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", no_cert.log_text()));
    let st = status(&no_cert).await.unwrap();
    assert_eq!(st["replication"]["nats_connected"], json!(false), "{st}");
    let _ = server.kill();
    let _ = server.wait();
}

/// A lone node without NATS credentials: its embedded server listens on loopback only (the
/// node's own client and local nodes get in, the network does not), and asking for more
/// (`--nats-host 0.0.0.0`, or clustering) stops start-up with the flags to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_nats_without_credentials_stays_on_loopback() {
    let Some(ip) = non_loopback_ip() else {
        panic!("this test needs a non-loopback IPv4 address (hostname -I)");
    };
    let port = free_port();
    let n = TestNode::start(&["file:t.db", "--nats-port", &port.to_string()])
        .await
        .unwrap();
    wait_ready(&n, Duration::from_secs(30)).await.unwrap();
    let local = async_nats::ConnectOptions::new()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await;
    assert!(local.is_ok(), "a local client gets in: {:?}", local.err());
    let remote = async_nats::ConnectOptions::new()
        .connect(format!("nats://{ip}:{port}"))
        .await;
    assert!(remote.is_err(), "a client from {ip} must not reach it");

    for extra in [
        &["--nats-host", "0.0.0.0"][..],
        &["--nats-routes", "nats-route://127.0.0.1:1"],
    ] {
        let mut args = vec!["--check-config", "--nats-port", "4222"];
        args.extend(extra);
        let out = ha_tests::run_ha(&args, &[]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.contains("--nats-user") && err.contains("--nats-pass"),
            "{extra:?}: {err}"
        );
    }
}

/// `--nats-nkey-seed FILE`: against a NATS whose only user is an NKey, the node connects with
/// the seed file and replicates; the seed never shows in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_connects_with_an_nkey_seed() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let seed_file = dir.path().join("user.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let port = free_port();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n\
             authorization {{ users: [ {{ nkey: \"{}\" }} ] }}\n",
            dir.path().join("js").display(),
            user.public_key()
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let seed_arg = seed_file.display().to_string();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let n = TestNode::start(&[
            "file:t.db",
            "--name",
            name,
            "--replication-url",
            &url,
            "--nats-nkey-seed",
            &seed_arg,
        ])
        .await
        .unwrap();
        wait_ready(&n, Duration::from_secs(30)).await.unwrap();
        nodes.push(n);
    }
    nodes[0]
        .sql("CREATE TABLE t(v TEXT PRIMARY KEY)")
        .await
        .unwrap();
    nodes[0].sql("INSERT INTO t VALUES ('nkey')").await.unwrap();
    wait_rows(&nodes[1], json!([["nkey"]])).await;
    for n in &nodes {
        assert!(!n.log_text().contains(&seed), "the seed is in the log");
    }
    let anonymous = async_nats::ConnectOptions::new().connect(&url).await;
    assert!(anonymous.is_err(), "the server requires the NKey");
    let _ = server.kill();
    let _ = server.wait();
}
