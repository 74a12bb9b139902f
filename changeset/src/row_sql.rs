//! Owns the SQL text of a table's row statements (insert, update, delete) as `rows` builds them,
//! kept with the table's description (`schema::TableInfo`) so it is built once per table, not
//! once per row.
//! Must not build the text itself: `rows` does, through `cached`.

use std::borrow::Cow;
use std::sync::OnceLock;

/// The SQL text of a table's row statements, built on first use and kept with the table's
/// description (so DDL, which drops the description, drops the text too). Each keeps the text
/// of the first column list it was built for; another list has its text built each time.
#[derive(Debug, Default, Clone)]
pub struct RowSql {
    pub(crate) insert: OnceLock<(Vec<String>, String)>,
    pub(crate) update: OnceLock<(Vec<String>, String)>,
    pub(crate) delete: OnceLock<(Vec<String>, String)>,
}

/// Two descriptions of the same table are equal whatever text they have built.
impl PartialEq for RowSql {
    fn eq(&self, _: &RowSql) -> bool {
        true
    }
}

/// The text `build` makes for the column list `names`: from `cell` when it was built for the
/// same list, else built (and kept in `cell` if it is still empty).
pub(crate) fn cached<'c, 'n>(
    cell: &'c OnceLock<(Vec<String>, String)>,
    names: impl Iterator<Item = &'n str> + Clone,
    build: impl FnOnce() -> String,
) -> Cow<'c, str> {
    if let Some((n, sql)) = cell.get() {
        if n.iter().map(String::as_str).eq(names) {
            return Cow::Borrowed(sql);
        }
        return Cow::Owned(build());
    }
    let sql = build();
    match cell.set((names.map(str::to_string).collect(), sql)) {
        Ok(()) => cell
            .get()
            .map_or(Cow::Borrowed(""), |(_, s)| Cow::Borrowed(s)),
        Err((_, sql)) => Cow::Owned(sql),
    }
}
