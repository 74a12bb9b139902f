//! The `ha-sync` extension in real hosts — the `sqlite3` shell, Python's `sqlite3` module and a
//! Rust program (rusqlite, bundled SQLite) — following real 3-node clusters: inserts, updates,
//! deletes and DDL reach the local file (latency measured and printed), through a restart of
//! NATS, of a node, and of the host process itself, ending identical to a node's dump.
//! Nothing sleeps to synchronise: every wait polls with a deadline.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ha_tests::cluster::{TestCluster, dump};
use ha_tests::replica::{
    Host, ha_sync_lib, local_dump, local_scalar, python_with_extensions, wait_local,
};
use ha_tests::{TestNode, eventually, free_port, ha_bin, repo_root};
use serde_json::{Value as Json, json};

const SUBJECT: &str = "ha_replication.t_db";

/// Runs `sql` on node `i`, retrying while the node cannot take it yet (a table created on
/// another node not replicated here yet, NATS coming back after a restart).
async fn write(c: &TestCluster, i: usize, sql: &str) {
    // Each step writes on a node that holds every earlier write: an UPDATE of a row not yet
    // replicated there changes nothing, and an insert into `events` (no primary key) would get
    // the rowid of a row written elsewhere — a collision that keeps one row of the two
    // (docs/replication.md, "Auto-assigned keys"). These tests are about following, not races.
    c.wait_caught_up(i, Duration::from_secs(30)).await.unwrap();
    let n = c.node(i);
    let last = std::sync::Mutex::new(String::new());
    let r = eventually(Duration::from_secs(30), sql, || async {
        match n.post(&json!({ "sql": sql })).await {
            Ok((200, _)) => Some(()),
            other => {
                if let Ok(mut l) = last.lock() {
                    *l = format!("{other:?}");
                }
                None
            }
        }
    })
    .await;
    if let Err(e) = r {
        panic!(
            "{e}: {}",
            last.lock().map(|l| l.clone()).unwrap_or_default()
        );
    }
}

/// Writes on the cluster (round robin over `nodes`) and waits for each write on the replica;
/// returns the measured latencies (acknowledged on the node → visible in the local file).
async fn follow_steps(c: &TestCluster, nodes: &[usize], db: &Path) -> Vec<(String, Duration)> {
    let steps: [(&str, &str, Json); 9] = [
        (
            "INSERT INTO users VALUES (2, 'bob')",
            "SELECT count(*) FROM users",
            json!(2),
        ),
        (
            "UPDATE users SET name = 'bobby' WHERE id = 2",
            "SELECT name FROM users WHERE id = 2",
            json!("bobby"),
        ),
        (
            "DELETE FROM users WHERE id = 1",
            "SELECT count(*) FROM users WHERE id = 1",
            json!(0),
        ),
        (
            "ALTER TABLE users ADD COLUMN email TEXT",
            "SELECT count(*) FROM pragma_table_info('users') WHERE name = 'email'",
            json!(1),
        ),
        (
            "UPDATE users SET email = 'bob@example.com' WHERE id = 2",
            "SELECT email FROM users WHERE id = 2",
            json!("bob@example.com"),
        ),
        (
            "CREATE INDEX users_name ON users(name)",
            "SELECT count(*) FROM sqlite_master WHERE name = 'users_name'",
            json!(1),
        ),
        (
            "CREATE TABLE events(msg TEXT)",
            "SELECT count(*) FROM sqlite_master WHERE name = 'events'",
            json!(1),
        ),
        (
            "INSERT INTO events VALUES ('a'), ('b'), ('c')",
            "SELECT count(*) FROM events",
            json!(3),
        ),
        (
            "DROP INDEX users_name",
            "SELECT count(*) FROM sqlite_master WHERE name = 'users_name'",
            json!(0),
        ),
    ];
    let mut out = Vec::new();
    for (k, (sql, check, want)) in steps.iter().enumerate() {
        write(c, nodes[k % nodes.len()], sql).await;
        let took = wait_local(db, check, want, Duration::from_secs(20))
            .await
            .unwrap();
        out.push((sql.to_string(), took));
    }
    out
}

/// Prints the latencies and checks that a replica sees a write within a second (the median;
/// every one within 5 s, for a loaded machine).
fn report(host: &str, lat: &[(String, Duration)]) {
    let mut ms: Vec<f64> = lat.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect();
    for (sql, d) in lat {
        eprintln!("[{host}] {:>8.1} ms  {sql}", d.as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let max = ms[ms.len() - 1];
    eprintln!("[{host}] follow latency: median {median:.1} ms, max {max:.1} ms");
    assert!(median < 1000.0, "median latency {median} ms");
    assert!(max < 5000.0, "max latency {max} ms");
}

/// Waits until the replica file holds exactly what node `i` holds.
async fn assert_same_as_node(db: &Path, n: &TestNode) {
    let last = std::sync::Mutex::new(String::new());
    let r = eventually(
        Duration::from_secs(30),
        "the replica to equal the node",
        || async {
            let want = dump(n).await.ok()?;
            let got = local_dump(db).ok()?;
            if got == want {
                return Some(());
            }
            if let Ok(mut l) = last.lock() {
                *l = format!("node: {want:?}\nreplica: {got:?}");
            }
            None
        },
    )
    .await;
    if let Err(e) = r {
        panic!(
            "{e}\n{}",
            last.lock().map(|l| l.clone()).unwrap_or_default()
        );
    }
}

/// Inserts `n` rows into `events` on node `i`, one transaction each.
async fn events(c: &TestCluster, i: usize, tag: &str, n: usize) {
    for k in 0..n {
        write(c, i, &format!("INSERT INTO events VALUES ('{tag}-{k}')")).await;
    }
}

fn count_events(tag: &str) -> String {
    format!("SELECT count(*) FROM events WHERE msg LIKE '{tag}-%'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite3_shell_follows_a_cluster_through_a_nats_restart_and_its_own() {
    let mut c = TestCluster::external(3, &[]).await.unwrap();
    write(
        &c,
        0,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    )
    .await;
    write(&c, 0, "INSERT INTO users VALUES (1, 'ada')").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replica.db");
    let create = format!(
        "CREATE VIRTUAL TABLE temp.ha USING HA(servers='{}', timeout=5000);",
        c.nats_url()
    );

    let mut sh = Host::sqlite3_shell(&db).unwrap();
    let info = sh.ok("SELECT ha_info();").unwrap();
    assert!(
        info.iter().any(|l| l.starts_with("ha-sync version=")),
        "{info:?}"
    );
    sh.ok(&create).unwrap();
    let start = Instant::now();
    sh.ok(&format!(
        "INSERT INTO temp.ha(subject, durable, policy) VALUES ('{SUBJECT}', 'replica_shell', 'all');"
    ))
    .unwrap();
    // What the cluster had before the replica existed arrives first ('all').
    wait_local(
        &db,
        "SELECT name FROM users WHERE id = 1",
        &json!("ada"),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    eprintln!("[sqlite3] caught up from nothing in {:?}", start.elapsed());

    // The original's interface.
    let rows = sh.ok("SELECT * FROM temp.ha;").unwrap();
    assert_eq!(rows, vec![format!("{SUBJECT}|replica_shell|all")]);
    let e = sh
        .err(&format!(
            "INSERT INTO temp.ha(subject) VALUES ('{SUBJECT}');"
        ))
        .unwrap();
    assert!(e.contains("already subscribed"), "{e}");
    let e = sh.err("UPDATE temp.ha SET policy = 'new';").unwrap();
    assert!(e.contains("cannot be updated"), "{e}");
    let e = sh
        .err("CREATE VIRTUAL TABLE temp.hb USING HA(servers='nats://127.0.0.1:4222', colour=red);")
        .unwrap();
    assert!(e.contains("unknown option \"colour\""), "{e}");

    let lat = follow_steps(&c, &[0, 1, 2], &db).await;
    report("sqlite3", &lat);
    // Applying DDL made SQLite reload the schema (and reconnect temp.ha): still following.
    let rows = sh
        .ok("SELECT subject, error IS NULL FROM temp.ha;")
        .unwrap();
    assert_eq!(rows, vec![format!("{SUBJECT}|1")]);

    // NATS goes away long enough for the replica to notice (its pull consumer misses its
    // heartbeats and says so in `error`), then comes back: the cluster and the replica
    // reconnect by themselves and go on from where they were.
    let nats = c.nats.as_mut().unwrap();
    nats.kill();
    let down = Instant::now();
    loop {
        let out = sh.ok("SELECT error IS NOT NULL FROM temp.ha;").unwrap();
        if out == vec!["1".to_string()] {
            break;
        }
        assert!(down.elapsed() < Duration::from_secs(60), "{out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("[sqlite3] noticed NATS was down after {:?}", down.elapsed());
    nats.restart().await.unwrap();
    events(&c, 1, "after-nats", 5).await;
    wait_local(
        &db,
        &count_events("after-nats"),
        &json!(5),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let out = sh.ok("SELECT error FROM temp.ha;").unwrap();
    assert_eq!(
        out,
        vec![String::new()],
        "the error clears once following again"
    );

    // The shell ends (with status 1: it ran into the errors above); the cluster goes on; a new
    // shell resumes where the file says.
    sh.quit().unwrap();
    events(&c, 2, "while-away", 20).await;
    write(&c, 0, "UPDATE users SET name = 'robert' WHERE id = 2").await;
    let mut sh = Host::sqlite3_shell(&db).unwrap();
    sh.ok(&create).unwrap();
    // The policy is ignored now: the database knows its position.
    sh.ok(&format!(
        "INSERT INTO temp.ha(subject, durable, policy) VALUES ('{SUBJECT}', 'replica_shell', 'new');"
    ))
    .unwrap();
    wait_local(
        &db,
        &count_events("while-away"),
        &json!(20),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    events(&c, 0, "after-restart", 3).await;
    assert_same_as_node(&db, c.node(1)).await;
    // The shell reads what was applied.
    let rows = sh
        .ok("SELECT name FROM users WHERE id = 2; SELECT count(*) FROM events;")
        .unwrap();
    assert_eq!(rows, vec!["robert".to_string(), "31".to_string()]);

    // DELETE stops following and removes the durable.
    sh.ok(&format!("DELETE FROM temp.ha WHERE subject = '{SUBJECT}';"))
        .unwrap();
    assert_eq!(sh.ok("SELECT count(*) FROM temp.ha;").unwrap(), vec!["0"]);
    let js = c.jetstream().await.unwrap();
    let stream = js.get_stream("ha_replication").await.unwrap();
    assert!(stream.consumer_info("replica_shell").await.is_err());
    assert!(sh.quit().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_follows_a_cluster_through_a_node_restart_and_a_crash_of_its_own() {
    let mut c = TestCluster::embedded_routes(&[]).await.unwrap();
    write(
        &c,
        0,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    )
    .await;
    write(&c, 0, "INSERT INTO users VALUES (1, 'ada')").await;
    let servers = c
        .members
        .iter()
        .filter_map(|m| m.nats_port)
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replica.db");
    let log = dir.path().join("ha-sync.log");
    let start_python = || -> Host {
        let mut py = Host::python(&db).unwrap();
        // Readers of a WAL database never wait for the replica's writes.
        py.ok("PRAGMA journal_mode = WAL").unwrap();
        py.ok(&format!(
            "CREATE VIRTUAL TABLE temp.ha USING HA(servers='{servers}', username='{}', password='{}', timeout=5000, logger='file:{}')",
            ha_tests::cluster::NATS_USER,
            ha_tests::cluster::NATS_PASS,
            log.display()
        ))
        .unwrap();
        py.ok(&format!(
            "INSERT INTO temp.ha(subject, durable, policy) VALUES ('{SUBJECT}', 'replica_py', 'all')"
        ))
        .unwrap();
        py
    };

    let mut py = start_python();
    wait_local(
        &db,
        "SELECT count(*) FROM users",
        &json!(1),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    let rows = py.ok("SELECT * FROM temp.ha").unwrap();
    assert_eq!(
        rows,
        vec![format!("[[\"{SUBJECT}\", \"replica_py\", \"all\"]]")]
    );
    let rows = py
        .ok("SELECT subject, applied_seq > 0, error FROM temp.ha")
        .unwrap();
    assert_eq!(rows, vec![format!("[[\"{SUBJECT}\", 1, null]]")]);

    let lat = follow_steps(&c, &[0, 1, 2], &db).await;
    report("python", &lat);

    // Node 0 and its nats-server go away and come back; the replica keeps following through
    // the other servers, and the cluster goes on.
    c.stop(0).await.unwrap();
    events(&c, 1, "node0-down", 5).await;
    wait_local(
        &db,
        &count_events("node0-down"),
        &json!(5),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    c.restart(0, &[]).await.unwrap();
    events(&c, 0, "node0-back", 5).await;
    wait_local(
        &db,
        &count_events("node0-back"),
        &json!(5),
        Duration::from_secs(30),
    )
    .await
    .unwrap();

    // Python dies without closing anything (kill -9), the cluster goes on, Python starts again.
    py.kill();
    events(&c, 2, "while-dead", 20).await;
    let mut py = start_python();
    wait_local(
        &db,
        &count_events("while-dead"),
        &json!(20),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_same_as_node(&db, c.node(2)).await;
    let rows = py.ok("SELECT count(*) FROM events").unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        rows,
        vec!["[[33]]".to_string()],
        "ha-sync's log:\n{logged}\nthe replica: {:?}",
        local_dump(&db)
    );
    assert!(logged.contains("following"), "{logged}");
    py.ok(&format!("DELETE FROM temp.ha WHERE subject = '{SUBJECT}'"))
        .unwrap();
    assert!(py.quit().unwrap().success());
}

/// A Rust program with rusqlite's bundled SQLite as the host.
fn rust_host(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    // SAFETY: the extension is ours, built with the tests.
    unsafe {
        let _guard = rusqlite::LoadExtensionGuard::new(&conn).unwrap();
        conn.load_extension(ha_sync_lib(), None::<&str>).unwrap();
    }
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_host_loads_it_and_follows_split_change_sets_past_garbage() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    write(&c, 0, "CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replica.db");
    let conn = rust_host(&db);
    let info: String = conn
        .query_row("SELECT ha_info()", [], |r| r.get(0))
        .unwrap();
    assert!(info.starts_with("ha-sync version="), "{info}");

    // Bad set-ups are clear errors.
    let e = conn
        .execute_batch("CREATE VIRTUAL TABLE main.ha USING HA()")
        .unwrap_err();
    assert!(e.to_string().contains("temp schema"), "{e}");
    let mem = rusqlite::Connection::open_in_memory().unwrap();
    // SAFETY: as above.
    unsafe {
        let _guard = rusqlite::LoadExtensionGuard::new(&mem).unwrap();
        mem.load_extension(ha_sync_lib(), None::<&str>).unwrap();
    }
    let e = mem
        .execute_batch("CREATE VIRTUAL TABLE temp.ha USING HA()")
        .unwrap_err();
    assert!(e.to_string().contains("not a file"), "{e}");
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE temp.ha USING HA(servers='{}', logger=none)",
        c.nats_url()
    ))
    .unwrap();
    let e = conn
        .execute_batch("INSERT INTO temp.ha(subject, policy) VALUES ('nope.x', 'all')")
        .unwrap_err();
    assert!(e.to_string().contains("stream \"nope\""), "{e}");
    let e = conn
        .execute_batch(&format!(
            "INSERT INTO temp.ha(subject, policy) VALUES ('{SUBJECT}', 'sometimes')"
        ))
        .unwrap_err();
    assert!(e.to_string().contains("invalid deliver policy"), "{e}");
    let e = conn
        .execute(
            "INSERT OR REPLACE INTO temp.ha(subject) VALUES (?1)",
            [SUBJECT],
        )
        .unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    // An ephemeral consumer (no durable) works too.
    conn.execute(
        "INSERT INTO temp.ha(subject, policy) VALUES (?1, 'all')",
        [SUBJECT],
    )
    .unwrap();
    // One follower per file and subject in a process, whichever connection asks.
    let other = rust_host(&db);
    other
        .execute_batch(&format!(
            "CREATE VIRTUAL TABLE temp.ha USING HA(servers='{}', logger=none)",
            c.nats_url()
        ))
        .unwrap();
    let e = other
        .execute("INSERT INTO temp.ha(subject) VALUES (?1)", [SUBJECT])
        .unwrap_err();
    assert!(e.to_string().contains("already subscribed"), "{e}");

    // Not a change set: the node quarantines it, the replica skips it.
    let js = c.jetstream().await.unwrap();
    js.publish(SUBJECT, "not a change set".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // One transaction of ~3 MB: split into parts on the wire, applied whole — the replica
    // shows 0 rows, then 500, never a part of them.
    let watched = db.clone();
    let watcher = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match local_scalar(&watched, "SELECT count(*) FROM big") {
                Some(n) if n == json!(500) => return Ok(()),
                Some(n) if n != json!(0) => return Err(format!("saw {n} rows")),
                _ if Instant::now() > deadline => return Err("timed out".to_string()),
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    });
    write(
        &c,
        0,
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500) \
         INSERT INTO big SELECT i, hex(randomblob(3000)) FROM s",
    )
    .await;
    watcher.await.unwrap().unwrap();
    assert_same_as_node(&db, c.node(0)).await;
    let pos: i64 = conn
        .query_row(
            "SELECT value FROM _ha_meta WHERE key = ?1",
            [format!("applied_seq:{SUBJECT}")],
            |r| r.get(0),
        )
        .unwrap();
    let stream_last = {
        let mut s = js.get_stream("ha_replication").await.unwrap();
        s.info().await.unwrap().state.last_sequence as i64
    };
    assert_eq!(pos, stream_last);
    // Caught up: nothing pending.
    eventually(Duration::from_secs(10), "pending to reach 0", || {
        let pending = conn
            .query_row("SELECT pending FROM temp.ha", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .unwrap();
        async move { (pending == Some(0)).then_some(()) }
    })
    .await
    .unwrap();
    drop(other);
    drop(conn);
}

/// The first fenced block of `lang` in `doc`.
fn block(doc: &str, lang: &str) -> String {
    let open = format!("```{lang}\n");
    let start = doc.find(&open).unwrap_or_else(|| panic!("no {lang} block")) + open.len();
    let len = doc[start..].find("```").expect("closed block");
    doc[start..start + len].to_string()
}

/// A directory with `libha_sync.so` in it, where the examples run.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(ha_sync_lib(), dir.path().join("libha_sync.so")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_examples_work_as_written() {
    // The node of the examples: database ha.db, embedded NATS (its port stands in for 4222).
    let port = free_port();
    let node = TestNode::start(&["file:ha.db", "--nats-port", &port.to_string()])
        .await
        .unwrap();
    ha_tests::cluster::wait_ready(&node, Duration::from_secs(60))
        .await
        .unwrap();
    node.sql("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    node.sql("INSERT INTO users(name) VALUES ('ada')")
        .await
        .unwrap();
    node.sql("INSERT INTO users(name) VALUES ('grace')")
        .await
        .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let doc = std::fs::read_to_string(repo_root().join("docs/read-replicas.md")).unwrap();

    // The shell transcript, command by command; a SELECT is asked again until it answers as
    // shown (the replica fills in the background).
    let dir = example_dir();
    let transcript = block(&doc, "console").replace("nats://localhost:4222", &url);
    let mut lines = transcript.lines().peekable();
    let first = lines.next().unwrap();
    let args: Vec<&str> = first
        .strip_prefix("$ sqlite3 ")
        .expect("starts the shell")
        .split_whitespace()
        .collect();
    let mut sh = Host::sqlite3_in(dir.path(), &args).unwrap();
    while let Some(line) = lines.next() {
        let cmd = line.strip_prefix("sqlite> ").expect("a prompt line");
        let mut want = Vec::new();
        while let Some(l) = lines.next_if(|l| !l.starts_with("sqlite> ")) {
            want.push(l.to_string());
        }
        // Only a SELECT may need a moment (for replication); anything else answers at once.
        let mut got = sh.exec(cmd).unwrap();
        if got != want && cmd.starts_with("SELECT") {
            let waited = eventually(Duration::from_secs(20), cmd, || {
                got = sh.exec(cmd).unwrap();
                let same = got == want;
                async move { same.then_some(()) }
            })
            .await;
            assert!(waited.is_ok(), "{cmd}: want {want:?}, got {got:?}");
        }
        assert_eq!(got, want, "{cmd}");
    }
    sh.quit().unwrap();

    // The Python script, run as written (but for the server address).
    let dir = example_dir();
    let script = block(&doc, "python").replace("nats://localhost:4222", &url);
    let want = script
        .lines()
        .find_map(|l| l.strip_prefix("# prints: "))
        .expect("the script says what it prints")
        .to_string();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(python_with_extensions().unwrap())
                .args(["-c", &script])
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);

    // The Rust example is the file the docs show, and prints what they say.
    let example =
        std::fs::read_to_string(repo_root().join("tests/examples/read_replica.rs")).unwrap();
    assert_eq!(
        block(&doc, "rust"),
        example,
        "docs/read-replicas.md shows tests/examples/read_replica.rs"
    );
    let bin = ha_bin().parent().unwrap().join("examples/read_replica");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds it (cargo build -p ha-tests --examples)",
        bin.display()
    );
    let dir = example_dir();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(bin)
                .arg(url)
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"[(1, "ada"), (2, "grace")]"#
    );
}

/// Replicated rows are the effects of the origin's statements, triggers included: the replica's
/// own copy of a trigger must not run again on them (it wrote the log row twice before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_do_not_fire_again_on_the_replica() {
    let c = TestCluster::external(1, &[]).await.unwrap();
    write(
        &c,
        0,
        "CREATE TABLE items(id INTEGER PRIMARY KEY, price INT)",
    )
    .await;
    write(&c, 0, "CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT)").await;
    write(
        &c,
        0,
        "CREATE TRIGGER items_log BEFORE INSERT ON items \
         BEGIN INSERT INTO log(what) VALUES ('inserted ' || new.id); END",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("replica.db");
    let conn = rust_host(&db);
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE temp.ha USING HA(servers='{}', logger=none)",
        c.nats_url()
    ))
    .unwrap();
    conn.execute(
        "INSERT INTO temp.ha(subject, policy) VALUES (?1, 'all')",
        [SUBJECT],
    )
    .unwrap();
    for i in 1..=3 {
        write(&c, 0, &format!("INSERT INTO items VALUES ({i}, 10)")).await;
    }
    let timeout = Duration::from_secs(30);
    wait_local(&db, "SELECT count(*) FROM items", &json!(3), timeout)
        .await
        .unwrap();
    // The trigger exists on the replica, and the log holds the origin's three rows, not six.
    assert_eq!(
        local_scalar(
            &db,
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"
        ),
        Some(json!(1))
    );
    assert_eq!(
        local_scalar(&db, "SELECT count(*) FROM log"),
        Some(json!(3))
    );
    assert_same_as_node(&db, c.node(0)).await;
}
