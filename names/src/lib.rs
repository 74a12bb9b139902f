//! Owns the rule that turns database file and node names into NATS identifiers (durable
//! consumers, subjects), so that the node, ha-sync and the operator (which removes departed
//! nodes' durables) compute the same names.
//! Must stay free of dependencies: the operator is a static build without SQLite or NATS.
//! Invariant: byte-for-byte what the Go original computes for the same input (reference §2.1).

/// Longest identifier the original keeps (it keeps the *last* 32 bytes).
const MAX_IDENTIFIER: usize = 32;

/// The original's `normalizeNatsIdentifier`: every `.`, `/`, ASCII whitespace, `*` and `>`
/// becomes `_`, leading and trailing `_` are trimmed, and of a longer result only the last 32
/// bytes are kept (moved forward to a character boundary where Go would cut a character).
pub fn normalize_identifier(name: &str) -> String {
    let replaced: String = name
        .chars()
        .map(|c| match c {
            '.' | '/' | '*' | '>' | ' ' | '\t' | '\n' | '\r' | '\x0c' => '_',
            c => c,
        })
        .collect();
    let trimmed = replaced.trim_matches('_');
    if trimmed.len() <= MAX_IDENTIFIER {
        return trimmed.to_string();
    }
    let mut start = trimmed.len() - MAX_IDENTIFIER;
    while !trimmed.is_char_boundary(start) {
        start += 1;
    }
    trimmed[start..].to_string()
}

/// The durable consumer name of one node for one database: `normalize("<db>_<node>")`.
pub fn durable_name(db_file_name: &str, node: &str) -> String {
    normalize_identifier(&format!("{db_file_name}_{node}"))
}
