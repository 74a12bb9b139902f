//! TLS on the PostgreSQL port: a test CA signs the server certificate, psql verifies it with
//! `sslmode=verify-full`, and `--pg-require-tls` refuses plaintext clients.

mod common;

use std::process::Command;

use common::TestNode;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ha test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn psql_output(conn: &str) -> std::process::Output {
    Command::new("psql")
        .arg(conn)
        .args(["-X", "-At", "-c", "SELECT 'secure'"])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap()
}

#[tokio::test]
async fn psql_verifies_the_server_certificate_and_plaintext_can_be_refused() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let (c2, k2) = (cert.clone(), key.clone());
    let node = TestNode::start_with(move |c| {
        c.pg.cert = Some(c2);
        c.pg.key = Some(k2);
        c.pg.require_tls = true;
    })
    .await;
    let port = node.pg.port();
    let verified = format!(
        "host=localhost port={port} user=ha password=ha dbname=ha sslmode=verify-full sslrootcert={}",
        ca.display()
    );
    let out = tokio::task::spawn_blocking(move || psql_output(&verified))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secure\n");

    // A certificate from another CA does not verify.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, pki_other_ca()).unwrap();
    let wrong = format!(
        "host=localhost port={port} user=ha password=ha dbname=ha sslmode=verify-full sslrootcert={}",
        other.display()
    );
    let out = tokio::task::spawn_blocking(move || psql_output(&wrong))
        .await
        .unwrap();
    assert!(!out.status.success());

    // Plaintext is refused with a clear message.
    let plain = format!("host=127.0.0.1 port={port} user=ha password=ha dbname=ha sslmode=disable");
    let out = tokio::task::spawn_blocking(move || psql_output(&plain))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires TLS"));
}

fn pki_other_ca() -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem()
}
