//! Owns driving the `ha-sync` extension from real hosts: the `sqlite3` shell and Python's
//! `sqlite3` module as long-lived processes fed over stdin (`Host`), and reading a replica file
//! the way `cluster::dump` reads a node, so the two can be compared.
//! Must not fake a host: the shell is Debian's `sqlite3`, Python is a real interpreter whose
//! `sqlite3` module loads the extension with `load_extension`.
//! Invariant: every exchange with a host ends at a marker line the host prints after the
//! input, so output is never read by timing.
//! See `tests/tests/ha_sync.rs` for the scenarios.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};

use crate::{eventually_blocking, eventually_every, ha_bin, repo_root};

/// The extension: `$HA_SYNC_LIB`, else `libha_sync.so` beside the `ha` binary (make builds it
/// into the same target directory: `cargo build --manifest-path sync/Cargo.toml`).
pub fn ha_sync_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("HA_SYNC_LIB") {
        return PathBuf::from(p);
    }
    let lib = ha_bin()
        .parent()
        .map(|d| d.join("libha_sync.so"))
        .unwrap_or_default();
    assert!(
        lib.exists(),
        "{} does not exist: build it first (cargo build --manifest-path sync/Cargo.toml --target-dir target) or set HA_SYNC_LIB",
        lib.display()
    );
    lib
}

/// A Python whose `sqlite3` module can load extensions: the project's venv when its interpreter
/// was built with them, else Debian's `/usr/bin/python3` (pyenv builds often lack them).
pub fn python_with_extensions() -> Result<PathBuf> {
    let probe = "import sqlite3, sys; sys.exit(0 if hasattr(sqlite3.Connection, 'enable_load_extension') else 1)";
    let candidates = [
        repo_root().join(".tools/bin/python"),
        PathBuf::from("/usr/bin/python3"),
        PathBuf::from("python3"),
    ];
    for c in candidates {
        let ok = Command::new(&c)
            .args(["-c", probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(c);
        }
    }
    bail!(
        "no Python whose sqlite3 module can load extensions (tried .tools/bin/python, /usr/bin/python3, python3)"
    )
}

/// A line-oriented REPL over Python's sqlite3 module: each input line is one SQL statement
/// (its rows are printed as a JSON array, an error as `Error: …`); `--marker X` prints X.
const PYTHON_REPL: &str = r#"
import json, sqlite3, sys
db, lib = sys.argv[1], sys.argv[2]
conn = sqlite3.connect(db, timeout=5, isolation_level=None)
conn.enable_load_extension(True)
conn.load_extension(lib)
conn.enable_load_extension(False)
print("loaded", flush=True)
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    if line.startswith("--marker "):
        print(line[len("--marker "):], flush=True)
        continue
    try:
        print(json.dumps(conn.execute(line).fetchall()), flush=True)
    except Exception as e:
        print("Error:", e, flush=True)
"#;

/// A host process (the `sqlite3` shell or the Python REPL) with the extension loaded.
pub struct Host {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    markers: u64,
    /// The input line that makes the host print its argument.
    marker: fn(&str) -> String,
    pub name: &'static str,
}

impl Host {
    /// `sqlite3 <db>` with the extension loaded by `.load` (the path without its suffix, as a
    /// user would type it).
    pub fn sqlite3_shell(db: &Path) -> Result<Host> {
        let mut cmd = Command::new("sqlite3");
        cmd.arg(db);
        let mut h = Host::spawn("sqlite3", cmd, |m| format!(".print {m}"))?;
        let lib = ha_sync_lib();
        let stem = lib.with_extension("");
        h.ok(&format!(".timeout 5000\n.load {}", stem.display()))?;
        Ok(h)
    }

    /// The plain `sqlite3` shell with `args`, in `dir`, nothing loaded.
    pub fn sqlite3_in(dir: &Path, args: &[&str]) -> Result<Host> {
        let mut cmd = Command::new("sqlite3");
        cmd.args(args).current_dir(dir);
        Host::spawn("sqlite3", cmd, |m| format!(".print {m}"))
    }

    /// Python's sqlite3 module on `db`, the extension loaded with `load_extension`.
    pub fn python(db: &Path) -> Result<Host> {
        let mut cmd = Command::new(python_with_extensions()?);
        cmd.args(["-u", "-c", PYTHON_REPL])
            .arg(db)
            .arg(ha_sync_lib());
        let mut h = Host::spawn("python", cmd, |m| format!("--marker {m}"))?;
        let out = h.exec("")?;
        if !out.iter().any(|l| l == "loaded") {
            bail!("python did not load the extension: {out:?}");
        }
        Ok(h)
    }

    fn spawn(name: &'static str, mut cmd: Command, marker: fn(&str) -> String) -> Result<Host> {
        // One pipe for stdout and stderr keeps errors in order with results.
        let (reader, writer) = std::io::pipe()?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        drop(cmd);
        let stdin = child.stdin.take().context("stdin")?;
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(|l| l.ok()) {
                    if let Ok(mut l) = log.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Host {
            child: Some(child),
            stdin: Some(stdin),
            lines: rx,
            log,
            markers: 0,
            marker,
            name,
        })
    }

    /// Sends `input` and returns the output lines it produced up to the marker, without the
    /// extension's log lines (kept in the log).
    pub fn exec(&mut self, input: &str) -> Result<Vec<String>> {
        self.markers += 1;
        let mark = format!("__ha_sync_test_{}__", self.markers);
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{input}\n{}", (self.marker)(&mark))?;
        stdin.flush()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == mark => return Ok(out),
                Ok(l) if is_log_line(&l) => {}
                Ok(l) => out.push(l),
                Err(_) => bail!(
                    "{} gave no answer to {input:?} in time; output so far: {out:?}",
                    self.name
                ),
            }
        }
    }

    /// `exec` that fails when the host reports an error.
    pub fn ok(&mut self, input: &str) -> Result<Vec<String>> {
        let out = self.exec(input)?;
        if let Some(e) = out.iter().find(|l| is_error(l)) {
            bail!("{}: {input:?} failed: {e}\n{}", self.name, out.join("\n"));
        }
        Ok(out)
    }

    /// `exec` that must fail; returns the error line.
    pub fn err(&mut self, input: &str) -> Result<String> {
        let out = self.exec(input)?;
        match out.iter().find(|l| is_error(l)) {
            Some(e) => Ok(e.clone()),
            None => bail!("{}: {input:?} did not fail: {out:?}", self.name),
        }
    }

    /// Ends the host the polite way (end of input) and waits for it to exit.
    pub fn quit(mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        let mut child = self.child.take().context("not running")?;
        let exited = eventually_blocking(Duration::from_secs(30), "the host to exit", || {
            child.try_wait().ok().flatten()
        });
        exited.or_else(|e| {
            let _ = child.kill();
            bail!("{} did not exit after its input ended: {e}", self.name)
        })
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// A line of the extension's log (`2026-01-02T03:04:05.…Z  INFO …`).
fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
}

fn is_error(line: &str) -> bool {
    line.starts_with("Error")
        || line.starts_with("Parse error")
        || line.starts_with("Runtime error")
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var_os("HA_TEST_LOGS").is_some() {
            eprintln!("---- {} log ----\n{}\n----", self.name, self.log_text());
        }
    }
}

/// Every user table of the replica file at `path`, in the shape of `cluster::dump`: columns,
/// indexes and all rows sorted on every column.
pub fn local_dump(path: &Path) -> Result<BTreeMap<String, Json>> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let q = |sql: &str| -> Result<Vec<Json>> {
        let mut stmt = conn.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Json::Null,
                            rusqlite::types::ValueRef::Integer(v) => json!(v),
                            rusqlite::types::ValueRef::Real(v) => json!(v),
                            rusqlite::types::ValueRef::Text(t) => {
                                json!(String::from_utf8_lossy(t))
                            }
                            rusqlite::types::ValueRef::Blob(b) => json!(b),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Json>>>()
                    .map(Json::Array)
            })?
            .collect::<rusqlite::Result<Vec<Json>>>()?;
        Ok(rows)
    };
    let tables = q("SELECT name FROM sqlite_master WHERE type = 'table' \
         AND substr(name, 1, 4) <> '_ha_' AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name")?;
    let mut out = BTreeMap::new();
    for t in tables.iter().filter_map(|r| r[0].as_str()) {
        let lit = t.replace('\'', "''");
        let cols = q(&format!(
            "SELECT name, type, pk FROM pragma_table_info('{lit}') ORDER BY cid"
        ))?;
        let idx = q(&format!(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{lit}' \
             AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name"
        ))?;
        let order = (1..=cols.len().max(1))
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let rows = q(&format!(
            "SELECT * FROM \"{}\" ORDER BY {order}",
            t.replace('"', "\"\"")
        ))?;
        out.insert(
            t.to_string(),
            json!({"columns": cols, "indexes": idx, "rows": rows}),
        );
    }
    Ok(out)
}

/// One value of a query on the replica file (`None` while the table is not there yet).
pub fn local_scalar(path: &Path, sql: &str) -> Option<Json> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row(sql, [], |r| {
        Ok(match r.get_ref(0)? {
            rusqlite::types::ValueRef::Null => Json::Null,
            rusqlite::types::ValueRef::Integer(v) => json!(v),
            rusqlite::types::ValueRef::Real(v) => json!(v),
            rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
            rusqlite::types::ValueRef::Blob(b) => json!(b),
        })
    })
    .ok()
}

/// Polls the replica file every few milliseconds until `sql` answers `want`; returns how long
/// that took. Fails after `timeout`.
pub async fn wait_local(
    path: &Path,
    sql: &str,
    want: &Json,
    timeout: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    let what = format!("{sql} on the replica to be {want}");
    let seen = eventually_every(Duration::from_millis(2), timeout, &what, || async {
        (local_scalar(path, sql).as_ref() == Some(want)).then_some(())
    })
    .await;
    match seen {
        Ok(()) => Ok(start.elapsed()),
        Err(e) => bail!("{e}; got {:?}", local_scalar(path, sql)),
    }
}
