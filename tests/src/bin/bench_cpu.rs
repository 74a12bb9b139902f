//! `ha-bench-cpu`: the inputs that used to take super-linear CPU, timed against a linear
//! baseline of the same length: splitting SQL with many `;` inside a literal (was quadratic)
//! and psql catalog patterns with many `.*` (was exponential). For each size it prints the time
//! of the hostile input, the time of the baseline, and their ratio: a ratio that stays flat as
//! the size doubles means linear time. Usage: `ha-bench-cpu` (build with `--release`).
//! Not a test: it asserts nothing.

use std::time::{Duration, Instant};

/// The best of a few runs of `f`.
fn time(mut f: impl FnMut()) -> Duration {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn row(out: &mut Vec<String>, what: &str, n: usize, hostile: Duration, baseline: Duration) {
    let ratio = hostile.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
    out.push(format!(
        "| {what} | {n} | {:.3} | {:.3} | {ratio:.1} |",
        hostile.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3
    ));
}

fn main() {
    let mut out = vec![
        "| input | size | hostile ms | linear baseline ms | ratio |".to_string(),
        "|---|---:|---:|---:|---:|".to_string(),
    ];
    for n in [2_000, 4_000, 8_000, 16_000, 32_000, 64_000] {
        // `;` inside one literal: every `;` is a candidate end that is not one.
        let hostile = format!("SELECT '{}'", ";".repeat(n));
        let baseline = format!("SELECT '{}'", "x".repeat(n));
        let h = time(|| assert_eq!(ha::exec::split_sql(&hostile).len(), 1));
        let b = time(|| assert_eq!(ha::exec::split_sql(&baseline).len(), 1));
        row(&mut out, "split: `;` in a literal", n, h, b);
    }
    for k in [4, 8, 16, 32, 64] {
        // `.*` k times against a name that almost matches: a backtracking matcher tries
        // every way to share the name between the `.*`s.
        let hostile = format!("^({}x)$", ".*".repeat(k));
        let baseline = format!("^({}x)$", ".".repeat(k));
        let name = "a".repeat(64);
        let h = time(|| assert!(!ha::pgwire::psql_pattern_matches(&hostile, &name)));
        let b = time(|| assert!(!ha::pgwire::psql_pattern_matches(&baseline, &name)));
        row(&mut out, "psql pattern: `.*` repeated", k, h, b);
    }
    println!("{}", out.join("\n"));
}
