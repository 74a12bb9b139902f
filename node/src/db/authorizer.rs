//! Owns what client SQL may ask of SQLite beyond reading and writing rows: the authorizer
//! installed on every connection, which refuses what would reach outside the database file or
//! change how it is stored (ATTACH, VACUUM INTO, load_extension(), setting PRAGMAs).
//! Must not judge the node's own statements: the checks apply only while `untrusted` runs
//! (client statements, compiled and stepped inside it); everything else is allowed.
//! Invariant: a refusal names what was refused and why; `take_refusal` turns SQLite's bare
//! "not authorized" into that message. See docs/security.md for the list and the reasons.

use std::cell::{Cell, RefCell};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

thread_local! {
    /// Set while a client's statement is compiled or runs on this thread.
    static UNTRUSTED: Cell<bool> = const { Cell::new(false) };
    /// Why the last client action on this thread was refused.
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// PRAGMAs a client may call with an argument: they only report on the schema or check it.
/// Every other PRAGMA with a value changes the connection or the file (journal_mode,
/// synchronous, locking_mode, mmap_size, writable_schema, cache_size, query_only, …), and a
/// setting made on a pooled connection would outlive the request.
const PRAGMAS_WITH_ARGUMENT: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Installs the authorizer on `conn` (after `--extensions` are loaded: loading them is the
/// node's act, not a client's).
pub(crate) fn install(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.authorizer(Some(authorize))
}

/// Runs `f` with client SQL's restrictions on (on this thread). Nested calls keep them on.
pub(crate) fn untrusted<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNTRUSTED.set(self.0);
        }
    }
    let _reset = Reset(UNTRUSTED.replace(true));
    f()
}

/// The reason of the last refusal on this thread, if SQLite's error was a refusal.
pub(crate) fn take_refusal() -> Option<String> {
    REFUSAL.take()
}

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    if !UNTRUSTED.get() {
        return Authorization::Allow;
    }
    // The bookkeeping lives in `main`; VACUUM copies every table into its own `vacuum_db`.
    let in_main = ctx
        .database_name
        .is_none_or(|d| d.eq_ignore_ascii_case("main"));
    match refusal(&ctx.action).filter(|_| in_main || !changes_a_table(&ctx.action)) {
        None => Authorization::Allow,
        Some(why) => {
            REFUSAL.set(Some(why));
            Authorization::Deny
        }
    }
}

/// Why `action` is refused to a client, or `None` when it is allowed.
pub fn refusal(action: &AuthAction<'_>) -> Option<String> {
    match action {
        // VACUUM attaches an empty name (a temporary database) for its copy; VACUUM INTO
        // attaches the file it writes.
        AuthAction::Attach { filename: "" } => None,
        AuthAction::Attach { filename } => Some(format!(
            "writing or attaching another database file ({filename:?}) is not allowed: \
             ATTACH and VACUUM INTO reach outside the database (take a backup with GET / \
             or a snapshot instead)"
        )),
        AuthAction::Detach { .. } => {
            Some("DETACH is not allowed: the node serves one database".into())
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Some(
                "load_extension() is not allowed: extensions are loaded by the node \
                 (--extensions)"
                    .into(),
            )
        }
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::CreateTable { table_name }
        | AuthAction::CreateTempTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::DropTempTable { table_name }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
            if is_bookkeeping(table_name) =>
        {
            Some(format!(
                "{table_name} is the node's replication bookkeeping: clients may read it but \
                 not change it (a change there would make this node skip or repeat replicated \
                 writes)"
            ))
        }
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
            if table_name.eq_ignore_ascii_case("sqlite_dbpage") =>
        {
            Some(
                "sqlite_dbpage is the database file's raw pages, which only the node reads (for \
                 snapshots): take a backup with GET / or a snapshot instead"
                    .into(),
            )
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if !PRAGMAS_WITH_ARGUMENT
            .iter()
            .any(|p| p.eq_ignore_ascii_case(pragma_name)) =>
        {
            Some(format!(
                "setting PRAGMA {pragma_name} is not allowed: the node owns its connections' \
                 settings (journal, locking, caches, schema); set them with DSN parameters"
            ))
        }
        _ => None,
    }
}

/// Whether `action` writes or changes the schema of a table (what `refusal` judges by name).
fn changes_a_table(action: &AuthAction<'_>) -> bool {
    matches!(
        action,
        AuthAction::Insert { .. }
            | AuthAction::Update { .. }
            | AuthAction::Delete { .. }
            | AuthAction::CreateTable { .. }
            | AuthAction::CreateTempTable { .. }
            | AuthAction::DropTable { .. }
            | AuthAction::DropTempTable { .. }
            | AuthAction::AlterTable { .. }
            | AuthAction::CreateIndex { .. }
            | AuthAction::DropIndex { .. }
            | AuthAction::CreateTrigger { .. }
            | AuthAction::DropTrigger { .. }
    )
}

/// The node's own tables (`_ha_meta`, `_ha_versions`, …; see `changeset::meta`).
fn is_bookkeeping(table: &str) -> bool {
    table
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("_ha_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        install(&mut c).unwrap();
        c.execute_batch("CREATE TABLE t(a); CREATE TABLE _ha_meta(key TEXT PRIMARY KEY, value)")
            .unwrap();
        c
    }

    fn refused(c: &Connection, sql: &str) -> String {
        let r = untrusted(|| c.execute_batch(sql));
        assert!(r.is_err(), "{sql} ran");
        take_refusal().unwrap_or_else(|| panic!("{sql}: {r:?}"))
    }

    #[test]
    fn client_sql_cannot_leave_the_database_or_change_its_settings() {
        let c = conn();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("copy.db");
        let m = refused(&c, &format!("VACUUM INTO '{}'", out.display()));
        assert!(m.contains("VACUUM INTO"), "{m}");
        assert!(!out.exists());
        refused(&c, "ATTACH 'x.db' AS x");
        for sql in [
            "INSERT INTO _ha_meta VALUES ('applied_seq', 0)",
            "UPDATE _HA_META SET value = 0",
            "DELETE FROM _ha_meta",
            "DROP TABLE _ha_meta",
            "ALTER TABLE _ha_meta ADD COLUMN x",
            "CREATE INDEX i ON _ha_meta(value)",
            "CREATE TABLE _ha_mine(x)",
        ] {
            let m = refused(&c, sql);
            assert!(m.contains("bookkeeping"), "{sql}: {m}");
        }
        // A trigger's body is judged when a client's statement fires it.
        untrusted(|| {
            c.execute_batch("CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM _ha_meta; END")
        })
        .unwrap();
        let m = refused(&c, "INSERT INTO t VALUES (1)");
        assert!(m.contains("bookkeeping"), "{m}");
        refused(&c, "SELECT load_extension('x')");
        for p in [
            "writable_schema = ON",
            "journal_mode = OFF",
            "locking_mode = EXCLUSIVE",
            "synchronous = OFF",
            "mmap_size = 1000000",
            "cache_size = 5",
            "reverse_unordered_selects = ON",
            "query_only = 0",
            "temp_store_directory = '/tmp'",
        ] {
            let m = refused(&c, &format!("PRAGMA {p}"));
            assert!(m.contains("setting PRAGMA"), "{p}: {m}");
        }
    }

    #[test]
    fn reading_and_inspecting_stay_allowed_and_the_node_is_not_judged() {
        let c = conn();
        untrusted(|| {
            c.execute_batch(
                "PRAGMA journal_mode; PRAGMA table_info(t); SELECT * FROM pragma_table_info('t');
                 PRAGMA integrity_check; VACUUM; INSERT INTO t VALUES (1);
                 SELECT * FROM _ha_meta",
            )
        })
        .unwrap();
        c.execute_batch("PRAGMA cache_size = 7").unwrap();
        let n: i64 = c.query_row("PRAGMA cache_size", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 7);
    }

    #[test]
    fn client_sql_cannot_read_or_write_raw_pages_and_the_node_can_read_them() {
        let c = conn();
        for sql in [
            "SELECT data FROM sqlite_dbpage",
            "SELECT count(*) FROM sqlite_dbpage('main')",
            "UPDATE sqlite_dbpage SET data = zeroblob(4096) WHERE pgno = 1",
            "INSERT INTO sqlite_dbpage(pgno, data) VALUES (1, zeroblob(4096))",
        ] {
            let m = refused(&c, sql);
            assert!(m.contains("raw pages"), "{sql}: {m}");
        }
        // The build has the table (snapshots read through it): the node's own read works.
        let pages: i64 = c
            .query_row("SELECT count(*) FROM sqlite_dbpage", [], |r| r.get(0))
            .unwrap();
        assert!(pages >= 1, "{pages}");
    }
}
