//! The configuration's unit tests: precedence, parsing and every refused combination.

use super::*;

pub(super) fn run(args: &[&str]) -> Result<Config, ConfigError> {
    let argv = std::iter::once("ha").chain(args.iter().copied());
    match Command::parse(argv)? {
        Command::Run(c) => Ok(*c),
        Command::Version | Command::Check(_) => panic!("unexpected --version/--check-config"),
    }
}

#[test]
fn defaults_match_the_original() {
    let c = run(&[]).unwrap();
    assert_eq!(c.http_port, 8080);
    assert_eq!(c.concurrent_queries, 50);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.db.file_name(), "ha.db");
    assert!(!c.db.is_memory());
}

#[test]
fn without_a_token_the_listeners_stay_on_loopback_unless_asked() {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let any = IpAddr::from([0, 0, 0, 0]);
    assert_eq!(run(&[]).unwrap().listen_addr, loopback);
    assert_eq!(run(&["--token", "t"]).unwrap().listen_addr, any);
    assert_eq!(run(&["--listen-addr", "0.0.0.0"]).unwrap().listen_addr, any);
    assert_eq!(
        run(&["--token", "t", "--listen-addr", "127.0.0.1"])
            .unwrap()
            .listen_addr,
        loopback
    );
}

#[test]
fn limits_come_from_flags_and_the_file_with_safe_defaults() {
    let c = run(&[]).unwrap();
    assert_eq!(c.limits, LimitFlags::default());
    assert_eq!(c.limits.query_timeout, Some(Duration::from_secs(60)));
    assert_eq!(c.pg.reserved_connections, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.yaml");
    std::fs::write(
        &path,
        "query-timeout: 5s
max-result-bytes: 1MiB
",
    )
    .unwrap();
    let c = run(&["-c", path.to_str().unwrap(), "--query-timeout", "0"]).unwrap();
    assert_eq!(c.limits.query_timeout, None);
    assert_eq!(c.limits.max_result_bytes, Some(1 << 20));
    assert!(
        run(&[
            "--pg-max-connections",
            "3",
            "--pg-reserved-connections",
            "3"
        ])
        .is_err()
    );
    assert!(run(&["--http-header-timeout", "0"]).is_err());
}

#[test]
fn bad_values_are_refused() {
    assert!(run(&["--log-level", "loud"]).is_err());
    assert!(run(&["--concurrent-queries", "0"]).is_err());
    assert!(run(&["--shutdown-timeout", "soon"]).is_err());
    assert!(run(&["--max-body-size", "lots"]).is_err());
    assert!(run(&["--config", "/nonexistent/ha.yaml"]).is_err());
    assert!(run(&["file:x.db?_nope=1"]).is_err());
}

#[test]
fn flags_beat_the_file_and_the_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.yaml");
    std::fs::write(
        &path,
        "port: 9001\nconcurrent-queries: 7\nmemory: true\ndsn: my.db\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = run(&["-c", p, "--port", "9002"]).unwrap();
    assert_eq!(c.http_port, 9002);
    assert_eq!(c.concurrent_queries, 7);
    assert!(c.db.is_memory());
    assert_eq!(c.db.file_name(), "my.db");
}

#[test]
fn unknown_file_keys_and_bad_file_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.yaml");
    std::fs::write(&path, "prot: 9001\n").unwrap();
    assert!(matches!(
        run(&["-c", path.to_str().unwrap()]),
        Err(ConfigError::UnknownKey(k)) if k == "prot"
    ));
    std::fs::write(&path, "port: many\n").unwrap();
    assert!(run(&["-c", path.to_str().unwrap()]).is_err());
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let c = run(&["--token", "hunter2", "--pg-pass", "swordfish"]).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!format!("{c:?}").contains("swordfish"));
    let c = run(&["--nats-user", "u", "--nats-pass", "s3cr3t"]).unwrap();
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn nats_flags_default_to_an_embedded_server_on_4222() {
    let c = run(&[]).unwrap();
    assert_eq!(
        c.nats,
        NatsFlags {
            port: 4222,
            ..NatsFlags::disabled()
        }
    );
}

#[test]
fn nats_flags_are_read_and_checked() {
    let c = run(&[
        "--nats-port",
        "0",
        "--nats-store-dir",
        "/data/js",
        "--nats-user",
        "u",
        "--nats-pass",
        "p",
        "--nats-logs",
        "--nats-server-bin",
        "/opt/nats-server",
        "--nats-cluster-name",
        "c1",
        "--nats-cluster-port",
        "6222",
        "--nats-routes",
        "nats-route://a:6222, nats-route://b:6222",
    ])
    .unwrap();
    let n = c.nats;
    assert_eq!(n.port, 0);
    assert_eq!(n.store_dir.as_deref(), Some(Path::new("/data/js")));
    assert_eq!(n.auth, Some(("u".into(), Secret::new("p"))));
    assert!(n.logs);
    assert_eq!(n.server_bin.as_deref(), Some(Path::new("/opt/nats-server")));
    assert_eq!(n.cluster_name.as_deref(), Some("c1"));
    assert_eq!(n.cluster_port, Some(6222));
    assert_eq!(n.routes, vec!["nats-route://a:6222", "nats-route://b:6222"]);
    assert!(run(&["--nats-user", "u"]).is_err());
    assert!(run(&["--nats-pass", "p"]).is_err());
    assert!(run(&["--nats-routes", "node2:6222"]).is_err());
    assert!(run(&["--nats-port", "70000"]).is_err());
}

#[test]
fn snapshot_flags_are_read_and_the_original_spelling_is_accepted() {
    let c = run(&[]).unwrap();
    assert_eq!(c.snapshots.interval, Duration::ZERO);
    assert_eq!(c.snapshots.retain, 3);
    assert!(!c.snapshots.restore_at_start);
    let c = run(&[
        "--snapshot-interval",
        "90s",
        "--snapshot-retain",
        "5",
        "--from-latest-snapsot",
    ])
    .unwrap();
    assert_eq!(c.snapshots.interval, Duration::from_secs(90));
    assert_eq!(c.snapshots.retain, 5);
    assert!(c.snapshots.restore_at_start);
    assert!(
        run(&["--from-latest-snapshot"])
            .unwrap()
            .snapshots
            .restore_at_start
    );
    assert_eq!(c.snapshots.orphan_age, Duration::from_secs(600));
    assert!(run(&["--snapshot-retain", "0"]).is_err());
    assert!(run(&["--snapshot-orphan-age", "0"]).is_err());
    assert!(run(&["--snapshot-interval", "often"]).is_err());
}

#[test]
fn check_config_validates_and_prints_no_secret() {
    let argv = [
        "ha",
        "--check-config",
        "--pg-pass",
        "swordfish",
        "--replication-url",
        "nats://u:s3cr3t@n1:4222",
        "--nats-routes",
        "nats-route://r:hidden@a:6222",
        "--nats-user",
        "u",
        "--nats-pass",
        "natspw",
    ];
    let Ok(Command::Check(c)) = Command::parse(argv) else {
        panic!("--check-config gives Command::Check");
    };
    let text = c.effective_settings();
    for secret in ["swordfish", "s3cr3t", "hidden", "natspw"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        text.contains("n1:4222") && text.contains("a:6222"),
        "{text}"
    );
    assert!(Command::parse(["ha", "--check-config", "--port", "x"]).is_err());
}

#[test]
fn interceptor_and_extensions_come_from_flags_and_the_file() {
    let c = run(&["-i", "hooks.rhai", "--extensions", "/a.so, /b.so"]).unwrap();
    assert_eq!(c.interceptor.as_deref(), Some(Path::new("hooks.rhai")));
    assert_eq!(
        c.db.extensions,
        vec![PathBuf::from("/a.so"), PathBuf::from("/b.so")]
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.yaml");
    std::fs::write(
        &path,
        "interceptor: x.rhai\nextensions:\n  - /c.so\n  - /d.so\n",
    )
    .unwrap();
    let c = run(&["-c", path.to_str().unwrap()]).unwrap();
    assert_eq!(c.interceptor.as_deref(), Some(Path::new("x.rhai")));
    assert_eq!(
        c.db.extensions,
        vec![PathBuf::from("/c.so"), PathBuf::from("/d.so")]
    );
    assert!(run(&["--interceptor", ""]).is_err());
    assert!(run(&[]).unwrap().db.extensions.is_empty());
}

#[test]
fn pg_port_zero_disables_and_auto_picks_a_free_port() {
    assert_eq!(run(&[]).unwrap().pg_port, PgPort::Port(5432));
    assert_eq!(run(&["--pg-port", "0"]).unwrap().pg_port, PgPort::Disabled);
    assert_eq!(
        run(&["--pg-port", "auto"]).unwrap().pg_port,
        PgPort::Ephemeral
    );
    assert!(run(&["--pg-port", "x"]).is_err());
    assert!(run(&["--pg-auth", "trust"]).is_err());
    let c = run(&["--pg-auth", "md5", "--pg-idle-in-transaction-timeout", "0"]).unwrap();
    assert_eq!(c.pg.auth, AuthMethod::Md5);
    assert_eq!(c.pg.idle_in_transaction_timeout, None);
}

#[test]
fn a_change_log_is_an_embedded_server_by_port_or_config_file_or_an_external_url() {
    let log = |args: &[&str]| run(args).unwrap().has_change_log();
    assert!(log(&[]));
    assert!(!log(&["--nats-port", "0"]));
    assert!(log(&[
        "--nats-port",
        "0",
        "--nats-config",
        "/etc/nats.conf"
    ]));
    assert!(log(&[
        "--nats-port",
        "0",
        "--replication-url",
        "nats://h:4222"
    ]));
    assert!(!log(&["--nats-port", "0", "--replication-url", " "]));
    // Backups need one; a nats-server run from its own config file is one.
    let backup = ["--backup-url", "s3://b/p?endpoint=http://127.0.0.1:9000"];
    let refused = run(&[&backup[..], &["--nats-port", "0"]].concat()).unwrap_err();
    assert!(
        refused.to_string().contains("needs the change log"),
        "{refused}"
    );
    run(&[
        &backup[..],
        &["--nats-port", "0", "--nats-config", "/etc/nats.conf"],
    ]
    .concat())
    .unwrap();
}
