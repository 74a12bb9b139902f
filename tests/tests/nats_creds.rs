//! Decentralized NATS authentication (issue 14): a real nats-server in operator mode (JWTs, as
//! `nsc` makes them, with the account in a memory resolver) and two `ha` nodes that connect with
//! `--nats-creds` files. Writes replicate; a user JWT signed by a stranger's account key is
//! refused by the server and the node says so instead of serving stale data as ready.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ha_tests::cluster::wait_ready;
use ha_tests::{TestNode, eventually, free_port, nats_server_bin};
use nkeys::KeyPair;
use serde_json::{Value as Json, json};

/// A JWT of `claims` (the `nats` part) for `subject`, signed by `issuer`, as nats-io/jwt v2
/// encodes it.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Json) -> String {
    let header = json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "jti": format!("{}{}", name.to_uppercase(), iat),
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// An account JWT; `jetstream` gives it unlimited JetStream (never for the system account).
fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let mut limits = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1
    });
    if jetstream {
        for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[k] = json!(-1);
        }
    }
    jwt(
        operator,
        &account.public_key(),
        name,
        json!({
            "limits": limits,
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        }),
    )
}

/// A `.creds` file for a new user of `account` (signed by `signer`, the account's key unless a
/// test forges it).
fn creds(dir: &Path, name: &str, account: &KeyPair, signer: &KeyPair) -> std::path::PathBuf {
    let user = KeyPair::new_user();
    let mut nats = json!({
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
        "type": "user", "version": 2
    });
    if signer.public_key() != account.public_key() {
        nats["issuer_account"] = json!(account.public_key());
    }
    let token = jwt(signer, &user.public_key(), name, nats);
    let text = format!(
        "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().unwrap()
    );
    let path = dir.join(format!("{name}.creds"));
    std::fs::write(&path, text).unwrap();
    path
}

/// nats-server in operator mode; killed on drop.
struct OperatorNats {
    child: Child,
    port: u16,
}

impl Drop for OperatorNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn operator_nats(dir: &Path, operator: &KeyPair, account: &KeyPair) -> OperatorNats {
    let system = KeyPair::new_account();
    let port = free_port();
    let monitor = free_port();
    let conf = format!(
        "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
         operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n\
         jetstream: {{ store_dir: \"{}\" }}\n",
        jwt(
            operator,
            &operator.public_key(),
            "op",
            json!({"type": "operator", "version": 2})
        ),
        system.public_key(),
        system.public_key(),
        account_jwt(operator, &system, "SYS", false),
        account.public_key(),
        account_jwt(operator, account, "ha", true),
        dir.join("js").display(),
    );
    let path = dir.join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let log = std::fs::File::create(dir.join("nats.log")).unwrap();
    let child = Command::new(nats_server_bin())
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = OperatorNats { child, port };
    let url = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
    let client = reqwest::Client::new();
    let r = eventually(Duration::from_secs(20), "nats-server healthz", || {
        let req = client.get(&url).send();
        async move { req.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    if let Err(e) = r {
        panic!(
            "{e}: {}",
            std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default()
        );
    }
    server
}

async fn node(name: &str, port: u16, creds: &Path) -> TestNode {
    TestNode::start(&[
        "file:t.db",
        "--name",
        name,
        "--nats-port",
        "0",
        "--replication-url",
        &format!("nats://127.0.0.1:{port}"),
        "--nats-creds",
        &creds.display().to_string(),
    ])
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_with_creds_files_and_a_forged_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let nats = operator_nats(dir.path(), &operator, &account).await;

    let a_creds = creds(dir.path(), "a", &account, &account);
    let b_creds = creds(dir.path(), "b", &account, &account);
    let a = node("a", nats.port, &a_creds).await;
    let b = node("b", nats.port, &b_creds).await;
    wait_ready(&a, Duration::from_secs(30)).await.unwrap();
    wait_ready(&b, Duration::from_secs(30)).await.unwrap();
    a.sql("CREATE TABLE t(v TEXT PRIMARY KEY)").await.unwrap();
    a.sql("INSERT INTO t VALUES ('from a')").await.unwrap();
    let r = eventually(Duration::from_secs(30), "a's row on b", || async {
        let rows = b.rows("SELECT v FROM t").await.ok()?;
        (json!(rows) == json!([["from a"]])).then_some(())
    })
    .await;
    if let Err(e) = r {
        panic!("{e}\n--- b ---\n{}", b.log_text());
    }

    // A user JWT claiming the account but signed by another key: the server refuses it, and
    // the node neither becomes ready nor hides why.
    let stranger = KeyPair::new_account();
    let forged = creds(dir.path(), "forged", &account, &stranger);
    let c = node("c", nats.port, &forged).await;
    let said = eventually(
        Duration::from_secs(30),
        "the refusal in the log",
        || async {
            let log = c.log_text().to_lowercase();
            (log.contains("authorization") || log.contains("authentication")).then_some(())
        },
    )
    .await;
    if let Err(e) = said {
        panic!("{e}\n--- c ---\n{}", c.log_text());
    }
    let ready = reqwest::get(c.url("/readyz")).await.unwrap().status();
    assert_eq!(ready.as_u16(), 503, "{}", c.log_text());
    let text = std::fs::read_to_string(&forged).unwrap();
    let seed = text.lines().find(|l| l.starts_with("SU")).unwrap();
    assert!(
        !c.log_text().contains(seed),
        "the user's seed must not be logged"
    );
}
