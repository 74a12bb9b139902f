//! The command line: version, bad values, and precedence flags > environment > file.

use anyhow::Result;
use ha_tests::{NodeSpec, TestNode, run_ha};
use serde_json::Value as Json;

#[test]
fn version_prints_version_commit_and_date() -> Result<()> {
    let out = run_ha(&["--version"], &[])?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ha");
    assert!(lines[1].starts_with("Version: "), "{text}");
    assert!(lines[2].starts_with("Commit: "), "{text}");
    assert!(lines[3].starts_with("Date: "), "{text}");
    Ok(())
}

#[test]
fn invalid_settings_stop_start_up_with_a_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad_file = dir.path().join("bad.yaml");
    std::fs::write(&bad_file, "concurrent-queries: 0\n")?;
    let unknown_key = dir.path().join("unknown.yaml");
    std::fs::write(&unknown_key, "colour: blue\n")?;
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--log-level".into(), "loud".into()], vec![], "loud"),
        (
            vec!["--concurrent-queries".into(), "0".into()],
            vec![],
            "concurrent-queries",
        ),
        (
            vec!["--shutdown-timeout".into(), "forever".into()],
            vec![],
            "duration",
        ),
        (
            vec!["--config".into(), "/no/such/file.yaml".into()],
            vec![],
            "/no/such/file.yaml",
        ),
        (
            vec!["-c".into(), bad_file.display().to_string()],
            vec![],
            "concurrent-queries",
        ),
        (
            vec!["-c".into(), unknown_key.display().to_string()],
            vec![],
            "colour",
        ),
        (
            vec!["file:x.db?_journal=sideways".into()],
            vec![],
            "_journal",
        ),
        (vec!["file:x.db?_unknown=1".into()], vec![], "_unknown"),
        (vec![], vec![("HA_LOG_LEVEL", "chatty")], "chatty"),
        (vec![], vec![("HA_PORT", "eighty")], "eighty"),
    ];
    for (args, env, needle) in cases {
        let out = run_ha(&args, &env)?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} was accepted");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
    }
    Ok(())
}

async fn node_name(spec: NodeSpec) -> Result<String> {
    let n = TestNode::start_spec(spec).await?;
    let s: Json = n.client.get(n.url("/status")).send().await?.json().await?;
    Ok(s["node"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn flags_beat_environment_beats_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ha.yaml");
    std::fs::write(&file, "name: from-file\nlog-level: debug\n")?;
    let f = file.display().to_string();
    let base = || NodeSpec::new(&["-c", f.as_str(), "file:p.db"]).dir(dir.path());
    assert_eq!(node_name(base()).await?, "from-file");
    assert_eq!(
        node_name(base().env("HA_NAME", "from-env")).await?,
        "from-env"
    );
    let mut spec = base().env("HA_NAME", "from-env");
    spec.args
        .extend(["--name".to_string(), "from-flag".to_string()]);
    assert_eq!(node_name(spec).await?, "from-flag");
    // The config file can come from the environment too, and the original's plain format works.
    let plain = dir.path().join("ha.conf");
    std::fs::write(&plain, "# plain format\nname from-plain\n")?;
    let spec = NodeSpec::new(&["file:p.db"])
        .dir(dir.path())
        .env("HA_CONFIG", &plain.display().to_string());
    assert_eq!(node_name(spec).await?, "from-plain");
    Ok(())
}

/// A port already taken stops start-up before anything is started or created: no nats-server
/// child, no database file, no store directory — the node says which address and exits.
#[test]
fn a_taken_port_stops_start_up_before_anything_starts() -> Result<()> {
    for taken_flag in ["--port", "--pg-port"] {
        let dir = tempfile::tempdir()?;
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let taken_port = taken.local_addr()?.port().to_string();
        let (http, pg, nats) = (
            ha_tests::free_port().to_string(),
            ha_tests::free_port().to_string(),
            ha_tests::free_port().to_string(),
        );
        let mut args = vec![
            "file:t.db".to_string(),
            "--nats-port".into(),
            nats,
            "--nats-store-dir".into(),
            dir.path().join("nats").display().to_string(),
        ];
        for (flag, port) in [("--port", http), ("--pg-port", pg)] {
            args.push(flag.into());
            args.push(if flag == taken_flag {
                taken_port.clone()
            } else {
                port
            });
        }
        let out = std::process::Command::new(ha_tests::ha_bin())
            .args(&args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()?;
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{taken_flag}: started on a taken port"
        );
        assert!(
            said.contains(&taken_port),
            "{taken_flag}: names the address: {said}"
        );
        assert!(
            !dir.path().join("t.db").exists() && !dir.path().join("nats").exists(),
            "{taken_flag}: start-up created the database or started NATS before noticing the port"
        );
    }
    Ok(())
}
