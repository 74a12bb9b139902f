//! Owns splitting SQL text into statements (a simple-protocol query string, a script), by
//! SQLite's own rule of where a statement ends.
//! Must not parse SQL beyond that rule: statements are compiled by SQLite itself.
//! Invariant: one pass over the text, so the time is linear in its length whatever it holds.

use super::statement::is_only_comments;

/// Splits SQL text into its statements, exactly where SQLite's tokenizer says a statement ends
/// (the rule of `sqlite3_complete`), so that `;` inside strings, comments and trigger bodies
/// does not split. Each piece keeps its text without the final `;`; empty pieces are dropped.
/// Text after the last complete statement (an unterminated one) is returned as the last piece.
/// One pass over the text: time linear in its length whatever it holds.
pub fn split_sql(sql: &str) -> Vec<String> {
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
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let word_end = b[i..]
                    .iter()
                    .position(|c| {
                        !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c >= 0x80)
                    })
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

    /// The old splitter (one `sqlite3_complete` call per `;`, quadratic): the oracle.
    pub(crate) fn split_by_sqlite(sql: &str) -> Vec<String> {
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
            assert_eq!(split_sql(sql), split_by_sqlite(sql), "{sql}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
        ))]

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
            proptest::prop_assert_eq!(split_sql(&sql), split_by_sqlite(&sql));
        }
    }

    #[test]
    fn split_follows_sqlite_tokens_not_semicolons() {
        assert_eq!(
            split_sql("select ';' ; select 2;; -- c\n"),
            vec!["select ';'", "select 2"]
        );
        let trig = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2; END";
        assert_eq!(
            split_sql(&format!("{trig}; select 3")),
            vec![trig, "select 3"]
        );
        assert_eq!(split_sql("select 1"), vec!["select 1"]);
        assert!(split_sql(" ; -- nothing").is_empty());
    }
}
