//! Owns one client connection's query handling: simple and extended protocol on top of an
//! `exec::Session`, per-connection settings (SET/SHOW), prepared statements and their Describe.
//! Must not touch SQLite: statements go through the session (and so through the executor).
//! Invariant: statements run at Execute, every time; Parse only compiles (to describe), and the
//! types Describe announces are the types Execute encodes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{Sink, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Sync as PgSync;
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};

use super::catalog;
use super::error::{error_info, to_pg, user_error};
use super::seq;
use super::sql::{self, RewriteContext, SessionCommand};
use super::types::{column_type, decode_param, encode_cell, type_for_decl, type_for_value};
use crate::exec::{
    CancelSlot, ControlOutcome, Executor, Params, Rows, Session, Stmt, StmtResult, TxControl,
    TxStatus, Value, split_sql,
};

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub exec: Executor,
    pub idle_timeout: Option<Duration>,
    pub database: String,
    pub user: String,
    pub version: String,
}

/// One connection's state: its transaction and its settings.
pub(crate) struct ConnState {
    shared: Arc<Shared>,
    // A tokio mutex: held across awaits while one statement runs; one client talks at a time.
    session: tokio::sync::Mutex<Session>,
    settings: std::sync::Mutex<HashMap<String, String>>,
    /// `statement_timeout` as parsed when it was last set, in microseconds (0: none), so
    /// that a statement does not parse the setting again.
    statement_timeout_us: std::sync::atomic::AtomicU64,
    /// The process id sent in BackendKeyData, once authenticated (0 before).
    backend_pid: std::sync::atomic::AtomicI32,
    /// Where a CancelRequest (or shutdown) finds the statement running now.
    cancel: Arc<CancelSlot>,
}

fn default_settings(shared: &Shared) -> HashMap<String, String> {
    [
        ("server_version", "15.0"),
        ("server_version_num", "150000"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("timezone", "UTC"),
        ("intervalstyle", "postgres"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("search_path", "\"$user\", public"),
        ("transaction_isolation", "read committed"),
        ("default_transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
        ("default_transaction_read_only", "off"),
        ("application_name", ""),
        ("max_identifier_length", "63"),
        ("is_superuser", "on"),
        ("lc_messages", "C"),
        ("lc_monetary", "C"),
        ("lc_numeric", "C"),
        ("lc_time", "C"),
        ("extra_float_digits", "1"),
        ("lock_timeout", "0"),
        ("bytea_output", "hex"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("session_authorization".to_string(), shared.user.clone()),
        (
            "statement_timeout".to_string(),
            shared
                .exec
                .query_timeout()
                .map(|d| format!("{}ms", d.as_millis()))
                .unwrap_or_else(|| "0".into()),
        ),
        (
            "idle_in_transaction_session_timeout".to_string(),
            shared
                .idle_timeout
                .map(|d| format!("{}ms", d.as_millis()))
                .unwrap_or_else(|| "0".into()),
        ),
    ])
    .collect()
}

impl ConnState {
    pub(crate) fn new(shared: Arc<Shared>, cancel: Arc<CancelSlot>) -> ConnState {
        let settings = default_settings(&shared);
        let session = Session::new(shared.exec.clone(), shared.idle_timeout);
        let timeout = parsed_statement_timeout(&settings);
        ConnState {
            shared,
            session: tokio::sync::Mutex::new(session),
            settings: std::sync::Mutex::new(settings),
            statement_timeout_us: std::sync::atomic::AtomicU64::new(timeout),
            backend_pid: std::sync::atomic::AtomicI32::new(0),
            cancel,
        }
    }

    /// The session's `statement_timeout` (`None`: the server's `--query-timeout` only).
    fn statement_timeout(&self) -> Option<Duration> {
        match self
            .statement_timeout_us
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Takes in a new value of the settings (after SET or RESET).
    fn settings_changed(&self, settings: &HashMap<String, String>, session: &mut Session) {
        self.statement_timeout_us.store(
            parsed_statement_timeout(settings),
            std::sync::atomic::Ordering::Relaxed,
        );
        apply_min_seq(settings, session);
    }

    /// Records the process id the client was given in BackendKeyData.
    pub(crate) fn set_backend_pid(&self, pid: i32) {
        self.backend_pid
            .store(pid, std::sync::atomic::Ordering::Relaxed);
    }

    fn plan(&self, sql: &str) -> Plan {
        if let Some(ctl) = TxControl::parse(sql) {
            return Plan::Control(ctl);
        }
        if let Some(cmd) = sql::session_command(sql) {
            return Plan::Session(cmd);
        }
        if let Some(column) = seq::last_seq_query(sql) {
            return Plan::LastSeq(column);
        }
        if let Some(q) = catalog::recognise(sql) {
            return Plan::Catalog(q);
        }
        // Borrowed under the lock, not cloned: this runs for every simple query.
        let rewritten = match self.settings.lock() {
            Ok(settings) => {
                let ctx = RewriteContext {
                    version: &self.shared.version,
                    database: &self.shared.database,
                    user: &self.shared.user,
                    settings: &settings,
                    backend_pid: self.backend_pid.load(std::sync::atomic::Ordering::Relaxed),
                };
                sql::rewrite(sql, &ctx)
            }
            Err(_) => None,
        };
        let text = rewritten.unwrap_or_else(|| sql.to_string());
        // The verb (for the command tag) is found once here, not at every Execute.
        let verb = command_verb(&text);
        Plan::Sql(text, verb)
    }

    /// Runs one planned statement; `bound` carries parameters and the announced result types
    /// (extended protocol), `None` for the simple protocol.
    async fn run(
        &self,
        session: &mut Session,
        plan: &Plan,
        bound: Option<(Params, &Prepared)>,
        formats: &Format,
    ) -> Result<Response, PgWireError> {
        match plan {
            Plan::Control(ctl) => {
                let was = session.status();
                let outcome = session.control(ctl.clone()).await.map_err(to_pg)?;
                let tag = match (ctl, &outcome) {
                    (_, ControlOutcome::Began | ControlOutcome::AlreadyInTransaction) => "BEGIN",
                    (_, ControlOutcome::Committed) => "COMMIT",
                    (TxControl::Commit, ControlOutcome::RolledBack) => "ROLLBACK",
                    (TxControl::Commit, ControlOutcome::NoTransaction) => "COMMIT",
                    (_, ControlOutcome::RolledBack | ControlOutcome::NoTransaction) => "ROLLBACK",
                    (_, ControlOutcome::Savepoint) => "SAVEPOINT",
                    (_, ControlOutcome::Released) => "RELEASE",
                    (_, ControlOutcome::RolledBackTo) => "ROLLBACK",
                };
                let now = session.status();
                Ok(match (was, now) {
                    (TxStatus::Idle, TxStatus::InTransaction) => {
                        Response::TransactionStart(Tag::new(tag))
                    }
                    (_, TxStatus::Idle) if was != TxStatus::Idle => {
                        Response::TransactionEnd(Tag::new(tag))
                    }
                    // BEGIN turning an implicit block explicit: pgwire must learn of the block.
                    (TxStatus::InTransaction, TxStatus::InTransaction)
                        if matches!(ctl, TxControl::Begin) =>
                    {
                        Response::TransactionStart(Tag::new(tag))
                    }
                    _ => Response::Execution(Tag::new(tag)),
                })
            }
            Plan::Session(cmd) => self.session_command(session, cmd, formats),
            Plan::LastSeq(column) => {
                if session.status() == TxStatus::Failed {
                    return Err(to_pg(crate::exec::ExecError::InFailedTransaction));
                }
                let rows = seq::last_seq_rows(column, session.last_commit_seq());
                let announced = [(column.clone(), Type::INT8)];
                Ok(rows_response(
                    rows,
                    Some(&announced),
                    None,
                    formats,
                    "SELECT",
                ))
            }
            Plan::Catalog(q) => {
                if session.status() == TxStatus::Failed {
                    return Err(to_pg(crate::exec::ExecError::InFailedTransaction));
                }
                let params = match bound {
                    Some((Params::Named(map), _)) => map,
                    _ => Default::default(),
                };
                let answer = self.catalog(q, &params).await?;
                let rows = Rows {
                    columns: answer
                        .columns
                        .iter()
                        .map(|(name, _)| crate::exec::Column {
                            name: name.clone(),
                            decl_type: None,
                        })
                        .collect(),
                    rows: answer.rows,
                };
                Ok(rows_response(
                    rows,
                    Some(&answer.columns),
                    None,
                    formats,
                    "SELECT",
                ))
            }
            Plan::Sql(sql, verb) => {
                let (params, announced, described) = match bound {
                    Some((p, a)) => (p, Some(a.columns.as_slice()), Some(&a.fields)),
                    None => (Params::None, None, None),
                };
                // From here a CancelRequest reaches this statement, on the reader or the writer.
                let limits = self
                    .shared
                    .exec
                    .limits(self.statement_timeout(), Some(self.cancel.start()));
                let result = session
                    .execute(
                        Stmt {
                            sql: sql.clone(),
                            params,
                        },
                        limits,
                    )
                    .await;
                self.cancel.finish();
                let result = result.map_err(to_pg)?;
                Ok(match result {
                    StmtResult::Rows(rows) => {
                        let tag = match verb.as_str() {
                            "INSERT" | "REPLACE" => "INSERT 0",
                            "UPDATE" => "UPDATE",
                            "DELETE" => "DELETE",
                            _ => "SELECT",
                        };
                        rows_response(rows, announced, described, formats, tag)
                    }
                    StmtResult::Exec(s) => {
                        let n = s.rows_affected as usize;
                        Response::Execution(match verb.as_str() {
                            "INSERT" | "REPLACE" => Tag::new("INSERT 0").with_rows(n),
                            "UPDATE" | "DELETE" => Tag::new(verb).with_rows(n),
                            _ => Tag::new(&exec_tag(sql)),
                        })
                    }
                })
            }
        }
    }

    fn session_command(
        &self,
        session: &mut Session,
        cmd: &SessionCommand,
        formats: &Format,
    ) -> Result<Response, PgWireError> {
        if session.status() == TxStatus::Failed {
            return Err(to_pg(crate::exec::ExecError::InFailedTransaction));
        }
        let mut settings = self
            .settings
            .lock()
            .map_err(|_| user_error("XX000", "settings lock poisoned"))?;
        match cmd {
            SessionCommand::Set { name, value } => {
                if name == "statement_timeout"
                    && let Err(e) = parse_pg_duration(value)
                {
                    return Err(user_error(
                        "22023",
                        format!(
                            "invalid value for parameter \"statement_timeout\": \"{value}\": {e}"
                        ),
                    ));
                }
                if name == seq::MIN_SEQ_TIMEOUT
                    && let Err(e) = parse_pg_duration(value)
                {
                    return Err(user_error(
                        "22023",
                        format!("invalid value for parameter \"{name}\": \"{value}\": {e}"),
                    ));
                }
                if name == seq::MIN_SEQ {
                    seq::parse_min_seq(value).map_err(|e| user_error("22023", e))?;
                }
                settings.insert(name.clone(), value.clone());
                self.settings_changed(&settings, session);
                Ok(Response::Execution(Tag::new("SET")))
            }
            SessionCommand::Reset(name) => {
                let defaults = default_settings(&self.shared);
                match name {
                    Some(n) => match defaults.get(n) {
                        Some(v) => {
                            settings.insert(n.clone(), v.clone());
                        }
                        None => {
                            settings.remove(n);
                        }
                    },
                    None => *settings = defaults,
                }
                self.settings_changed(&settings, session);
                Ok(Response::Execution(Tag::new("RESET")))
            }
            SessionCommand::Show(name) => {
                let v = settings.get(name).cloned().ok_or_else(|| {
                    user_error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                let rows = Rows {
                    columns: vec![crate::exec::Column {
                        name: name.clone(),
                        decl_type: Some("TEXT".into()),
                    }],
                    rows: vec![vec![Value::Text(v)]],
                };
                Ok(rows_response(rows, None, None, formats, "SHOW"))
            }
            SessionCommand::ShowAll => {
                let mut all: Vec<_> = settings.iter().collect();
                all.sort();
                let text = |s: &str| crate::exec::Column {
                    name: s.into(),
                    decl_type: Some("TEXT".into()),
                };
                let rows = Rows {
                    columns: vec![text("name"), text("setting"), text("description")],
                    rows: all
                        .into_iter()
                        .map(|(k, v)| {
                            vec![
                                Value::Text(k.clone()),
                                Value::Text(v.clone()),
                                Value::Text(String::new()),
                            ]
                        })
                        .collect(),
                };
                Ok(rows_response(rows, None, None, formats, "SHOW"))
            }
            SessionCommand::Noop(tag) => Ok(Response::Execution(Tag::new(tag))),
        }
    }

    /// Parse: plan the statement and, for SQL, compile it to learn its parameters and columns.
    async fn prepare(&self, sql: &str, client_types: &[Option<Type>]) -> PgWireResult<Prepared> {
        let plan = self.plan(sql);
        let mut prepared = Prepared {
            plan,
            param_types: Vec::new(),
            bind: Vec::new(),
            columns: Vec::new(),
            fields: FieldCache::default(),
        };
        match &prepared.plan {
            Plan::Sql(text, _) => {
                let d = {
                    let session = self.session.lock().await;
                    session.describe(text).await.map_err(to_pg)?
                };
                // SQLite parameter i → PostgreSQL parameter position.
                for (i, name) in d.params.iter().enumerate() {
                    let pos = name
                        .as_deref()
                        .and_then(|n| n.get(1..))
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|p| *p >= 1)
                        .map(|p| p - 1)
                        .unwrap_or(i);
                    let key = match name.as_deref().map(|n| &n[1..]) {
                        Some(bare) if bare.parse::<usize>().is_err() => bare.to_string(),
                        _ => match name.as_deref().and_then(|n| n[1..].parse::<usize>().ok()) {
                            Some(n) => n.to_string(),
                            None => (i + 1).to_string(),
                        },
                    };
                    prepared.bind.push((key, pos));
                }
                let n = prepared
                    .bind
                    .iter()
                    .map(|(_, p)| p + 1)
                    .max()
                    .unwrap_or(0)
                    .max(client_types.len());
                let needs_inference =
                    (0..n).any(|k| client_types.get(k).cloned().flatten().is_none());
                let inferred: Vec<Option<Type>> = if needs_inference && !d.params.is_empty() {
                    let schema = catalog::column_types(&self.shared.exec)
                        .await
                        .unwrap_or_default();
                    sql::infer_param_types(text, &d.params, &schema)
                } else {
                    vec![None; d.params.len()]
                };
                prepared.param_types = (0..n)
                    .map(|k| {
                        client_types.get(k).cloned().flatten().unwrap_or_else(|| {
                            prepared
                                .bind
                                .iter()
                                .zip(&inferred)
                                .find(|((_, p), _)| *p == k)
                                .and_then(|(_, t)| t.clone())
                                .unwrap_or(Type::TEXT)
                        })
                    })
                    .collect();
                prepared.columns = d
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let ty = match (&c.decl_type, &d.first_row) {
                            (Some(decl), _) => type_for_decl(decl),
                            (None, Some(row)) => {
                                row.get(i).map(type_for_value).unwrap_or(Type::TEXT)
                            }
                            (None, None) => Type::TEXT,
                        };
                        (c.name.clone(), ty)
                    })
                    .collect();
            }
            Plan::Session(SessionCommand::Show(name)) => {
                prepared.columns = vec![(name.clone(), Type::TEXT)];
            }
            Plan::Session(SessionCommand::ShowAll) => {
                prepared.columns = ["name", "setting", "description"]
                    .iter()
                    .map(|n| (n.to_string(), Type::TEXT))
                    .collect();
            }
            Plan::Catalog(catalog::Query::Known(k)) => {
                prepared.columns = catalog::columns(k);
                // The client's declared types win (psycopg sends ints in binary as int2/4/8).
                let ours = catalog::param_types_of(k);
                prepared.param_types = (0..ours.len().max(client_types.len()))
                    .map(|i| {
                        let declared = client_types.get(i).cloned().flatten();
                        declared.unwrap_or_else(|| ours.get(i).cloned().unwrap_or(Type::TEXT))
                    })
                    .collect();
                prepared.bind = (0..prepared.param_types.len())
                    .map(|i| ((i + 1).to_string(), i))
                    .collect();
            }
            Plan::Catalog(q) => {
                // An unknown catalog fails at Parse, as a missing relation does in PostgreSQL.
                self.catalog(q, &Default::default()).await?;
            }
            Plan::LastSeq(column) => {
                prepared.columns = vec![(column.clone(), Type::INT8)];
            }
            Plan::Control(_) | Plan::Session(_) => {}
        }
        Ok(prepared)
    }

    async fn catalog(
        &self,
        q: &catalog::Query,
        params: &std::collections::BTreeMap<String, Value>,
    ) -> PgWireResult<catalog::Answer> {
        let ctx = catalog::Context {
            database: &self.shared.database,
            user: &self.shared.user,
        };
        catalog::answer(q, &self.shared.exec, &ctx, params).await
    }

    fn bind_params<S>(&self, prepared: &Prepared, portal: &Portal<S>) -> PgWireResult<Params> {
        if portal.parameters.len() < prepared.param_types.len() {
            return Err(user_error(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {}",
                    portal.parameters.len(),
                    prepared.param_types.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(portal.parameters.len());
        for (i, raw) in portal.parameters.iter().enumerate() {
            let ty = prepared.param_types.get(i).cloned().unwrap_or(Type::TEXT);
            let v = decode_param(raw.as_deref(), &ty, portal.parameter_format.is_binary(i))
                .map_err(|e| user_error("22P02", e.to_string()))?;
            values.push(v);
        }
        if prepared.bind.is_empty() {
            return Ok(Params::None);
        }
        let mut map = std::collections::BTreeMap::new();
        for (key, pos) in &prepared.bind {
            let v = values.get(*pos).cloned().ok_or_else(|| {
                user_error(
                    "08P01",
                    format!("no value bound for parameter ${}", pos + 1),
                )
            })?;
            map.insert(key.clone(), v);
        }
        Ok(Params::Named(map))
    }
}

/// A parsed statement, as the portal store keeps it.
#[derive(Debug)]
pub(crate) struct Prepared {
    plan: Plan,
    /// The type of each PostgreSQL parameter ($1 first).
    param_types: Vec<Type>,
    /// Per SQLite parameter: the key it binds by and the PostgreSQL parameter it takes.
    bind: Vec<(String, usize)>,
    /// Result columns as Describe announces them; empty when there are none.
    columns: Vec<(String, Type)>,
    /// The row descriptions of `columns`, built at the first Execute that needs each.
    fields: FieldCache,
}

/// A prepared statement's row descriptions in the two usual result formats (all text, all
/// binary), built once instead of at every Execute.
#[derive(Debug, Default)]
pub(crate) struct FieldCache {
    text: std::sync::OnceLock<Arc<Vec<FieldInfo>>>,
    binary: std::sync::OnceLock<Arc<Vec<FieldInfo>>>,
}

impl FieldCache {
    fn get(&self, cols: &[(String, Type)], formats: &Format) -> Arc<Vec<FieldInfo>> {
        let slot = match formats {
            Format::UnifiedText => &self.text,
            Format::UnifiedBinary => &self.binary,
            Format::Individual(_) => return Arc::new(fields(cols, Some(formats))),
        };
        slot.get_or_init(|| Arc::new(fields(cols, Some(formats))))
            .clone()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// SQL for SQLite, and its verb for the command tag.
    Sql(String, String),
    Control(TxControl),
    Session(SessionCommand),
    Catalog(catalog::Query),
    /// `SELECT ha_last_seq()`, answered from the session when it runs; the column's name.
    LastSeq(String),
}

/// Statement verb for command tags: the first keyword, or the DML verb after a WITH clause.
fn command_verb(sql: &str) -> String {
    let toks = sql::tokenize(sql);
    let first = match toks.first() {
        Some((sql::Tok::Word(w), _)) => w.to_ascii_uppercase(),
        _ => return String::new(),
    };
    if first == "WITH" {
        // The first top-level DML keyword after the CTEs.
        let mut depth = 0;
        for (t, _) in &toks {
            match t {
                sql::Tok::Punct(p) if p == "(" => depth += 1,
                sql::Tok::Punct(p) if p == ")" => depth -= 1,
                sql::Tok::Word(w) if depth == 0 => {
                    let u = w.to_ascii_uppercase();
                    if matches!(
                        u.as_str(),
                        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE"
                    ) {
                        return u;
                    }
                }
                _ => {}
            }
        }
    }
    first
}

/// The tag of a statement that returns no rows and is not INSERT/UPDATE/DELETE: the verb and,
/// for CREATE/DROP/ALTER, the object kind (`CREATE TABLE`, `DROP INDEX`).
fn exec_tag(sql: &str) -> String {
    let words: Vec<String> = sql::tokenize(sql)
        .into_iter()
        .filter_map(|(t, _)| match t {
            sql::Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        })
        .take(4)
        .collect();
    match words.first().map(String::as_str) {
        Some("CREATE") => {
            let kind: Vec<&str> = words[1..]
                .iter()
                .map(String::as_str)
                .filter(|w| !matches!(*w, "TEMP" | "TEMPORARY" | "UNIQUE" | "VIRTUAL"))
                .take(1)
                .collect();
            format!("CREATE {}", kind.first().copied().unwrap_or(""))
                .trim()
                .to_string()
        }
        Some(v @ ("DROP" | "ALTER")) => {
            format!("{v} {}", words.get(1).map(String::as_str).unwrap_or(""))
                .trim()
                .to_string()
        }
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn announced_types(rows: &Rows) -> Vec<(String, Type)> {
    rows.columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = column_type(
                c.decl_type.as_deref(),
                rows.rows.iter().filter_map(|r| r.get(i)),
            );
            (c.name.clone(), ty)
        })
        .collect()
}

/// Encodes rows into a QueryResponse, with the announced types when there are (extended
/// protocol after Describe; `described` keeps their row descriptions), else types from
/// declarations and values. Rows are encoded as the client is sent them.
fn rows_response(
    rows: Rows,
    announced: Option<&[(String, Type)]>,
    described: Option<&FieldCache>,
    formats: &Format,
    tag: &str,
) -> Response {
    let fields = match (announced, described) {
        (Some(a), Some(cache)) if a.len() == rows.columns.len() => cache.get(a, formats),
        (Some(a), None) if a.len() == rows.columns.len() => Arc::new(fields(a, Some(formats))),
        _ => Arc::new(fields(&announced_types(&rows), Some(formats))),
    };
    let schema = fields.clone();
    let ncols = schema.len() as i16;
    let data = rows.rows.into_iter().map(move |row| {
        let mut buf = BytesMut::with_capacity(16 * schema.len());
        for (v, f) in row.iter().zip(schema.iter()) {
            let binary = f.format() == FieldFormat::Binary;
            encode_cell(&mut buf, v, f.datatype(), binary)
                .map_err(|e| user_error("22P03", e.to_string()))?;
        }
        Ok(DataRow::new(buf, ncols))
    });
    let mut resp = QueryResponse::new(fields, stream::iter(data));
    resp.set_command_tag(tag);
    Response::Query(resp)
}

/// A PostgreSQL time setting (`statement_timeout`): a number of milliseconds or a number with
/// a unit (us, ms, s, min, h, d); 0 means none.
fn parse_pg_duration(value: &str) -> Result<Option<Duration>, String> {
    let v = value.trim().trim_matches('\'').trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| "expected a number of milliseconds or a number with a unit".to_string())?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        u => return Err(format!("unknown unit {u:?}: use us, ms, s, min, h or d")),
    };
    if !ms.is_finite() || ms < 0.0 || ms > i32::MAX as f64 {
        return Err("out of range".into());
    }
    Ok((ms > 0.0).then(|| Duration::from_micros((ms * 1000.0) as u64)))
}

/// The `statement_timeout` setting in microseconds (0: none; validated when set).
fn parsed_statement_timeout(settings: &HashMap<String, String>) -> u64 {
    settings
        .get("statement_timeout")
        .and_then(|v| parse_pg_duration(v).ok().flatten())
        .map_or(0, |d| d.as_micros().try_into().unwrap_or(u64::MAX))
}

/// Hands the session what `ha.min_seq` and `ha.min_seq_timeout` say now (both validated when
/// set).
fn apply_min_seq(settings: &HashMap<String, String>, session: &mut Session) {
    let min = settings
        .get(seq::MIN_SEQ)
        .and_then(|v| seq::parse_min_seq(v).ok().flatten());
    let wait = match settings
        .get(seq::MIN_SEQ_TIMEOUT)
        .map(|v| parse_pg_duration(v))
    {
        Some(Ok(Some(d))) => d,
        Some(Ok(None)) => Duration::ZERO,
        _ => seq::DEFAULT_WAIT,
    };
    session.set_min_seq(min, wait);
}

fn pg_status(s: TxStatus) -> TransactionStatus {
    match s {
        TxStatus::Idle => TransactionStatus::Idle,
        TxStatus::InTransaction => TransactionStatus::Transaction,
        TxStatus::Failed => TransactionStatus::Error,
    }
}

/// The handler pgwire calls for one connection.
pub(crate) struct Handler {
    pub state: Arc<ConnState>,
    parser: Arc<Parser>,
}

impl Handler {
    pub(crate) fn new(state: Arc<ConnState>) -> Handler {
        Handler {
            parser: Arc::new(Parser {
                state: state.clone(),
            }),
            state,
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let st = &self.state;
        let statements = split_sql(query);
        let mut session = st.session.lock().await;
        let several = statements.len() > 1;
        if several {
            session.begin_implicit();
        }
        let mut out = Vec::with_capacity(statements.len());
        for text in &statements {
            let plan = st.plan(text);
            match st
                .run(&mut session, &plan, None, &Format::UnifiedText)
                .await
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    // PostgreSQL stops at the first error of a query string.
                    out.push(Response::Error(Box::new(e.into())));
                    break;
                }
            }
        }
        if several && let Err(e) = session.end_implicit().await {
            out.push(Response::Error(Box::new(error_info(&e))));
        }
        if statements.is_empty() {
            out.push(Response::EmptyQuery);
        }
        Ok(out)
    }
}

/// Parses statements for the extended protocol (per connection, so it can describe inside the
/// connection's transaction).
pub(crate) struct Parser {
    state: Arc<ConnState>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if split_sql(sql).is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(self.state.prepare(sql, types).await?)))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.param_types.clone())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(&stmt.columns, column_format))
    }
}

fn fields(cols: &[(String, Type)], format: Option<&Format>) -> Vec<FieldInfo> {
    cols.iter()
        .enumerate()
        .map(|(i, (n, t))| {
            let f = format.map(|f| f.format_for(i)).unwrap_or(FieldFormat::Text);
            FieldInfo::new(n.clone(), None, None, t.clone(), f)
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Arc<Prepared>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let st = &self.state;
        let prepared = &portal.statement.statement;
        let params = st.bind_params(prepared, portal)?;
        let mut session = st.session.lock().await;
        st.run(
            &mut session,
            &prepared.plan,
            Some((params, prepared)),
            &portal.result_column_format,
        )
        .await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let p = &stmt.statement;
        Ok(DescribeStatementResponse::new(
            p.param_types.clone(),
            fields(&p.columns, None),
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(DescribePortalResponse::new(fields(
            &portal.statement.statement.columns,
            Some(&portal.result_column_format),
        )))
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        // The session is the truth about the transaction, whatever the messages before said.
        let status = pg_status(self.state.session.lock().await.status());
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_read_like_postgres() {
        assert_eq!(
            parse_pg_duration("300"),
            Ok(Some(Duration::from_millis(300)))
        );
        assert_eq!(parse_pg_duration("'5s'"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(
            parse_pg_duration("1 min"),
            Ok(Some(Duration::from_secs(60)))
        );
        assert_eq!(parse_pg_duration("0"), Ok(None));
        assert!(parse_pg_duration("soon").is_err());
        assert!(parse_pg_duration("5 weeks").is_err());
    }

    #[test]
    fn tags_name_the_verb_and_the_object() {
        assert_eq!(exec_tag("create table t(a)"), "CREATE TABLE");
        assert_eq!(exec_tag("CREATE UNIQUE INDEX i ON t(a)"), "CREATE INDEX");
        assert_eq!(exec_tag("drop view v"), "DROP VIEW");
        assert_eq!(exec_tag("PRAGMA foreign_keys = on"), "PRAGMA");
        assert_eq!(
            command_verb("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"),
            "INSERT"
        );
    }

    #[test]
    fn expression_types_follow_values_when_nothing_is_declared() {
        let rows = Rows {
            columns: vec![crate::exec::Column {
                name: "n".into(),
                decl_type: None,
            }],
            rows: vec![vec![Value::Null], vec![Value::Integer(1)]],
        };
        assert_eq!(announced_types(&rows)[0].1, Type::INT8);
    }
}
