//! Owns the rules for DDL text in change sets: which statements are DDL, which are replicated,
//! and the idempotent (`IF NOT EXISTS` / `IF EXISTS`) form sent on the wire (reference §2.11).
//! Must not parse more than the statement head, and never rewrite by splitting on spaces: the
//! workspace's SQL reader (`crate::sql`: comments, string literals, all quoted identifier forms)
//! finds the spot.
//! Invariant: the rewritten text differs from the input only by the inserted clause; everything
//! else (comments, spacing, the body) is copied byte for byte.
//! See `plan` for what the capture path does with a statement.
//!
//! Decisions:
//! - `ALTER TABLE` is replicated unchanged: SQLite has no `IF [NOT] EXISTS` for it, so repeated
//!   application fails ("duplicate column"); the apply path skips its own DDL by origin.
//! - `CREATE TABLE … AS SELECT` is not replicated as text (the SELECT would read the replica's
//!   data and may be non-deterministic): capture the new table's schema (`sqlite_schema.sql`,
//!   which SQLite writes without the SELECT) through `idempotent_schema_sql`, then its rows as DML.
//! - Objects in `temp` (`CREATE TEMP …`, `temp.x`) or in an attached schema (any qualifier other
//!   than `main`) are local only. An unqualified `DROP` of a name that is a temp object cannot be
//!   told apart from text; the caller checks `sqlite_temp_schema` if it matters.

use std::borrow::Cow;

use crate::sql;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdlError {
    #[error("unterminated {what} starting at byte {at}")]
    Unterminated { what: &'static str, at: usize },
}

/// What kind of schema object a DDL statement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Table,
    VirtualTable,
    Index,
    View,
    Trigger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Drop,
    Alter,
}

/// The head of a DDL statement, as far as replication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ddl {
    pub verb: Verb,
    pub object: ObjectKind,
    /// `CREATE TEMP|TEMPORARY …`.
    pub temp: bool,
    /// `CREATE UNIQUE INDEX`.
    pub unique: bool,
    /// Schema qualifier (`main`, `temp`, an attach alias), unquoted.
    pub schema: Option<String>,
    /// Object name, unquoted.
    pub name: String,
    /// The statement already says `IF NOT EXISTS` / `IF EXISTS`.
    pub has_if_clause: bool,
    /// `CREATE TABLE … AS SELECT …`.
    pub as_select: bool,
    /// `ALTER TABLE … RENAME …`: what it renames.
    pub rename: Option<Rename>,
    /// Byte offset just after the object keyword (`TABLE`, `INDEX`, …), where the clause goes.
    insert_at: usize,
}

impl Ddl {
    /// True for objects that never leave this node: temp schema or an attached database.
    pub fn is_local_only(&self) -> bool {
        self.temp
            || self
                .schema
                .as_deref()
                .is_some_and(|s| !s.eq_ignore_ascii_case("main"))
    }

    /// The statement with `IF NOT EXISTS` (CREATE) or `IF EXISTS` (DROP) inserted; unchanged when
    /// it already has the clause, and for `ALTER TABLE`.
    pub fn idempotent<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        let clause = match self.verb {
            _ if self.has_if_clause => return Cow::Borrowed(sql),
            Verb::Alter => return Cow::Borrowed(sql),
            Verb::Create => " IF NOT EXISTS",
            Verb::Drop => " IF EXISTS",
        };
        let (head, tail) = sql.split_at(self.insert_at);
        Cow::Owned(format!("{head}{clause}{tail}"))
    }
}

/// What an `ALTER TABLE … RENAME` renames (names unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    /// `RENAME TO new`.
    Table { to: String },
    /// `RENAME [COLUMN] from TO to`.
    Column { from: String, to: String },
    /// `DROP [COLUMN] column`: the name is let go, as by a rename.
    DropColumn { column: String },
}

/// What the capture path does with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<'a> {
    /// Not DDL: its row changes are captured by the preupdate hook.
    NotDdl,
    /// Replicate this text as an `SQL` change at the statement's position.
    Replicate(Cow<'a, str>),
    /// Temp or attached schema: run locally, replicate nothing.
    LocalOnly,
    /// `CREATE TABLE … AS SELECT`: replicate the created table's schema (see
    /// `idempotent_schema_sql`) followed by its rows as DML.
    CreateTableAsSelect {
        schema: Option<String>,
        name: String,
    },
}

/// Classifies `sql` (one statement) and says how to replicate it.
pub fn plan(sql: &str) -> Result<Plan<'_>, DdlError> {
    let Some(ddl) = classify(sql)? else {
        return Ok(Plan::NotDdl);
    };
    if ddl.is_local_only() {
        return Ok(Plan::LocalOnly);
    }
    if ddl.as_select {
        return Ok(Plan::CreateTableAsSelect {
            schema: ddl.schema,
            name: ddl.name,
        });
    }
    Ok(Plan::Replicate(ddl.idempotent(sql)))
}

/// Makes a `CREATE …` text from `sqlite_schema.sql` idempotent (used after CREATE TABLE AS
/// SELECT). Non-DDL text is returned unchanged.
pub fn idempotent_schema_sql(sql: &str) -> Result<Cow<'_, str>, DdlError> {
    Ok(match classify(sql)? {
        Some(ddl) => ddl.idempotent(sql),
        None => Cow::Borrowed(sql),
    })
}

/// Returns the DDL head of `sql`, or `None` when the statement is not DDL
/// (CREATE TABLE/INDEX/VIEW/TRIGGER/VIRTUAL TABLE, ALTER TABLE, DROP TABLE/INDEX/VIEW/TRIGGER).
pub fn classify(sql: &str) -> Result<Option<Ddl>, DdlError> {
    let mut lx = Lexer::new(sql);
    let Some(first) = lx.next_token()? else {
        return Ok(None);
    };
    let verb = if first.is_kw("CREATE") {
        Verb::Create
    } else if first.is_kw("DROP") {
        Verb::Drop
    } else if first.is_kw("ALTER") {
        Verb::Alter
    } else {
        return Ok(None);
    };
    let mut temp = false;
    let mut unique = false;
    let mut is_virtual = false;
    let object_tok = loop {
        let Some(t) = lx.next_token()? else {
            return Ok(None);
        };
        if verb == Verb::Create && (t.is_kw("TEMP") || t.is_kw("TEMPORARY")) && !temp {
            temp = true;
        } else if verb == Verb::Create && t.is_kw("UNIQUE") && !unique {
            unique = true;
        } else if verb == Verb::Create && t.is_kw("VIRTUAL") && !is_virtual {
            is_virtual = true;
        } else {
            break t;
        }
    };
    let object = if object_tok.is_kw("TABLE") {
        if is_virtual {
            ObjectKind::VirtualTable
        } else {
            ObjectKind::Table
        }
    } else if object_tok.is_kw("INDEX") && !is_virtual && !temp {
        ObjectKind::Index
    } else if object_tok.is_kw("VIEW") && !is_virtual && !unique {
        ObjectKind::View
    } else if object_tok.is_kw("TRIGGER") && !is_virtual && !unique {
        ObjectKind::Trigger
    } else {
        return Ok(None);
    };
    if (unique && object != ObjectKind::Index)
        || (verb == Verb::Alter && object != ObjectKind::Table)
    {
        return Ok(None);
    }
    let insert_at = object_tok.end;

    // Optional IF [NOT] EXISTS (ALTER has none), then [schema .] name.
    let mut next = lx.next_token()?;
    let mut has_if_clause = false;
    if verb != Verb::Alter
        && let Some(t) = &next
        && t.is_kw("IF")
    {
        let mut save = lx.clone();
        let a = save.next_token()?;
        let ok = match verb {
            Verb::Create => {
                a.as_ref().is_some_and(|a| a.is_kw("NOT"))
                    && save.next_token()?.is_some_and(|b| b.is_kw("EXISTS"))
            }
            _ => a.as_ref().is_some_and(|a| a.is_kw("EXISTS")),
        };
        if ok {
            has_if_clause = true;
            lx = save;
            next = lx.next_token()?;
        }
    }
    let Some(first_name) = next.filter(Token::is_name) else {
        return Ok(None);
    };
    let mut schema = None;
    let mut name = first_name.value.clone();
    let mut after = lx.next_token()?;
    if after.as_ref().is_some_and(|t| t.kind == Kind::Punct('.')) {
        let Some(second) = lx.next_token()?.filter(Token::is_name) else {
            return Ok(None);
        };
        schema = Some(name);
        name = second.value;
        after = lx.next_token()?;
    }
    let as_select = verb == Verb::Create
        && object == ObjectKind::Table
        && after.as_ref().is_some_and(|t| t.is_kw("AS"));
    let rename = match &after {
        Some(t) if verb == Verb::Alter && t.is_kw("RENAME") => rename_clause(&mut lx)?,
        Some(t) if verb == Verb::Alter && t.is_kw("DROP") => drop_column_clause(&mut lx)?,
        _ => None,
    };
    Ok(Some(Ddl {
        verb,
        object,
        temp: temp
            || schema
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("temp")),
        unique,
        schema,
        name,
        has_if_clause,
        as_select,
        rename,
        insert_at,
    }))
}

/// The rest of `ALTER TABLE name RENAME …`: `TO new` or `[COLUMN] from TO to`.
fn rename_clause(lx: &mut Lexer<'_>) -> Result<Option<Rename>, DdlError> {
    let Some(mut t) = lx.next_token()? else {
        return Ok(None);
    };
    if t.is_kw("TO") {
        return Ok(lx
            .next_token()?
            .filter(Token::is_name)
            .map(|n| Rename::Table { to: n.value }));
    }
    if t.is_kw("COLUMN") {
        let Some(next) = lx.next_token()? else {
            return Ok(None);
        };
        t = next;
    }
    if !t.is_name() {
        return Ok(None);
    }
    let to_kw = lx.next_token()?;
    if !to_kw.is_some_and(|k| k.is_kw("TO")) {
        return Ok(None);
    }
    Ok(lx
        .next_token()?
        .filter(Token::is_name)
        .map(|n| Rename::Column {
            from: t.value,
            to: n.value,
        }))
}

/// The rest of `ALTER TABLE name DROP …`: `[COLUMN] column`.
fn drop_column_clause(lx: &mut Lexer<'_>) -> Result<Option<Rename>, DdlError> {
    let Some(mut t) = lx.next_token()? else {
        return Ok(None);
    };
    if t.is_kw("COLUMN") {
        let Some(next) = lx.next_token()? else {
            return Ok(None);
        };
        t = next;
    }
    Ok(t.is_name()
        .then_some(Rename::DropColumn { column: t.value }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An unquoted word: keyword or identifier.
    Word,
    /// `"x"`, `[x]` or `` `x` ``.
    QuotedIdent,
    /// `'…'`.
    Str,
    Number,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// For words and quoted identifiers the identifier; otherwise the raw text.
    value: String,
    end: usize,
}

impl Token {
    fn is_kw(&self, kw: &str) -> bool {
        self.kind == Kind::Word && self.value.eq_ignore_ascii_case(kw)
    }
    fn is_name(&self) -> bool {
        // SQLite also accepts a string literal as an identifier in these places.
        matches!(self.kind, Kind::Word | Kind::QuotedIdent | Kind::Str)
    }
}

/// The statement's tokens as `classify` needs them, read by the workspace's one SQL reader
/// (`crate::sql`); an unterminated literal is an error here.
#[derive(Clone)]
struct Lexer<'a> {
    tokens: sql::Tokens<'a>,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            tokens: sql::tokens(src),
        }
    }

    fn next_token(&mut self) -> Result<Option<Token>, DdlError> {
        let Some(t) = self.tokens.next() else {
            return Ok(None);
        };
        if !t.closed {
            let what = if t.kind == sql::Kind::Str {
                "string literal"
            } else {
                "quoted identifier"
            };
            return Err(DdlError::Unterminated {
                what,
                at: t.span.start,
            });
        }
        let kind = match t.kind {
            sql::Kind::Word => Kind::Word,
            sql::Kind::QuotedIdent => Kind::QuotedIdent,
            sql::Kind::Str => Kind::Str,
            sql::Kind::Number => Kind::Number,
            sql::Kind::Param | sql::Kind::Punct => {
                Kind::Punct(t.text.chars().next().unwrap_or_default())
            }
        };
        Ok(Some(Token {
            kind,
            value: t.value().into_owned(),
            end: t.span.end,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> String {
        match plan(sql).unwrap() {
            Plan::Replicate(s) => s.into_owned(),
            other => panic!("{sql:?}: {other:?}"),
        }
    }

    #[test]
    fn creates_get_if_not_exists_and_drops_get_if_exists() {
        let cases = [
            ("CREATE TABLE t(a)", "CREATE TABLE IF NOT EXISTS t(a)"),
            ("create table t (a)", "create table IF NOT EXISTS t (a)"),
            (
                "CREATE INDEX i ON t(a)",
                "CREATE INDEX IF NOT EXISTS i ON t(a)",
            ),
            (
                "CREATE UNIQUE INDEX i ON t(a)",
                "CREATE UNIQUE INDEX IF NOT EXISTS i ON t(a)",
            ),
            (
                "CREATE VIEW v AS SELECT 1",
                "CREATE VIEW IF NOT EXISTS v AS SELECT 1",
            ),
            (
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
                "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN SELECT 1; END",
            ),
            (
                "CREATE VIRTUAL TABLE f USING fts5(body)",
                "CREATE VIRTUAL TABLE IF NOT EXISTS f USING fts5(body)",
            ),
            ("DROP TABLE t", "DROP TABLE IF EXISTS t"),
            ("DROP INDEX main.i", "DROP INDEX IF EXISTS main.i"),
            ("DROP VIEW v", "DROP VIEW IF EXISTS v"),
            ("DROP TRIGGER tr", "DROP TRIGGER IF EXISTS tr"),
            (
                "CREATE TABLE main.t(a)",
                "CREATE TABLE IF NOT EXISTS main.t(a)",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite(input), want, "{input}");
        }
    }

    #[test]
    fn whitespace_and_comments_anywhere_are_kept_byte_for_byte() {
        let cases = [
            (
                "  \n\tCREATE\n  TABLE\t\"my table\" (a)",
                "  \n\tCREATE\n  TABLE IF NOT EXISTS\t\"my table\" (a)",
            ),
            (
                "-- make it\nCREATE /* the */ TABLE/*x*/t(a) -- trailing",
                "-- make it\nCREATE /* the */ TABLE IF NOT EXISTS/*x*/t(a) -- trailing",
            ),
            ("DROP\r\nTABLE\r\n[t]", "DROP\r\nTABLE IF EXISTS\r\n[t]"),
        ];
        for (input, want) in cases {
            assert_eq!(rewrite(input), want, "{input:?}");
        }
    }

    #[test]
    fn statements_that_already_have_the_clause_stay_as_they_are() {
        for sql in [
            "CREATE TABLE IF NOT EXISTS t(a)",
            "create  table  if  not  exists  t(a)",
            "CREATE UNIQUE INDEX IF NOT EXISTS i ON t(a)",
            "CREATE VIRTUAL TABLE IF NOT EXISTS f USING fts5(x)",
            "DROP TABLE IF EXISTS t",
            "DROP /* c */ TABLE /* c */ IF /* c */ EXISTS t",
        ] {
            assert_eq!(rewrite(sql), sql);
            assert!(matches!(
                plan(sql).unwrap(),
                Plan::Replicate(Cow::Borrowed(_))
            ));
        }
    }

    #[test]
    fn renames_are_read_from_alter_table() {
        let r = |sql: &str| classify(sql).unwrap().and_then(|d| d.rename);
        assert_eq!(
            r("ALTER TABLE main.\"t x\" RENAME TO [t y]"),
            Some(Rename::Table { to: "t y".into() })
        );
        assert_eq!(
            r("alter table t rename column a to \"b c\""),
            Some(Rename::Column {
                from: "a".into(),
                to: "b c".into()
            })
        );
        assert_eq!(
            r("ALTER TABLE t RENAME /* c */ `a` TO b"),
            Some(Rename::Column {
                from: "a".into(),
                to: "b".into()
            })
        );
        assert_eq!(r("ALTER TABLE t ADD COLUMN rename TEXT"), None);
        assert_eq!(
            r("ALTER TABLE t DROP COLUMN \"a b\""),
            Some(Rename::DropColumn {
                column: "a b".into()
            })
        );
        assert_eq!(
            r("alter table t drop c"),
            Some(Rename::DropColumn { column: "c".into() })
        );
        assert_eq!(r("ALTER TABLE t RENAME"), None);
    }

    #[test]
    fn alter_table_is_replicated_unchanged() {
        let sql = "ALTER TABLE t ADD COLUMN c TEXT";
        assert_eq!(rewrite(sql), sql);
        let d = classify(sql).unwrap().unwrap();
        assert_eq!(
            (d.verb, d.object, d.name.as_str()),
            (Verb::Alter, ObjectKind::Table, "t")
        );
    }

    #[test]
    fn quoted_identifiers_of_every_form_are_names_not_keywords() {
        for (sql, name) in [
            ("CREATE TABLE \"if\"(a)", "if"),
            ("CREATE TABLE [table](a)", "table"),
            ("CREATE TABLE `a``b`(a)", "a`b"),
            ("CREATE TABLE \"a\"\"b\"(a)", "a\"b"),
            ("CREATE TABLE 'str name'(a)", "str name"),
            ("CREATE TABLE ünï(a)", "ünï"),
        ] {
            let d = classify(sql).unwrap().unwrap();
            assert_eq!(d.name, name, "{sql}");
            assert!(!d.has_if_clause);
            assert!(rewrite(sql).contains("TABLE IF NOT EXISTS "), "{sql}");
        }
    }

    #[test]
    fn non_ddl_and_keywords_inside_literals_or_comments_are_not_ddl() {
        for sql in [
            "",
            "   ",
            "-- CREATE TABLE t(a)",
            "/* DROP TABLE t */ SELECT 1",
            "SELECT 'CREATE TABLE t(a)'",
            "INSERT INTO t VALUES ('DROP TABLE x')",
            "EXPLAIN CREATE TABLE t(a)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "CREATE UNIQUE VIEW v AS SELECT 1",
            "CREATE TEMP INDEX i ON t(a)",
            "ALTER VIEW v RENAME TO w",
            "DROP DATABASE x",
            "PRAGMA user_version = 3",
        ] {
            assert_eq!(plan(sql).unwrap(), Plan::NotDdl, "{sql:?}");
        }
    }

    #[test]
    fn temp_and_attached_objects_are_local_only() {
        for sql in [
            "CREATE TEMP TABLE t(a)",
            "CREATE TEMPORARY TABLE t(a)",
            "create temp view v as select 1",
            "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
            "CREATE TABLE temp.t(a)",
            "CREATE TABLE \"TEMP\".t(a)",
            "DROP TABLE temp.t",
            "CREATE TABLE aux.t(a)",
            "CREATE INDEX aux.i ON t(a)",
        ] {
            assert_eq!(plan(sql).unwrap(), Plan::LocalOnly, "{sql}");
        }
        assert!(matches!(
            plan("CREATE TABLE MAIN.t(a)").unwrap(),
            Plan::Replicate(_)
        ));
    }

    #[test]
    fn create_table_as_select_is_captured_as_dml() {
        for (sql, schema) in [
            ("CREATE TABLE t AS SELECT * FROM u", None),
            (
                "create table if not exists main.t as select random()",
                Some("main"),
            ),
        ] {
            assert_eq!(
                plan(sql).unwrap(),
                Plan::CreateTableAsSelect {
                    schema: schema.map(String::from),
                    name: "t".into()
                },
                "{sql}"
            );
        }
        // A column named "as" inside the definition does not count.
        assert!(matches!(
            plan("CREATE TABLE t(\"as\" INT)").unwrap(),
            Plan::Replicate(_)
        ));
        // The schema text SQLite stores for the new table becomes idempotent.
        assert_eq!(
            idempotent_schema_sql("CREATE TABLE t(a,b)").unwrap(),
            "CREATE TABLE IF NOT EXISTS t(a,b)"
        );
    }

    #[test]
    fn unterminated_literals_are_errors_not_panics() {
        for sql in [
            "CREATE TABLE 'abc",
            "CREATE TABLE \"abc",
            "CREATE TABLE [abc",
            "DROP TABLE `x",
        ] {
            assert!(classify(sql).is_err(), "{sql}");
        }
        // An open block comment runs to the end, as in SQLite.
        assert_eq!(plan("CREATE /* never closed").unwrap(), Plan::NotDdl);
        // Odd input around multi-byte characters never panics.
        for sql in [
            "CREATE ✓ TABLE",
            "✓",
            "CREATE TABLE t✓(a)",
            "DROP TABLE é.ü",
        ] {
            let _ = plan(sql);
        }
    }
}
