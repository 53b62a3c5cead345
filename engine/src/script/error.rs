//! Script failures, located at file:line:col.
//!
//! A channel author fixes a script from the error alone, so every failure says where (the file
//! the faulty statement is in, which may be a `scripts/lib` module) and what, and the engine can
//! tell a script bug from a sandbox limit or a timeout. Rhai nests errors raised inside functions
//! (`ErrorInFunctionCall`); [`ScriptError::from_eval`] unwraps them to the innermost location and
//! keeps the call chain in the message.

use std::fmt;

use rhai::{EvalAltResult, ParseError, Position};

use super::state::Halt;

/// Which sandbox limit a script hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// `max_operations`: too many Rhai operations (an endless loop, mostly).
    Operations,
    /// `max_call_levels`: function calls nested too deep (runaway recursion).
    CallLevels,
    /// `max_stack_bytes`: the native stack the script used (deep recursion in debug builds).
    Stack,
    /// `max_expr_depth` / `max_function_expr_depth`: an expression nested too deep (compile time).
    ExprDepth,
    /// `max_string_size`.
    StringSize,
    /// `max_array_size`.
    ArraySize,
    /// `max_map_size`.
    MapSize,
    /// `max_modules`: too many `import`s in one run.
    Modules,
    /// Too many variables or functions (Rhai's own structural limits).
    Variables,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Operations => "max_operations",
            LimitKind::CallLevels => "max_call_levels",
            LimitKind::Stack => "max_stack_bytes",
            LimitKind::ExprDepth => "max_expr_depth",
            LimitKind::StringSize => "max_string_size",
            LimitKind::ArraySize => "max_array_size",
            LimitKind::MapSize => "max_map_size",
            LimitKind::Modules => "max_modules",
            LimitKind::Variables => "max_variables",
        })
    }
}

/// What kind of failure a [`ScriptError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptErrorKind {
    /// The script (or a `scripts/lib` module it imports) does not compile, or imports a module
    /// that is not in `scripts/lib`.
    Compile,
    /// The script failed while running (bad path, type error, `throw`, ...).
    Runtime,
    /// The script hit a sandbox limit.
    Limit(LimitKind),
    /// The script ran past its wall-clock budget.
    Timeout,
    /// The script ran but its value is not valid output (wrong type, not a resource, ...).
    Output,
    /// A script or library file could not be read.
    Io,
}

/// A failed compile or run, with the location in the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// The file the error is in (as given to compile: a path, or the name of inline source).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What went wrong, with the call chain when it happened inside a function.
    pub message: String,
    /// What kind of failure this is (the engine reports limits and timeouts apart).
    pub kind: ScriptErrorKind,
    /// What the script printed or logged before it failed, for the transaction log.
    pub logs: Vec<String>,
}

impl fmt::Display for ScriptError {
    /// `file:line:col: message` (or `file:line:` / `file:` when the position is unknown).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScriptError {}

fn line_col(pos: Position) -> (Option<usize>, Option<usize>) {
    (pos.line(), pos.position())
}

impl ScriptError {
    /// An error without a position.
    pub fn new(file: impl Into<String>, kind: ScriptErrorKind, message: impl Into<String>) -> Self {
        ScriptError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            kind,
            logs: Vec::new(),
        }
    }

    /// A compile error from Rhai's parser.
    pub fn from_parse(file: &str, err: &ParseError) -> Self {
        let (line, column) = line_col(err.position());
        let kind = match err.err_type() {
            rhai::ParseErrorType::ExprTooDeep => ScriptErrorKind::Limit(LimitKind::ExprDepth),
            _ => ScriptErrorKind::Compile,
        };
        ScriptError {
            file: file.to_owned(),
            line,
            column,
            message: format!("syntax error: {}", err.err_type()),
            kind,
            logs: Vec::new(),
        }
    }

    /// A run (or self-contained compile) error, unwrapped to the innermost location. `file` is
    /// the script's name, used until a function call moves the location into another source.
    pub fn from_eval(file: &str, err: &EvalAltResult) -> Self {
        // Where each nested call happened: (file, position of the call).
        let mut file = file.to_owned();
        let mut last_known: Option<(String, Position)> = None;
        let mut trail: Vec<String> = Vec::new();
        let mut cur = err;
        loop {
            match cur {
                EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                    if !pos.is_none() {
                        last_known = Some((file.clone(), *pos));
                    }
                    trail.push(format!("in {name}() called at {}", at(&file, *pos)));
                    if !src.is_empty() {
                        file = src.clone();
                    }
                    cur = inner;
                }
                EvalAltResult::ErrorInModule(name, inner, pos) => {
                    if !pos.is_none() {
                        last_known = Some((file.clone(), *pos));
                    }
                    trail.push(format!("in module {name} imported at {}", at(&file, *pos)));
                    if !name.is_empty() {
                        file = name.clone();
                    }
                    cur = inner;
                }
                _ => break,
            }
        }
        let mut pos = cur.position();
        if pos.is_none() {
            if let Some((f, p)) = last_known {
                file = f;
                pos = p;
            }
        }
        let (kind, mut message) = classify(cur);
        for t in trail.iter().rev() {
            message.push_str(" (");
            message.push_str(t);
            message.push(')');
        }
        let (line, column) = line_col(pos);
        ScriptError {
            file,
            line,
            column,
            message,
            kind,
            logs: Vec::new(),
        }
    }

    /// This error with the logs of the run that produced it.
    pub fn with_logs(mut self, logs: Vec<String>) -> Self {
        self.logs = logs;
        self
    }
}

fn at(file: &str, pos: Position) -> String {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
        (Some(l), None) => format!("{file}:{l}"),
        _ => file.to_owned(),
    }
}

/// The kind and the bare message (without Rhai's "(line x, position y)" suffix).
fn classify(err: &EvalAltResult) -> (ScriptErrorKind, String) {
    use EvalAltResult as E;
    match err {
        E::ErrorTooManyOperations(..) => (
            ScriptErrorKind::Limit(LimitKind::Operations),
            "too many operations (max_operations): an endless loop?".into(),
        ),
        E::ErrorStackOverflow(..) => (
            ScriptErrorKind::Limit(LimitKind::CallLevels),
            "function calls nested too deep (max_call_levels): runaway recursion?".into(),
        ),
        E::ErrorTooManyModules(..) => (
            ScriptErrorKind::Limit(LimitKind::Modules),
            "too many modules imported (max_modules)".into(),
        ),
        E::ErrorTooManyVariables(..) => (
            ScriptErrorKind::Limit(LimitKind::Variables),
            "too many variables".into(),
        ),
        E::ErrorDataTooLarge(what, ..) => {
            let lower = what.to_ascii_lowercase();
            let (limit, name) = if lower.contains("string") {
                (LimitKind::StringSize, "max_string_size")
            } else if lower.contains("map") {
                (LimitKind::MapSize, "max_map_size")
            } else {
                (LimitKind::ArraySize, "max_array_size")
            };
            (
                ScriptErrorKind::Limit(limit),
                format!("{what} too large ({name})"),
            )
        }
        E::ErrorTerminated(token, ..) => match token.clone().try_cast::<Halt>() {
            Some(Halt::Timeout(budget)) => (
                ScriptErrorKind::Timeout,
                format!("script ran past its time budget of {budget:?}"),
            ),
            Some(Halt::Stack(max)) => (
                ScriptErrorKind::Limit(LimitKind::Stack),
                format!("script used more than {max} bytes of stack (max_stack_bytes): runaway recursion?"),
            ),
            Some(Halt::Skip(reason)) => (
                ScriptErrorKind::Runtime,
                format!("skip({reason:?}) is not allowed here"),
            ),
            Some(Halt::Reject(reason)) => (
                ScriptErrorKind::Runtime,
                format!("reject({reason:?}) is not allowed here"),
            ),
            None => (ScriptErrorKind::Runtime, "script terminated".into()),
        },
        E::ErrorParsing(p, ..) => {
            let kind = match p {
                rhai::ParseErrorType::ExprTooDeep => ScriptErrorKind::Limit(LimitKind::ExprDepth),
                _ => ScriptErrorKind::Compile,
            };
            (kind, format!("syntax error: {p}"))
        }
        E::ErrorModuleNotFound(..) => (ScriptErrorKind::Compile, bare(err)),
        E::ErrorRuntime(d, ..) => (ScriptErrorKind::Runtime, d.to_string()),
        _ => (ScriptErrorKind::Runtime, bare(err)),
    }
}

/// Rhai's message without its " (line x, position y)" suffix.
fn bare(err: &EvalAltResult) -> String {
    let mut text = err.to_string();
    if !err.position().is_none() {
        if let Some(i) = text.rfind(" (line ") {
            text.truncate(i);
        }
    }
    text
}
