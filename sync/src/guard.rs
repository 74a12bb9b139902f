//! Owns turning panics into SQLite errors at the boundary with the host.
//! Must not be bypassed: every function SQLite calls (entry point, vtab methods, `ha_info`) runs
//! its body through `catch`, because unwinding into C is undefined behaviour.
//! Invariant: a caught panic leaves the extension usable; its message reaches the caller.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`; a panic becomes `rusqlite::Error::ModuleError` with the panic's message.
pub(crate) fn catch<T>(f: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(rusqlite::Error::ModuleError(format!(
            "ha-sync: internal error: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_and_results_pass_through() {
        let r: rusqlite::Result<()> = catch(|| panic!("boom"));
        assert!(matches!(r, Err(rusqlite::Error::ModuleError(m)) if m.contains("boom")));
        assert_eq!(catch(|| Ok(3)).ok(), Some(3));
    }
}
