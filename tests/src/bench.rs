//! Shared pieces of the benchmark programs: latency samples and their Markdown rows.
//! Benchmarks print numbers beside a baseline measured in the same run; they assert nothing.

/// The `--seconds N` argument of a benchmark program, else `default`.
pub fn seconds_arg(default: u64) -> std::time::Duration {
    let secs = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    std::time::Duration::from_secs(secs)
}

/// A load worker: it runs until told to stop and returns its operation count and latencies (µs).
pub type Worker = tokio::task::JoinHandle<anyhow::Result<(u64, Vec<u64>)>>;

/// Operations done by a set of workers, with every latency in microseconds.
pub struct Sample {
    pub ops: u64,
    pub secs: f64,
    pub latencies_us: Vec<u64>,
}

impl Sample {
    /// Lets the workers run for `dur`, stops them (`stop`) and merges what they measured since
    /// `start`.
    pub async fn after(
        dur: std::time::Duration,
        stop: &std::sync::atomic::AtomicBool,
        tasks: Vec<Worker>,
        start: std::time::Instant,
    ) -> anyhow::Result<Sample> {
        tokio::time::sleep(dur).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await??);
        }
        Ok(Sample::merge(parts, start.elapsed().as_secs_f64()))
    }

    /// Merges per-worker `(ops, latencies)` measured over `secs` seconds.
    pub fn merge(parts: Vec<(u64, Vec<u64>)>, secs: f64) -> Sample {
        let mut latencies_us = Vec::new();
        let mut ops = 0;
        for (n, l) in parts {
            ops += n;
            latencies_us.extend(l);
        }
        latencies_us.sort_unstable();
        Sample {
            ops,
            secs,
            latencies_us,
        }
    }

    pub fn from_latencies(mut latencies_us: Vec<u64>, secs: f64) -> Sample {
        latencies_us.sort_unstable();
        Sample {
            ops: latencies_us.len() as u64,
            secs,
            latencies_us,
        }
    }

    pub fn per_second(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    /// The `p` quantile (0..=1) in milliseconds.
    pub fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn max(&self) -> f64 {
        self.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0
    }

    pub fn row(&self, what: &str, path: &str, conc: usize) -> String {
        format!(
            "| {what} | {path} | {conc} | {:.0} | {:.3} | {:.3} |",
            self.per_second(),
            self.pct(0.5),
            self.pct(0.99)
        )
    }
}

/// `conc` HTTP clients posting `body(worker, i)` to `url` back to back for `dur`; every answer
/// must be a success.
pub async fn http_load<F>(
    url: String,
    conc: usize,
    dur: std::time::Duration,
    body: F,
) -> anyhow::Result<Sample>
where
    F: Fn(usize, u64) -> serde_json::Value + Send + Sync + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let stop = Arc::new(AtomicBool::new(false));
    let body = Arc::new(body);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let client = reqwest::Client::new();
        let (url, stop, body) = (url.clone(), stop.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let r = client.post(&url).json(&body(w, i)).send().await?;
                if !r.status().is_success() {
                    anyhow::bail!(
                        "HTTP {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                r.bytes().await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok((lat.len() as u64, lat))
        }));
    }
    Sample::after(dur, &stop, tasks, start).await
}

/// A process's resident memory from `/proc/<pid>/status`, in kB: `(VmRSS, VmHWM)` (now, and
/// the peak since it started).
pub fn memory_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The ids of `pid`'s children (from `/proc/<pid>/task/*/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}
