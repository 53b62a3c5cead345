//! `orbiter check` and `orbiter try`: the channel author's inner loop, without an engine.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::{files_with, lib_revision, load_channel, ChannelPaths};
use crate::config::Config;
use crate::format::Format;
use crate::hl7::Message;
use crate::journal::{StepKind, StepOutput};
use crate::script::ScriptHost;
use crate::script::ScriptInput;
use crate::transform::{ChannelOutcome, TransformWorker};

fn paths(config: &Config) -> ChannelPaths {
    ChannelPaths {
        channels_dir: config.channels_dir.clone(),
        scripts_dir: config.scripts_dir.clone(),
        limits: config.script.clone(),
    }
}

/// Compiles the library, every script in the scripts dir, and every channel under `path`.
/// Prints one line per item; errors go to stderr as `file:line:col: message`.
pub fn check(config: &Config, path: Option<&Path>) -> ExitCode {
    let paths = paths(config);
    let mut errors = 0;
    let host = match ScriptHost::new(&paths.lib_dir(), paths.limits.clone()) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let lib_rev = match lib_revision(&paths.lib_dir()) {
        Ok(rev) => rev,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for script in files_with(&paths.scripts_dir, "rhai") {
        match host.compile_file(&script) {
            Ok(_) => println!("ok      {}", script.display()),
            Err(e) => {
                errors += 1;
                eprintln!("{e}");
            }
        }
    }
    let channel_files = match path {
        Some(p) if p.is_file() => vec![p.to_path_buf()],
        Some(dir) => files_with(dir, "toml"),
        None => files_with(&paths.channels_dir, "toml"),
    };
    let mut names = std::collections::HashMap::new();
    for file in &channel_files {
        match load_channel(file, &paths, &host, &lib_rev) {
            Ok(channel) => {
                if let Some(other) = names.insert(channel.name().to_string(), file.clone()) {
                    errors += 1;
                    eprintln!(
                        "{}: channel `{}` is also defined in {}",
                        file.display(),
                        channel.name(),
                        other.display()
                    );
                } else {
                    println!(
                        "ok      {} (channel {}, revision {})",
                        file.display(),
                        channel.name(),
                        channel.revision
                    );
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("{e}");
            }
        }
    }
    if errors > 0 {
        eprintln!("{errors} error(s)");
        ExitCode::from(1)
    } else {
        println!(
            "{} channel(s) and their scripts compile",
            channel_files.len()
        );
        ExitCode::SUCCESS
    }
}

/// The first data row of a CSV file, as a journaled row (header line + row).
fn first_csv_row(channel: &crate::channel::Channel, file: &[u8]) -> anyhow::Result<Vec<u8>> {
    let options = channel.def.csv.clone().unwrap_or_default();
    match crate::format::csv::journal_rows(file, &options).next() {
        Some(Ok(row)) => Ok(row.bytes),
        Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
        None => Err(anyhow::anyhow!("the CSV file has no data row")),
    }
}

/// Runs one channel's filter and transform on one message file.
pub fn try_channel(
    config: &Config,
    channel: &str,
    message: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let paths = paths(config);
    let file = if channel.ends_with(".toml") || Path::new(channel).is_file() {
        Path::new(channel).to_path_buf()
    } else {
        paths.channels_dir.join(format!("{channel}.toml"))
    };
    let host = ScriptHost::new(&paths.lib_dir(), paths.limits.clone())?;
    let lib_rev = lib_revision(&paths.lib_dir())?;
    let channel = Arc::new(load_channel(&file, &paths, &host, &lib_rev)?);
    let raw = std::fs::read(message).with_context(|| format!("reading {}", message.display()))?;
    // The channel's declared format, else the file's extension, else HL7 v2.
    let format = channel
        .def
        .source
        .format
        .or_else(|| Format::from_file_name(&message.to_string_lossy()))
        .unwrap_or_default();
    let mut worker = TransformWorker::new(paths.limits.clone());
    worker
        .prepare(&lib_rev, &paths.lib_dir())
        .map_err(anyhow::Error::msg)?;
    let result = match format {
        Format::Hl7v2 => {
            let parsed = Message::parse(&raw)
                .map_err(|e| anyhow::anyhow!("{}: not HL7 v2: {e}", message.display()))?;
            worker.run_channel(&channel, &ScriptInput::Hl7(&parsed), None)
        }
        format => {
            // A CSV file: the first data row, as it would be journaled.
            let raw = if format == Format::Csv {
                first_csv_row(&channel, &raw)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", message.display()))?
            } else {
                raw
            };
            let value = crate::transform::document_input(&channel, format, &raw)
                .map_err(|e| anyhow::anyhow!("{}: {e}", message.display()))?;
            let input = ScriptInput::Document { value, raw: &raw };
            worker.run_channel(&channel, &input, None)
        }
    };
    let (outcome, ok) = match &result.outcome {
        ChannelOutcome::Output { .. } => ("output", true),
        ChannelOutcome::Filtered { .. } => ("filtered", true),
        ChannelOutcome::Rejected { .. } => ("rejected", false),
        ChannelOutcome::Failed { .. } => ("failed", false),
    };
    // The output as the journal keeps it: the transform step's text (the outcome's tree is
    // parsed only for channels with destinations).
    let output = match &result.outcome {
        ChannelOutcome::Output { .. } => result
            .steps
            .iter()
            .rev()
            .find(|s| s.kind == StepKind::Transform)
            .and_then(|s| s.output.as_ref())
            .map_or(serde_json::Value::Null, StepOutput::to_value),
        _ => serde_json::Value::Null,
    };
    if json {
        let envelope = serde_json::json!({
            "channel": channel.name(),
            "revision": channel.revision,
            "outcome": outcome,
            "output": output,
            "steps": result.steps,
        });
        println!("{}", serde_json::to_string_pretty(&envelope)?);
    } else {
        for step in &result.steps {
            for line in &step.logs {
                eprintln!("log: {line}");
            }
        }
        match &result.outcome {
            ChannelOutcome::Output { .. } => {
                println!("{}", serde_json::to_string_pretty(&output)?)
            }
            ChannelOutcome::Filtered { reason } => {
                println!(
                    "filtered: {}",
                    reason.as_deref().unwrap_or("the filter returned false")
                )
            }
            ChannelOutcome::Rejected { reason } => eprintln!("rejected: {reason}"),
            ChannelOutcome::Failed { error } => eprintln!("{error}"),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
