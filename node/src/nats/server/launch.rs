//! Owns one life of the child process: writing its configuration (owner-only, it may hold
//! passwords), spawning it, forwarding its log, waiting until the ports file and JetStream's
//! health check answer, and terminating it (SIGTERM, then SIGKILL; always reaped).

use std::collections::VecDeque;

use super::*;

const LOG_LINES_KEPT: usize = 200;
const LOG_TAIL_IN_ERRORS: usize = 20;

/// Recent log lines of the child, shared with the log-reading tasks.
#[derive(Clone, Default)]
pub(super) struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    pub(super) fn push(&self, line: String) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() == LOG_LINES_KEPT {
                q.pop_front();
            }
            q.push_back(line);
        }
    }
    pub(super) fn last(&self, n: usize) -> Vec<String> {
        self.0
            .lock()
            .map(|q| q.iter().skip(q.len().saturating_sub(n)).cloned().collect())
            .unwrap_or_default()
    }
    pub(super) fn tail_text(&self) -> String {
        let lines = self.last(LOG_TAIL_IN_ERRORS);
        if lines.is_empty() {
            "(no output)".into()
        } else {
            lines.join("\n")
        }
    }
}

pub(super) fn client_url(host: &str, port: u16) -> String {
    let host = match host {
        "" | "0.0.0.0" | "::" | "[::]" => "127.0.0.1".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("nats://{host}:{port}")
}

/// Writes the config, spawns the child and waits until JetStream answers.
pub(super) async fn launch(
    plan: &Plan,
    log: &LogTail,
) -> Result<(Child, Endpoints), NatsServerError> {
    let cfg = &plan.cfg;
    let mut cmd = Command::new(&plan.bin);
    cmd.arg("--ports_file_dir").arg(&plan.run_dir);
    match &cfg.config_file {
        Some(file) => {
            cmd.arg("-c").arg(file).arg("-js");
            let monitor = if cfg.monitor_port == 0 {
                "-1".to_string()
            } else {
                cfg.monitor_port.to_string()
            };
            cmd.arg("-m").arg(monitor);
        }
        None => {
            let path = plan.run_dir.join("nats-server.conf");
            write_private(&path, &render(cfg))?;
            cmd.arg("-c").arg(&path);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C meant for the node must not stop the server before
        // the node has shut down in order.
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The node died before prctl took effect: do not run orphaned.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("cannot start {}", plan.bin.display())))?;
    let pid = child.id().unwrap_or(0);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump_log(out, log.clone(), cfg.logs));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump_log(err, log.clone(), cfg.logs));
    }
    match wait_ready(&mut child, pid, plan, log).await {
        Ok(ep) => Ok((child, ep)),
        Err(e) => {
            terminate(&mut child, Duration::from_secs(2)).await;
            Err(e)
        }
    }
}

pub(super) fn render(cfg: &NatsServerConfig) -> String {
    let routes: Vec<String> = cfg
        .cluster
        .as_ref()
        .map(|c| {
            c.routes
                .iter()
                .map(|r| match &c.auth {
                    Some(a) => nats_conf::with_credentials(r, &a.user, a.password.expose()),
                    None => r.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let nonzero = |p: u16| (p != 0).then_some(p);
    nats_conf::render(&ConfSpec {
        server_name: &cfg.server_name,
        host: &cfg.host,
        port: nonzero(cfg.port),
        monitor_port: nonzero(cfg.monitor_port),
        store_dir: cfg.store_dir.as_deref(),
        user: cfg.auth.as_ref().map(|a| a.user.as_str()),
        password: cfg.auth.as_ref().map(|a| a.password.expose()),
        system: cfg
            .system
            .as_ref()
            .map(|a| (a.user.as_str(), a.password.expose())),
        anonymous_password: cfg.anonymous_password.as_ref().map(Secret::expose),
        cluster: cfg.cluster.as_ref().map(|c| ClusterSpec {
            name: &c.name,
            host: &c.host,
            port: nonzero(c.port),
            routes: &routes,
            auth: c
                .auth
                .as_ref()
                .map(|a| (a.user.as_str(), a.password.expose())),
            tls: c.tls.as_ref(),
        }),
        max_payload: cfg.max_payload,
        ping_interval: cfg.ping_interval,
        sync_interval: match cfg.sync {
            NatsSync::Always => None,
            NatsSync::Every(d) => Some(d),
        },
    })
}

/// Writes `text` readable by the owner only (it may hold the password).
pub(super) fn write_private(path: &Path, text: &str) -> Result<(), NatsServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("cannot write {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("cannot write {}", path.display())))
}

pub(super) async fn pump_log(
    stream: impl tokio::io::AsyncRead + Unpin,
    log: LogTail,
    forward: bool,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("[ERR]") || line.contains("[FTL]") {
            tracing::error!(target: "nats_server", "{line}");
        } else if forward && line.contains("[WRN]") {
            tracing::warn!(target: "nats_server", "{line}");
        } else if forward {
            tracing::info!(target: "nats_server", "{line}");
        }
        log.push(line);
    }
}

/// Polls the ports file, then `/healthz?js-enabled-only=true`, until the deadline.
pub(super) async fn wait_ready(
    child: &mut Child,
    pid: u32,
    plan: &Plan,
    log: &LogTail,
) -> Result<Endpoints, NatsServerError> {
    let timeout = plan.cfg.ready_timeout;
    let deadline = Instant::now() + timeout;
    let mut reason = String::from("no ports file yet");
    let mut delay = Duration::from_millis(5);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // Let the log pumps catch the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(NatsServerError::Exited {
                status: status.to_string(),
                log_tail: log.tail_text(),
            });
        }
        if let Some(ep) = read_ports_file(&plan.run_dir, pid) {
            match http_get(&ep.monitor, "/healthz?js-enabled-only=true").await {
                Ok((200, _)) => return Ok(ep),
                Ok((status, body)) => {
                    reason = format!("/healthz answered {status}: {}", body.trim())
                }
                Err(e) => reason = format!("/healthz: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(NatsServerError::NotReady {
                after: timeout,
                reason,
                log_tail: log.tail_text(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Reads `<run_dir>/*_<pid>.ports`: `{"nats":[url…],"monitoring":[url…],"cluster":[url…]}`.
pub(super) fn read_ports_file(dir: &Path, pid: u32) -> Option<Endpoints> {
    let suffix = format!("_{pid}.ports");
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
    let first_port = |key: &str| -> Option<u16> {
        let url = v.get(key)?.as_array()?.first()?.as_str()?;
        url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
    };
    let client_port = first_port("nats")?;
    let monitor_port = first_port("monitoring")?;
    Some(Endpoints {
        client_port,
        monitor: format!("http://127.0.0.1:{monitor_port}"),
        cluster_port: first_port("cluster"),
    })
}

/// A minimal HTTP/1.0 GET against the loopback monitoring port: returns status and body.
pub(super) async fn http_get(base: &str, path: &str) -> std::io::Result<(u16, String)> {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
            .to_string();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "monitoring port timed out")
        })?
}

/// SIGTERM, then SIGKILL after `grace`; always reaps the child.
pub(super) async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, "nats-server did not stop after SIGTERM; killing it");
    }
    let _ = child.kill().await;
}
