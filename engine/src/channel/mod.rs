//! Channels: definitions (`channels/*.toml`), their compiled form, and the live set the router
//! reads, swapped atomically on reload.
//!
//! A channel revision is the SHA-256 of its definition, its scripts and the shared library; each
//! transaction records the revision that processed it. Reloading compiles every changed channel
//! first; a channel that does not compile keeps its running revision and the error is reported.

pub mod check;
pub mod def;
pub mod matcher;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

pub use def::{ChannelDef, DestinationDef, DestinationKind, SourceKind};
pub use matcher::Matcher;

use crate::journal::MessageMeta;
use crate::script::{ScriptError, ScriptHost, ScriptLimits};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    #[error("{}:{line}:{column}: {message}", file.display())]
    Definition {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", file.display())]
    Io { file: PathBuf, message: String },
    /// Transparent: the script error already says file:line:col, and `{:#}` in `main` would
    /// print it twice if it were also this error's source.
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error(
        "{}: channel `{name}` is also defined in {}, which is the one loaded: rename one",
        file.display(),
        other.display()
    )]
    DuplicateName {
        name: String,
        file: PathBuf,
        other: PathBuf,
    },
}

/// A script's text as it was when the revision was made: workers compile from this, so a file
/// edited after the reload cannot mix into a running revision.
#[derive(Debug, Clone)]
pub struct ScriptSource {
    pub path: PathBuf,
    /// How the running engine names the script in errors and `debug` lines: its path from the
    /// scripts dir's name on (`scripts/adt_to_fhir.rhai`), never the server's absolute path,
    /// which would reach senders in AE acknowledgements.
    pub label: Arc<str>,
    pub text: Arc<str>,
}

/// One channel revision, ready to run.
#[derive(Debug)]
pub struct Channel {
    pub def: ChannelDef,
    pub file: PathBuf,
    /// SHA-256 (first 16 hex digits) of definition + scripts + library.
    pub revision: String,
    pub matcher: Matcher,
    pub filter: Option<ScriptSource>,
    pub transform: Option<ScriptSource>,
}

impl Channel {
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Whether its source and `[match]` take this message, enabled or not.
    fn would_take(&self, source: SourceKind, listener: &str, meta: &MessageMeta) -> bool {
        self.def.source.kind == source
            && self.def.takes_from(listener)
            && self.matcher.matches(meta)
    }

    /// The directory lookup tables are read from: the transform script's.
    pub fn script_dir(&self) -> PathBuf {
        self.transform
            .as_ref()
            .or(self.filter.as_ref())
            .and_then(|s| s.path.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }
}

/// Every channel of one load, in routing order (priority, then name).
#[derive(Debug, Default)]
pub struct ChannelSet {
    pub channels: Vec<Arc<Channel>>,
    /// Hash of `scripts/lib`: workers rebuild their script host when it changes.
    pub lib_revision: String,
    pub lib_dir: PathBuf,
}

impl ChannelSet {
    /// Channels that take a message from this source.
    pub fn route(
        &self,
        source: SourceKind,
        listener: &str,
        meta: &MessageMeta,
    ) -> Vec<Arc<Channel>> {
        self.channels
            .iter()
            .filter(|c| c.def.enabled && c.would_take(source, listener, meta))
            .cloned()
            .collect()
    }

    /// Disabled channels that would otherwise take the message: for the reason a message no
    /// channel takes is failed with.
    pub fn disabled_takers(
        &self,
        source: SourceKind,
        listener: &str,
        meta: &MessageMeta,
    ) -> Vec<&str> {
        self.channels
            .iter()
            .filter(|c| !c.def.enabled && c.would_take(source, listener, meta))
            .map(|c| c.name())
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Channel>> {
        self.channels.iter().find(|c| c.name() == name).cloned()
    }
}

/// Where channels and scripts live, and the sandbox for compiling them.
#[derive(Debug, Clone)]
pub struct ChannelPaths {
    pub channels_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub limits: ScriptLimits,
}

impl ChannelPaths {
    pub fn lib_dir(&self) -> PathBuf {
        self.scripts_dir.join("lib")
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    hex::encode(&ctx.finish().as_ref()[..8])
}

fn read(path: &Path) -> Result<String, ChannelError> {
    std::fs::read_to_string(path).map_err(|e| ChannelError::Io {
        file: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Files with `extension` directly in `dir`, sorted (a missing dir is empty).
fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == extension))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The errors for the files in `others` that define `name` too, which `holder` keeps.
fn duplicates<'a>(
    name: &'a str,
    others: &'a [(PathBuf, Channel)],
    holder: &'a Path,
) -> impl Iterator<Item = String> + 'a {
    others.iter().map(move |(other, _)| {
        ChannelError::DuplicateName {
            name: name.to_string(),
            file: other.clone(),
            other: holder.to_path_buf(),
        }
        .to_string()
    })
}

/// The library's revision: every `.rhai` under `scripts/lib`.
fn lib_revision(lib_dir: &Path) -> Result<String, ChannelError> {
    let mut texts = Vec::new();
    for file in files_with(lib_dir, "rhai") {
        texts.push(file.to_string_lossy().into_owned());
        texts.push(read(&file)?);
    }
    let parts: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
    Ok(sha256_hex(&parts))
}

/// Parses and compiles one channel file.
pub fn load_channel(
    file: &Path,
    paths: &ChannelPaths,
    host: &ScriptHost,
    lib_revision: &str,
) -> Result<Channel, ChannelError> {
    let text = read(file)?;
    load_channel_text(file, &text, paths, host, lib_revision)
}

/// Parses and compiles a channel from its text as if it were `file` (which need not exist):
/// the same checks as `orbiter check`, scripts compiled included.
pub fn load_channel_text(
    file: &Path,
    text: &str,
    paths: &ChannelPaths,
    host: &ScriptHost,
    lib_revision: &str,
) -> Result<Channel, ChannelError> {
    let def = ChannelDef::parse(file, text)?;
    let load_script =
        |table: &str, r: &Option<def::ScriptRef>| -> Result<Option<ScriptSource>, ChannelError> {
            let Some(r) = r else { return Ok(None) };
            let path = r.resolve(&paths.scripts_dir);
            // Like every other mistake in the definition, a script that cannot be read is reported
            // at its `script` key, not as a bare I/O error on a path the author never wrote.
            let source = std::fs::read_to_string(&path).map_err(|e| {
                let (line, column) = def::script_key_position(text, table);
                let message = if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "the {table} script does not exist (looked for {})",
                        path.display()
                    )
                } else {
                    format!("cannot read the {table} script {}: {e}", path.display())
                };
                ChannelError::Definition {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message,
                }
            })?;
            host.compile_source(&path.to_string_lossy(), &source)?;
            Ok(Some(ScriptSource {
                label: crate::script::label_under(&path, &paths.scripts_dir).into(),
                path,
                text: source.into(),
            }))
        };
    let filter = load_script("filter", &def.filter)?;
    let transform = load_script("transform", &def.transform)?;
    let revision = sha256_hex(&[
        text.as_bytes(),
        filter
            .as_ref()
            .map(|s| s.text.as_bytes())
            .unwrap_or_default(),
        transform
            .as_ref()
            .map(|s| s.text.as_bytes())
            .unwrap_or_default(),
        lib_revision.as_bytes(),
    ]);
    Ok(Channel {
        matcher: Matcher::new(&def.match_rules),
        def,
        file: file.to_path_buf(),
        revision,
        filter,
        transform,
    })
}

/// What a (re)load did, for the log and `GET /api/channels`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Channels now running a new revision.
    pub updated: Vec<String>,
    /// Channels whose file is gone.
    pub removed: Vec<String>,
    /// Errors; a channel named here keeps its previous revision, if it had one.
    pub errors: Vec<String>,
}

/// The live channel set, shared by the router, the workers and the admin API.
#[derive(Clone)]
pub struct Channels {
    paths: ChannelPaths,
    current: Arc<RwLock<Arc<ChannelSet>>>,
    last_report: Arc<RwLock<ReloadReport>>,
}

impl Channels {
    /// Loads everything; channels that fail to compile are left out and reported.
    pub fn load(paths: ChannelPaths) -> (Channels, ReloadReport) {
        let channels = Channels {
            paths,
            current: Arc::new(RwLock::new(Arc::new(ChannelSet::default()))),
            last_report: Arc::new(RwLock::new(ReloadReport::default())),
        };
        let report = channels.reload();
        (channels, report)
    }

    pub fn paths(&self) -> &ChannelPaths {
        &self.paths
    }

    /// The set in force now (cheap: one Arc clone).
    pub fn current(&self) -> Arc<ChannelSet> {
        self.current.read().expect("channel set lock").clone()
    }

    pub fn last_report(&self) -> ReloadReport {
        self.last_report.read().expect("report lock").clone()
    }

    /// Compiles a channel definition that is not (yet) on disk, against the scripts and library
    /// on disk: what `PUT /api/channels/{name}` checks before it writes anything.
    pub fn compile(&self, file: &Path, text: &str) -> Result<Channel, ChannelError> {
        let lib_dir = self.paths.lib_dir();
        let lib_rev = lib_revision(&lib_dir)?;
        let host = ScriptHost::new(&lib_dir, self.paths.limits.clone())?;
        // The running engine would not take it in until the library is fixed (see `reload`).
        if let Some(broken) = host.lib_errors().first() {
            return Err(broken.clone().into());
        }
        load_channel_text(file, text, &self.paths, &host, &lib_rev)
    }

    /// Re-reads `channels/` and `scripts/`; swaps in the new set in one step.
    pub fn reload(&self) -> ReloadReport {
        let old = self.current();
        let mut report = ReloadReport::default();
        let lib_dir = self.paths.lib_dir();
        let prepared = lib_revision(&lib_dir).and_then(|rev| {
            let host = ScriptHost::new(&lib_dir, self.paths.limits.clone())?;
            Ok((rev, host))
        });
        let (lib_rev, host) = match prepared {
            Ok(ok) => ok,
            Err(e) => {
                // The library dir cannot be read: keep everything as it is.
                report.errors.push(e.to_string());
                self.finish(&report);
                return report;
            }
        };
        // A broken library file, once channels run: keep everything as it is. Workers build
        // their script host from the library on disk, so a channel that keeps its running
        // revision because its import broke would fail at its next run on a new host. With
        // nothing running yet (at start), only the channels that import it fail below: one
        // bad file must not leave the engine with no channels at all.
        report
            .errors
            .extend(host.lib_errors().iter().map(ToString::to_string));
        if !host.lib_errors().is_empty() && !old.channels.is_empty() {
            self.finish(&report);
            return report;
        }
        // Every file first, so that a name defined twice is settled the same way whichever
        // file sorts first: the file already running it keeps it (a copy dropped beside it
        // must not take over), else the first file by name.
        let mut loaded: BTreeMap<String, Vec<(PathBuf, Channel)>> = BTreeMap::new();
        let mut by_name: BTreeMap<String, Arc<Channel>> = BTreeMap::new();
        for file in files_with(&self.paths.channels_dir, "toml") {
            match load_channel(&file, &self.paths, &host, &lib_rev) {
                Ok(channel) => loaded
                    .entry(channel.name().to_string())
                    .or_default()
                    .push((file, channel)),
                Err(e) => {
                    report.errors.push(e.to_string());
                    // Keep the running revision of the channel this file defined.
                    if let Some(previous) = old.channels.iter().find(|c| c.file == file) {
                        by_name.insert(previous.name().to_string(), previous.clone());
                    }
                }
            }
        }
        for (name, mut candidates) in loaded {
            // The running file's edit is broken and its revision kept: it still holds the name.
            if let Some(kept) = by_name.get(&name) {
                report
                    .errors
                    .extend(duplicates(&name, &candidates, &kept.file));
                continue;
            }
            let running = old.get(&name).map(|c| c.file.clone());
            let winner = candidates
                .iter()
                .position(|(file, _)| Some(file) == running.as_ref())
                .unwrap_or(0);
            let (file, channel) = candidates.swap_remove(winner);
            report.errors.extend(duplicates(&name, &candidates, &file));
            let unchanged = old
                .get(&name)
                .is_some_and(|o| o.revision == channel.revision && o.file == file);
            if unchanged {
                let kept = old.get(&name).expect("checked above");
                by_name.insert(name, kept);
            } else {
                report.updated.push(name.clone());
                by_name.insert(name, Arc::new(channel));
            }
        }
        for previous in &old.channels {
            if !by_name.contains_key(previous.name()) {
                report.removed.push(previous.name().to_string());
            }
        }
        let mut channels: Vec<Arc<Channel>> = by_name.into_values().collect();
        channels.sort_by(|a, b| {
            b.def
                .priority
                .cmp(&a.def.priority)
                .then_with(|| a.name().cmp(b.name()))
        });
        let set = ChannelSet {
            channels,
            lib_revision: lib_rev,
            lib_dir,
        };
        *self.current.write().expect("channel set lock") = Arc::new(set);
        self.finish(&report);
        report
    }

    fn finish(&self, report: &ReloadReport) {
        for error in &report.errors {
            tracing::error!(%error, "channel not loaded; any running revision stays");
        }
        if !report.updated.is_empty() || !report.removed.is_empty() {
            tracing::info!(updated = ?report.updated, removed = ?report.removed, "channels loaded");
        }
        *self.last_report.write().expect("report lock") = report.clone();
    }

    /// A fingerprint of the channel and script files (names, sizes, mtimes): polled to notice
    /// edits without an inotify dependency. The scripts dir is walked with its subfolders: a
    /// channel's script may live in one (`script = "lab/oru.rhai"`), and editing a file in place
    /// changes neither the folder's entries nor its mtime.
    pub fn fingerprint(&self) -> String {
        let mut parts = Vec::new();
        fingerprint_dir(&self.paths.channels_dir, 0, &mut parts);
        fingerprint_dir(&self.paths.scripts_dir, SCRIPT_DIR_DEPTH, &mut parts);
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        sha256_hex(&parts)
    }
}

/// How deep the file watch looks into the scripts dir's subfolders (a bound, so that a link
/// back up the tree cannot loop).
const SCRIPT_DIR_DEPTH: usize = 8;

/// Adds `path:size:mtime` for every entry of `dir` to `parts`, sorted, and for its subfolders
/// down to `depth` more levels.
fn fingerprint_dir(dir: &Path, depth: usize, parts: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if let Ok(meta) = entry.metadata() {
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            parts.push(format!("{}:{}:{}", path.display(), meta.len(), mtime));
        }
        if depth > 0 && path.is_dir() {
            fingerprint_dir(&path, depth - 1, parts);
        }
    }
}

#[cfg(test)]
mod tests;
