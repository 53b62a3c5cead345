//! The sandbox limits a script runs under.
//!
//! Rhai's built-in defaults differ between debug and release builds (8 call levels in debug, 64
//! in release), so a script could pass in one and fail in the other: every limit is set
//! explicitly from this struct, the engine configuration's `[script]` table (unknown keys
//! rejected); `time_budget` and `inline_slice` read `"1s"`, `"250ms"`, `"250us"` or a number
//! of milliseconds. As in Rhai, 0 means "no limit" for operations, expression depths,
//! string/array/map sizes; it also does for `max_stack_bytes` and `time_budget`. 0 call levels
//! forbids function calls, 0 modules forbids `import`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Limits for one script run (compile-time depth limits apply when compiling). Serialized so
/// that the configuration's environment overrides (`ORBITER_SCRIPT_…`) find every key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptLimits {
    /// Rhai operations per run; an endless loop stops here. 0 means unlimited (then only the
    /// time budget stops it).
    pub max_operations: u64,
    /// Nested function calls (scripted and library functions).
    pub max_call_levels: usize,
    /// Expression nesting at the top level of a script (checked at compile time).
    pub max_expr_depth: usize,
    /// Expression nesting inside functions (checked at compile time).
    pub max_function_expr_depth: usize,
    /// Bytes in one string.
    pub max_string_size: usize,
    /// Elements in one array. Rhai re-measures an array on every push (O(n)), so filling a
    /// large one is quadratic: keep this modest.
    pub max_array_size: usize,
    /// Properties in one object map.
    pub max_map_size: usize,
    /// Bytes of JSON one transaction handle (`transaction()`, `batch()`) may hold: its entries
    /// live outside Rhai's own size limits, so without this a loop of `tx.create(...)` could
    /// take the process's memory. 0 means unlimited.
    pub max_output_bytes: usize,
    /// `import`s per run (embedded library modules count).
    pub max_modules: usize,
    /// Native stack a run may use, measured from where it starts. Rhai recursion costs ~6 KiB a
    /// level in release and ~40-70 KiB in debug builds; this guard stops a script before it
    /// overflows a 2 MiB worker thread stack, whatever the other limits are set to.
    pub max_stack_bytes: usize,
    /// Wall-clock time per run, checked every 1024 operations.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub time_budget: Duration,
    /// How long a run may go on the thread that received the message (no hand-off to another
    /// thread, the cheap and quick path) before it stops and runs again from the start on the
    /// transform pool, where it has the whole `time_budget`. Bounds how long one message's
    /// scripts hold up the other connections served by that thread (with one connection and
    /// one message at a time, the sender's next message). Read with the clock, every 1024
    /// operations: a shorter script always finishes where it started. 0: every run on the pool.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub inline_slice: Duration,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        ScriptLimits {
            max_operations: 5_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 1 << 20,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_output_bytes: 32 << 20,
            max_modules: 32,
            max_stack_bytes: 1 << 20,
            time_budget: Duration::from_secs(1),
            inline_slice: Duration::from_micros(250),
        }
    }
}

impl ScriptLimits {
    /// The slice runs get on the receiving thread, if they get one: none when it is zero or
    /// would not end before the time budget does (a run stopped there fails, it is not moved).
    pub fn inline_slice(&self) -> Option<Duration> {
        let before_budget = self.time_budget.is_zero() || self.inline_slice < self.time_budget;
        (!self.inline_slice.is_zero() && before_budget).then_some(self.inline_slice)
    }
}

/// Reads `"1s"`, `"1.5s"`, `"250ms"`, `"250us"`, `"2m"` or an integer number of milliseconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        // An environment variable is always text: `ORBITER_SCRIPT_TIME_BUDGET=1500` too.
        Raw::Text(s) if s.trim().parse::<u64>().is_ok() => {
            Ok(Duration::from_millis(s.trim().parse().expect("checked")))
        }
        Raw::Text(s) => parse_duration(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "bad duration {s:?}: expected e.g. \"1s\", \"250ms\" or \"2m\""
            ))
        }),
    }
}

/// The shortest exact text [`parse_duration`] reads back: `"1s"`, `"250ms"`, `"250us"`.
fn duration_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let text = if Duration::from_secs(d.as_secs()) == *d {
        format!("{}s", d.as_secs())
    } else if d.as_millis() * 1_000 == d.as_micros() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    };
    s.serialize_str(&text)
}

/// Parses `"1s"`, `"1.5s"`, `"250ms"`, `"250us"`, `"2m"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 0.000_001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * unit > 86_400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(v * unit))
}
