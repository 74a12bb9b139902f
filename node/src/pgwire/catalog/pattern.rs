//! Owns psql's name patterns (`\\dt us*` arrives as `relname ~ '^(us.*)$'`): compiled by the
//! `regex` crate, never by a hand-written matcher.

/// The anchored regular expression psql builds from its patterns (`^(users)$`, `^(us.*)$`,
/// `^(a|b)$`), compiled by the `regex` crate: matching takes time linear in the name whatever
/// the pattern (a hand-written backtracking matcher was exponential in `.*`). A pattern that
/// does not compile, or would compile to more than 1 MB, matches nothing.
pub fn psql_pattern(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// Whether `name` matches psql's `pattern`.
pub fn psql_pattern_matches(pattern: &str, name: &str) -> bool {
    psql_pattern(pattern).is_some_and(|r| r.is_match(name))
}
