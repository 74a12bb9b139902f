//! Off-cluster backups (issue #18) against a real S3 API (moto_server), real nats-server and
//! real `ha` processes: scheduled uploads and the change-log archive, its lag bound, point-in-time
//! restore compared with the source's own checksums at that point, a cluster rebuilt from the
//! bucket alone, one uploader per cluster, and the bad days (storage unreachable, wrong
//! credentials, a corrupt or missing segment, a target before the oldest snapshot).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ha_tests::cluster::{NatsProcess, wait_ready};
use ha_tests::s3::{S3Server, backup_status, checksum, start_node};
use ha_tests::{TestNode, eventually, run_ha};
use serde_json::Value as Json;

const BUCKET: &str = "ha-backups";

fn s3_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Waits until the node's own writes are all applied back (`applied_seq` = the stream's head),
/// then returns its checksum: the source as it is at that sequence.
async fn settled(n: &TestNode) -> Result<(u64, Json)> {
    eventually(
        Duration::from_secs(20),
        "node applied the stream head",
        || async {
            let c: Json = n
                .client
                .get(n.url("/checksum"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let applied = c["applied_seq"].as_u64()?;
            (Some(applied) == c["stream_last_seq"].as_u64() && applied > 0)
                .then(|| (applied, c["tables"].clone()))
        },
    )
    .await
}

/// The checksum of a database file, computed by a standalone `ha` on it.
async fn checksum_of(file: &Path) -> Result<(u64, Json)> {
    let dir = file.parent().context("file has a directory")?;
    let name = file.file_name().context("file name")?.to_string_lossy();
    let mut n = TestNode::start_spec(
        ha_tests::NodeSpec::new(&[format!("file:{name}"), "--pg-port".into(), "0".into()]).dir(dir),
    )
    .await?;
    let c = checksum(&n).await?;
    n.stop(Duration::from_secs(10)).await?;
    Ok(c)
}

/// `ha restore …` with `args`; returns (exit code, stdout, stderr).
fn restore(env: &[(String, String)], args: &[&str]) -> Result<(i32, String, String)> {
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    let out = run_ha(&all, &s3_env(env))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_and_snapshots_restore_any_point_and_rebuild_a_destroyed_cluster() -> Result<()> {
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let env = s3.env();
    let url = format!("s3://{BUCKET}/c1");
    let mut nats = NatsProcess::start().await?;
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let flags = [
        "--backup-url",
        url.as_str(),
        "--backup-interval",
        "3s",
        "--archive-interval",
        "1s",
        "--archive-max-messages",
        "7",
    ];
    let mut nodes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        nodes.push(start_node(&nats.url(), &format!("n{}", i + 1), d.path(), &flags, &env).await?);
    }
    for n in &nodes {
        wait_ready(n, Duration::from_secs(30)).await?;
    }
    // Exactly one uploader.
    let uploader = eventually(Duration::from_secs(20), "one uploader", || async {
        let a = backup_status(&nodes[0]).await.ok()?;
        let b = backup_status(&nodes[1]).await.ok()?;
        match (a["uploader"].as_bool()?, b["uploader"].as_bool()?) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    })
    .await?;
    let w = &nodes[uploader];
    w.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    // The source at each point: (seq, time after it, checksum).
    let mut points: Vec<(u64, String, Json)> = Vec::new();
    let mut worst_lag = Duration::ZERO;
    for i in 0..24 {
        w.sql(&format!(
            "INSERT INTO t(v) VALUES ('row {i}'), ('more {i}')"
        ))
        .await?;
        w.sql(&format!(
            "UPDATE t SET v = v || '+' WHERE id % 3 = {}",
            i % 3
        ))
        .await?;
        let (seq, sum) = settled(w).await?;
        let written = Instant::now();
        // Archive lag: the change set is in the archive within --archive-interval (+ slack for
        // a loaded machine).
        eventually(Duration::from_secs(10), "archived", || async {
            let b = backup_status(w).await.ok()?;
            (b["archived_seq"].as_u64()? >= seq).then_some(())
        })
        .await?;
        worst_lag = worst_lag.max(written.elapsed());
        points.push((seq, now_rfc3339(), sum));
        if i == 11 {
            // A second snapshot in the middle of the history.
            eventually(
                Duration::from_secs(20),
                "a snapshot past the middle",
                || async {
                    let b = backup_status(w).await.ok()?;
                    (b["last_snapshot_seq"].as_u64()? >= seq).then_some(())
                },
            )
            .await?;
        }
    }
    eprintln!("worst archive lag seen: {worst_lag:?}");
    ensure!(
        worst_lag <= Duration::from_secs(4),
        "archive lag {worst_lag:?} exceeds --archive-interval 1s + 3s slack"
    );
    let b = backup_status(w).await?;
    ensure!(b["failing"] == false && b["last_error"].is_null(), "{b}");
    ensure!(
        backup_status(&nodes[1 - uploader]).await?["archived_seq"].as_u64() >= Some(points[20].0),
        "the other node reports the uploader's state"
    );

    let list = run_ha(&["backup", "list", "--url", &url, "--json"], &s3_env(&env))?;
    ensure!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let list: Json = serde_json::from_slice(&list.stdout)?;
    ensure!(
        list["snapshots"].as_array().map(Vec::len) >= Some(2),
        "{list}"
    );
    let verify = run_ha(&["backup", "verify", "--url", &url], &s3_env(&env))?;
    ensure!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // `fetch`: the newest snapshot as a database file, at the sequence the listing names.
    let out = tempfile::tempdir()?;
    let fetched = out.path().join("fetched.db");
    let f = run_ha(
        &[
            "backup",
            "fetch",
            "--url",
            &url,
            "--out",
            &fetched.display().to_string(),
        ],
        &s3_env(&env),
    )?;
    ensure!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    let newest = list["snapshots"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|s| s["seq"].as_u64())
        .context("newest snapshot")?;
    let (fetched_seq, fetched_sum) = checksum_of(&fetched).await?;
    // (A newer one may have been uploaded since the listing.)
    ensure!(
        fetched_seq >= newest,
        "fetched {fetched_seq}, newest listed {newest}"
    );
    if let Some(p) = points.iter().find(|p| p.0 == fetched_seq) {
        ensure!(
            fetched_sum == p.2,
            "fetched snapshot differs from the source at {fetched_seq}"
        );
    }

    // To a sequence in the middle, to a time, and to the latest: each equals the source then.
    for (name, args, expected) in [
        (
            "seq",
            vec!["--to-seq".to_string(), points[5].0.to_string()],
            &points[5],
        ),
        (
            "time",
            vec!["--to-time".to_string(), points[16].1.clone()],
            &points[16],
        ),
        ("latest", vec!["--latest".to_string()], &points[23]),
    ] {
        let file = out.path().join(format!("{name}.db"));
        let f = file.display().to_string();
        let mut a = vec!["--from", url.as_str(), "--out", f.as_str()];
        a.extend(args.iter().map(String::as_str));
        let (code, stdout, stderr) = restore(&env, &a)?;
        ensure!(code == 0, "restore {name}: exit {code}: {stdout} {stderr}");
        let (seq, sum) = checksum_of(&file).await?;
        ensure!(
            seq == expected.0,
            "restore {name}: at {seq}, wanted {}",
            expected.0
        );
        ensure!(
            sum == expected.2,
            "restore {name}: content differs from the source at {seq}:\n{sum}\nvs\n{}",
            expected.2
        );
    }
    // A target before the oldest snapshot is a clear error.
    let (code, _, stderr) = restore(
        &env,
        &[
            "--from",
            &url,
            "--to-time",
            "2001-01-01T00:00:00Z",
            "--out",
            &out.path().join("x.db").display().to_string(),
        ],
    )?;
    ensure!(
        code != 0 && stderr.contains("before the oldest snapshot"),
        "{stderr}"
    );

    // The uploader dies: the other node takes over and archives what comes next.
    nodes[uploader].kill();
    let other = &nodes[1 - uploader];
    eventually(
        Duration::from_secs(30),
        "the other node uploads",
        || async {
            backup_status(other).await.ok()?["uploader"]
                .as_bool()?
                .then_some(())
        },
    )
    .await?;
    other
        .sql("INSERT INTO t(v) VALUES ('after takeover')")
        .await?;
    let (last_seq, last_sum) = settled(other).await?;
    eventually(
        Duration::from_secs(15),
        "archived after takeover",
        || async {
            (backup_status(other).await.ok()?["archived_seq"].as_u64()? >= last_seq).then_some(())
        },
    )
    .await?;

    // The whole cluster is gone (nodes, volumes, stream): a new one from the bucket alone.
    drop(nodes);
    nats.kill();
    drop(nats);
    drop(dirs);
    let nats = NatsProcess::start().await?;
    let new_dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut fresh = Vec::new();
    for (i, d) in new_dirs.iter().enumerate() {
        fresh.push(
            start_node(
                &nats.url(),
                &format!("m{}", i + 1),
                d.path(),
                &["--restore-from", &url],
                &env,
            )
            .await?,
        );
    }
    for n in &fresh {
        wait_ready(n, Duration::from_secs(30)).await?;
        let (_, sum) = checksum(n).await?;
        ensure!(
            sum == last_sum,
            "rebuilt node differs from the source:\n{sum}\nvs\n{last_sum}"
        );
        ensure!(
            n.log_text().contains("database restored"),
            "no restore in the log"
        );
    }
    // And it works as a cluster: a write on one is on the other.
    fresh[0]
        .sql("INSERT INTO t(v) VALUES ('new cluster')")
        .await?;
    eventually(Duration::from_secs(15), "the write replicated", || async {
        let r = fresh[1]
            .rows("SELECT count(*) FROM t WHERE v = 'new cluster'")
            .await
            .ok()?;
        (r[0][0] == 1).then_some(())
    })
    .await?;
    let _ = last_seq;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_storage_is_reported_and_backups_resume() -> Result<()> {
    let port = ha_tests::free_port();
    let env: Vec<(String, String)> = vec![
        (
            "HA_BACKUP_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        ("AWS_ACCESS_KEY_ID".into(), ha_tests::s3::ACCESS_KEY.into()),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            ha_tests::s3::SECRET_KEY.into(),
        ),
    ];
    let nats = NatsProcess::start().await?;
    let dir = tempfile::tempdir()?;
    let url = format!("s3://{BUCKET}/down");
    let n = start_node(
        &nats.url(),
        "n1",
        dir.path(),
        &[
            "--backup-url",
            &url,
            "--backup-interval",
            "2s",
            "--archive-interval",
            "1s",
        ],
        &env,
    )
    .await?;
    wait_ready(&n, Duration::from_secs(30)).await?;
    let b = eventually(Duration::from_secs(30), "backup.failing", || async {
        let b = backup_status(&n).await.ok()?;
        (b["failing"] == true).then_some(b)
    })
    .await?;
    let err = b["last_error"].as_str().unwrap_or_default();
    ensure!(err.contains("unreachable"), "the error says what: {err}");
    // The node keeps serving.
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY)").await?;
    n.sql("INSERT INTO t VALUES (1)").await?;
    let (seq, _) = settled(&n).await?;
    // The storage comes back: backups catch up on their own.
    let s3 = S3Server::start_on(port).await?;
    s3.create_bucket(BUCKET).await?;
    eventually(Duration::from_secs(60), "backups recovered", || async {
        let b = backup_status(&n).await.ok()?;
        (b["failing"] == false
            && b["archived_seq"].as_u64()? >= seq
            && b["last_snapshot_seq"].is_u64())
        .then_some(())
    })
    .await?;
    let metrics = n.client.get(n.url("/metrics")).send().await?.text().await?;
    ensure!(metrics.contains("ha_backup_failures_total"), "metrics");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_give_a_clear_error_without_xml_or_secrets() -> Result<()> {
    let s3 = S3Server::with_auth(BUCKET).await?;
    let env = s3.env();
    let url = format!("s3://{BUCKET}/auth");
    let out = run_ha(&["backup", "list", "--url", &url], &s3_env(&env))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "listing with a wrong key succeeded");
    ensure!(
        stderr.contains("InvalidAccessKeyId") && stderr.contains("check AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
    ensure!(
        !stderr.contains("<?xml") && !stderr.contains(ha_tests::s3::SECRET_KEY),
        "{stderr}"
    );

    let nats = NatsProcess::start().await?;
    let dir = tempfile::tempdir()?;
    let n = start_node(&nats.url(), "n1", dir.path(), &["--backup-url", &url], &env).await?;
    let b = eventually(Duration::from_secs(30), "backup.failing", || async {
        let b = backup_status(&n).await.ok()?;
        (b["failing"] == true && b["last_error"].is_string()).then_some(b)
    })
    .await?;
    let err = b["last_error"].as_str().unwrap_or_default();
    ensure!(
        err.contains("InvalidAccessKeyId") && !err.contains("<?xml"),
        "{err}"
    );
    ensure!(
        !n.log_text().contains(ha_tests::s3::SECRET_KEY),
        "the secret is in the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_missing_segment_stops_restore_at_the_last_consistent_point() -> Result<()> {
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let env = s3.env();
    let url = format!("s3://{BUCKET}/bad");
    let nats = NatsProcess::start().await?;
    let dir = tempfile::tempdir()?;
    let mut n = start_node(
        &nats.url(),
        "n1",
        dir.path(),
        &[
            "--backup-url",
            &url,
            "--backup-interval",
            "1h",
            "--archive-interval",
            "1s",
            "--archive-max-messages",
            "4",
        ],
        &env,
    )
    .await?;
    wait_ready(&n, Duration::from_secs(30)).await?;
    eventually(Duration::from_secs(20), "first snapshot", || async {
        backup_status(&n).await.ok()?["last_snapshot_seq"].as_u64()
    })
    .await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY)").await?;
    for i in 0..15 {
        n.sql(&format!("INSERT INTO t VALUES ({i})")).await?;
    }
    let (seq, _) = settled(&n).await?;
    eventually(Duration::from_secs(15), "archived", || async {
        (backup_status(&n).await.ok()?["archived_seq"].as_u64()? >= seq).then_some(())
    })
    .await?;
    n.stop(Duration::from_secs(15)).await?;
    let list = run_ha(&["backup", "list", "--url", &url, "--json"], &s3_env(&env))?;
    ensure!(list.status.success());
    // The segments, by name, from the bucket itself.
    let storage = s3.storage(&url)?;
    let mut objects: Vec<String> = storage
        .list("archive/")
        .await?
        .into_iter()
        .filter(|k| k.ends_with(".jsonl.zst"))
        .collect();
    objects.sort();
    ensure!(objects.len() >= 3, "segments: {objects:?}");
    let victim = objects[1].clone();
    let before_victim: u64 = objects[0]
        .trim_end_matches(".jsonl.zst")
        .rsplit('-')
        .next()
        .context("segment name")?
        .parse()?;
    let out = tempfile::tempdir()?;
    let file = out.path().join("r.db").display().to_string();
    // Corrupt: overwrite the object's bytes.
    storage
        .put(&victim, bytes::Bytes::from_static(b"not what was archived"))
        .await?;
    let verify = run_ha(&["backup", "verify", "--url", &url], &s3_env(&env))?;
    ensure!(
        !verify.status.success() && String::from_utf8_lossy(&verify.stdout).contains("CORRUPT")
    );
    let (code, stdout, stderr) = restore(&env, &["--from", &url, "--latest", "--out", &file])?;
    ensure!(code == 3, "exit {code}: {stdout} {stderr}");
    ensure!(
        stderr.contains(&format!("stopped at sequence {before_victim}"))
            && stderr.contains("corrupt"),
        "{stderr}"
    );
    let (reached, _) = checksum_of(Path::new(&file)).await?;
    ensure!(
        reached == before_victim,
        "restored to {reached}, wanted {before_victim}"
    );
    // Asking only for what comes before it is fine.
    let (code, _, stderr) = restore(
        &env,
        &[
            "--from",
            &url,
            "--to-seq",
            &before_victim.to_string(),
            "--out",
            &file,
        ],
    )?;
    ensure!(code == 0, "{stderr}");
    // Missing: the object and its manifest gone.
    storage.delete(&victim).await?;
    storage
        .delete(&victim.replace(".jsonl.zst", ".json"))
        .await?;
    let (code, _, stderr) = restore(&env, &["--from", &url, "--latest", "--out", &file])?;
    ensure!(code == 3, "{stderr}");
    ensure!(
        stderr.contains(&format!("stopped at sequence {before_victim}"))
            && stderr.contains("missing"),
        "{stderr}"
    );
    if code == 0 {
        bail!("unreachable");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_snapshots_and_the_segments_before_them() -> Result<()> {
    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let env = s3.env();
    let url = format!("s3://{BUCKET}/ret");
    let nats = NatsProcess::start().await?;
    let dir = tempfile::tempdir()?;
    let n = start_node(
        &nats.url(),
        "n1",
        dir.path(),
        &[
            "--backup-url",
            &url,
            "--backup-interval",
            "1s",
            "--backup-retention",
            "2s",
            "--archive-interval",
            "1s",
            "--archive-max-messages",
            "2",
        ],
        &env,
    )
    .await?;
    wait_ready(&n, Duration::from_secs(30)).await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY)").await?;
    let started = Instant::now();
    let mut i = 0;
    // Writes for a while, so snapshots age past the retention.
    while started.elapsed() < Duration::from_secs(6) {
        n.sql(&format!("INSERT INTO t VALUES ({i})")).await?;
        i += 1;
        let (seq, _) = settled(&n).await?;
        eventually(Duration::from_secs(10), "snapshot at the head", || async {
            (backup_status(&n).await.ok()?["last_snapshot_seq"].as_u64()? >= seq).then_some(())
        })
        .await?;
    }
    let list = eventually(Duration::from_secs(15), "old snapshots deleted", || async {
        let out = run_ha(&["backup", "list", "--url", &url, "--json"], &s3_env(&env)).ok()?;
        let l: Json = serde_json::from_slice(&out.stdout).ok()?;
        let snaps = l["snapshots"].as_array()?;
        let oldest = snaps.first()?["seq"].as_u64()?;
        // The archive starts at (or before) the oldest snapshot, never far behind it.
        let first_seg = l["archive"]["first_seq"].as_u64().unwrap_or(u64::MAX);
        (snaps.len() <= 4 && oldest > 1 && first_seg > 1 && first_seg <= oldest + 1).then_some(l)
    })
    .await?;
    eprintln!("after retention: {list}");
    // What is kept still restores.
    let out = tempfile::tempdir()?;
    let file = out.path().join("r.db").display().to_string();
    let (code, stdout, stderr) = restore(&env, &["--from", &url, "--latest", "--out", &file])?;
    ensure!(code == 0, "{stdout} {stderr}");
    let (seq, sum) = checksum_of(Path::new(&file)).await?;
    let (src_seq, src_sum) = settled(&n).await?;
    ensure!(
        seq == src_seq && sum == src_sum,
        "restored {seq}, source {src_seq}"
    );
    Ok(())
}

/// A single node backs up like Litestream does with nothing but its own embedded nats-server:
/// snapshots and the change-log archive, restored to the latest point. Without any change log
/// (`--nats-port 0`, no `--replication-url`) `--backup-url` is refused at start-up, not accepted
/// and left failing.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_with_its_embedded_nats_backs_up_and_one_without_a_change_log_is_refused()
-> Result<()> {
    let refused = run_ha(
        &[
            "--check-config",
            "--nats-port",
            "0",
            "--backup-url",
            "s3://b/p",
        ],
        &[],
    )?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && said.contains("--backup-url needs the change log"),
        "exit {:?}: {said}",
        refused.status.code()
    );

    let s3 = S3Server::start().await?;
    s3.create_bucket(BUCKET).await?;
    let env = s3.env();
    let url = format!("s3://{BUCKET}/single");
    let dir = tempfile::tempdir()?;
    let nats_port = ha_tests::free_port().to_string();
    let mut spec = ha_tests::NodeSpec::new(&[
        "file:t.db",
        "--name",
        "solo",
        "--nats-port",
        &nats_port,
        "--backup-url",
        &url,
        "--backup-interval",
        "2s",
        "--archive-interval",
        "1s",
    ])
    .dir(dir.path());
    for (k, v) in &env {
        spec = spec.env(k, v);
    }
    let n = TestNode::start_spec(spec).await?;
    wait_ready(&n, Duration::from_secs(30)).await?;
    n.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        .await?;
    for i in 0..5 {
        n.sql(&format!("INSERT INTO t(v) VALUES ('row {i}')"))
            .await?;
    }
    let (first, _) = settled(&n).await?;
    eventually(Duration::from_secs(30), "a snapshot uploaded", || async {
        let b = backup_status(&n).await.ok()?;
        (b["uploader"] == true && b["last_snapshot_seq"].as_u64()? >= first).then_some(())
    })
    .await?;
    // Writes after the snapshot reach the restore through the archive.
    n.sql("UPDATE t SET v = v || '+' WHERE id > 2").await?;
    n.sql("INSERT INTO t(v) VALUES ('after')").await?;
    let (seq, sum) = settled(&n).await?;
    eventually(Duration::from_secs(30), "archived", || async {
        let b = backup_status(&n).await.ok()?;
        (b["archived_seq"].as_u64()? >= seq && b["failing"] == false).then_some(())
    })
    .await?;
    let out = tempfile::tempdir()?;
    let file = out.path().join("latest.db");
    let f = file.display().to_string();
    let (code, stdout, stderr) = restore(&env, &["--from", &url, "--latest", "--out", &f])?;
    ensure!(code == 0, "restore: exit {code}: {stdout} {stderr}");
    let (restored_seq, restored) = checksum_of(&file).await?;
    ensure!(
        restored_seq == seq,
        "restored to {restored_seq}, wrote up to {seq}"
    );
    ensure!(
        restored == sum,
        "restored content differs:\n{restored}\nvs\n{sum}"
    );
    Ok(())
}
