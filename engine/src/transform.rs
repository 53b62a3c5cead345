//! The transform pool: Rhai runs on sync actors (an actix `SyncArbiter`), one per core.
//!
//! Each worker owns its own script host (a Rhai Engine) and its own compiled ASTs, keyed by
//! channel revision: a shared Engine serialises on its string interner. Scripts run sandboxed;
//! an error or a limit hit fails that channel's step for that transaction, never the worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use crate::channel::{Channel, ScriptSource};
use crate::format::Format;
use crate::hl7::Message;
use crate::journal::{now_ms, Step, StepKind, StepOutput, TxId};
use crate::script::{
    Script, ScriptContext, ScriptHost, ScriptInput, ScriptLimits, TransformOutcome,
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

/// One worker: a script host and its compiled scripts.
pub struct TransformWorker {
    limits: ScriptLimits,
    host: Option<(String, ScriptHost)>,
    /// Compiled scripts by (path, revision): a new revision compiles once, here.
    scripts: HashMap<(PathBuf, String), Rc<Script>>,
}

impl TransformWorker {
    pub fn new(limits: ScriptLimits) -> TransformWorker {
        TransformWorker {
            limits,
            host: None,
            scripts: HashMap::new(),
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
            let host = ScriptHost::new(lib_dir, self.limits.clone()).map_err(|e| e.to_string())?;
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
            .compile_source(&source.path.to_string_lossy(), &source.text)
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
            let ran = self.script(filter, &channel.revision).and_then(|script| {
                let (_, host) = self.host.as_ref().ok_or("no script host")?;
                host.run_filter(&script, message.clone(), &ctx)
                    .map_err(|e| e.to_string())
            });
            match ran {
                Err(error) => {
                    steps.push(step(
                        StepKind::Filter,
                        false,
                        None,
                        Vec::new(),
                        Some(error.clone()),
                    ));
                    return finish(ChannelOutcome::Failed { error }, steps);
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
                        return finish(
                            ChannelOutcome::Filtered {
                                reason: outcome.reason,
                            },
                            steps,
                        );
                    }
                }
            }
        }
        let Some(transform) = &channel.transform else {
            return finish(
                ChannelOutcome::Output {
                    value: serde_json::Value::Null,
                },
                steps,
            );
        };
        let ran = self
            .script(transform, &channel.revision)
            .and_then(|script| {
                let (_, host) = self.host.as_ref().ok_or("no script host")?;
                host.run_transform(&script, message.clone(), &ctx)
                    .map_err(|e| e.to_string())
            });
        let outcome = match ran {
            Err(error) => {
                steps.push(step(
                    StepKind::Transform,
                    false,
                    None,
                    Vec::new(),
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
        finish(outcome, steps)
    }

    /// All channels for one message. HL7 v2 is parsed once; other formats once per channel,
    /// with that channel's `[csv]` / `[fhir]` options.
    pub fn run(&mut self, msg: RunChannels) -> Vec<ChannelResult> {
        let host_ready = self.prepare(&msg.lib_revision, &msg.lib_dir);
        let hl7 = (msg.format == Format::Hl7v2).then(|| Message::parse(&msg.raw));
        msg.channels
            .iter()
            .map(|channel| {
                if let Err(e) = &host_ready {
                    return failed(channel, format!("script library: {e}"));
                }
                match &hl7 {
                    Some(Ok(message)) => {
                        self.run_channel(channel, &ScriptInput::Hl7(message), msg.transaction)
                    }
                    Some(Err(e)) => failed(channel, format!("not HL7 v2: {e}")),
                    None => match document_input(channel, msg.format, &msg.raw) {
                        Ok(value) => {
                            let input = ScriptInput::Document {
                                value,
                                raw: &msg.raw,
                            };
                            self.run_channel(channel, &input, msg.transaction)
                        }
                        Err(e) => failed(channel, e),
                    },
                }
            })
            .collect()
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
        MessageResult(self.run(msg))
    }
}

/// Starts the pool: one worker per core.
pub fn start_pool(limits: ScriptLimits, workers: usize) -> Addr<TransformWorker> {
    SyncArbiter::start(workers.max(1), move || TransformWorker::new(limits.clone()))
}
