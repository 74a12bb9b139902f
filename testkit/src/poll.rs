//! Owns waiting in tests: a condition polled until it holds or a deadline passes, so that no
//! test sleeps to synchronise. One deadline rule for async tests (`eventually`, and
//! `eventually_every` for a fixed pace, e.g. to measure a latency) and for plain threads
//! (`until`, whose probe may fail and whose last error is reported, and `eventually_blocking`).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often to look: doubling from 5 ms to 200 ms, or at a fixed interval.
#[derive(Clone, Copy)]
enum Pace {
    Backoff(Duration),
    Every(Duration),
}

impl Pace {
    fn next(&mut self) -> Duration {
        match self {
            Pace::Every(d) => *d,
            Pace::Backoff(d) => {
                let now = *d;
                *d = (*d * 2).min(Duration::from_millis(200));
                now
            }
        }
    }
}

const FIRST_PAUSE: Duration = Duration::from_millis(5);

/// Polls `probe` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(Pace::Backoff(FIRST_PAUSE), timeout, what, probe).await
}

/// `eventually`, looking every `every` (for waits whose length the test measures).
pub async fn eventually_every<T, F, Fut>(
    every: Duration,
    timeout: Duration,
    what: &str,
    probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(Pace::Every(every), timeout, what, probe).await
}

async fn poll<T, F, Fut>(mut pace: Pace, timeout: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pace.next()).await;
    }
}

/// Polls `probe` from a plain thread (child processes, the pod simulation) until it returns
/// `Some`; fails after `timeout` with `what` and the probe's last error, if it had one.
pub fn until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pace = Pace::Backoff(FIRST_PAUSE);
    let mut last = None;
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(format!("{e:#}")),
        }
        if Instant::now() >= deadline {
            match last {
                Some(last) => bail!("timed out after {timeout:?} waiting for {what}: {last}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(pace.next());
    }
}

/// `eventually` for code outside a runtime: `until` with a probe that cannot fail.
pub fn eventually_blocking<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    until(timeout, what, || Ok(probe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_the_value_once_the_condition_holds_and_fails_at_the_deadline() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(5), "three probes", || {
            n += 1;
            let n = n;
            async move { (n >= 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = eventually_every(
            Duration::from_millis(1),
            Duration::from_millis(20),
            "never",
            || async { None::<()> },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("waiting for never"), "{e}");
        let mut m = 0;
        assert_eq!(
            eventually_blocking(Duration::from_secs(5), "two", || {
                m += 1;
                (m == 2).then_some(m)
            })
            .unwrap(),
            2
        );
        assert!(eventually_blocking(Duration::from_millis(10), "never", || None::<()>).is_err());
        let e = until(Duration::from_millis(20), "a refusal", || {
            Err::<Option<()>, _>(anyhow::anyhow!("connection refused"))
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with("waiting for a refusal: connection refused"),
            "{e}"
        );
    }
}
