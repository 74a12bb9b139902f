//! `examples/compose/docker-compose.yml` without a Docker engine: every service's command and
//! environment (env file and `environment`, as compose layers them) runs as the image would run
//! it, as a process in a network namespace of its own, with the service names resolvable and each
//! named volume a directory of its own. It proves the compose file forms a working three-node
//! cluster: each service's own health check passes, a write on ha1 is read on ha2 and ha3 (HTTP
//! with the env file's token, and psql with its login), and a write on ha3 reaches ha1.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use ha_e2e::compose::{self, Service};
use ha_e2e::image::Image;
use ha_e2e::network::{Host, Network, run};
use ha_e2e::pod::{Objects, Pod, PodSpecInput, exec};
use ha_e2e::{local_binary, repo_root};
use ha_testkit::until;
use serde_json::Value as Json;

const READY: Duration = Duration::from_secs(120);

struct Node {
    service: Service,
    host: Host,
    _pod: Pod,
}

fn env<'a>(s: &'a Service, key: &str) -> Result<&'a str> {
    s.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .with_context(|| format!("{} has no {key}", s.name))
}

/// `POST /` on `service` from the client namespace, with the env file's token.
fn http(client: &Host, node: &Node, sql: &str) -> Result<Json> {
    let token = env(&node.service, "HA_TOKEN")?;
    let body = serde_json::json!({ "sql": sql }).to_string();
    let url = format!("http://{}:8080/", node.service.name);
    let auth = format!("authorization: Bearer {token}");
    let out = exec(
        client,
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "-H",
            &auth,
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &url,
        ],
    )?;
    serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))
}

fn psql(client: &Host, node: &Node, sql: &str) -> Result<String> {
    let out = run(client
        .command("psql")
        .args(["-h", &node.service.name, "-p", "5432"])
        .args(["-U", env(&node.service, "HA_PG_USER")?, "-d", "ha"])
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", env(&node.service, "HA_PG_PASS")?)
        .env("PGCONNECT_TIMEOUT", "5"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs the service's health check in its own namespace (the image's `/usr/local/bin/ha` is the
/// locally built one).
fn healthy(node: &Node) -> Result<bool> {
    let (cmd, args) = node
        .service
        .healthcheck
        .split_first()
        .context("empty health check")?;
    let program = match cmd.strip_prefix("/usr/local/bin/") {
        Some(name) => local_binary(name).context("no local binary")?,
        None => bail!("health check runs {cmd}, which the simulation does not provide"),
    };
    let status = node
        .host
        .command(program.to_str().context("binary path")?)
        .args(args)
        .status()?;
    Ok(status.success())
}

#[test]
fn the_compose_file_starts_a_replicating_three_node_cluster() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("ha-compose-").tempdir()?;
    let src = repo_root().join("examples/compose");
    std::fs::copy(
        src.join("docker-compose.yml"),
        dir.path().join("docker-compose.yml"),
    )?;
    // The user's step: copy the example env file (its secrets are what a user would change).
    std::fs::copy(src.join("ha.env.example"), dir.path().join("ha.env"))?;
    let services = compose::load(&dir.path().join("docker-compose.yml"))?;
    let image = Image::from_dockerfile(&repo_root().join("Dockerfile.node"))?;
    let uid = image.user_id()?;
    let binaries = image.binaries(&local_binary)?;

    let mut net = Network::create("cmp")?;
    let client = net.add_host("cl", 200)?;
    let mut hosts = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let host = net.add_host(&s.name, 10 + i as u8)?;
        net.map_name(&s.name, host.addr);
        net.map_name(&s.hostname, host.addr);
        hosts.push(host);
    }
    net.write_hosts()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut nodes = Vec::new();
    for (s, host) in services.into_iter().zip(hosts) {
        let input = PodSpecInput {
            pod_name: s.hostname.clone(),
            namespace: "compose".into(),
            template: s.pod_template(uid),
            objects: Objects::default(),
            image: image.clone(),
            binaries: binaries.clone(),
            claims: s.volume_dirs(&dir.path().join("volumes"), uid)?,
        };
        let pod = Pod::start(input, host.clone(), &logs)?;
        nodes.push(Node {
            service: s,
            host,
            _pod: pod,
        });
    }
    let log_tail = || {
        nodes
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(logs.join(format!("{}.log", n.service.hostname)))
                        .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {}\n{}",
                    n.service.name,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for n in &nodes {
        until(READY, &format!("{} healthy", n.service.name), || {
            Ok(healthy(n)?.then_some(()))
        })
        .with_context(log_tail)?;
    }

    // A write on ha1 is read on ha2 and ha3; one on ha3 reaches ha1.
    let j = http(
        &client,
        &nodes[0],
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)",
    )?;
    assert!(j.get("error").is_none(), "{j}");
    let j = http(
        &client,
        &nodes[0],
        "INSERT INTO notes VALUES (1, 'from ha1')",
    )?;
    assert!(j.get("error").is_none(), "{j}");
    for n in &nodes[1..] {
        until(READY, &format!("ha1's row on {}", n.service.name), || {
            let j = http(&client, n, "SELECT body FROM notes WHERE id = 1")?;
            Ok((j["rows"][0][0] == "from ha1").then_some(()))
        })
        .with_context(log_tail)?;
    }
    psql(
        &client,
        &nodes[2],
        "INSERT INTO notes VALUES (2, 'from ha3')",
    )?;
    until(READY, "ha3's row on ha1", || {
        Ok(
            (psql(&client, &nodes[0], "SELECT body FROM notes WHERE id = 2")? == "from ha3")
                .then_some(()),
        )
    })
    .with_context(log_tail)?;

    // Without the token the API answers 401: the env file's token is in force.
    let out = exec(
        &client,
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            "{\"sql\":\"SELECT 1\"}",
            &format!("http://{}:8080/", nodes[1].service.name),
        ],
    )?;
    assert_eq!(out.trim(), "401");
    Ok(())
}
