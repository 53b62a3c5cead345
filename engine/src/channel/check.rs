//! `orbiter check` and `orbiter try`: the channel author's inner loop, without an engine.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::{files_with, lib_revision, load_channel, ChannelError, ChannelPaths};
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

/// `orbiter check` on stdout and stderr; see [`check_into`].
pub fn check(config: &Config, path: Option<&Path>) -> std::io::Result<ExitCode> {
    let ok = check_into(
        &paths(config),
        path,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Compiles the library and the channels under `path` (a directory, or one channel file) with
/// their scripts; for a directory, also every other script in the scripts dir. Prints one line
/// per item to `out`; errors go to `err` as `file:line:col: message`, each once. Returns whether
/// everything compiled.
pub fn check_into(
    paths: &ChannelPaths,
    path: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<bool> {
    // One channel file: that channel, its scripts and the library, nothing else.
    let (channel_files, whole_dir) = match path {
        Some(p) if p.is_file() => (vec![p.to_path_buf()], false),
        Some(dir) if dir.is_dir() => (files_with(dir, "toml"), true),
        Some(missing) => {
            // A typo would otherwise check zero channels and pass.
            let why = if missing.exists() {
                "not a channel file or a channels directory"
            } else {
                "no such file or directory"
            };
            writeln!(err, "{}: {why}", missing.display())?;
            return Ok(false);
        }
        None => (files_with(&paths.channels_dir, "toml"), true),
    };
    let host = match ScriptHost::new(&paths.lib_dir(), paths.limits.clone()) {
        Ok(host) => host,
        Err(e) => {
            writeln!(err, "{e}")?;
            return Ok(false);
        }
    };
    let lib_rev = match lib_revision(&paths.lib_dir()) {
        Ok(rev) => rev,
        Err(e) => {
            writeln!(err, "{e}")?;
            return Ok(false);
        }
    };
    let mut errors = 0;
    // Script errors printed so far: a channel whose script is broken fails with the same error,
    // which is then named once, with the channel that uses it.
    let mut reported = HashSet::new();
    // A broken library file fails the check, and the channels that import it; the others are
    // still checked.
    for e in host.lib_errors() {
        errors += 1;
        writeln!(err, "{e}")?;
    }
    if whole_dir {
        for script in files_with(&paths.scripts_dir, "rhai") {
            match host.compile_file(&script) {
                Ok(_) => writeln!(out, "ok      {}", script.display())?,
                Err(e) => {
                    errors += 1;
                    let shown = e.to_string();
                    writeln!(err, "{shown}")?;
                    reported.insert(shown);
                }
            }
        }
    }
    let mut names = HashMap::new();
    for file in &channel_files {
        match load_channel(file, paths, &host, &lib_rev) {
            Ok(channel) => {
                if let Some(other) = names.insert(channel.name().to_string(), file.clone()) {
                    errors += 1;
                    let duplicate = ChannelError::DuplicateName {
                        name: channel.name().to_string(),
                        file: file.clone(),
                        other,
                    };
                    writeln!(err, "{duplicate}")?;
                } else {
                    writeln!(
                        out,
                        "ok      {} (channel {}, revision {})",
                        file.display(),
                        channel.name(),
                        channel.revision
                    )?;
                }
            }
            Err(ChannelError::Script(e)) => {
                let shown = e.to_string();
                if reported.insert(shown.clone()) {
                    errors += 1;
                    writeln!(err, "{shown}")?;
                }
                writeln!(
                    err,
                    "{}: uses {}, which does not compile",
                    file.display(),
                    e.file
                )?;
            }
            Err(e) => {
                errors += 1;
                writeln!(err, "{e}")?;
            }
        }
    }
    if errors > 0 {
        writeln!(err, "{errors} error(s)")?;
        Ok(false)
    } else {
        writeln!(
            out,
            "{} channel(s) and their scripts compile",
            channel_files.len()
        )?;
        Ok(true)
    }
}

/// The transform's output as `orbiter try` prints it, ending with a newline: FHIR as indented
/// JSON; text (a rewritten HL7 v2 message, `msg.encode()`) as itself, one segment a line,
/// since `\r` alone would make a terminal draw every segment over the previous one.
fn output_text(output: &serde_json::Value) -> serde_json::Result<String> {
    let mut text = match output {
        serde_json::Value::String(text) => text.replace("\r\n", "\n").replace('\r', "\n"),
        value => serde_json::to_string_pretty(value)?,
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
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
            // `try` runs the scripts whatever the channel's [match] and `enabled` say; a
            // running engine would not give it this message, and the author should know.
            let mut meta = crate::journal::MessageMeta::default();
            crate::intake::fill_meta(&mut meta, &parsed);
            if !channel.def.enabled {
                eprintln!(
                    "note: {} is disabled: the engine gives it no message",
                    channel.name()
                );
            } else if !channel.matcher.matches(&meta) {
                eprintln!(
                    "note: {}'s [match] does not take this message ({}): the engine would not \
                     give it to this channel",
                    channel.name(),
                    meta.message_type.as_deref().unwrap_or("no type")
                );
            }
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
    let mut out = std::io::stdout().lock();
    if json {
        let envelope = serde_json::json!({
            "channel": channel.name(),
            "revision": channel.revision,
            "outcome": outcome,
            "output": output,
            "steps": result.steps,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&envelope)?)?;
    } else {
        let mut err = std::io::stderr().lock();
        for step in &result.steps {
            for line in &step.logs {
                writeln!(err, "log: {line}")?;
            }
        }
        match &result.outcome {
            ChannelOutcome::Output { .. } => write!(out, "{}", output_text(&output)?)?,
            ChannelOutcome::Filtered { reason } => writeln!(
                out,
                "filtered: {}",
                reason.as_deref().unwrap_or("the filter returned false")
            )?,
            ChannelOutcome::Rejected { reason } => writeln!(err, "rejected: {reason}")?,
            ChannelOutcome::Failed { error } => writeln!(err, "{error}")?,
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::channel::tests::Dirs;

    /// Channels `good` (script ok) and `bad` (script broken), and a broken script no channel
    /// uses.
    fn dirs() -> Dirs {
        let dirs = crate::channel::tests::dirs();
        let paths = &dirs.paths;
        for (name, script) in [
            ("good", "#{resourceType: \"Patient\"}"),
            ("bad", "let a = b;"),
        ] {
            std::fs::write(
                paths.channels_dir.join(format!("{name}.toml")),
                format!(
                    "name = \"{name}\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"{name}.rhai\"\n"
                ),
            )
            .unwrap();
            std::fs::write(paths.scripts_dir.join(format!("{name}.rhai")), script).unwrap();
        }
        std::fs::write(paths.scripts_dir.join("unused.rhai"), "let x = (;").unwrap();
        dirs
    }

    fn run(paths: &ChannelPaths, path: Option<&Path>) -> (bool, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = check_into(paths, path, &mut out, &mut err).unwrap();
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
        (ok, text(out), text(err))
    }

    #[test]
    fn each_script_error_is_reported_once_with_the_channel_that_uses_it() {
        let d = dirs();
        let (ok, _, err) = run(&d.paths, None);
        assert!(!ok);
        assert_eq!(err.matches("bad.rhai:1:").count(), 1, "{err}");
        assert_eq!(err.matches("unused.rhai:1:").count(), 1, "{err}");
        let bad_toml = d.paths.channels_dir.join("bad.toml");
        assert_eq!(
            err.matches(&format!("{}: uses ", bad_toml.display()))
                .count(),
            1,
            "{err}"
        );
        assert!(err.ends_with("\n2 error(s)\n"), "{err}");
    }

    #[test]
    fn one_channel_file_checks_that_channel_and_its_scripts_only() {
        let d = dirs();
        let good = d.paths.channels_dir.join("good.toml");
        let (ok, out, err) = run(&d.paths, Some(&good));
        assert!(ok, "{err}");
        assert!(
            out.contains("1 channel(s) and their scripts compile"),
            "{out}"
        );

        let bad = d.paths.channels_dir.join("bad.toml");
        let (ok, _, err) = run(&d.paths, Some(&bad));
        assert!(!ok);
        assert!(!err.contains("unused.rhai"), "{err}");
        assert_eq!(err.matches("bad.rhai:1:").count(), 1, "{err}");
        assert!(err.contains(&format!("{}: uses ", bad.display())), "{err}");
        assert!(err.ends_with("\n1 error(s)\n"), "{err}");
    }

    #[test]
    fn text_output_is_printed_as_lines_and_fhir_as_json() {
        let hl7 = serde_json::json!("MSH|^~\\&|A\rPID|1||42\r");
        assert_eq!(output_text(&hl7).unwrap(), "MSH|^~\\&|A\nPID|1||42\n");
        let no_final_cr = serde_json::json!("MSH|^~\\&|A\r\nPID|1");
        assert_eq!(output_text(&no_final_cr).unwrap(), "MSH|^~\\&|A\nPID|1\n");
        let fhir = serde_json::json!({"resourceType": "Patient"});
        assert_eq!(
            output_text(&fhir).unwrap(),
            "{\n  \"resourceType\": \"Patient\"\n}\n"
        );
    }

    #[test]
    fn a_missing_path_is_an_error_not_zero_channels() {
        let d = dirs();
        let missing = d.paths.channels_dir.join("nope");
        let (ok, out, err) = run(&d.paths, Some(&missing));
        assert!(!ok);
        assert!(out.is_empty(), "{out}");
        assert_eq!(
            err,
            format!("{}: no such file or directory\n", missing.display())
        );
    }
}
