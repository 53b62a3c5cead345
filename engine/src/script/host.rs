//! [`ScriptHost`]: one sandboxed Rhai Engine, compiling and running filter and transform scripts.
//!
//! One host per worker thread: an Engine shared between threads serialises on its string
//! interner (measured in `DEPENDENCIES.md`), and one Engine plus one compiled AST per worker
//! doubled throughput. The Engine starts from `Engine::new_raw()` plus the standard package, so
//! nothing prints to stdout and nothing loads files: `print`/`debug` go to the run's log, the
//! module resolver only sees `scripts/lib`, `eval` is disabled, and every limit is set from
//! [`ScriptLimits`]. Variables are strict (a misspelt name fails at compile time, which is what
//! `orbiter check` reports), and imports are resolved at compile time (`compile_into_self_contained`),
//! so a bad import is a compile error too.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;

use rhai::packages::{Package, StandardPackage};
use rhai::{Caches, Dynamic, Engine, EvalAltResult, Map, Position, Scope, AST, INT};

use super::error::{LimitKind, ScriptError, ScriptErrorKind};
use super::limits::ScriptLimits;
use super::lookup::{self, Tables};
use super::message::{self, ScriptMessage};
use super::output::transform_output;
use super::resolver::{LibModule, LibResolver};
use super::state::{self, Halt, RunEnd, RunGuard};
use super::{dates, fhir, util, v2, xml};
use super::{FilterOutcome, ScriptContext, TransformOutcome};
use crate::hl7::Message;

/// A sandboxed script engine with the Orbiter API and the `scripts/lib` modules.
pub struct ScriptHost {
    engine: Engine,
    limits: ScriptLimits,
    /// Import names available from `scripts/lib`.
    modules: Vec<String>,
    /// Library files that did not compile or whose top level failed: importing one fails with
    /// its error, and nothing else is affected.
    lib_errors: Vec<ScriptError>,
    /// Tells hosts apart: a [`Script`]'s cache holds this host's functions.
    pub(super) id: u64,
}

/// The next [`ScriptHost::id`].
static NEXT_HOST_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A compiled script (filter or transform) and Rhai's function-resolution cache for it.
///
/// `Engine::eval_ast` starts every run with an empty cache, so each run resolved every function
/// it calls again (hashing, then a lookup through the global, script and module namespaces):
/// ~5% of a Patient + Encounter transform. The cache belongs to this AST and this host's
/// Engine (function hashes resolve the same way for both on every run), so it is kept here.
/// Not `Send`, like the host: compiled per worker thread.
pub struct Script {
    ast: AST,
    /// The resolution cache, and the host whose functions it holds (0: none yet). A script run
    /// by another host than the last one starts from an empty cache.
    pub(super) caches: RefCell<(u64, Caches)>,
}

impl Script {
    fn new(ast: AST) -> Script {
        Script {
            ast,
            caches: RefCell::new((0, Caches::new())),
        }
    }

    /// How errors and `debug` lines name the script.
    pub fn source(&self) -> &str {
        self.ast.source().unwrap_or("<script>")
    }

    /// An error about the value the script ended with (not a resource, not a boolean), at
    /// the line and column of its last top-level statement: where that value comes from.
    fn value_error(&self, message: String) -> ScriptError {
        let mut e = ScriptError::new(self.source(), ScriptErrorKind::Output, message);
        if let Some(last) = self.ast.statements().last() {
            let at = last.position();
            e.line = at.line();
            e.column = at.position();
        }
        e
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("source", &self.source())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ScriptHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptHost")
            .field("limits", &self.limits)
            .field("modules", &self.modules)
            .finish_non_exhaustive()
    }
}

fn apply_limits(engine: &mut Engine, l: &ScriptLimits) {
    engine.set_max_operations(l.max_operations);
    engine.set_max_call_levels(l.max_call_levels);
    engine.set_max_expr_depths(l.max_expr_depth, l.max_function_expr_depth);
    engine.set_max_string_size(l.max_string_size);
    engine.set_max_array_size(l.max_array_size);
    engine.set_max_map_size(l.max_map_size);
    engine.set_max_modules(l.max_modules);
}

/// `file:line:col` of a position (for `debug` lines).
fn at(source: Option<&str>, pos: Position) -> String {
    let file = source.unwrap_or("<script>");
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_owned(),
    }
}

/// Names every script is compiled with (strict variables): `msg` and `ctx`.
fn compile_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    // Plain variables, not constants: the optimiser must not fold their compile-time values.
    scope.push("msg", ());
    scope.push("ctx", ());
    scope
}

/// Where `import "path"` appears in the source, for errors Rhai reports without a position.
fn find_import(source: &str, path: &str) -> Option<(usize, usize)> {
    let quoted = format!("\"{path}\"");
    for (i, line) in source.lines().enumerate() {
        let mut from = 0;
        while let Some(off) = line[from..].find(&quoted) {
            let at = from + off;
            let before = line[..at].trim_end();
            if let Some(stmt) = before.strip_suffix("import") {
                let col = stmt.chars().count() + 1;
                return Some((i + 1, col));
            }
            from = at + quoted.len();
        }
    }
    None
}

fn compile_error(name: &str, source: &str, err: &EvalAltResult) -> ScriptError {
    let mut e = ScriptError::from_eval(name, err);
    if !matches!(e.kind, ScriptErrorKind::Limit(_)) {
        e.kind = ScriptErrorKind::Compile;
    }
    if e.line.is_none() && e.file == name {
        if let Some(path) = e
            .message
            .strip_prefix("cannot import \"")
            .and_then(|rest| rest.split('"').next())
        {
            if let Some((line, col)) = find_import(source, path) {
                e.line = Some(line);
                e.column = Some(col);
            }
        }
    }
    e
}

/// The library's modules by import name: compiled, or the error that names the file (a broken
/// file breaks only the scripts that import it).
type Lib = BTreeMap<String, Result<LibModule, ScriptError>>;

fn read_lib(engine: &Engine, lib_dir: &Path) -> Result<Lib, ScriptError> {
    let mut modules = BTreeMap::new();
    let entries = match std::fs::read_dir(lib_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(modules),
        Err(e) => {
            return Err(ScriptError::new(
                lib_dir.display().to_string(),
                ScriptErrorKind::Io,
                e.to_string(),
            ))
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai") && p.is_file())
        .collect();
    files.sort();
    for path in files {
        let label = super::label_under(&path, lib_dir.parent().unwrap_or(lib_dir));
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            continue;
        };
        let compiled = std::fs::read_to_string(&path)
            .map_err(|e| ScriptError::new(&label, ScriptErrorKind::Io, e.to_string()))
            .and_then(|source| {
                let mut ast = engine
                    .compile(&source)
                    .map_err(|e| ScriptError::from_parse(&label, &e))?;
                ast.set_source(label.as_str());
                Ok(LibModule {
                    label: label.clone(),
                    ast,
                })
            });
        modules.insert(name, compiled);
    }
    Ok(modules)
}

fn ctx_map(ctx: &ScriptContext) -> Map {
    let mut m = Map::new();
    m.insert("channel".into(), ctx.channel.as_str().into());
    m.insert(
        "transaction_id".into(),
        ctx.transaction_id
            .and_then(|t| INT::try_from(t).ok())
            .map_or(Dynamic::UNIT, Dynamic::from_int),
    );
    m
}

/// The outcome of one evaluation, before interpretation as a filter or transform.
struct Ran {
    result: Result<Dynamic, ScriptError>,
    end: RunEnd,
}

impl ScriptHost {
    /// Builds the Engine and compiles `lib_dir/*.rhai` (the only modules `import` can load; a
    /// missing directory means no modules). A library file that does not compile, or fails when
    /// its top level runs, is kept as its error ([`ScriptHost::lib_errors`]): the scripts that
    /// import it fail with that error, the others are not affected. Only an unreadable
    /// directory is an error here.
    pub fn new(lib_dir: &Path, limits: ScriptLimits) -> Result<ScriptHost, ScriptError> {
        let mut engine = Engine::new_raw();
        engine.register_global_module(StandardPackage::new().as_shared_module());
        apply_limits(&mut engine, &limits);
        engine.set_strict_variables(true);
        engine.disable_symbol("eval");
        engine.on_print(|s| state::log(s.to_owned()));
        engine.on_debug(|s, src, pos| state::log(format!("[debug] {}: {s}", at(src, pos))));
        engine.on_progress(state::progress);

        let tables = Rc::new(Tables::new());
        message::register(&mut engine);
        fhir::register(&mut engine);
        dates::register(&mut engine);
        util::register(&mut engine);
        super::sort::register(&mut engine);
        v2::register(&mut engine);
        super::v2fhir::register(&mut engine);
        xml::register(&mut engine);
        // The closures hold the table cache: it lives as long as the host.
        lookup::register(&mut engine, tables);

        let lib = read_lib(&engine, lib_dir)?;
        let lib_errors: Vec<ScriptError> = lib
            .values()
            .filter_map(|m| m.as_ref().err().cloned())
            .collect();
        let compiled: Vec<String> = lib
            .iter()
            .filter(|(_, m)| m.is_ok())
            .map(|(name, _)| name.clone())
            .collect();
        let resolver = LibResolver::new(lib_dir.display().to_string(), lib);
        let modules = resolver.names();
        engine.set_module_resolver(resolver);

        let mut host = ScriptHost {
            engine,
            limits,
            modules,
            lib_errors,
            id: NEXT_HOST_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let failed = host.load_modules(lib_dir, &compiled);
        host.lib_errors.extend(failed);
        Ok(host)
    }

    /// The library files that did not compile or whose top level failed, each naming its file
    /// (and line and column): for the reload report and `orbiter check`.
    pub fn lib_errors(&self) -> &[ScriptError] {
        &self.lib_errors
    }

    /// Evaluates every `compiled` library module once, so its errors surface now and runs find
    /// it cached; returns the errors of those that failed.
    fn load_modules(&self, lib_dir: &Path, compiled: &[String]) -> Vec<ScriptError> {
        let guard = RunGuard::start(
            self.limits.time_budget.saturating_mul(4),
            self.limits.max_stack_bytes,
            lib_dir,
            None,
        );
        let resolver = self.engine.module_resolver();
        let mut failed = Vec::new();
        for name in compiled {
            if let Err(e) = resolver.resolve(&self.engine, None, name, Position::NONE) {
                let label = lib_dir.join(format!("{name}.rhai")).display().to_string();
                let mut err = ScriptError::from_eval(&label, &e);
                if err.kind == ScriptErrorKind::Runtime {
                    err.kind = ScriptErrorKind::Compile;
                }
                failed.push(err);
            }
        }
        // What the library printed goes with the last failure (the one it most likely led to).
        let logs = guard.finish().logs;
        if let Some(last) = failed.pop() {
            failed.push(last.with_logs(logs));
        }
        failed
    }

    /// The limits every run of this host uses.
    pub fn limits(&self) -> &ScriptLimits {
        &self.limits
    }

    /// The module names `import` accepts (stems of `scripts/lib/*.rhai`).
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// The Engine, for tests that check its limits.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads and compiles a script file; errors carry the path as given, line and column.
    pub fn compile_file(&self, path: &Path) -> Result<Script, ScriptError> {
        let name = path.display().to_string();
        let source = std::fs::read_to_string(path)
            .map_err(|e| ScriptError::new(&name, ScriptErrorKind::Io, e.to_string()))?;
        self.compile_source(&name, &source)
    }

    /// Compiles script text; `name` is how errors and `debug` lines name it.
    pub fn compile_source(&self, name: &str, source: &str) -> Result<Script, ScriptError> {
        let scope = compile_scope();
        // Compiling runs module resolution, which may evaluate library code: guard it too.
        let guard = RunGuard::start(
            self.limits.time_budget.saturating_mul(4),
            self.limits.max_stack_bytes,
            Path::new("."),
            None,
        );
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.engine.compile_into_self_contained(&scope, source)
        }));
        drop(guard.finish());
        match result {
            Ok(Ok(mut ast)) => {
                ast.set_source(name);
                Ok(Script::new(ast))
            }
            Ok(Err(e)) => Err(compile_error(name, source, &e)),
            Err(_) => Err(ScriptError::new(
                name,
                ScriptErrorKind::Compile,
                "internal error: the script compiler panicked",
            )),
        }
    }

    /// `Engine::eval_ast_with_scope`, with the script's own resolution cache.
    fn eval(&self, script: &Script, scope: &mut Scope) -> Result<Dynamic, Box<EvalAltResult>> {
        let ast = &script.ast;
        let mut global = self.engine.new_global_runtime_state();
        global.source = ast.source().map(Into::into);
        global.lib.push(ast.shared_lib().clone());
        global.embedded_module_resolver = ast.resolver().cloned();
        let mut cached = script.caches.borrow_mut();
        let (host, caches) = &mut *cached;
        if *host != self.id {
            *caches = Caches::new();
            *host = self.id;
        }
        // Deprecated, not gone: the only call that takes the caches (rhai 1.27, locked).
        #[allow(deprecated)]
        let result = self
            .engine
            .eval_statements_raw(&mut global, caches, scope, ast.statements());
        if result.is_err() {
            // An error may leave nested cache levels behind: start the next run clean.
            *caches = Caches::new();
        }
        result
    }

    fn run(&self, script: &Script, input: &ScriptInput<'_>, ctx: &ScriptContext) -> Ran {
        let name = script.source();
        let mut scope = Scope::new();
        let message = match input {
            ScriptInput::Hl7(msg) => {
                let shared = Rc::new((*msg).clone());
                scope.push("msg", ScriptMessage::from_rc(shared.clone()));
                Some(shared)
            }
            ScriptInput::Document { value, .. } => {
                scope.push("msg", value.clone());
                None
            }
        };
        scope.push_constant("ctx", ctx_map(ctx));
        let guard = RunGuard::start(
            self.limits.time_budget,
            self.limits.max_stack_bytes,
            &ctx.script_dir,
            message,
        );
        super::state::set_output_tree(ctx.output_tree);
        super::state::set_max_output_bytes(self.limits.max_output_bytes);
        if let ScriptInput::Document { raw, .. } = input {
            super::state::set_seed(raw);
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.eval(script, &mut scope)));
        if result.is_err() {
            script.caches.replace((0, Caches::new()));
        }
        let end = guard.finish();
        let result = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ScriptError::from_eval(name, &e)),
            Err(_) => Err(ScriptError::new(
                name,
                ScriptErrorKind::Runtime,
                "internal error: the script engine panicked",
            )),
        };
        Ran { result, end }
    }

    /// Runs a filter. The script's value must be a bool (`true` keeps the message); `skip()` or
    /// `skip("reason")` filters it out with a reason. `reject()` is an error in a filter.
    pub fn run_filter<'a>(
        &self,
        script: &Script,
        input: impl Into<ScriptInput<'a>>,
        ctx: &ScriptContext,
    ) -> Result<FilterOutcome, ScriptError> {
        filter_outcome(script, self.run(script, &input.into(), ctx))
    }

    /// Runs a filter on a non-HL7 `msg` (a C-CDA `XmlNode`, a CSV row map, a FHIR map); `raw`
    /// is the journaled input, which seeds deterministic ids.
    pub fn run_filter_value(
        &self,
        script: &Script,
        msg: Dynamic,
        raw: &[u8],
        ctx: &ScriptContext,
    ) -> Result<FilterOutcome, ScriptError> {
        self.run_filter(script, ScriptInput::Document { value: msg, raw }, ctx)
    }

    /// Runs a transform. Its final value becomes the output (see [`super::output`]): a Bundle
    /// map as is; one resource map, or an array of resource/entry maps, wrapped into a
    /// transaction Bundle; a string or the message itself as a JSON string (rewritten HL7).
    /// `skip("reason")` and `reject("reason")` end the run with those outcomes.
    pub fn run_transform<'a>(
        &self,
        script: &Script,
        input: impl Into<ScriptInput<'a>>,
        ctx: &ScriptContext,
    ) -> Result<TransformOutcome, ScriptError> {
        let input = input.into();
        let seed = input.seed_bytes();
        transform_outcome(script, self.run(script, &input, ctx), seed)
    }

    /// Runs a transform on a non-HL7 `msg` (a C-CDA `XmlNode`, a CSV row map, a FHIR map);
    /// `raw` is the journaled input, which seeds deterministic ids and `fullUrl`s (the same
    /// input gives the same Bundle).
    pub fn run_transform_value(
        &self,
        script: &Script,
        msg: Dynamic,
        raw: &[u8],
        ctx: &ScriptContext,
    ) -> Result<TransformOutcome, ScriptError> {
        self.run_transform(script, ScriptInput::Document { value: msg, raw }, ctx)
    }
}

/// Interprets a filter run.
fn filter_outcome(script: &Script, ran: Ran) -> Result<FilterOutcome, ScriptError> {
    let source = script.source();
    let Ran { result, end } = ran;
    let logs = end.logs;
    match end.halt {
        Some(Halt::Skip(reason)) => {
            return Ok(FilterOutcome {
                keep: false,
                reason: (!reason.is_empty()).then_some(reason),
                logs,
            })
        }
        Some(Halt::Reject(reason)) => {
            let mut e = match result {
                Err(e) => e,
                Ok(_) => ScriptError::new(source, ScriptErrorKind::Runtime, ""),
            };
            e.kind = ScriptErrorKind::Runtime;
            e.message = format!(
                "reject({reason:?}) cannot be used in a filter: return false or call skip() to filter, reject in the transform"
            );
            return Err(e.with_logs(logs));
        }
        Some(h @ (Halt::Timeout(_) | Halt::Stack(_))) => {
            return Err(match result {
                Err(e) => e,
                Ok(_) => halted(source, &h),
            }
            .with_logs(logs));
        }
        None => {}
    }
    let value = result.map_err(|e| e.with_logs(logs.clone()))?;
    match value.as_bool() {
        Ok(keep) => Ok(FilterOutcome {
            keep,
            reason: None,
            logs,
        }),
        Err(_) => Err(script
            .value_error(format!(
                "a filter must end with true (keep) or false (filter out), not {}",
                value.type_name()
            ))
            .with_logs(logs)),
    }
}

/// Interprets a transform run; `seed` derives the fullUrls of wrapped resources.
fn transform_outcome(
    script: &Script,
    ran: Ran,
    seed: &[u8],
) -> Result<TransformOutcome, ScriptError> {
    let source = script.source();
    let Ran { result, end } = ran;
    let logs = end.logs;
    match end.halt {
        Some(Halt::Skip(reason)) => return Ok(TransformOutcome::Skip { reason, logs }),
        Some(Halt::Reject(reason)) => return Ok(TransformOutcome::Reject { reason, logs }),
        Some(h @ (Halt::Timeout(_) | Halt::Stack(_))) => {
            // A limit the script caught (through a closure call) still fails the run.
            return Err(match result {
                Err(e) => e,
                Ok(_) => halted(source, &h),
            }
            .with_logs(logs));
        }
        None => {}
    }
    let value = result.map_err(|e| e.with_logs(logs.clone()))?;
    if super::output::wrote_nothing(&value) {
        return Ok(TransformOutcome::Skip {
            reason: super::output::WROTE_NOTHING.into(),
            logs,
        });
    }
    match transform_output(value, seed) {
        Ok((json, tree)) => Ok(TransformOutcome::Output {
            output: crate::journal::StepOutput::from_raw(json),
            tree,
            logs,
        }),
        Err(m) => Err(script.value_error(m).with_logs(logs)),
    }
}

/// What a script sees as `msg`.
#[derive(Clone)]
pub enum ScriptInput<'a> {
    /// An HL7 v2 message, with path access.
    Hl7(&'a Message),
    /// A parsed document (FHIR resource, C-CDA tree, CSV row); `raw` is its journaled bytes,
    /// which seed deterministic ids.
    Document { value: Dynamic, raw: &'a [u8] },
}

impl ScriptInput<'_> {
    fn seed_bytes(&self) -> &[u8] {
        match self {
            ScriptInput::Hl7(msg) => msg.as_str().as_bytes(),
            ScriptInput::Document { raw, .. } => raw,
        }
    }
}

impl<'a> From<&'a Message> for ScriptInput<'a> {
    fn from(msg: &'a Message) -> ScriptInput<'a> {
        ScriptInput::Hl7(msg)
    }
}

fn halted(file: &str, h: &Halt) -> ScriptError {
    match h {
        Halt::Timeout(b) => ScriptError::new(
            file,
            ScriptErrorKind::Timeout,
            format!("script ran past its time budget of {b:?}"),
        ),
        Halt::Stack(max) => ScriptError::new(
            file,
            ScriptErrorKind::Limit(LimitKind::Stack),
            format!("script used more than {max} bytes of stack (max_stack_bytes)"),
        ),
        Halt::Skip(_) | Halt::Reject(_) => {
            ScriptError::new(file, ScriptErrorKind::Runtime, "script halted")
        }
    }
}
