//! Owns the apply-group transaction a follower runs on its SQLite connection (the node's writer
//! and ha-sync): one transaction (the caller's `BEGIN …`, foreign keys deferred) in which the
//! whole batch is applied at once; when an item fails, the transaction is rolled back and the
//! items are applied again each in its own savepoint, stopping at the first that fails; then the
//! caller's bookkeeping and the commit of what came before; and how long transaction identities
//! (`_ha_txids`) are kept and when they are pruned.
//! Must not decide what a failure costs: the caller retries or quarantines.
//! Invariant: after `apply_group` the first `done` items are committed and nothing else is.

use std::time::Duration;

use rusqlite::Connection;

/// How many applied change sets between two prunings of `_ha_txids`.
const PRUNE_EVERY: usize = 10_000;

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long transaction identities are remembered: as long as the stream keeps messages
/// (`max_age`; 0 = forever, then 30 days), and at least an hour.
pub fn dedupe_window(max_age: Duration) -> Duration {
    if max_age.is_zero() {
        Duration::from_secs(30 * 24 * 3600)
    } else {
        max_age.max(Duration::from_secs(3600))
    }
}

/// Identities older than this (ns since the epoch) may be pruned now.
fn prune_before(window: Duration) -> i64 {
    now_ns().saturating_sub(i64::try_from(window.as_nanos()).unwrap_or(i64::MAX))
}

/// When a follower forgets transaction identities (`_ha_txids`): after every `PRUNE_EVERY`
/// applied change sets, those older than the dedupe window (what the stream can no longer
/// deliver), inside the apply transaction as part of its bookkeeping.
#[derive(Debug)]
pub struct TxidPruning {
    window: Duration,
    since: usize,
}

impl TxidPruning {
    /// Pruning with `window` (see `dedupe_window`).
    pub fn new(window: Duration) -> TxidPruning {
        TxidPruning { window, since: 0 }
    }

    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Counts `done` more applied change sets and prunes when enough have gone by. A failure
    /// is logged and costs nothing but space: the identities are kept until the next time.
    pub fn applied(&mut self, conn: &Connection, done: usize) {
        self.since += done;
        if self.since < PRUNE_EVERY {
            return;
        }
        self.since = 0;
        if let Err(e) = ha_changeset::meta::prune_txids(conn, prune_before(self.window)) {
            tracing::warn!(error = %e, "pruning _ha_txids failed");
        }
    }
}

/// Why a group did not commit what it applied.
#[derive(Debug)]
pub enum GroupError<E> {
    /// `BEGIN`, a savepoint or `COMMIT` failed.
    Sqlite(rusqlite::Error),
    /// SQLite ended the transaction itself (e.g. on a full disk).
    RolledBack,
    /// An item failed (the group stopped there).
    Item(E),
    /// The caller's bookkeeping before the commit failed: nothing was committed.
    Bookkeeping(E),
}

/// What `apply_group` did: the first `done` items are committed; `error` stopped the rest.
#[derive(Debug)]
pub struct Grouped<E> {
    pub done: usize,
    pub error: Option<GroupError<E>>,
}

/// How an apply group opens and names its transaction.
#[derive(Debug, Clone, Copy)]
pub struct GroupTx<'a> {
    /// `BEGIN IMMEDIATE` (or the writer's own lock mode).
    pub begin: &'a str,
    /// The savepoint each item runs in when items run one by one.
    pub savepoint: &'a str,
    /// Whether the items are first applied together, without a savepoint each (one by one only
    /// after one of them failed). False when an item may roll back to its own savepoint.
    pub batch: bool,
}

/// Which item `one` is applying, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The item's index in `items`.
    pub index: usize,
    /// True for the first item of the one-by-one pass after the batch failed: everything the
    /// batch did was rolled back, so what the caller kept from it (per-item results, cached
    /// table shapes after DDL) is stale.
    pub retry_starts: bool,
}

/// Applies `items` in order in one transaction through `one`, stopping at the first that fails;
/// commits what came before it. With `tx.batch` all items run first without a savepoint each;
/// if one fails (and is not the first), the transaction is rolled back and begun again and the
/// items run one by one, each in its savepoint (`Step::retry_starts` tells `one`), as without
/// `tx.batch`. `before_commit` runs inside the transaction with the number applied
/// (bookkeeping such as pruning or the applied position); when it fails nothing is committed.
pub fn apply_group<T, E>(
    conn: &Connection,
    items: &[T],
    tx: GroupTx<'_>,
    mut one: impl FnMut(&T, Step) -> Result<(), E>,
    before_commit: impl FnOnce(usize) -> Result<(), E>,
) -> Grouped<E> {
    let failed = |e| Grouped {
        done: 0,
        error: Some(GroupError::Sqlite(e)),
    };
    if items.is_empty() {
        return Grouped {
            done: 0,
            error: None,
        };
    }
    if let Err(e) = begin(conn, tx.begin) {
        return failed(e);
    }
    let (done, error) = if tx.batch {
        match all_at_once(items, &mut one) {
            None => (items.len(), None),
            // SQLite ended the transaction itself: handled below, as one by one.
            Some(_) if conn.is_autocommit() => (0, None),
            // Nothing came before the failure: no need to apply anything again.
            Some((0, e)) => (0, Some(GroupError::Item(e))),
            Some(_) => {
                rollback(conn);
                if let Err(e) = begin(conn, tx.begin) {
                    return failed(e);
                }
                one_by_one(conn, items, tx.savepoint, true, &mut one)
            }
        }
    } else {
        one_by_one(conn, items, tx.savepoint, false, &mut one)
    };
    if !conn.is_autocommit()
        && done > 0
        && let Err(e) = before_commit(done)
    {
        rollback(conn);
        return Grouped {
            done: 0,
            error: Some(GroupError::Bookkeeping(e)),
        };
    }
    if conn.is_autocommit() {
        return Grouped {
            done: 0,
            error: Some(GroupError::RolledBack),
        };
    }
    if done == 0 {
        let _ = conn.execute_batch("ROLLBACK");
        return Grouped { done, error };
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Grouped { done, error },
        Err(e) => {
            rollback(conn);
            failed(e)
        }
    }
}

/// The caller's `BEGIN …`, with foreign keys checked at the commit only.
fn begin(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.execute_batch(sql)?;
    let _ = conn.execute_batch("PRAGMA defer_foreign_keys = ON");
    Ok(())
}

/// Every item, in the transaction itself; the index and error of the first that fails.
fn all_at_once<T, E>(
    items: &[T],
    one: &mut impl FnMut(&T, Step) -> Result<(), E>,
) -> Option<(usize, E)> {
    for (index, item) in items.iter().enumerate() {
        let step = Step {
            index,
            retry_starts: false,
        };
        if let Err(e) = one(item, step) {
            return Some((index, e));
        }
    }
    None
}

/// Each item in its own savepoint, up to the first that fails: how many succeeded, and why
/// the next did not.
fn one_by_one<T, E>(
    conn: &Connection,
    items: &[T],
    savepoint: &str,
    retry: bool,
    one: &mut impl FnMut(&T, Step) -> Result<(), E>,
) -> (usize, Option<GroupError<E>>) {
    let savepoint = Savepoint::named(savepoint);
    for (index, item) in items.iter().enumerate() {
        let step = Step {
            index,
            retry_starts: retry && index == 0,
        };
        if let Err(e) = savepoint.run(conn, || one(item, step)) {
            return (index, Some(e));
        }
    }
    (items.len(), None)
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "rollback failed");
    }
}

/// The statements of the savepoint each item runs in, written once per group.
struct Savepoint {
    open: String,
    undo: String,
    release: String,
}

impl Savepoint {
    fn named(name: &str) -> Savepoint {
        Savepoint {
            open: format!("SAVEPOINT {name}"),
            undo: format!("ROLLBACK TO {name}"),
            release: format!("RELEASE {name}"),
        }
    }

    /// Runs `f` inside the savepoint: released when it succeeds, rolled back to when it fails.
    fn run<E>(
        &self,
        conn: &Connection,
        f: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), GroupError<E>> {
        conn.prepare_cached(&self.open)
            .and_then(|mut st| st.execute([]))
            .map_err(GroupError::Sqlite)?;
        let res = f().map_err(GroupError::Item);
        if res.is_err() && !conn.is_autocommit() {
            conn.execute_batch(&self.undo).map_err(GroupError::Sqlite)?;
        }
        if !conn.is_autocommit() {
            conn.prepare_cached(&self.release)
                .and_then(|mut st| st.execute([]))
                .map_err(GroupError::Sqlite)?;
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: GroupTx<'static> = GroupTx {
        begin: "BEGIN IMMEDIATE",
        savepoint: "g",
        batch: false,
    };

    const BATCH: GroupTx<'static> = GroupTx { batch: true, ..TX };

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut st = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn commits_what_came_before_the_first_failure_and_nothing_of_it() {
        for tx in [TX, BATCH] {
            commits_what_came_before(tx);
        }
    }

    fn commits_what_came_before(tx: GroupTx<'_>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER CHECK (v < 3))")
            .unwrap();
        let mut counted = None;
        let out = apply_group(
            &conn,
            &[1, 2, 3, 4],
            tx,
            |v, _| conn.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| ()),
            |n| {
                counted = Some(n);
                Ok(())
            },
        );
        assert_eq!(out.done, 2);
        assert!(matches!(out.error, Some(GroupError::Item(_))));
        assert_eq!(counted, Some(2));
        assert_eq!(rows(&conn), [1, 2]);
        assert!(conn.is_autocommit(), "the transaction ended");
    }

    #[test]
    fn a_first_failure_commits_nothing_and_identities_are_kept_long_enough() {
        for tx in [TX, BATCH] {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch("CREATE TABLE t(v INTEGER CHECK (v < 3))")
                .unwrap();
            let out = apply_group(
                &conn,
                &[5, 1],
                tx,
                |v, _| conn.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| ()),
                |_| Ok(()),
            );
            assert_eq!(out.done, 0);
            assert!(rows(&conn).is_empty() && conn.is_autocommit());
        }
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER CHECK (v < 3))")
            .unwrap();
        let out = apply_group(
            &conn,
            &[5],
            TX,
            |v, _| conn.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| ()),
            |_| Ok(()),
        );
        assert_eq!(out.done, 0);
        assert!(rows(&conn).is_empty() && conn.is_autocommit());
        assert_eq!(dedupe_window(Duration::ZERO).as_secs(), 30 * 24 * 3600);
        assert_eq!(dedupe_window(Duration::from_secs(60)).as_secs(), 3600);
        assert_eq!(dedupe_window(Duration::from_secs(7200)).as_secs(), 7200);
        assert!(prune_before(Duration::from_secs(1)) < now_ns());
    }

    #[test]
    fn bookkeeping_that_fails_commits_nothing() {
        for tx in [TX, BATCH] {
            let conn = Connection::open_in_memory().unwrap();
            conn.execute_batch("CREATE TABLE t(v INTEGER)").unwrap();
            let out = apply_group(
                &conn,
                &[1, 2],
                tx,
                |v, _| conn.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| ()),
                |_| conn.execute_batch("INSERT INTO nowhere VALUES (1)"),
            );
            assert_eq!(out.done, 0);
            assert!(matches!(out.error, Some(GroupError::Bookkeeping(_))));
            assert!(rows(&conn).is_empty() && conn.is_autocommit());
        }
    }

    #[test]
    fn a_batch_whose_third_item_fails_commits_two_reports_the_third_and_nothing_else() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER CHECK (v < 3))")
            .unwrap();
        let mut steps = Vec::new();
        let mut counted = None;
        let out = apply_group(
            &conn,
            &[1, 2, 3, 4],
            BATCH,
            |v, step| {
                steps.push((*v, step.retry_starts));
                // What the failing item did before it failed must go too (a table, like DDL).
                if *v == 3 {
                    conn.execute_batch("CREATE TABLE made_by_3(x)")?;
                }
                conn.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| ())
            },
            |n| {
                counted = Some(n);
                Ok(())
            },
        );
        assert_eq!(out.done, 2);
        assert!(matches!(out.error, Some(GroupError::Item(_))));
        assert_eq!(counted, Some(2));
        assert_eq!(rows(&conn), [1, 2]);
        let made: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'made_by_3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(made, 0, "the failing item left nothing behind");
        assert!(conn.is_autocommit(), "the transaction ended");
        // The batch, then one by one from the start after it was rolled back, told once.
        assert_eq!(
            steps,
            [
                (1, false),
                (2, false),
                (3, false),
                (1, true),
                (2, false),
                (3, false)
            ]
        );
    }

    #[test]
    fn a_batch_that_succeeds_runs_its_items_without_a_savepoint_each() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER)").unwrap();
        let mut in_savepoint = Vec::new();
        let out = apply_group(
            &conn,
            &[1, 2, 3],
            BATCH,
            |v, step| {
                assert_eq!(step.index, (*v - 1) as usize);
                // Releasing the item savepoint works only inside one (and ends it).
                in_savepoint.push(conn.execute_batch("RELEASE g").is_ok());
                conn.execute("INSERT INTO t VALUES (?1)", [v]).map(|_| ())
            },
            |_| Ok(()),
        );
        assert_eq!(out.done, 3);
        assert!(out.error.is_none());
        assert_eq!(in_savepoint, [false, false, false]);
        assert_eq!(rows(&conn), [1, 2, 3]);
    }
}
