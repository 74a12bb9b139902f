//! Owns the bounds of one client job while SQLite runs it: its deadline, its cancel flag and
//! its result-size budget, plus the node-wide stop flag (shutdown). A progress handler on every
//! connection checks them every few thousand VM steps, on whatever thread runs the job.
//! Must not decide the bounds: front ends pass `Limits` in; this only enforces them.
//! Invariant: the bounds are active only inside `scope` on the thread running the job; outside
//! it (the node's own statements, replicated changes) nothing but the stop flag interrupts.
//! See `statement::run` for where an interrupt becomes an error, `writer` for write jobs.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How many SQLite VM instructions run between two checks (a few microseconds).
const CHECK_EVERY: i32 = 4000;

/// What bounds one client job. The default bounds nothing.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// When the job must stop, and the time it was given (for the message).
    pub deadline: Option<(Instant, Duration)>,
    /// Set from elsewhere (a pg CancelRequest, an HTTP client gone) to stop the job.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Most bytes of values the job's result sets may hold, all statements together.
    pub max_result_bytes: Option<usize>,
}

impl Limits {
    /// Limits with a timeout from now (`None` or zero: no deadline).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Limits {
        self.deadline = timeout
            .filter(|t| !t.is_zero())
            .map(|t| (Instant::now() + t, t));
        self
    }
}

/// Why a job was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It ran past its deadline (pg `statement_timeout`, HTTP `timeout=`, `--query-timeout`).
    Timeout(Duration),
    /// Its client asked (pg CancelRequest) or went away (HTTP).
    Cancelled,
    /// The node is shutting down and its `--shutdown-timeout` is up.
    Shutdown,
}

struct Active {
    limits: Limits,
    /// Bytes of the budget still unused.
    budget: Cell<usize>,
}

thread_local! {
    static CURRENT: RefCell<Option<Active>> = const { RefCell::new(None) };
    /// Why the progress handler last stopped a statement on this thread.
    static STOPPED: Cell<Option<Stop>> = const { Cell::new(None) };
}

/// Installs the progress handler on `conn`; `stop` is the node's shutdown flag, shared by all
/// its connections.
pub(crate) fn install(conn: &mut Connection, stop: Arc<AtomicBool>) -> rusqlite::Result<()> {
    conn.progress_handler(
        CHECK_EVERY,
        Some(move || {
            let why = if stop.load(Ordering::Relaxed) {
                Some(Stop::Shutdown)
            } else {
                CURRENT.with_borrow(|c| c.as_ref().and_then(|a| a.check()))
            };
            if why.is_some() {
                STOPPED.set(why);
            }
            why.is_some()
        }),
    )
}

impl Active {
    fn check(&self) -> Option<Stop> {
        if self
            .limits
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Some(Stop::Cancelled);
        }
        match self.limits.deadline {
            Some((at, given)) if Instant::now() >= at => Some(Stop::Timeout(given)),
            _ => None,
        }
    }
}

/// Runs `f` (one client job) under `limits` on this thread.
pub(crate) fn scope<R>(limits: &Limits, f: impl FnOnce() -> R) -> R {
    let active = Active {
        budget: Cell::new(limits.max_result_bytes.unwrap_or(usize::MAX)),
        limits: limits.clone(),
    };
    let previous = CURRENT.replace(Some(active));
    STOPPED.set(None);
    struct Restore(Option<Option<Active>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(p) = self.0.take() {
                CURRENT.set(p);
            }
        }
    }
    let _restore = Restore(Some(previous));
    f()
}

/// Whether the job in scope must stop now (checked between statements and rows too, since
/// the progress handler only runs inside SQLite).
pub(crate) fn check_now() -> Option<Stop> {
    let why = CURRENT.with_borrow(|c| c.as_ref().and_then(|a| a.check()));
    if why.is_some() {
        STOPPED.set(why);
    }
    why
}

/// Why the last interrupted statement on this thread was stopped (taken once).
pub(crate) fn take_stop() -> Option<Stop> {
    STOPPED.take()
}

/// Takes `bytes` from the result budget of the job in scope; `Err(limit)` once it is spent.
pub(crate) fn charge(bytes: usize) -> Result<(), usize> {
    CURRENT.with_borrow(|c| match c {
        Some(a) => {
            let left = a.budget.get();
            if bytes > left {
                Err(a.limits.max_result_bytes.unwrap_or(usize::MAX))
            } else {
                a.budget.set(left - bytes);
                Ok(())
            }
        }
        None => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                           SELECT count(*) FROM c";

    fn conn(stop: Arc<AtomicBool>) -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        install(&mut c, stop).unwrap();
        c
    }

    #[test]
    fn a_deadline_stops_a_runaway_query_and_says_so() {
        let c = conn(Arc::default());
        let limits = Limits::default().with_timeout(Some(Duration::from_millis(50)));
        let started = Instant::now();
        let r = scope(&limits, || c.query_row(FOREVER, [], |r| r.get::<_, i64>(0)));
        assert!(r.is_err());
        assert_eq!(take_stop(), Some(Stop::Timeout(Duration::from_millis(50))));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Outside the scope nothing is bounded any more.
        let n: i64 = c
            .query_row("SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100000) SELECT x FROM c)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100_000);
    }

    #[test]
    fn the_cancel_flag_and_the_stop_flag_interrupt() {
        let stop = Arc::new(AtomicBool::new(false));
        let c = conn(stop.clone());
        let flag = Arc::new(AtomicBool::new(true));
        let limits = Limits {
            cancel: Some(flag),
            ..Limits::default()
        };
        assert!(scope(&limits, || c.query_row(FOREVER, [], |r| r.get::<_, i64>(0))).is_err());
        assert_eq!(take_stop(), Some(Stop::Cancelled));
        stop.store(true, Ordering::Relaxed);
        assert!(c.query_row(FOREVER, [], |r| r.get::<_, i64>(0)).is_err());
        assert_eq!(take_stop(), Some(Stop::Shutdown));
    }

    #[test]
    fn the_budget_is_shared_by_the_job() {
        let limits = Limits {
            max_result_bytes: Some(10),
            ..Limits::default()
        };
        scope(&limits, || {
            assert_eq!(charge(6), Ok(()));
            assert_eq!(charge(6), Err(10));
        });
        assert_eq!(charge(usize::MAX), Ok(()));
    }
}
