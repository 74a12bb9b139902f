//! Owns polling with a deadline, the only way the simulation waits for anything.
//! Must not sleep as synchronisation: it retries a probe until it answers or time runs out.

use std::time::{Duration, Instant};

/// Calls `probe` until it returns `Some`, backing off from 50 ms to 1 s; fails after `timeout`
/// with `what` and the probe's last error.
pub fn until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    let mut last = String::from("no answer yet");
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
