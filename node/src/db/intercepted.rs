//! Owns running the interceptor's receive hooks around the apply of one change set:
//! `before` (apply as received, an edited set, or nothing) and `after` (keep or ignore the error).
//! Must not begin, commit or release: it runs inside the writer's per-message savepoint
//! (`SAVEPOINT`) and may only roll back to it, to undo a failed apply that `after` ignored.
//! Invariant: a skipped or rescued message leaves nothing of itself in the database but its
//! position (the writer records it as applied); a hook that fails is an error like any apply
//! error, so the consumer quarantines the message — never a silent acknowledgement.
//! See `writer::replicated::apply_group` for the caller and `interceptor` for the hooks.

use rusqlite::Connection;

use super::DbError;
use crate::changeset::apply::{self, ApplyStats};
use crate::changeset::schema::TableCache;
use crate::changeset::{ChangeSet, Seq};
use crate::interceptor::{After, Before, Interceptor, Position};

/// The savepoint the writer opens around each applied change set.
pub(super) const SAVEPOINT: &str = "apply";

/// Applies `cs` (stream sequence `seq`) as the interceptor's hooks decide.
pub(super) fn apply(
    conn: &Connection,
    tables: &mut TableCache,
    interceptor: &Interceptor,
    seq: Seq,
    cs: &ChangeSet,
    subject: &str,
) -> Result<ApplyStats, DbError> {
    let at = Position {
        seq: Some(seq),
        subject,
    };
    let edited;
    let target = match interceptor.before(cs, at)? {
        Before::Skip => {
            tracing::debug!(%seq, "the interceptor's before() skipped a change set");
            return Ok(ApplyStats {
                script_skipped: 1,
                ..ApplyStats::default()
            });
        }
        Before::AsReceived => cs,
        Before::Apply(c) => {
            edited = c;
            &edited
        }
    };
    let result = apply::apply(conn, tables, seq.0, target).map_err(DbError::from);
    if !interceptor.has_after() {
        return result;
    }
    let error = result.as_ref().err().map(ToString::to_string);
    match (interceptor.after(target, error.as_deref(), at)?, result) {
        (After::Keep, result) => result,
        (After::Ignore, Ok(stats)) => Ok(stats),
        // SQLite rolled the whole transaction back (disk full, …): nothing to go on with.
        (After::Ignore, Err(e)) if conn.is_autocommit() => Err(e),
        (After::Ignore, Err(e)) => {
            conn.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}"))?;
            tables.invalidate();
            tracing::warn!(
                %seq,
                error = %e,
                script = interceptor.script(),
                "the interceptor's after() ignored an apply error: the change set counts as applied, none of it was"
            );
            Ok(ApplyStats {
                script_rescued: 1,
                ..ApplyStats::default()
            })
        }
    }
}
