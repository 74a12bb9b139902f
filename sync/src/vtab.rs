//! Owns the `HA` virtual-table module, the original ha-sync's interface (reference §9):
//! `CREATE VIRTUAL TABLE temp.ha USING HA(servers=…, …)`, then
//! `INSERT INTO temp.ha(subject, durable, policy)` starts following a subject,
//! `SELECT * FROM temp.ha` lists the subscriptions (by subject), `DELETE FROM temp.ha WHERE …`
//! stops them and deletes their durables; UPDATE is refused.
//! Must not do the following itself: each subscription is a `Subscription` with its own thread.
//! Invariant: every method SQLite calls runs under `guard::catch`. Subscriptions belong to the
//! connection (the module's aux data, `Tables`), not to the `HaTable` SQLite hands around: they
//! survive the schema reloads that disconnect and reconnect the table, and end with DROP TABLE
//! or when the connection closes. The table lives in `temp`, so it ends with its connection.
//! Extra, hidden columns: `applied_seq` (last stream sequence in the database), `pending`
//! (messages in the stream not applied yet; 0 = caught up, NULL = not known yet) and `error`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use ha_changeset::names::DeliverPolicy;
use rusqlite::types::ValueRef;
use rusqlite::vtab::{
    ConflictMode, Context, CreateVTab, Filters, IndexInfo, Inserts, Module, UpdateVTab, Updates,
    VTab, VTabConnection, VTabCursor, VTabKind, sqlite3_vtab, sqlite3_vtab_cursor,
};
use rusqlite::{Connection, Error, ffi};

use crate::SyncError;
use crate::guard::catch;
use crate::options::Options;
use crate::spec::Spec;
use crate::subscription::Subscription;

const SCHEMA: &CStr = c"CREATE TABLE x(subject TEXT, durable TEXT, policy TEXT, applied_seq INTEGER HIDDEN, pending INTEGER HIDDEN, error TEXT HIDDEN)";

/// Registers the module `HA` on `db`. Its aux data, freed by SQLite when the connection closes,
/// owns the subscriptions of every `HA` table of that connection.
pub(crate) fn register(db: &Connection) -> rusqlite::Result<()> {
    const MODULE: Module<HaTable> = Module::update_module();
    db.create_module(c"HA", &MODULE, Some(Arc::new(Tables::default())))
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::ModuleError(format!("ha-sync: {e}"))
}

impl From<SyncError> for Error {
    fn from(e: SyncError) -> Error {
        err(e)
    }
}

/// The `HA` tables of one connection, by table name. SQLite disconnects and reconnects a
/// virtual table whenever it reloads the schema — which happens after every schema change the
/// replica applies — so nothing that must outlive that lives in `HaTable` itself.
#[derive(Default)]
pub(crate) struct Tables(Mutex<HashMap<Vec<u8>, Arc<TableState>>>);

impl Tables {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<TableState>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One `temp.ha` table: its options and its subscriptions.
struct TableState {
    options: Options,
    dispatch: tracing::Dispatch,
    /// The host connection's main database file: where change sets are applied.
    db_path: PathBuf,
    subs: Mutex<Subs>,
}

#[derive(Default)]
struct Subs {
    by_rowid: BTreeMap<i64, Subscription>,
    next_rowid: i64,
}

impl TableState {
    fn subs(&self) -> std::sync::MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// SQLite's handle on one `temp.ha` table; the state lives in `Tables`.
#[repr(C)]
pub(crate) struct HaTable {
    /// SQLite's part; must come first.
    base: sqlite3_vtab,
    /// The host connection this table belongs to (for `sqlite3_vtab_on_conflict`).
    db: *mut ffi::sqlite3,
    name: Vec<u8>,
    tables: Arc<Tables>,
    state: Arc<TableState>,
}

/// The file behind the connection's `main` schema (`PRAGMA database_list`).
fn main_file(db: &mut VTabConnection) -> Result<PathBuf, Error> {
    // SAFETY: the handle is the live connection executing CREATE VIRTUAL TABLE; the name is a
    // NUL-terminated literal; the returned string is copied before the call returns.
    let path = unsafe {
        let p = ffi::sqlite3_db_filename(db.handle(), c"main".as_ptr());
        if p.is_null() {
            Vec::new()
        } else {
            CStr::from_ptr(p).to_bytes().to_vec()
        }
    };
    if path.is_empty() {
        return Err(err(
            "the connection's main database is not a file (in-memory or temporary); \
             open the file to keep up to date first (in the sqlite3 shell: .open replica.db)",
        ));
    }
    use std::os::unix::ffi::OsStringExt;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(path)))
}

impl HaTable {
    /// xCreate (`fresh`: a new table) and xConnect (the table again after a schema reload:
    /// its state is still there).
    fn open_table(
        db: &mut VTabConnection,
        aux: Option<&Arc<Tables>>,
        schema: &[u8],
        table: &[u8],
        args: &[&[u8]],
        fresh: bool,
    ) -> rusqlite::Result<(Cow<'static, CStr>, HaTable)> {
        catch(|| {
            if schema != b"temp" {
                return Err(err(
                    "create the table in the temp schema: CREATE VIRTUAL TABLE temp.ha USING HA(servers='nats://…')",
                ));
            }
            let tables = aux
                .cloned()
                .ok_or_else(|| err("module registered without its state"))?;
            let existing = if fresh {
                None
            } else {
                tables.lock().get(table).cloned()
            };
            let state = match existing {
                Some(s) => s,
                None => {
                    let options = Options::parse(args, |k| std::env::var(k).ok())?;
                    let dispatch = options.logger.dispatch()?;
                    let state = Arc::new(TableState {
                        options,
                        dispatch,
                        db_path: main_file(db)?,
                        subs: Mutex::new(Subs {
                            next_rowid: 1,
                            ..Subs::default()
                        }),
                    });
                    tables.lock().insert(table.to_vec(), state.clone());
                    state
                }
            };
            Ok((
                Cow::Borrowed(SCHEMA),
                HaTable {
                    base: sqlite3_vtab::default(),
                    // SAFETY: only the handle's address is taken; SQLite keeps it alive as long
                    // as this table.
                    db: unsafe { db.handle() },
                    name: table.to_vec(),
                    tables,
                    state,
                },
            ))
        })
    }
}

// SAFETY: `HaTable` is `repr(C)` with `sqlite3_vtab` first, as rusqlite requires.
unsafe impl<'vtab> VTab<'vtab> for HaTable {
    type Aux = Arc<Tables>;
    type Cursor = HaCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&Arc<Tables>>,
        _module: &[u8],
        schema: &[u8],
        table: &[u8],
        args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, HaTable)> {
        HaTable::open_table(db, aux, schema, table, args, false)
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        catch(|| {
            info.set_estimated_cost(self.state.subs().by_rowid.len().max(1) as f64);
            Ok(true)
        })
    }

    fn open(&'vtab mut self) -> rusqlite::Result<HaCursor<'vtab>> {
        catch(|| {
            let mut rows: Vec<Row> = self
                .state
                .subs()
                .by_rowid
                .iter()
                .map(|(rowid, s)| Row {
                    rowid: *rowid,
                    subject: s.spec.subject.clone(),
                    durable: s.spec.durable.clone(),
                    policy: s.policy_text.clone(),
                    applied_seq: s.status.applied_seq.load(Ordering::Acquire) as i64,
                    pending: s.status.pending(),
                    error: s.status.error(),
                })
                .collect();
            rows.sort_by(|a, b| a.subject.cmp(&b.subject));
            Ok(HaCursor {
                base: sqlite3_vtab_cursor::default(),
                rows,
                pos: 0,
                phantom: PhantomData,
            })
        })
    }
}

impl CreateVTab<'_> for HaTable {
    const KIND: VTabKind = VTabKind::Default;

    fn create(
        db: &mut VTabConnection,
        aux: Option<&Arc<Tables>>,
        _module: &[u8],
        schema: &[u8],
        table: &[u8],
        args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, HaTable)> {
        HaTable::open_table(db, aux, schema, table, args, true)
    }

    /// DROP TABLE: stop following (the durables stay, as when the connection closes).
    fn destroy(&self) -> rusqlite::Result<()> {
        catch(|| {
            let state = self.tables.lock().remove(&self.name);
            if let Some(state) = state {
                let subs = std::mem::take(&mut state.subs().by_rowid);
                for (_, sub) in subs {
                    sub.stop(false);
                }
            }
            Ok(())
        })
    }
}

impl UpdateVTab<'_> for HaTable {
    fn delete(&mut self, rowid: ValueRef<'_>) -> rusqlite::Result<()> {
        catch(|| {
            let rowid = rowid.as_i64().map_err(err)?;
            let sub = self.state.subs().by_rowid.remove(&rowid);
            if let Some(sub) = sub {
                sub.stop(true);
            }
            Ok(())
        })
    }

    fn insert(&mut self, args: &Inserts<'_>) -> rusqlite::Result<i64> {
        catch(|| {
            // SAFETY: `self.db` is the connection running this INSERT.
            if unsafe { args.on_conflict(self.db) } == ConflictMode::Replace {
                return Err(err(
                    "INSERT OR REPLACE is not supported; DELETE the subscription and INSERT it again",
                ));
            }
            // args: old rowid (NULL), new rowid, then the columns in table order.
            let text = |i: usize| -> rusqlite::Result<Option<String>> {
                Ok(args
                    .get::<Option<String>>(i)?
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()))
            };
            let subject = text(2)?.ok_or_else(|| {
                err("subject is required: INSERT INTO temp.ha(subject, durable, policy) VALUES ('ha_replication.ha_db', 'my_replica', 'all')")
            })?;
            check_name("subject", &subject, true)?;
            let durable = text(3)?;
            if let Some(d) = &durable {
                check_name("durable", d, false)?;
            }
            let policy_text = text(4)?;
            let policy = DeliverPolicy::parse(policy_text.as_deref().unwrap_or("")).map_err(err)?;
            let mut subs = self.state.subs();
            if subs.by_rowid.values().any(|s| s.spec.subject == subject) {
                return Err(err(format!("already subscribed: {subject}")));
            }
            let stream = subject
                .split('.')
                .next()
                .unwrap_or(subject.as_str())
                .to_string();
            let spec = Spec {
                subject,
                stream,
                durable,
                policy,
                options: self.state.options.clone(),
                db_path: self.state.db_path.clone(),
            };
            let sub = Subscription::start(spec, policy_text, self.state.dispatch.clone())?;
            let rowid = subs.next_rowid;
            subs.next_rowid += 1;
            subs.by_rowid.insert(rowid, sub);
            Ok(rowid)
        })
    }

    fn update(&mut self, _args: &Updates<'_>) -> rusqlite::Result<()> {
        Err(err(
            "temp.ha cannot be updated; DELETE the subscription and INSERT it again",
        ))
    }
}

/// NATS subject and consumer names: no spaces; a durable has no `.`, `*` or `>` either.
fn check_name(what: &str, v: &str, subject: bool) -> rusqlite::Result<()> {
    let bad = |c: char| c.is_whitespace() || (!subject && matches!(c, '.' | '*' | '>'));
    if v.contains(bad) || (subject && (v.starts_with('.') || v.ends_with('.'))) {
        return Err(err(format!("invalid {what}: {v:?}")));
    }
    Ok(())
}

/// One subscription as SELECT shows it.
struct Row {
    rowid: i64,
    subject: String,
    durable: Option<String>,
    policy: Option<String>,
    applied_seq: i64,
    pending: Option<i64>,
    error: Option<String>,
}

/// A scan over a snapshot of the subscriptions taken when it opened.
#[repr(C)]
pub(crate) struct HaCursor<'vtab> {
    /// SQLite's part; must come first.
    base: sqlite3_vtab_cursor,
    rows: Vec<Row>,
    pos: usize,
    phantom: PhantomData<&'vtab HaTable>,
}

// SAFETY: `HaCursor` is `repr(C)` with `sqlite3_vtab_cursor` first, as rusqlite requires.
unsafe impl VTabCursor for HaCursor<'_> {
    fn filter(
        &mut self,
        _idx_num: c_int,
        _idx_str: Option<&str>,
        _args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.pos = 0;
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.pos += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.pos >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        catch(|| {
            let Some(row) = self.rows.get(self.pos) else {
                return ctx.set_result(&rusqlite::types::Null);
            };
            match i {
                0 => ctx.set_result(&row.subject),
                1 => ctx.set_result(&row.durable),
                2 => ctx.set_result(&row.policy),
                3 => ctx.set_result(&row.applied_seq),
                4 => ctx.set_result(&row.pending),
                _ => ctx.set_result(&row.error),
            }
        })
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.rows.get(self.pos).map_or(0, |r| r.rowid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_nats_does() {
        assert!(check_name("subject", "ha_replication.ha_db", true).is_ok());
        assert!(check_name("subject", "ha_replication.>", true).is_ok());
        assert!(check_name("subject", "a b", true).is_err());
        assert!(check_name("subject", "a.", true).is_err());
        assert!(check_name("durable", "replica_1", false).is_ok());
        assert!(check_name("durable", "replica.1", false).is_err());
    }
}
