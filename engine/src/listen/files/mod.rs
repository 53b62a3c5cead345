//! File sources: channels whose `[source]` is a directory, local (`dir`) or on an SFTP server
//! (`sftp`). Everything but the transport is shared and lives here:
//!
//! - [`FileStore`]: what a transport must do (list, fetch, move, delete); implemented by
//!   [`crate::listen::dir::DirStore`] and [`crate::listen::sftp::SftpStore`];
//! - [`poller`]: the polling loop: glob, the stability check (or done marker), journaling
//!   through [`crate::intake::Intake::accept`], the after-action, reconnect backoff;
//! - [`ledger`]: the files already handled, persisted per source under the data dir;
//! - [`FileSources`]: one poller per channel with such a source, started at boot and kept in
//!   step with channel reloads.
//!
//! A file's way: listed → unchanged over two polls (or its done marker is there) → fetched to
//! a local path → journaled (`Ok` = durable) → recorded in the ledger → moved to
//! `processed/` or `error/`, deleted, or left. Its idempotency key
//! (`<kind>:<channel>:<dir>/<name>:<size>:<mtime>`) makes a crash at any point safe: before the
//! ledger entry the journal recognises the key, after it the source only finishes the move.

pub mod ledger;
pub mod poller;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use crate::channel::def::{AfterAction, SourceDef};
use crate::channel::matcher::Pattern;
use crate::channel::{ChannelDef, Channels, SourceKind};
use crate::format::Format;
use crate::intake::Intake;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::route::Pipeline;

pub use ledger::{Handled, Ledger, LedgerError};
pub use poller::FilePoller;

/// Default time between two looks at a directory.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);
/// How often the channel set is compared with the running pollers.
const SUPERVISE_EVERY: Duration = Duration::from_secs(2);

/// One regular file as listed in the watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    pub name: String,
    pub size: u64,
    /// Modification time in Unix milliseconds (SFTP servers give whole seconds).
    pub modified_ms: i64,
}

/// A file's bytes, made local for the journal.
#[derive(Debug)]
pub struct Fetched {
    pub path: PathBuf,
    /// A copy in the spool (SFTP) that is deleted once journaled, not the file itself.
    pub spooled: bool,
}

/// Why a file source could not do something. File-level variants ([`SourceError::Gone`],
/// [`SourceError::Unreadable`], [`SourceError::Changed`]) concern one file; the others mean the
/// source as a whole is unavailable and the poll is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("connecting to {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The server's host key is not trusted: unknown, or different from the recorded one.
    #[error("refusing {server}: host key {reason}")]
    HostKey { server: String, reason: String },
    #[error("authentication as `{user}` on {server} failed{detail}")]
    Auth {
        server: String,
        user: String,
        detail: String,
    },
    /// A key or password file that cannot be read (its content never appears here).
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("sftp {op} {path} on {server}: {reason}")]
    Sftp {
        server: String,
        op: &'static str,
        path: String,
        reason: String,
    },
    #[error("{name} vanished before it could be read")]
    Gone { name: String },
    #[error("{name} cannot be read: {reason}")]
    Unreadable { name: String, reason: String },
    #[error("{name} changed while it was being read")]
    Changed { name: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("journal: {0}")]
    Journal(String),
}

/// What a file source needs from the place its files are. Paths given to it are file names in
/// the watched directory, or directories relative to it (or absolute).
#[allow(async_fn_in_trait)] // used through generics on one thread, never as `dyn` or across threads
pub trait FileStore {
    /// The source's location for logs and the transaction's `peer`: a path, or
    /// `sftp://user@host:port/dir`. Never a credential.
    fn describe(&self) -> String;
    /// Regular files directly in the watched directory (sub-directories and links skipped).
    async fn list(&mut self) -> Result<Vec<ListedFile>, SourceError>;
    /// Makes the file's content available as a local file; SFTP downloads it into `spool`.
    async fn fetch(&mut self, file: &ListedFile, spool: &Path) -> Result<Fetched, SourceError>;
    /// Moves a file into `to_dir` (created if missing); a name already there gets a suffix.
    async fn move_to(&mut self, name: &str, to_dir: &str) -> Result<(), SourceError>;
    /// Deletes a file; one already gone is not an error.
    async fn remove(&mut self, name: &str) -> Result<(), SourceError>;
    /// Forgets any connection after an error, so that the next call starts afresh.
    fn reset(&mut self) {}
}

/// A file name for `name` in a directory where `name` is taken: `name.<unix ms>`.
pub fn unique_name(name: &str) -> String {
    format!("{name}.{}", crate::journal::now_ms())
}

/// The file-source part of a channel's `[source]`, with defaults applied.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// `dir:<channel>` or `sftp:<channel>`: the listener name on its transactions.
    pub listener: String,
    pub kind: SourceKind,
    pub dir: String,
    /// Empty: every file.
    pub glob: Vec<Pattern>,
    pub format: Option<Format>,
    pub poll: Duration,
    pub done_marker: Option<String>,
    pub after: AfterAction,
    pub processed_dir: String,
    pub error_dir: String,
    /// `<data_dir>/sources/<kind>-<channel>`: the ledger and the spool.
    pub state_dir: PathBuf,
}

impl FileSettings {
    /// From a validated channel definition (see `ChannelDef::validate`).
    pub fn new(def: &ChannelDef, data_dir: &Path) -> FileSettings {
        let source = &def.source;
        FileSettings {
            listener: def.listener_name().unwrap_or_default(),
            kind: source.kind,
            dir: source.dir.clone().unwrap_or_default(),
            glob: source.glob.iter().map(|g| Pattern::new(g)).collect(),
            format: source.format,
            poll: source
                .poll_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_POLL),
            done_marker: source.done_marker.clone(),
            after: source.after,
            processed_dir: source
                .processed_dir
                .clone()
                .unwrap_or_else(|| "processed".into()),
            error_dir: source.error_dir.clone().unwrap_or_else(|| "error".into()),
            state_dir: data_dir.join("sources").join(format!(
                "{}-{}",
                source.kind.as_str(),
                def.name
            )),
        }
    }

    /// The idempotency key of one version of a file.
    pub fn origin_key(&self, file: &ListedFile) -> String {
        format!(
            "{}:{}/{}:{}:{}",
            self.listener,
            self.dir.trim_end_matches('/'),
            file.name,
            file.size,
            file.modified_ms
        )
    }
}

/// Everything a poller needs from the engine.
#[derive(Clone)]
pub struct Engine {
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub pipeline: Pipeline,
    pub data_dir: PathBuf,
}

/// A running poller: its configuration (to notice edits) and how to stop it.
struct Running {
    source: SourceDef,
    stop: watch::Sender<bool>,
}

/// Keeps one poller per enabled channel with a file source, on their own arbiter (so that the
/// ledger's fsyncs and local file reads never hold up the admin port or MLLP connections).
pub struct FileSources {
    engine: Engine,
    channels: Channels,
    arbiter: ArbiterHandle,
    running: HashMap<String, Running>,
    /// One per channel, held by its poller for its whole life: a poller replaced on reload
    /// finishes its current file before the new one starts on the same directory and ledger.
    turns: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl FileSources {
    pub fn new(engine: Engine, channels: Channels, arbiter: ArbiterHandle) -> FileSources {
        FileSources {
            engine,
            channels,
            arbiter,
            running: HashMap::new(),
            turns: HashMap::new(),
        }
    }

    /// Starts the pollers of the current channel set, then follows reloads until dropped.
    pub async fn supervise(mut self) {
        loop {
            self.sync();
            tokio::time::sleep(SUPERVISE_EVERY).await;
        }
    }

    /// Starts pollers for new or changed file sources, stops those gone or disabled.
    pub fn sync(&mut self) {
        let set = self.channels.current();
        let wanted: HashMap<&str, &ChannelDef> = set
            .channels
            .iter()
            .filter(|c| c.def.enabled && c.def.source.is_file_source())
            .map(|c| (c.name(), &c.def))
            .collect();
        self.running.retain(|name, running| {
            let keep = wanted
                .get(name.as_str())
                .is_some_and(|def| def.source == running.source);
            if !keep {
                tracing::info!(channel = %name, "stopping file source");
                let _ = running.stop.send(true);
            }
            keep
        });
        for (name, def) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let turn = self.turns.entry(name.to_string()).or_default().clone();
            self.start((*def).clone(), turn, stopped);
            self.running.insert(
                name.to_string(),
                Running {
                    source: def.source.clone(),
                    stop,
                },
            );
        }
    }

    fn start(
        &self,
        def: ChannelDef,
        turn: Arc<tokio::sync::Mutex<()>>,
        stopped: watch::Receiver<bool>,
    ) {
        let engine = self.engine.clone();
        self.arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                let _turn = turn.lock_owned().await;
                let settings = FileSettings::new(&def, &engine.data_dir);
                let intake = Intake::new(
                    engine.journal.clone(),
                    engine.metrics.clone(),
                    &settings.listener,
                    settings.kind,
                    Some(engine.pipeline.clone()),
                );
                // The one place where transports are chosen.
                let result = match def.source.kind {
                    SourceKind::Dir => {
                        let store = crate::listen::dir::DirStore::new(&settings.dir);
                        run_poller(store, settings, intake, &engine, stopped).await
                    }
                    SourceKind::Sftp => match crate::listen::sftp::SftpStore::new(&def.source) {
                        Ok(store) => run_poller(store, settings, intake, &engine, stopped).await,
                        Err(e) => Err(e),
                    },
                    SourceKind::Mllp | SourceKind::Http => Ok(()),
                };
                if let Err(error) = result {
                    tracing::error!(channel = %def.name, %error, "file source not started");
                }
            });
        });
    }
}

async fn run_poller<S: FileStore>(
    store: S,
    settings: FileSettings,
    intake: Intake,
    engine: &Engine,
    stopped: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let poller = FilePoller::new(store, settings, intake, engine.metrics.clone())?;
    poller.run(stopped).await;
    Ok(())
}

/// Whether a file name is taken: the channel matcher's `*` patterns, so that there is one
/// wildcard implementation (case-insensitive: senders write `.HL7` as often as `.hl7`).
pub fn glob_matches(glob: &[Pattern], name: &str) -> bool {
    glob.is_empty() || glob.iter().any(|p| p.matches(name))
}
