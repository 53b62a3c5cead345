//! Per-run state: logs, the wall-clock deadline, the stack guard, `skip`/`reject`.
//!
//! Rhai calls back into the host (`print`, `on_progress`, registered functions) through closures
//! fixed when the Engine is built, which cannot hold a run's state. The run's state therefore
//! lives in a thread-local: a run executes synchronously on the calling thread (a host is not
//! `Send`: one per worker thread), so the thread-local is exactly "this run". [`RunGuard`]
//! installs it and takes it back out, restoring whatever was there before.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, EvalAltResult, Position};

use crate::hl7::Message;

/// Why a run was stopped from the host side. Carried as the token of Rhai's `ErrorTerminated`,
/// which scripts cannot catch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The wall-clock budget ran out.
    Timeout(Duration),
    /// The stack guard tripped (bytes allowed).
    Stack(usize),
    /// `skip("reason")`.
    Skip(String),
    /// `reject("reason")`.
    Reject(String),
}

/// At most this many log lines are kept per run; the rest are counted.
const MAX_LOG_LINES: usize = 1000;
/// At most this many bytes of log per run.
const MAX_LOG_BYTES: usize = 256 * 1024;
/// A single log line is cut at this many bytes.
const MAX_LINE_BYTES: usize = 8 * 1024;
/// The stack is checked every this many operations (a power of two).
const STACK_EVERY: u64 = 4;
/// The clock is read every this many operations (a power of two, a multiple of STACK_EVERY).
const CLOCK_EVERY: u64 = 1024;

#[derive(Default)]
struct Run {
    logs: Vec<String>,
    log_bytes: usize,
    dropped: usize,
    halt: Option<Halt>,
    script_dir: PathBuf,
    message: Option<Rc<Message>>,
    seed: Option<[u8; 32]>,
    counter: u64,
    /// The run's output is also wanted as a tree (see [`super::ScriptContext::output_tree`]).
    output_tree: bool,
    /// [`message_offset`], once read.
    msh_offset: Option<Option<i16>>,
    /// The run's [`super::ScriptLimits::max_output_bytes`] (0: unlimited).
    max_output_bytes: usize,
}

#[derive(Clone, Copy)]
struct Guard {
    stack_base: usize,
    max_stack: usize,
    deadline: Option<Instant>,
    budget: Duration,
}

thread_local! {
    static GUARD: Cell<Option<Guard>> = const { Cell::new(None) };
    static RUN: RefCell<Run> = RefCell::new(Run::default());
}

/// The address of a local: where the stack is now (it grows down on every supported target).
#[inline(always)]
fn stack_pointer() -> usize {
    let probe = 0u8;
    std::hint::black_box(&probe) as *const u8 as usize
}

/// Installs the state of one run on this thread; dropping it restores the previous state.
pub struct RunGuard {
    prev_guard: Option<Guard>,
    prev_run: Option<Run>,
}

/// What a run leaves behind.
pub struct RunEnd {
    /// Log lines, with a final "... dropped" line if some were cut.
    pub logs: Vec<String>,
    /// `skip`/`reject`/timeout recorded during the run, even if the script caught the error.
    pub halt: Option<Halt>,
}

impl RunGuard {
    /// Starts a run: the deadline is now + `budget` (none when zero), the stack base is the
    /// caller's frame (`max_stack` 0: no stack guard).
    pub fn start(
        budget: Duration,
        max_stack: usize,
        script_dir: &Path,
        message: Option<Rc<Message>>,
    ) -> RunGuard {
        let guard = Guard {
            stack_base: stack_pointer(),
            max_stack,
            deadline: if budget.is_zero() {
                None
            } else {
                Instant::now().checked_add(budget)
            },
            budget,
        };
        let prev_guard = GUARD.with(|g| g.replace(Some(guard)));
        let run = Run {
            script_dir: script_dir.to_path_buf(),
            message,
            ..Run::default()
        };
        let prev_run = RUN.with(|r| std::mem::replace(&mut *r.borrow_mut(), run));
        RunGuard {
            prev_guard,
            prev_run: Some(prev_run),
        }
    }

    /// Ends the run and returns its logs and halt reason.
    pub fn finish(mut self) -> RunEnd {
        let prev = self.prev_run.take().unwrap_or_default();
        let run = RUN.with(|r| std::mem::replace(&mut *r.borrow_mut(), prev));
        let mut logs = run.logs;
        if run.dropped > 0 {
            logs.push(format!("... {} more log lines dropped", run.dropped));
        }
        RunEnd {
            logs,
            halt: run.halt,
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        GUARD.with(|g| g.set(self.prev_guard));
        if let Some(prev) = self.prev_run.take() {
            RUN.with(|r| *r.borrow_mut() = prev);
        }
    }
}

/// The `on_progress` callback: stops the run past its deadline or stack allowance.
///
/// Rhai calls it on every operation; the guard is looked at on every [`STACK_EVERY`]th only
/// (the thread-local and the checks were ~4% of a mapping's instructions). A script recursing
/// meanwhile goes at most that many levels further (~6 KiB each in release, 40-70 KiB in
/// debug builds), well inside what `max_stack_bytes` leaves of the worker's stack.
#[inline]
pub fn progress(ops: u64) -> Option<Dynamic> {
    if ops & (STACK_EVERY - 1) != 0 {
        return None;
    }
    let g = GUARD.with(|g| g.get())?;
    let used = g.stack_base.saturating_sub(stack_pointer());
    if g.max_stack > 0 && used > g.max_stack {
        return Some(Dynamic::from(record(Halt::Stack(g.max_stack))));
    }
    if ops & (CLOCK_EVERY - 1) == 0 {
        if let Some(deadline) = g.deadline {
            if Instant::now() >= deadline {
                return Some(Dynamic::from(record(Halt::Timeout(g.budget))));
            }
        }
    }
    None
}

/// Records the first halt of the run and returns it.
fn record(h: Halt) -> Halt {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        if r.halt.is_none() {
            r.halt = Some(h.clone());
        }
    });
    h
}

/// Stops the run with `h` (an error scripts cannot catch), remembering it for the outcome.
pub fn halt(h: Halt) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(Dynamic::from(record(h)), Position::NONE).into()
}

/// Adds a line to the run's log (capped in lines and bytes).
pub fn log(mut line: String) {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        if r.logs.len() >= MAX_LOG_LINES || r.log_bytes >= MAX_LOG_BYTES {
            r.dropped += 1;
            return;
        }
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str("...");
        }
        r.log_bytes += line.len();
        r.logs.push(line);
    });
}

/// The directory of the running script (lookup tables live there).
pub fn script_dir() -> PathBuf {
    RUN.with(|r| r.borrow().script_dir.clone())
}

/// Whether this run's output is wanted as a tree too.
pub fn set_output_tree(on: bool) {
    RUN.with(|r| r.borrow_mut().output_tree = on);
}

/// The UTC offset (minutes) MSH-7 of the run's HL7 message was sent with, if any: the sender's
/// local zone, which HL7 says its times without an offset are in. Read once per run.
pub fn message_offset() -> Option<i16> {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(known) = r.msh_offset {
            return known;
        }
        let offset = r
            .message
            .as_ref()
            .and_then(|m| m.timestamp())
            .and_then(|t| super::dates::Dtm::parse(&t).ok().flatten())
            .and_then(|d| d.offset_minutes);
        r.msh_offset = Some(offset);
        offset
    })
}

/// Sets the run's [`super::ScriptLimits::max_output_bytes`].
pub fn set_max_output_bytes(bytes: usize) {
    RUN.with(|r| r.borrow_mut().max_output_bytes = bytes);
}

/// See [`set_max_output_bytes`]; 0 means unlimited.
pub fn max_output_bytes() -> usize {
    RUN.with(|r| r.borrow().max_output_bytes)
}

/// See [`set_output_tree`].
pub fn output_tree() -> bool {
    RUN.with(|r| r.borrow().output_tree)
}

/// Seeds [`next_sequence`] from a run's raw input when it has no HL7 message (a document, a
/// CSV row): the same input gives the same ids, different inputs different ones.
pub fn set_seed(raw: &[u8]) {
    RUN.with(|r| r.borrow_mut().seed = Some(super::util::sha256_bytes(raw)));
}

/// A fresh 32-byte value for an entry without a natural key: SHA-256 of the message, then a
/// counter, so the same message run through the same script gives the same values.
pub fn next_sequence() -> ([u8; 32], u64) {
    RUN.with(|r| {
        let mut r = r.borrow_mut();
        let seed = match r.seed {
            Some(s) => s,
            None => {
                let text = r.message.as_ref().map_or("", |m| m.as_str());
                let s = super::util::sha256_bytes(text.as_bytes());
                r.seed = Some(s);
                s
            }
        };
        r.counter += 1;
        (seed, r.counter)
    })
}
