//! Owns the Rhai engine an interceptor script runs in and the limits of one run.
//! Must not give a script any way out: no modules (`import` does not exist: the crate is built
//! with `no_module`), no `eval`, `print`/`debug` go to the node's log, not to stdout.
//! Invariant: every run is bounded — operations, call depth, expression depth, data sizes — and
//! the bounds grow with the change set the run is given (a big transaction is not a runaway
//! script), so memory and time stay within a constant factor of the input.
//! See `Interceptor::call` for where the limits are set around each hook.

use rhai::{Engine, EvalAltResult};

use crate::changeset::{ChangeSet, Value};

/// Operations any run may take, whatever the size of its change set.
const BASE_OPERATIONS: u64 = 1_000_000;
/// Extra operations per change of the change set the hook receives.
const OPERATIONS_PER_CHANGE: u64 = 1_000;
/// Data any run may build, whatever its input: bytes of text, array items plus BLOB bytes,
/// object-map entries — each counted over everything one value contains (Rhai adds nested
/// arrays and maps up).
const BASE_STRING_BYTES: usize = 16 << 20;
const BASE_ARRAY_ITEMS: usize = 1 << 20;
const BASE_MAP_ENTRIES: usize = 1 << 20;
/// How many times its input a run may build on top of the base.
const INPUT_FACTOR: usize = 4;
/// Nested function calls (a runaway recursion stops here).
const MAX_CALL_LEVELS: usize = 48;
/// Nesting of expressions in the script text, at global level and inside functions.
const MAX_EXPR_DEPTH: (usize, usize) = (64, 64);

/// A sandboxed engine with the node's fixed limits; `Limits::set` adds those of one run.
pub(super) fn engine() -> Engine {
    let mut e = Engine::new();
    e.set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(MAX_EXPR_DEPTH.0, MAX_EXPR_DEPTH.1)
        // A typo in a variable name fails at start-up, not on the first message.
        .set_strict_variables(true)
        // Reading a field that does not exist (`c.tabel`) is an error, not `()`.
        .set_fail_on_invalid_map_property(true);
    e.disable_symbol("eval");
    e.on_print(|s| tracing::info!(target: "ha::interceptor", "{s}"));
    e.on_debug(|s, _, pos| {
        tracing::info!(target: "ha::interceptor", line = pos.line().unwrap_or(0), "{s}")
    });
    Limits::base().set(&mut e);
    e
}

/// The bounds of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub operations: u64,
    string_bytes: usize,
    array_items: usize,
    map_entries: usize,
}

impl Limits {
    /// For a run without a change set (the script's top level).
    pub(super) fn base() -> Limits {
        Limits {
            operations: BASE_OPERATIONS,
            string_bytes: BASE_STRING_BYTES,
            array_items: BASE_ARRAY_ITEMS,
            map_entries: BASE_MAP_ENTRIES,
        }
    }

    /// For a run given `cs`: the base plus a multiple of what `cs` holds.
    pub(super) fn for_changeset(cs: &ChangeSet) -> Limits {
        let (mut strings, mut items) = (0usize, 0usize);
        let text = |v: &Value| match v {
            Value::Text(t) => (t.len(), 1),
            Value::Blob(b) => (0, 1 + b.len()),
            _ => (0, 1),
        };
        for c in &cs.changes {
            strings += c.table.len() + c.database.len() + c.command.len() + 8;
            strings += c
                .columns
                .iter()
                .chain(&c.pk_columns)
                .map(String::len)
                .sum::<usize>();
            items += c.columns.len() + c.pk_columns.len();
            for v in c.old_values.iter().chain(&c.new_values).chain(&c.args) {
                let (s, i) = text(v);
                strings += s;
                items += i;
            }
        }
        let entries = 8 + 12 * cs.changes.len();
        let base = Limits::base();
        Limits {
            operations: base
                .operations
                .saturating_add(OPERATIONS_PER_CHANGE.saturating_mul(cs.changes.len() as u64)),
            string_bytes: base
                .string_bytes
                .saturating_add(strings.saturating_mul(INPUT_FACTOR)),
            array_items: base
                .array_items
                .saturating_add((items + cs.changes.len()).saturating_mul(INPUT_FACTOR)),
            map_entries: base
                .map_entries
                .saturating_add(entries.saturating_mul(INPUT_FACTOR)),
        }
    }

    pub(super) fn set(&self, e: &mut Engine) {
        e.set_max_operations(self.operations)
            .set_max_string_size(self.string_bytes)
            .set_max_array_size(self.array_items)
            .set_max_map_size(self.map_entries);
    }
}

/// A run-time error as a sentence (Rhai's own messages name the line and position).
pub(super) fn describe(err: &EvalAltResult, limits: &Limits) -> String {
    match err {
        EvalAltResult::ErrorTooManyOperations(pos) => format!(
            "stopped after {} operations, the limit for this change set ({pos})",
            limits.operations
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::{Change, Operation};

    #[test]
    fn limits_grow_with_the_change_set() {
        let mut cs = ChangeSet::new("n", 1, "t.db");
        assert_eq!(Limits::for_changeset(&cs).operations, BASE_OPERATIONS);
        let mut c = Change::new(Operation::Insert, "t");
        c.columns = vec!["a".into()];
        c.new_values = vec![Value::Text("x".repeat(1000))];
        cs.changes = vec![c; 1000];
        let l = Limits::for_changeset(&cs);
        assert_eq!(l.operations, BASE_OPERATIONS + 1000 * OPERATIONS_PER_CHANGE);
        assert!(l.string_bytes >= BASE_STRING_BYTES + 4 * 1000 * 1000);
        assert!(l.array_items > BASE_ARRAY_ITEMS && l.map_entries > BASE_MAP_ENTRIES);
    }
}
