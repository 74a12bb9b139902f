//! Owns the interceptor: a user's Rhai script (`--interceptor PATH`) with up to three optional
//! hooks — `before(cs)` and `after(cs, error)` around each replicated change set this node
//! applies, and `publish(cs)` before each of this node's commits is published.
//! Must not touch SQLite or NATS: the writer calls the hooks and acts on their verdicts.
//! Invariant: a script cannot reach files or the network and every run is bounded (see
//! `sandbox`); a run that throws, overruns or returns something else than the documented
//! values is a `ScriptError`, never a guessed verdict. See docs/interceptor.md.

mod convert;
mod sandbox;

use std::path::Path;
use std::sync::Mutex;

use rhai::{AST, CallFnOptions, Dynamic, Engine, Scope};
use serde_json::{Value as Json, json};

use crate::changeset::ChangeSet;
use crate::metrics::InterceptorCounters;

pub use convert::Position;

/// The hooks a script may define, with the number of parameters each takes.
const HOOKS: [(&str, usize, &str); 3] = [
    ("before", 1, "before(cs)"),
    ("after", 2, "after(cs, error)"),
    ("publish", 1, "publish(cs)"),
];

/// Why a script cannot be used; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the interceptor script {script}: {source}")]
    Read {
        script: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot compile the interceptor script {script}: {message} (line {line}, column {column})"
    )]
    Compile {
        script: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("interceptor script {script}: {message}")]
    Invalid { script: String, message: String },
}

/// A hook run that did not end in a verdict: it threw, ran past a limit or returned something
/// else than the documented values. The change set it was about is not applied (receiving
/// side: it goes to quarantine) or not committed (publishing side: the client gets the error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("interceptor script {script}: {hook}() failed: {message}")]
pub struct ScriptError {
    pub script: String,
    pub hook: &'static str,
    pub message: String,
}

/// What `before(cs)` decided about a received change set.
#[derive(Debug, PartialEq)]
pub enum Before {
    /// Apply the message as it was received (`true` or `()`).
    AsReceived,
    /// Apply this change set instead (the script returned an edited `cs`).
    Apply(ChangeSet),
    /// Apply nothing, count the message as handled (`false`).
    Skip,
}

/// What `after(cs, error)` decided about the outcome of an apply.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// The outcome stands (`true` or `()`).
    Keep,
    /// An apply error is ignored: the message counts as applied, none of it is (`false`).
    Ignore,
}

/// What `publish(cs)` decided about this node's commit.
#[derive(Debug, PartialEq)]
pub enum Publish {
    /// Publish what was captured (`true` or `()`).
    AsCaptured,
    /// Publish this change set instead (the script returned an edited `cs`).
    Send(ChangeSet),
    /// Publish nothing; the transaction commits on this node only (`false`).
    Nothing,
}

#[derive(Debug, Default, Clone, Copy)]
struct Hooks {
    before: bool,
    after: bool,
    publish: bool,
}

pub struct Interceptor {
    /// The script's path as given, to name it in messages.
    script: String,
    /// Locked for each run, which sets the run's limits; only the writer thread runs hooks,
    /// so the lock is never contended.
    engine: Mutex<Engine>,
    ast: AST,
    hooks: Hooks,
    counters: InterceptorCounters,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("script", &self.script)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl Interceptor {
    /// Reads and compiles the script at `path`, checks its hooks and runs its top-level
    /// statements once.
    pub fn load(path: &Path, counters: InterceptorCounters) -> Result<Interceptor, LoadError> {
        let script = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            script: script.clone(),
            source,
        })?;
        Self::compile(&script, &text, counters)
    }

    /// `load` for a script given as text; `script` names it in messages.
    pub fn compile(
        script: &str,
        text: &str,
        counters: InterceptorCounters,
    ) -> Result<Interceptor, LoadError> {
        let engine = sandbox::engine();
        let ast = engine.compile(text).map_err(|e| {
            let pos = e.position();
            LoadError::Compile {
                script: script.to_string(),
                line: pos.line().unwrap_or(0),
                column: pos.position().unwrap_or(0),
                message: e.err_type().to_string(),
            }
        })?;
        let invalid = |message: String| LoadError::Invalid {
            script: script.to_string(),
            message,
        };
        let mut hooks = Hooks::default();
        for (name, arity, shape) in HOOKS {
            let found: Vec<usize> = ast
                .iter_functions()
                .filter(|f| f.name == name)
                .map(|f| f.params.len())
                .collect();
            let ok = found.contains(&arity);
            if !found.is_empty() && !ok {
                return Err(invalid(format!(
                    "{name} must be defined as {shape}: it takes {} parameter(s), not {}",
                    arity, found[0]
                )));
            }
            match name {
                "before" => hooks.before = ok,
                "after" => hooks.after = ok,
                _ => hooks.publish = ok,
            }
        }
        if !(hooks.before || hooks.after || hooks.publish) {
            return Err(invalid(
                "defines none of the hooks before(cs), after(cs, error), publish(cs)".into(),
            ));
        }
        // Top-level statements run once, now (hooks cannot see their variables).
        engine.run_ast(&ast).map_err(|e| {
            invalid(format!(
                "its top-level statements failed: {}",
                sandbox::describe(&e, &sandbox::Limits::base())
            ))
        })?;
        Ok(Interceptor {
            script: script.to_string(),
            engine: Mutex::new(engine),
            ast,
            hooks,
            counters,
        })
    }

    pub fn script(&self) -> &str {
        &self.script
    }

    pub fn has_before(&self) -> bool {
        self.hooks.before
    }

    pub fn has_after(&self) -> bool {
        self.hooks.after
    }

    pub fn has_publish(&self) -> bool {
        self.hooks.publish
    }

    pub fn counters(&self) -> &InterceptorCounters {
        &self.counters
    }

    /// Runs `before(cs)` on a received change set.
    pub fn before(&self, cs: &ChangeSet, at: Position<'_>) -> Result<Before, ScriptError> {
        if !self.hooks.before {
            return Ok(Before::AsReceived);
        }
        let out = self.call("before", cs, (convert::to_dynamic(cs, at),))?;
        if let Some(keep) = self.as_flag(&out) {
            return Ok(if keep {
                Before::AsReceived
            } else {
                Before::Skip
            });
        }
        if out.is_map() {
            return convert::from_dynamic(out, cs)
                .map(Before::Apply)
                .map_err(|m| self.failed("before", format!("returned a bad change set: {m}")));
        }
        Err(self.wrong_return("before", &out, "the change set, true, false or ()"))
    }

    /// Runs `after(cs, error)` once `cs` was applied (`error` is `None`) or failed.
    pub fn after(
        &self,
        cs: &ChangeSet,
        error: Option<&str>,
        at: Position<'_>,
    ) -> Result<After, ScriptError> {
        if !self.hooks.after {
            return Ok(After::Keep);
        }
        let error: Dynamic = error.map(|e| e.to_string().into()).unwrap_or(Dynamic::UNIT);
        let out = self.call("after", cs, (convert::to_dynamic(cs, at), error))?;
        if let Some(keep) = self.as_flag(&out) {
            return Ok(if keep { After::Keep } else { After::Ignore });
        }
        if out.is_string() {
            let text = out.into_string().unwrap_or_default();
            return Err(self.failed("after", format!("refused the change set: {text}")));
        }
        Err(self.wrong_return("after", &out, "true, false, () or an error text"))
    }

    /// Runs `publish(cs)` on a change set this node is about to publish.
    pub fn publish(&self, cs: &ChangeSet, subject: &str) -> Result<Publish, ScriptError> {
        if !self.hooks.publish {
            return Ok(Publish::AsCaptured);
        }
        let at = Position { seq: None, subject };
        let out = self.call("publish", cs, (convert::to_dynamic(cs, at),))?;
        if let Some(keep) = self.as_flag(&out) {
            return Ok(if keep {
                Publish::AsCaptured
            } else {
                Publish::Nothing
            });
        }
        if out.is_map() {
            return convert::from_dynamic(out, cs)
                .map(Publish::Send)
                .map_err(|m| self.failed("publish", format!("returned a bad change set: {m}")));
        }
        Err(self.wrong_return("publish", &out, "the change set, true, false or ()"))
    }

    /// `/status` → `replication.interceptor`.
    pub fn status_json(&self) -> Json {
        let hooks: Vec<&str> = [
            (self.hooks.before, "before"),
            (self.hooks.after, "after"),
            (self.hooks.publish, "publish"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        let c = &self.counters;
        json!({
            "script": self.script,
            "hooks": hooks,
            "skipped": c.skipped.get(),
            "rescued": c.rescued.get(),
            "failures": c.failures.get(),
            "unpublished_changes": c.unpublished_changes.get(),
            "unpublished_sets": c.unpublished_sets.get(),
        })
    }

    /// Runs `hook` within the limits for `cs`.
    fn call(
        &self,
        hook: &'static str,
        cs: &ChangeSet,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, ScriptError> {
        let limits = sandbox::Limits::for_changeset(cs);
        let result = {
            // A panic inside Rhai while locked leaves an engine that is still usable.
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            limits.set(&mut engine);
            let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
            engine.call_fn_with_options::<Dynamic>(
                options,
                &mut Scope::new(),
                &self.ast,
                hook,
                args,
            )
        };
        result
            .map(Dynamic::flatten)
            .map_err(|e| self.failed(hook, sandbox::describe(&e, &limits)))
    }

    /// `true`/`()` → Some(true), `false` → Some(false), anything else → None.
    fn as_flag(&self, out: &Dynamic) -> Option<bool> {
        if out.is_unit() {
            return Some(true);
        }
        out.as_bool().ok()
    }

    fn wrong_return(&self, hook: &'static str, out: &Dynamic, expected: &str) -> ScriptError {
        let got = out.type_name();
        self.failed(hook, format!("must return {expected}, not {got}"))
    }

    fn failed(&self, hook: &'static str, message: String) -> ScriptError {
        self.counters.failures.inc();
        let e = ScriptError {
            script: self.script.clone(),
            hook,
            message,
        };
        tracing::warn!(error = %e, "interceptor run failed");
        e
    }
}

#[cfg(test)]
mod tests;
