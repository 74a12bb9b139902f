//! Owns reading SQL text the way SQLite's tokenizer does, as far as ha needs it: white space and
//! comments (`skip_trivia`), tokens with their spans (`tokens`: words, numbers, string literals,
//! quoted identifiers in all three forms, parameters, punctuation), a statement's leading
//! keyword, and where statements end (`split`). The one SQL reader of the workspace: the node's
//! statement runner, its transaction control and its PostgreSQL front end, the DDL rules of
//! `ddl` and the `ha-sync` extension all read SQL through it.
//! Must not parse SQL beyond tokens: SQLite compiles statements itself.
//! Invariant: every function is one pass over the text (time linear in its length, whatever it
//! holds), never panics, and never looks inside a literal or a comment for a keyword.

use std::borrow::Cow;
use std::ops::Range;

/// What kind of token a `Token` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An unquoted word: keyword or identifier.
    Word,
    /// `"x"`, `` `x` `` or `[x]`.
    QuotedIdent,
    /// `'…'`.
    Str,
    Number,
    /// `?`, `?3`, `$1`, `:name`, `@name`, `$name`.
    Param,
    /// Anything else: one character, or one of the two-character operators
    /// `::`, `<=`, `>=`, `<>`, `!=`, `||`, `==`.
    Punct,
}

/// One token of SQL text, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: Kind,
    /// The token as written (literals and quoted identifiers with their quotes).
    pub text: &'a str,
    /// Where `text` is in the input.
    pub span: Range<usize>,
    /// False for a string literal or quoted identifier whose closing quote is missing (it then
    /// runs to the end of the input).
    pub closed: bool,
}

impl Token<'_> {
    /// Whether this is the unquoted keyword `kw` (any case).
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// The text between the quotes of a literal or quoted identifier, as written (a doubled
    /// quote stays doubled); the text itself for every other token.
    pub fn inner(&self) -> &str {
        match self.kind {
            Kind::Str | Kind::QuotedIdent => {
                let end = if self.closed {
                    self.text.len() - 1
                } else {
                    self.text.len()
                };
                self.text.get(1..end.max(1)).unwrap_or_default()
            }
            _ => self.text,
        }
    }

    /// The value of a literal or quoted identifier (a doubled quote read as one); the text
    /// itself for every other token.
    pub fn value(&self) -> Cow<'_, str> {
        let inner = self.inner();
        match (self.kind, self.text.as_bytes().first()) {
            (Kind::Str, _) => unescape(inner, "''", "'"),
            (Kind::QuotedIdent, Some(b'"')) => unescape(inner, "\"\"", "\""),
            (Kind::QuotedIdent, Some(b'`')) => unescape(inner, "``", "`"),
            _ => Cow::Borrowed(inner),
        }
    }
}

fn unescape<'a>(s: &'a str, doubled: &str, single: &str) -> Cow<'a, str> {
    if s.contains(doubled) {
        Cow::Owned(s.replace(doubled, single))
    } else {
        Cow::Borrowed(s)
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The offset of the first byte at or after `from` that is not white space or a comment. A
/// comment without its end runs to the end of the text, as in SQLite.
pub fn trivia_end(sql: &str, from: usize) -> usize {
    let b = sql.as_bytes();
    let mut i = from;
    loop {
        match (b.get(i), b.get(i + 1)) {
            (Some(&c), _) if is_space(c) => i += 1,
            (Some(b'-'), Some(b'-')) => {
                i = match sql[i..].find('\n') {
                    Some(n) => i + n + 1,
                    None => sql.len(),
                };
            }
            (Some(b'/'), Some(b'*')) => {
                i = match sql[i + 2..].find("*/") {
                    Some(n) => i + 2 + n + 2,
                    None => sql.len(),
                };
            }
            _ => return i.min(sql.len()),
        }
    }
}

/// `sql` from its first token on: white space and comments skipped.
pub fn skip_trivia(sql: &str) -> &str {
    &sql[trivia_end(sql, 0)..]
}

/// Whether `sql` holds nothing but white space and comments.
pub fn is_only_comments(sql: &str) -> bool {
    skip_trivia(sql).is_empty()
}

/// The first keyword of a statement, upper-cased, after white space and comments ("" when the
/// statement starts with something else).
pub fn leading_keyword(sql: &str) -> String {
    match tokens(sql).next() {
        Some(t) if t.kind == Kind::Word => t.text.to_ascii_uppercase(),
        _ => String::new(),
    }
}

/// The tokens of `sql`, white space and comments skipped.
pub fn tokens(sql: &str) -> Tokens<'_> {
    Tokens { sql, pos: 0 }
}

/// The iterator of `tokens`.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    sql: &'a str,
    pos: usize,
}

impl<'a> Tokens<'a> {
    /// Where the next token (or trivia before it) starts.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let sql = self.sql;
        let b = sql.as_bytes();
        let start = trivia_end(sql, self.pos);
        let c = *b.get(start)?;
        let mut closed = true;
        let (kind, end) = match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                let mut i = start + 1;
                loop {
                    match b.get(i) {
                        None => {
                            closed = false;
                            break;
                        }
                        Some(&x) if x == close => {
                            // A doubled quote escapes it (not in `[…]`).
                            if close != b']' && b.get(i + 1) == Some(&close) {
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                let kind = if c == b'\'' {
                    Kind::Str
                } else {
                    Kind::QuotedIdent
                };
                (kind, i)
            }
            b'$' | b'?' | b':' | b'@'
                if c == b'?'
                    || b.get(start + 1)
                        .is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'_') =>
            {
                let mut i = start + 1;
                while b
                    .get(i)
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'_')
                {
                    i += 1;
                }
                (Kind::Param, i)
            }
            c if c.is_ascii_digit() => {
                let mut i = start;
                while b
                    .get(i)
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == b'.' || *n == b'_')
                {
                    i += 1;
                }
                (Kind::Number, i)
            }
            c if is_word_start(c) => {
                let mut i = start;
                while b.get(i).is_some_and(|n| is_word_char(*n)) {
                    i += 1;
                }
                (Kind::Word, i)
            }
            _ => {
                let two = sql.get(start..start + 2).unwrap_or("");
                let len = if matches!(two, "::" | "<=" | ">=" | "<>" | "!=" | "||" | "==") {
                    2
                } else {
                    // One whole character (bytes >= 0x80 start words, so this is ASCII).
                    1
                };
                (Kind::Punct, start + len)
            }
        };
        self.pos = end;
        Some(Token {
            kind,
            text: &sql[start..end],
            span: start..end,
            closed,
        })
    }
}

/// Splits SQL text into its statements, exactly where SQLite's tokenizer says a statement ends
/// (the rule of `sqlite3_complete`), so that `;` inside strings, comments and trigger bodies
/// does not split. Each piece keeps its text without the final `;`; empty pieces are dropped.
/// Text after the last complete statement (an unterminated one) is returned as the last piece.
/// One pass over the text: time linear in its length whatever it holds.
pub fn split(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |piece: &str| {
        let text = piece.trim();
        if !text.is_empty() && !is_only_comments(text) {
            out.push(text.to_string());
        }
    };
    let mut start = 0;
    for end in statement_ends(sql) {
        push(&sql[start..end]);
        start = end + 1;
    }
    push(&sql[start..]);
    out
}

/// The byte offsets of the `;` that end statements, by `sqlite3_complete`'s state machine
/// (complete.c in SQLite), run once over the whole text instead of once per `;`.
fn statement_ends(sql: &str) -> Vec<usize> {
    // Token classes and states as in complete.c.
    const SEMI: usize = 0;
    const WS: usize = 1;
    const OTHER: usize = 2;
    const EXPLAIN: usize = 3;
    const CREATE: usize = 4;
    const TEMP: usize = 5;
    const TRIGGER: usize = 6;
    const END: usize = 7;
    const TRANS: [[u8; 8]; 8] = [
        /* 0 INVALID */ [1, 0, 2, 3, 4, 2, 2, 2],
        /* 1   START */ [1, 1, 2, 3, 4, 2, 2, 2],
        /* 2  NORMAL */ [1, 2, 2, 2, 2, 2, 2, 2],
        /* 3 EXPLAIN */ [1, 3, 3, 2, 4, 2, 2, 2],
        /* 4  CREATE */ [1, 4, 2, 2, 2, 4, 5, 2],
        /* 5 TRIGGER */ [6, 5, 5, 5, 5, 5, 5, 5],
        /* 6    SEMI */ [6, 6, 5, 5, 5, 5, 5, 7],
        /* 7     END */ [1, 7, 5, 5, 5, 5, 5, 5],
    ];
    let b = sql.as_bytes();
    let mut ends = Vec::new();
    let mut state = 0usize;
    let mut i = 0;
    while i < b.len() {
        let token = match b[i] {
            b';' => SEMI,
            b' ' | b'\r' | b'\t' | b'\n' | b'\x0c' => WS,
            b'/' if b.get(i + 1) == Some(&b'*') => {
                match sql[i + 2..].find("*/") {
                    Some(k) => i += 2 + k + 1,
                    None => return ends,
                }
                WS
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                match sql[i..].find('\n') {
                    Some(k) => i += k,
                    None => return ends,
                }
                WS
            }
            b'[' => {
                match sql[i..].find(']') {
                    Some(k) => i += k,
                    None => return ends,
                }
                OTHER
            }
            q @ (b'`' | b'"' | b'\'') => {
                match b[i + 1..].iter().position(|c| *c == q) {
                    Some(k) => i += 1 + k,
                    None => return ends,
                }
                OTHER
            }
            0 => return ends,
            c if is_word_char(c) => {
                let word_end = b[i..]
                    .iter()
                    .position(|c| !is_word_char(*c))
                    .map_or(b.len(), |k| i + k);
                let word = &b[i..word_end];
                i = word_end - 1;
                match word.to_ascii_lowercase().as_slice() {
                    b"create" => CREATE,
                    b"trigger" => TRIGGER,
                    b"temp" | b"temporary" => TEMP,
                    b"end" => END,
                    b"explain" => EXPLAIN,
                    _ => OTHER,
                }
            }
            _ => OTHER,
        };
        state = TRANS[state][token] as usize;
        if token == SEMI && state == 1 {
            ends.push(i);
        }
        i += 1;
    }
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        tokens(sql).map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn tokens_skip_comments_and_keep_literals_whole() {
        assert_eq!(
            kinds(
                "/* a */ SELECT -- b\n 'x''y', \"q\"\"r\", [s t], `u`, 1.5e3, ?2, $1, :n, a::int"
            ),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Str, "'x''y'"),
                (Kind::Punct, ","),
                (Kind::QuotedIdent, "\"q\"\"r\""),
                (Kind::Punct, ","),
                (Kind::QuotedIdent, "[s t]"),
                (Kind::Punct, ","),
                (Kind::QuotedIdent, "`u`"),
                (Kind::Punct, ","),
                (Kind::Number, "1.5e3"),
                (Kind::Punct, ","),
                (Kind::Param, "?2"),
                (Kind::Punct, ","),
                (Kind::Param, "$1"),
                (Kind::Punct, ","),
                (Kind::Param, ":n"),
                (Kind::Punct, ","),
                (Kind::Word, "a"),
                (Kind::Punct, "::"),
                (Kind::Word, "int"),
            ]
        );
        let t: Vec<_> = tokens("'it''s' \"a\"\"b\" 'open").collect();
        assert_eq!(t[0].value(), "it's");
        assert_eq!(t[1].value(), "a\"b");
        assert!(t[0].closed && !t[2].closed);
        assert_eq!(t[2].inner(), "open");
    }

    #[test]
    fn leading_keyword_skips_comments_of_both_kinds() {
        assert_eq!(leading_keyword("  /* x */ -- y\n begin;"), "BEGIN");
        assert_eq!(leading_keyword("-- only"), "");
        assert_eq!(leading_keyword("/* open"), "");
        assert_eq!(leading_keyword("'BEGIN'"), "");
        assert!(is_only_comments(" -- a\n /* b */ "));
    }

    #[test]
    fn odd_input_never_panics() {
        for sql in [
            "'", "\"", "[", "`", "/*", "--", "é", "$", "?", ":", ":::", "'é", "[é",
        ] {
            let n = tokens(sql).count();
            assert!(n <= sql.len(), "{sql}");
            let _ = split(sql);
        }
    }

    /// The old splitter (one `sqlite3_complete` call per `;`, quadratic): the oracle.
    fn split_by_sqlite(sql: &str) -> Vec<String> {
        let complete = |piece: &str| match std::ffi::CString::new(piece) {
            // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
            Ok(c) => unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 },
            Err(_) => false,
        };
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in sql.char_indices() {
            if c == ';' && complete(&sql[start..=i]) {
                let text = sql[start..i].trim();
                if !text.is_empty() && !is_only_comments(text) {
                    out.push(text.to_string());
                }
                start = i + 1;
            }
        }
        let rest = sql[start..].trim();
        if !rest.is_empty() && !is_only_comments(rest) {
            out.push(rest.to_string());
        }
        out
    }

    #[test]
    fn split_agrees_with_sqlite_complete() {
        for sql in [
            "select 1; select 2",
            "select 'a;b'; select \"x;\"; select [c;d]; select `e;f`",
            "select 1 -- c;\n; select 2",
            "select /* ; */ 1; select 2 /* open",
            "create temp trigger tr after insert on t begin select 1; end; select 2",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; END ; x",
            "explain create trigger t begin select 1; end; select 3",
            "create table end(a); select 1",
            "select 'unterminated; select 2",
            "select 'é;'; select 'ü'",
            "select 1;;; ;",
            "-- only\n",
        ] {
            assert_eq!(split(sql), split_by_sqlite(sql), "{sql}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
        ))]

        /// Tokens are the input's own text, in order, and what lies between them is only white
        /// space and comments.
        #[test]
        fn tokens_cover_the_input_with_trivia_between(
            sql in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just("'a''b'"), proptest::strategy::Just("'"),
                proptest::strategy::Just("\""), proptest::strategy::Just("-- c\n"),
                proptest::strategy::Just("/*"), proptest::strategy::Just("*/"),
                proptest::strategy::Just("["), proptest::strategy::Just("]"),
                proptest::strategy::Just("`"), proptest::strategy::Just(" "),
                proptest::strategy::Just("BEGIN"), proptest::strategy::Just("$1"),
                proptest::strategy::Just("?"), proptest::strategy::Just(":"),
                proptest::strategy::Just("::"), proptest::strategy::Just("1.5"),
                proptest::strategy::Just("é"), proptest::strategy::Just(";"),
            ], 0..30).prop_map(|v| v.concat())
        ) {
            let mut at = 0;
            for t in tokens(&sql) {
                proptest::prop_assert!(t.span.start >= at && t.span.end > t.span.start);
                proptest::prop_assert_eq!(&sql[t.span.clone()], t.text);
                proptest::prop_assert!(is_only_comments(&sql[at..t.span.start]));
                at = t.span.end;
            }
            proptest::prop_assert!(is_only_comments(&sql[at..]));
        }

        /// The one-pass splitter splits exactly where `sqlite3_complete` says statements end.
        #[test]
        fn split_agrees_with_sqlite_on_any_text(
            sql in proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(";"), proptest::strategy::Just("'"),
                proptest::strategy::Just("\""), proptest::strategy::Just("--"),
                proptest::strategy::Just("/*"), proptest::strategy::Just("*/"),
                proptest::strategy::Just("\n"), proptest::strategy::Just("create "),
                proptest::strategy::Just("temp "), proptest::strategy::Just("trigger "),
                proptest::strategy::Just("end"), proptest::strategy::Just("explain "),
                proptest::strategy::Just("begin "), proptest::strategy::Just("select 1"),
                proptest::strategy::Just("["), proptest::strategy::Just("]"),
                proptest::strategy::Just("`"), proptest::strategy::Just(" "),
                proptest::strategy::Just("é"),
            ], 0..30).prop_map(|v| v.concat())
        ) {
            proptest::prop_assert_eq!(split(&sql), split_by_sqlite(&sql));
        }
    }

    #[test]
    fn split_follows_sqlite_tokens_not_semicolons() {
        assert_eq!(
            split("select ';' ; select 2;; -- c\n"),
            vec!["select ';'", "select 2"]
        );
        let trig = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END";
        assert_eq!(split(&format!("{trig}; select 3")), vec![trig, "select 3"]);
        assert_eq!(split("select 1"), vec!["select 1"]);
        assert!(split(" ; -- nothing").is_empty());
    }
}
