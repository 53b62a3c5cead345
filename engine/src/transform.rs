//! Where channel scripts run: for an MLLP message, first on the connection's thread, then, for
//! a run that needs longer than the inline slice, on the transform pool of sync actors (an
//! actix `SyncArbiter`), one per core; for everything else, on the pool ([`RunOn`]).
//!
//! Each worker, inline or pooled, owns its own script host (a Rhai Engine) and its own compiled
//! ASTs, keyed by channel revision: a shared Engine serialises on its string interner. Scripts
//! run sandboxed; an error or a limit hit fails that channel's step for that transaction, never
//! the worker.
//!
//! Why inline first: on a loaded two-core machine each hand-off between threads (to a pool
//! worker and back) is a wake-up that may wait for a core, and those waits, not the scripts,
//! made most of a message's processing time (`BENCHMARKS.md`, eleventh session). A run stopped
//! at its slice has no effect anywhere (scripts cannot reach files or the network; their log
//! lines are dropped with the run), so running it again from the start on the pool is safe.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use crate::channel::{Channel, ScriptSource};
use crate::format::Format;
use crate::hl7::Message;
use crate::journal::{now_ms, Step, StepKind, StepOutput, TxId};
use crate::metrics::Metrics;
use crate::script::{
    Script, ScriptContext, ScriptError, ScriptErrorKind, ScriptHost, ScriptInput, ScriptLimits,
    TransformOutcome,
};

/// What one channel made of one message.
#[derive(Debug, Clone)]
pub enum ChannelOutcome {
    /// The filter (or `skip()`) dropped it.
    Filtered { reason: Option<String> },
    /// FHIR output to deliver. The transform step holds it as JSON text too; in the pipeline a
    /// channel without destinations gets `Null` here (see [`TransformWorker::run`]).
    Output { value: serde_json::Value },
    /// `reject()`: refused, the sender is told AE in on-delivery mode.
    Rejected { reason: String },
    /// A script error or limit, with file:line:col.
    Failed { error: String },
}

/// The outcome plus the steps to journal.
#[derive(Debug, Clone)]
pub struct ChannelResult {
    pub channel: Arc<Channel>,
    pub outcome: ChannelOutcome,
    pub steps: Vec<Step>,
}

/// Run every channel's filter and transform on one message.
#[derive(Message)]
#[rtype(result = "Vec<ChannelResult>")]
pub struct RunChannels {
    pub transaction: Option<TxId>,
    /// What `raw` is (HL7 v2, FHIR JSON, C-CDA, a CSV row).
    pub format: crate::format::Format,
    pub raw: Bytes,
    pub channels: Vec<Arc<Channel>>,
    /// The library these channel revisions were compiled against.
    pub lib_revision: String,
    pub lib_dir: PathBuf,
}

/// An inline run of this channel revision used up its slice: the message is to run again,
/// from the start, on the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceUsed(String);

/// Why an inline worker hands a message to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToPool {
    /// A run used up the slice.
    Stopped,
    /// A run of one of its channels did lately: not tried inline.
    Skipped,
}

impl ToPool {
    /// The `thread` label of `orbiter_transform_runs_total` for a message that finished on the pool.
    fn label(self) -> &'static str {
        match self {
            ToPool::Stopped => "moved",
            ToPool::Skipped => "pool",
        }
    }
}

/// Why one script run gave no outcome.
enum Stopped {
    /// An error (compile, runtime, limit), as the transaction records it, with what the script
    /// printed before it failed.
    Failed { error: String, logs: Vec<String> },
    /// An inline run reached its slice.
    Slice,
}

/// After a channel's run used up the inline slice, this thread sends that channel's next this
/// many messages straight to the pool before it tries inline again: a script that is always
/// slower than the slice (a big mapping on a slow core) wastes at most one slice in this many.
const POOL_AFTER_SLICE: u32 = 100;

/// One worker: a script host and its compiled scripts.
pub struct TransformWorker {
    limits: ScriptLimits,
    /// Set on an inline worker: its runs stop here (the host's time budget) and are moved.
    slice: Option<Duration>,
    /// Inline workers: messages still to send straight to the pool, by channel revision.
    pool_first: HashMap<String, u32>,
    host: Option<(String, ScriptHost)>,
    /// Compiled scripts by (path, revision): a new revision compiles once, here.
    scripts: HashMap<(PathBuf, String), Rc<Script>>,
}

impl TransformWorker {
    /// A worker that runs scripts to the end (the pool's, and `orbiter try`'s).
    pub fn new(limits: ScriptLimits) -> TransformWorker {
        TransformWorker {
            limits,
            slice: None,
            pool_first: HashMap::new(),
            host: None,
            scripts: HashMap::new(),
        }
    }

    /// A worker for the receiving thread: its runs stop at `limits.inline_slice()` (`None`: no
    /// inline runs with these limits).
    fn inline(limits: ScriptLimits) -> Option<TransformWorker> {
        let slice = limits.inline_slice()?;
        Some(TransformWorker {
            slice: Some(slice),
            ..TransformWorker::new(limits)
        })
    }

    /// What the host enforces: an inline worker's time budget is its slice.
    fn host_limits(&self) -> ScriptLimits {
        match self.slice {
            Some(slice) => ScriptLimits {
                time_budget: slice,
                ..self.limits.clone()
            },
            None => self.limits.clone(),
        }
    }

    /// Compiles `source` (once per revision) and runs it with `run`, sorting its error.
    fn run_script<T>(
        &mut self,
        source: &ScriptSource,
        revision: &str,
        run: impl FnOnce(&ScriptHost, &Script) -> Result<T, ScriptError>,
    ) -> Result<T, Stopped> {
        let script = self
            .script(source, revision)
            .map_err(|error| Stopped::Failed {
                error,
                logs: Vec::new(),
            })?;
        let (_, host) = self.host.as_ref().expect("compiled, so prepared");
        run(host, &script).map_err(|e| self.classify(e))
    }

    /// Sorts a run's error: the slice's end on an inline worker, a failure otherwise.
    fn classify(&self, e: ScriptError) -> Stopped {
        if self.slice.is_some() && e.kind == ScriptErrorKind::Timeout {
            Stopped::Slice
        } else {
            Stopped::Failed {
                error: e.to_string(),
                logs: e.logs,
            }
        }
    }

    /// Makes the host for this library revision (rebuilt, and scripts dropped, when the library
    /// changed).
    pub fn prepare(&mut self, lib_revision: &str, lib_dir: &std::path::Path) -> Result<(), String> {
        if self
            .host
            .as_ref()
            .is_none_or(|(rev, _)| rev != lib_revision)
        {
            let host = ScriptHost::new(lib_dir, self.host_limits()).map_err(|e| e.to_string())?;
            self.host = Some((lib_revision.to_string(), host));
            self.scripts.clear();
        }
        Ok(())
    }

    fn script(&mut self, source: &ScriptSource, revision: &str) -> Result<Rc<Script>, String> {
        let key = (source.path.clone(), revision.to_string());
        if let Some(script) = self.scripts.get(&key) {
            return Ok(script.clone());
        }
        let (_, host) = self.host.as_ref().ok_or("no script host")?;
        let script = host
            .compile_source(&source.label, &source.text)
            .map_err(|e| e.to_string())?;
        // Old revisions are not worth keeping once a channel moved on.
        if self.scripts.len() > 256 {
            self.scripts.clear();
        }
        let script = Rc::new(script);
        self.scripts.insert(key, script.clone());
        Ok(script)
    }

    /// Filter then transform for one channel.
    pub fn run_channel(
        &mut self,
        channel: &Arc<Channel>,
        message: &ScriptInput<'_>,
        transaction: Option<TxId>,
    ) -> ChannelResult {
        match self.attempt_channel(channel, message, transaction) {
            Ok(result) => result,
            // Only inline workers have a slice, and they are not reached through here.
            Err(SliceUsed(_)) => failed(channel, "script stopped at its inline slice".into()),
        }
    }

    /// Filter then transform for one channel, unless a run reaches this worker's slice.
    fn attempt_channel(
        &mut self,
        channel: &Arc<Channel>,
        message: &ScriptInput<'_>,
        transaction: Option<TxId>,
    ) -> Result<ChannelResult, SliceUsed> {
        let mut steps = Vec::new();
        let step = |kind, ok, output, logs, error| Step {
            channel: channel.name().to_string(),
            revision: channel.revision.clone(),
            kind,
            at_ms: now_ms(),
            ok,
            output,
            logs,
            error,
            destination: None,
        };
        let ctx = ScriptContext {
            channel: channel.name().to_string(),
            script_dir: channel.script_dir(),
            transaction_id: transaction.map(|t| t.0),
            output_tree: !channel.def.destinations.is_empty(),
        };
        let finish = |outcome, steps| ChannelResult {
            channel: channel.clone(),
            outcome,
            steps,
        };
        if let Some(filter) = &channel.filter {
            let ran = self.run_script(filter, &channel.revision, |host, script| {
                host.run_filter(script, message.clone(), &ctx)
            });
            match ran {
                Err(Stopped::Slice) => return Err(SliceUsed(channel.revision.clone())),
                Err(Stopped::Failed { error, logs }) => {
                    steps.push(step(
                        StepKind::Filter,
                        false,
                        None,
                        logs,
                        Some(error.clone()),
                    ));
                    return Ok(finish(ChannelOutcome::Failed { error }, steps));
                }
                Ok(outcome) => {
                    let keep = outcome.keep;
                    steps.push(step(
                        StepKind::Filter,
                        true,
                        Some(StepOutput::of(
                            &serde_json::json!({"keep": keep, "reason": outcome.reason}),
                        )),
                        outcome.logs,
                        None,
                    ));
                    if !keep {
                        return Ok(finish(
                            ChannelOutcome::Filtered {
                                reason: outcome.reason,
                            },
                            steps,
                        ));
                    }
                }
            }
        }
        let Some(transform) = &channel.transform else {
            return Ok(finish(
                ChannelOutcome::Output {
                    value: serde_json::Value::Null,
                },
                steps,
            ));
        };
        let ran = self.run_script(transform, &channel.revision, |host, script| {
            host.run_transform(script, message.clone(), &ctx)
        });
        let outcome = match ran {
            Err(Stopped::Slice) => return Err(SliceUsed(channel.revision.clone())),
            Err(Stopped::Failed { error, logs }) => {
                steps.push(step(
                    StepKind::Transform,
                    false,
                    None,
                    logs,
                    Some(error.clone()),
                ));
                ChannelOutcome::Failed { error }
            }
            Ok(TransformOutcome::Output { output, tree, logs }) => {
                // The journal keeps the JSON text as it is; destinations take the tree (built
                // with the text when `ctx.output_tree` asked for it). A channel without any
                // needs none.
                let value = if ctx.output_tree {
                    tree.unwrap_or_else(|| output.to_value())
                } else {
                    serde_json::Value::Null
                };
                steps.push(step(StepKind::Transform, true, Some(output), logs, None));
                ChannelOutcome::Output { value }
            }
            Ok(TransformOutcome::Skip { reason, logs }) => {
                steps.push(step(
                    StepKind::Transform,
                    true,
                    Some(StepOutput::of(&serde_json::json!({"skipped": reason}))),
                    logs,
                    None,
                ));
                ChannelOutcome::Filtered {
                    reason: Some(reason),
                }
            }
            Ok(TransformOutcome::Reject { reason, logs }) => {
                steps.push(step(
                    StepKind::Transform,
                    false,
                    None,
                    logs,
                    Some(format!("rejected: {reason}")),
                ));
                ChannelOutcome::Rejected { reason }
            }
        };
        Ok(finish(outcome, steps))
    }

    /// All channels for one message on an inline worker: `Err` sends the message to the pool,
    /// because a run reached the slice (`Stopped`) or one of its channels' runs did lately
    /// (`Skipped`, for [`POOL_AFTER_SLICE`] messages).
    fn attempt_inline(&mut self, msg: &RunChannels) -> Result<Vec<ChannelResult>, ToPool> {
        let mut skip = false;
        for channel in &msg.channels {
            if let Some(left) = self.pool_first.get_mut(&channel.revision) {
                *left -= 1;
                if *left == 0 {
                    self.pool_first.remove(&channel.revision);
                }
                skip = true;
            }
        }
        if skip {
            return Err(ToPool::Skipped);
        }
        self.attempt(msg).map_err(|SliceUsed(channel)| {
            if self.pool_first.len() > 256 {
                // Old revisions are not worth keeping.
                self.pool_first.clear();
            }
            self.pool_first.insert(channel, POOL_AFTER_SLICE);
            ToPool::Stopped
        })
    }

    /// All channels for one message, unless a run reaches this worker's slice. HL7 v2 is
    /// parsed once; other formats once per channel, with that channel's `[csv]` / `[fhir]`
    /// options.
    fn attempt(&mut self, msg: &RunChannels) -> Result<Vec<ChannelResult>, SliceUsed> {
        let host_ready = self.prepare(&msg.lib_revision, &msg.lib_dir);
        let hl7 = (msg.format == Format::Hl7v2).then(|| Message::parse(&msg.raw));
        msg.channels
            .iter()
            .map(|channel| {
                if let Err(e) = &host_ready {
                    return Ok(failed(channel, format!("script library: {e}")));
                }
                match &hl7 {
                    Some(Ok(message)) => {
                        self.attempt_channel(channel, &ScriptInput::Hl7(message), msg.transaction)
                    }
                    Some(Err(e)) => Ok(failed(channel, format!("not HL7 v2: {e}"))),
                    None => match document_input(channel, msg.format, &msg.raw) {
                        Ok(value) => {
                            let input = ScriptInput::Document {
                                value,
                                raw: &msg.raw,
                            };
                            self.attempt_channel(channel, &input, msg.transaction)
                        }
                        Err(e) => Ok(failed(channel, e)),
                    },
                }
            })
            .collect()
    }

    /// All channels for one message, every run to its end.
    pub fn run(&mut self, msg: &RunChannels) -> Vec<ChannelResult> {
        debug_assert!(self.slice.is_none(), "inline workers go through attempt");
        match self.attempt(msg) {
            Ok(results) => results,
            Err(SliceUsed(_)) => msg
                .channels
                .iter()
                .map(|c| failed(c, "script stopped at its inline slice".into()))
                .collect(),
        }
    }
}

/// What a channel's scripts see as `msg` for a document that is not HL7 v2.
pub fn document_input(
    channel: &Channel,
    format: Format,
    raw: &[u8],
) -> Result<rhai::Dynamic, String> {
    let csv = channel.def.csv.clone().unwrap_or_default();
    let fhir = channel.def.fhir.clone().unwrap_or_default();
    crate::format::script_input(format, raw, &csv, &fhir).map_err(|e| e.to_string())
}

fn failed(channel: &Arc<Channel>, error: String) -> ChannelResult {
    ChannelResult {
        channel: channel.clone(),
        steps: vec![Step {
            channel: channel.name().to_string(),
            revision: channel.revision.clone(),
            kind: StepKind::Transform,
            at_ms: now_ms(),
            ok: false,
            output: None,
            logs: Vec::new(),
            error: Some(error.clone()),
            destination: None,
        }],
        outcome: ChannelOutcome::Failed { error },
    }
}

impl Actor for TransformWorker {
    type Context = SyncContext<Self>;
}

impl Handler<RunChannels> for TransformWorker {
    type Result = MessageResult<RunChannels>;

    fn handle(&mut self, msg: RunChannels, _: &mut SyncContext<Self>) -> Self::Result {
        MessageResult(self.run(&msg))
    }
}

/// Where a message's scripts may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOn {
    /// On the calling thread, within the inline slice: an MLLP message, one per exchange, whose
    /// thread has nothing queued behind it but other connections' next frames.
    HereFirst,
    /// On the pool: rows and messages that come many at a time (an HTTP upload, a file), whose
    /// thread must go on reading them and answer the request; reruns and retries.
    Pool,
}

impl RunOn {
    /// Scripts of messages from `source` start here or on the pool.
    pub fn for_source(source: crate::channel::SourceKind) -> RunOn {
        match source {
            crate::channel::SourceKind::Mllp => RunOn::HereFirst,
            _ => RunOn::Pool,
        }
    }
}

thread_local! {
    /// This thread's inline worker, made on its first message (and again if the limits change:
    /// tests run engines with different limits in one process).
    static INLINE: RefCell<Option<TransformWorker>> = const { RefCell::new(None) };
}

/// Where a message's filter and transform scripts run: on the calling thread within the
/// inline slice, else on the pool.
#[derive(Clone)]
pub struct Transforms {
    pool: Addr<TransformWorker>,
    limits: ScriptLimits,
    metrics: Arc<Metrics>,
}

impl Transforms {
    /// Starts the pool: `workers` sync actors (one per core).
    pub fn start(limits: ScriptLimits, workers: usize, metrics: Arc<Metrics>) -> Transforms {
        let pool_limits = limits.clone();
        let pool = SyncArbiter::start(workers.max(1), move || {
            TransformWorker::new(pool_limits.clone())
        });
        Transforms {
            pool,
            limits,
            metrics,
        }
    }

    /// Runs every channel's scripts on one message: with [`RunOn::HereFirst`], here if they
    /// finish within the inline slice, otherwise again from the start on the pool. An error
    /// only if the pool is gone.
    pub async fn run(
        &self,
        msg: RunChannels,
        on: RunOn,
    ) -> Result<Vec<ChannelResult>, MailboxError> {
        let to_pool = if on == RunOn::HereFirst && self.limits.inline_slice().is_some() {
            // Let the tasks already woken on this thread (ACKs to write, frames to read) go
            // first: a run here holds them up for as long as it lasts.
            tokio::task::yield_now().await;
            match self.run_inline(&msg) {
                Ok(results) => {
                    self.count("inline");
                    return Ok(results);
                }
                Err(to_pool) => to_pool,
            }
        } else {
            ToPool::Skipped
        };
        let results = self.pool.send(msg).await?;
        self.count(to_pool.label());
        Ok(results)
    }

    fn run_inline(&self, msg: &RunChannels) -> Result<Vec<ChannelResult>, ToPool> {
        INLINE.with(|cell| {
            let mut worker = cell.borrow_mut();
            if worker.as_ref().is_none_or(|w| w.limits != self.limits) {
                *worker = TransformWorker::inline(self.limits.clone());
            }
            let worker = worker.as_mut().ok_or(ToPool::Skipped)?;
            worker.attempt_inline(msg)
        })
    }

    fn count(&self, on: &str) {
        self.metrics
            .transform_runs_total
            .with_label_values(&[on])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::channel::{ChannelPaths, ChannelSet, Channels};

    const ADT: &[u8] =
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|C1|P|2.5\rPID|1||123^^^H^MR||Doe^Jane\r";

    /// One channel per (name, transform script), loaded from files under `root`.
    fn channel_set(
        root: &Path,
        limits: &ScriptLimits,
        scripts: &[(&str, &str)],
    ) -> Arc<ChannelSet> {
        let paths = ChannelPaths {
            channels_dir: root.join("channels"),
            scripts_dir: root.join("scripts"),
            limits: limits.clone(),
        };
        std::fs::create_dir_all(&paths.channels_dir).unwrap();
        std::fs::create_dir_all(paths.lib_dir()).unwrap();
        for (name, script) in scripts {
            let toml = format!(
                "name = \"{name}\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"scripts/{name}.rhai\"\n"
            );
            std::fs::write(paths.channels_dir.join(format!("{name}.toml")), toml).unwrap();
            std::fs::write(paths.scripts_dir.join(format!("{name}.rhai")), script).unwrap();
        }
        let (channels, report) = Channels::load(paths);
        assert!(report.errors.is_empty(), "{report:?}");
        channels.current()
    }

    fn message_for(set: &ChannelSet, name: &str) -> RunChannels {
        RunChannels {
            transaction: None,
            format: Format::Hl7v2,
            raw: Bytes::from_static(ADT),
            channels: vec![set.get(name).unwrap()],
            lib_revision: set.lib_revision.clone(),
            lib_dir: set.lib_dir.clone(),
        }
    }

    fn runs_on(metrics: &Metrics, on: &str) -> u64 {
        metrics.transform_runs_total.with_label_values(&[on]).get()
    }

    fn output_id(results: &[ChannelResult]) -> String {
        match &results[0].outcome {
            ChannelOutcome::Output { .. } => {}
            other => panic!("expected an output, got {other:?}"),
        }
        let text = results[0].steps[0].output.as_ref().unwrap().to_value();
        text["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[actix_web::test]
    async fn quick_runs_stay_inline_and_a_long_one_runs_again_on_the_pool() {
        let root = tempfile::tempdir().unwrap();
        let limits = ScriptLimits {
            inline_slice: Duration::from_millis(1),
            time_budget: Duration::from_secs(30),
            ..ScriptLimits::default()
        };
        // The long script takes far more than the 1 ms slice (~100,000 loop turns), and
        // only the pool's run can finish it.
        let set = channel_set(
            root.path(),
            &limits,
            &[
                ("quick", "#{resourceType: \"Patient\", id: msg.control_id}"),
                (
                    "long",
                    "let n = 0;\nwhile n < 100000 { n += 1; }\n#{resourceType: \"Patient\", id: `p${n}`}",
                ),
            ],
        );
        let metrics = Arc::new(Metrics::new());
        let transforms = Transforms::start(limits, 1, metrics.clone());

        let counts = || ["inline", "moved", "pool"].map(|on| runs_on(&metrics, on));
        let quick = transforms
            .run(message_for(&set, "quick"), RunOn::HereFirst)
            .await
            .unwrap();
        assert_eq!(output_id(&quick), "C1");
        assert_eq!(counts(), [1, 0, 0]);

        let long = transforms
            .run(message_for(&set, "long"), RunOn::HereFirst)
            .await
            .unwrap();
        assert_eq!(output_id(&long), "p100000", "the pool ran it to the end");
        assert_eq!(
            long[0].steps.len(),
            1,
            "the stopped inline run left no step"
        );
        assert_eq!(counts(), [1, 1, 0], "stopped inline, then run on the pool");

        // The long channel's next messages go straight to the pool; the quick one's stay.
        for _ in 0..2 {
            let long = transforms
                .run(message_for(&set, "long"), RunOn::HereFirst)
                .await
                .unwrap();
            assert_eq!(output_id(&long), "p100000");
        }
        transforms
            .run(message_for(&set, "quick"), RunOn::HereFirst)
            .await
            .unwrap();
        assert_eq!(counts(), [2, 1, 2]);

        // Messages that come many at a time (an HTTP upload, a file) start on the pool.
        let quick = transforms
            .run(message_for(&set, "quick"), RunOn::Pool)
            .await
            .unwrap();
        assert_eq!(output_id(&quick), "C1");
        assert_eq!(counts(), [2, 1, 3]);
    }

    #[actix_web::test]
    async fn an_endless_script_moved_to_the_pool_fails_there_at_its_whole_budget() {
        let root = tempfile::tempdir().unwrap();
        let limits = ScriptLimits {
            inline_slice: Duration::from_millis(2),
            time_budget: Duration::from_millis(300),
            max_operations: 0,
            ..ScriptLimits::default()
        };
        let set = channel_set(root.path(), &limits, &[("spins", "loop { }")]);
        let metrics = Arc::new(Metrics::new());
        let transforms = Transforms::start(limits, 1, metrics.clone());
        let started = Instant::now();
        let results = transforms
            .run(message_for(&set, "spins"), RunOn::HereFirst)
            .await
            .unwrap();
        let ChannelOutcome::Failed { error } = &results[0].outcome else {
            panic!("expected a failure, got {:?}", results[0].outcome);
        };
        assert!(error.contains("spins.rhai:1:"), "file and line: {error}");
        assert!(
            error.contains("time budget of 300ms"),
            "the pool's budget: {error}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(runs_on(&metrics, "moved"), 1);
    }

    /// What a script printed before it failed is kept on the failed step, with the error.
    #[actix_web::test]
    async fn a_failed_run_keeps_what_the_script_printed_before() {
        let root = tempfile::tempdir().unwrap();
        let limits = ScriptLimits::default();
        let script = "log(`mrn ${msg[\"PID-3.1\"]}`);\nlet a = [];\na[3]";
        let set = channel_set(root.path(), &limits, &[("fails", script)]);
        let transforms = Transforms::start(limits, 1, Arc::new(Metrics::new()));
        for on in [RunOn::HereFirst, RunOn::Pool] {
            let results = transforms
                .run(message_for(&set, "fails"), on)
                .await
                .unwrap();
            let step = &results[0].steps[0];
            assert!(!step.ok);
            assert!(
                step.error.as_deref().unwrap().contains("fails.rhai:3:"),
                "{step:?}"
            );
            assert_eq!(step.logs, ["mrn 123"], "{on:?}");
        }
    }

    #[test]
    fn the_inline_slice_applies_only_when_it_ends_before_the_budget() {
        let limits = |slice_ms, budget_ms| ScriptLimits {
            inline_slice: Duration::from_millis(slice_ms),
            time_budget: Duration::from_millis(budget_ms),
            ..ScriptLimits::default()
        };
        assert_eq!(
            limits(2, 1000).inline_slice(),
            Some(Duration::from_millis(2))
        );
        assert_eq!(
            limits(2, 0).inline_slice(),
            Some(Duration::from_millis(2)),
            "no budget"
        );
        assert_eq!(limits(0, 1000).inline_slice(), None, "0 turns it off");
        assert_eq!(
            limits(1000, 1000).inline_slice(),
            None,
            "not before the budget"
        );
        assert_eq!(
            ScriptLimits::default().inline_slice(),
            Some(Duration::from_micros(250))
        );
    }
}
