//! Shared pieces of the benchmark programs: latency samples and their Markdown rows.
//! Benchmarks print numbers beside a baseline measured in the same run; they assert nothing.

/// Operations done by a set of workers, with every latency in microseconds.
pub struct Sample {
    pub ops: u64,
    pub secs: f64,
    pub latencies_us: Vec<u64>,
}

impl Sample {
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
