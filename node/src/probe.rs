//! Owns `ha probe [URL]`: one HTTP GET (default `http://127.0.0.1:8080/readyz`) whose exit status
//! says whether the node answered 2xx — the health check of images without a shell or curl
//! (docker compose's `healthcheck`, `exec` probes).
//! Must not retry or wait: the caller (the container engine) owns the schedule.

use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_URL: &str = "http://127.0.0.1:8080/readyz";

/// Whether `argv` asks for `ha probe` (its first argument is `probe`).
pub fn wanted(argv: &[std::ffi::OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "probe")
}

/// Runs `ha probe [URL]`: exit 0 on a 2xx answer, 1 otherwise (the reason on stderr), 2 on bad
/// arguments.
pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let args: Vec<String> = argv
        .iter()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let url = match args.as_slice() {
        [] => DEFAULT_URL.to_string(),
        [u] if u.starts_with("http://") || u.starts_with("https://") => u.clone(),
        _ => {
            eprintln!("usage: ha probe [URL]   (default {DEFAULT_URL})");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ha probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(get(&url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha probe: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn get(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = resp.text().await.unwrap_or_default();
        Err(format!("HTTP {status}: {}", body.trim()))
    }
}
