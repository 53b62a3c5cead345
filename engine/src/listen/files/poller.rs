//! The polling loop shared by every file source: which files are ready, journaling each one,
//! and what happens to it afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{glob_matches, FileSettings, FileStore, Handled, Ledger, ListedFile, SourceError};
use crate::channel::def::AfterAction;
use crate::format::Format;
use crate::ingest::{Body, Document, IngestError, Origin};
use crate::intake::Intake;
use crate::metrics::Metrics;

/// First wait after a failed poll; doubles up to [`MAX_BACKOFF`] (or the poll interval, if
/// longer) while the source stays unavailable.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Remembers each file's size and modification time from the previous look: a file is ready
/// once both are unchanged, i.e. nobody wrote to it for a whole poll interval.
#[derive(Debug, Default)]
pub struct Stability {
    last: HashMap<String, (u64, i64)>,
}

impl Stability {
    /// The files of `listing` that look the same as at the previous call; remembers this one.
    pub fn settled(&mut self, listing: &[ListedFile]) -> Vec<ListedFile> {
        let now: HashMap<String, (u64, i64)> = listing
            .iter()
            .map(|f| (f.name.clone(), (f.size, f.modified_ms)))
            .collect();
        let settled = listing
            .iter()
            .filter(|f| self.last.get(&f.name) == Some(&(f.size, f.modified_ms)))
            .cloned()
            .collect();
        self.last = now;
        settled
    }
}

/// The files of a listing that the source takes (glob), without done markers.
pub fn candidates(settings: &FileSettings, listing: Vec<ListedFile>) -> Vec<ListedFile> {
    listing
        .into_iter()
        .filter(|f| {
            let is_marker = settings
                .done_marker
                .as_deref()
                .is_some_and(|m| f.name.ends_with(m));
            !is_marker && glob_matches(&settings.glob, &f.name)
        })
        .collect()
}

/// Of `candidates`, those ready to take, oldest first: with a done marker, those whose marker
/// is in `listing`; otherwise those unchanged since the previous poll.
pub fn ready(
    settings: &FileSettings,
    stability: &mut Stability,
    listing: &[ListedFile],
    candidates: &[ListedFile],
) -> Vec<ListedFile> {
    let mut ready = match &settings.done_marker {
        Some(marker) => {
            let names: HashSet<&str> = listing.iter().map(|f| f.name.as_str()).collect();
            candidates
                .iter()
                .filter(|f| names.contains(format!("{}{marker}", f.name).as_str()))
                .cloned()
                .collect()
        }
        None => stability.settled(candidates),
    };
    ready.sort_by(|a, b| (a.modified_ms, &a.name).cmp(&(b.modified_ms, &b.name)));
    ready
}

/// Polls one file source until told to stop.
pub struct FilePoller<S> {
    store: S,
    settings: FileSettings,
    intake: Intake,
    ledger: Ledger,
    stability: Stability,
    metrics: Arc<Metrics>,
    /// Journaled files whose after-action failed and was logged (at warn once, then debug).
    stuck: HashSet<String>,
}

impl<S: FileStore> FilePoller<S> {
    /// Opens the source's ledger and clears its spool (copies left by a crash are fetched again).
    pub fn new(
        store: S,
        settings: FileSettings,
        intake: Intake,
        metrics: Arc<Metrics>,
    ) -> Result<FilePoller<S>, SourceError> {
        let ledger = Ledger::open(&settings.state_dir.join("ledger.json"))?;
        let spool = settings.state_dir.join("spool");
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool).map_err(|source| SourceError::Io {
            what: format!("creating {}", spool.display()),
            source,
        })?;
        Ok(FilePoller {
            store,
            settings,
            intake,
            ledger,
            stability: Stability::default(),
            metrics,
            stuck: HashSet::new(),
        })
    }

    /// Polls every `poll` interval; after a failure (server down, journal unavailable) waits
    /// with exponential backoff, reconnecting on the next try.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let listener = self.settings.listener.clone();
        tracing::info!(%listener, source = %self.store.describe(), "file source started");
        let max_backoff = MAX_BACKOFF.max(self.settings.poll);
        let mut backoff = FIRST_BACKOFF;
        let mut failing = false;
        loop {
            let wait = match self.poll_once(&stop).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(%listener, "file source available again");
                    }
                    failing = false;
                    backoff = FIRST_BACKOFF;
                    self.settings.poll
                }
                Err(error) => {
                    self.store.reset();
                    self.metrics
                        .source_errors_total
                        .with_label_values(&[&listener])
                        .inc();
                    // Every failure is logged, at warn; the backoff keeps that rare.
                    tracing::warn!(%listener, %error, retry_in_ms = backoff.as_millis() as u64, "file source poll failed");
                    failing = true;
                    let wait = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        tracing::info!(%listener, "file source stopped");
    }

    /// One look at the directory: takes every ready file, finishes any pending after-action.
    pub async fn poll_once(&mut self, stop: &watch::Receiver<bool>) -> Result<(), SourceError> {
        let listing = self.store.list().await?;
        let candidates = candidates(&self.settings, listing.clone());
        let present: HashSet<String> = candidates
            .iter()
            .map(|f| self.settings.origin_key(f))
            .collect();
        self.ledger.keep_only(&present)?;
        for file in ready(&self.settings, &mut self.stability, &listing, &candidates) {
            if *stop.borrow() {
                break;
            }
            let key = self.settings.origin_key(&file);
            let handled = match self.ledger.get(&key) {
                // Journaled before: left on purpose, or its move was interrupted.
                Some(_) if self.settings.after == AfterAction::Leave => continue,
                Some(handled) => handled,
                None => match self.ingest(&file, &key).await? {
                    Some(handled) => {
                        self.ledger.record(&key, handled)?;
                        handled
                    }
                    None => continue,
                },
            };
            // The file is in the ledger: a failed move only delays the move (retried on every
            // poll), and must not hold up the files behind it. A dead connection fails the next
            // fetch and ends this poll anyway.
            match self.after(&file, handled).await {
                Ok(()) => {
                    self.stuck.remove(&key);
                }
                Err(error) => {
                    self.metrics
                        .source_errors_total
                        .with_label_values(&[&self.settings.listener])
                        .inc();
                    if self.stuck.insert(key) {
                        tracing::warn!(listener = %self.settings.listener, file = %file.name, %error, "journaled file not moved; retrying on every poll");
                    } else {
                        tracing::debug!(listener = %self.settings.listener, file = %file.name, %error, "journaled file still not moved");
                    }
                }
            }
        }
        Ok(())
    }

    /// Journals one file. `None`: not this time (it vanished or changed while being read).
    /// `Err`: the source or the journal is unavailable; the file stays for the next poll.
    async fn ingest(
        &mut self,
        file: &ListedFile,
        key: &str,
    ) -> Result<Option<Handled>, SourceError> {
        let listener = self.settings.listener.clone();
        let count = |outcome: &str| {
            self.metrics
                .source_files_total
                .with_label_values(&[&listener, outcome])
                .inc()
        };
        let Some(format) = self
            .settings
            .format
            .or_else(|| Format::from_file_name(&file.name))
        else {
            tracing::warn!(%listener, file = %file.name, "unknown file format: set `format` in [source]");
            count("refused");
            let reason =
                "unknown file format: no `format` in [source] and the extension says nothing";
            self.journal_refusal(file, key, Format::default(), reason)
                .await?;
            return Ok(Some(Handled::Error));
        };
        let spool = self.settings.state_dir.join("spool");
        let fetched = match self.store.fetch(file, &spool).await {
            Ok(fetched) => fetched,
            Err(SourceError::Gone { .. } | SourceError::Changed { .. }) => {
                return Ok(None);
            }
            Err(error @ SourceError::Unreadable { .. }) => {
                tracing::warn!(%listener, %error, "file refused");
                count("refused");
                self.journal_refusal(file, key, format, &error.to_string())
                    .await?;
                return Ok(Some(Handled::Error));
            }
            Err(error) => return Err(error),
        };
        let document = Document {
            format,
            body: Body::File(fetched.path.clone()),
            origin: Origin {
                listener: listener.clone(),
                peer: Some(self.store.describe()),
                name: Some(file.name.clone()),
                key: Some(key.to_string()),
            },
            charset: None,
        };
        let result = self.intake.accept(document).await;
        if fetched.spooled {
            let _ = tokio::fs::remove_file(&fetched.path).await;
        }
        match result {
            Ok(accepted) => {
                let all_failed = !accepted.ids.is_empty() && accepted.failed == accepted.ids.len();
                // File names are the sender's and may name a patient: at info only the
                // transactions (which the API shows to those allowed to see them).
                tracing::info!(
                    %listener,
                    first_transaction = ?accepted.ids.first().map(|id| id.0),
                    transactions = accepted.ids.len(),
                    failed = accepted.failed,
                    already = accepted.already,
                    "file journaled"
                );
                tracing::debug!(%listener, file = %file.name, ids = ?accepted.ids, "file journaled");
                if all_failed {
                    // It goes to `error_dir`: someone must look at it, so it is named at warn.
                    tracing::warn!(
                        %listener,
                        file = %file.name,
                        first_transaction = ?accepted.ids.first().map(|id| id.0),
                        reason = accepted.failures.first().map_or("no part of it is a message", |f| f.reason.as_str()),
                        "file refused: every part of it failed (journaled as failed)"
                    );
                    count("refused");
                    Ok(Some(Handled::Error))
                } else {
                    count("ingested");
                    Ok(Some(Handled::Processed))
                }
            }
            Err(IngestError::Refused { reason }) => {
                tracing::warn!(%listener, file = %file.name, %reason, "file refused");
                count("refused");
                self.journal_refusal(file, key, format, &reason).await?;
                Ok(Some(Handled::Error))
            }
            Err(IngestError::Read { path, source }) => Err(SourceError::Io {
                what: format!("reading {}", path.display()),
                source,
            }),
            Err(IngestError::Journal(e)) => Err(SourceError::Journal(e.to_string())),
        }
    }

    /// Records a file refused as a whole (unknown format, unreadable, a CSV file without a
    /// header or data rows) as a `failed` transaction with the reason and no body: what goes
    /// to `error_dir` is in the journal too, not only in the log. Keyed like the file, so a
    /// crash before the move records it once.
    async fn journal_refusal(
        &self,
        file: &ListedFile,
        key: &str,
        format: Format,
        reason: &str,
    ) -> Result<(), SourceError> {
        let facts = crate::format::DocumentFacts {
            format,
            refused: Some(format!("file refused: {reason}")),
            ..Default::default()
        };
        let arrival = crate::intake::Arrival {
            peer: Some(self.store.describe()),
            origin: Some(file.name.clone()),
            origin_key: Some(format!("{key}#refused")),
        };
        self.intake
            .submit_document(facts, bytes::Bytes::new(), arrival)
            .await
            .map_err(|e| SourceError::Journal(e.to_string()))?;
        Ok(())
    }

    /// Moves, deletes or leaves a handled file (and removes its done marker).
    async fn after(&mut self, file: &ListedFile, handled: Handled) -> Result<(), SourceError> {
        let settings = &self.settings;
        match settings.after {
            AfterAction::Leave => return Ok(()),
            AfterAction::Delete => self.store.remove(&file.name).await?,
            AfterAction::Move => {
                let to = match handled {
                    Handled::Processed => &settings.processed_dir,
                    Handled::Error => &settings.error_dir,
                };
                self.store.move_to(&file.name, to).await?;
            }
        }
        if let Some(marker) = &settings.done_marker {
            self.store.remove(&format!("{}{marker}", file.name)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::matcher::Pattern;

    fn file(name: &str, size: u64, modified_ms: i64) -> ListedFile {
        ListedFile {
            name: name.into(),
            size,
            modified_ms,
        }
    }

    fn settings(glob: &[&str], done_marker: Option<&str>) -> FileSettings {
        FileSettings {
            listener: "dir:lab".into(),
            kind: crate::channel::SourceKind::Dir,
            dir: "/in/".into(),
            glob: glob.iter().map(|g| Pattern::new(g)).collect(),
            format: None,
            poll: Duration::from_millis(10),
            done_marker: done_marker.map(str::to_string),
            after: AfterAction::Move,
            processed_dir: "processed".into(),
            error_dir: "error".into(),
            state_dir: "/nowhere".into(),
        }
    }

    #[test]
    fn glob_picks_by_name_case_insensitively() {
        let s = settings(&["*.hl7", "ADT_*.txt"], None);
        let listing = vec![
            file("a.hl7", 1, 1),
            file("B.HL7", 1, 1),
            file("a.hl7.part", 1, 1),
            file("adt_1.txt", 1, 1),
            file("notes.txt", 1, 1),
        ];
        let names: Vec<String> = candidates(&s, listing)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a.hl7", "B.HL7", "adt_1.txt"]);
        let all = settings(&[], None);
        assert_eq!(
            candidates(&all, vec![file("x", 1, 1)]).len(),
            1,
            "no glob takes all"
        );
    }

    #[test]
    fn a_file_is_ready_once_unchanged_over_two_polls() {
        let s = settings(&[], None);
        let mut stability = Stability::default();
        let look = |stability: &mut Stability, files: Vec<ListedFile>| -> Vec<String> {
            let c = candidates(&s, files.clone());
            ready(&s, stability, &files, &c)
                .into_iter()
                .map(|f| f.name)
                .collect()
        };
        assert!(
            look(&mut stability, vec![file("a", 10, 1), file("b", 5, 1)]).is_empty(),
            "first sight"
        );
        // `a` grew, `b` did not.
        assert_eq!(
            look(&mut stability, vec![file("a", 20, 2), file("b", 5, 1)]),
            ["b"]
        );
        // `a` was touched again without growing: the mtime counts too.
        assert_eq!(
            look(&mut stability, vec![file("a", 20, 3), file("b", 5, 1)]),
            ["b"]
        );
        assert_eq!(look(&mut stability, vec![file("a", 20, 3)]), ["a"]);
        // A file that disappears and comes back starts over.
        assert!(look(&mut stability, vec![file("b", 5, 1)]).is_empty());
    }

    #[test]
    fn ready_files_come_oldest_first() {
        let s = settings(&[], None);
        let mut stability = Stability::default();
        let files = vec![file("c", 1, 30), file("a", 1, 20), file("b", 1, 20)];
        let c = candidates(&s, files.clone());
        ready(&s, &mut stability, &files, &c);
        let names: Vec<String> = ready(&s, &mut stability, &files, &c)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn with_a_done_marker_only_marked_files_are_ready_at_once() {
        let s = settings(&["*"], Some(".done"));
        let mut stability = Stability::default();
        let files = vec![
            file("a.hl7", 1, 1),
            file("a.hl7.done", 0, 1),
            file("b.hl7", 1, 1),
        ];
        let c = candidates(&s, files.clone());
        let names: Vec<String> = c.iter().map(|f| f.name.clone()).collect();
        assert_eq!(names, ["a.hl7", "b.hl7"], "markers are not files to take");
        let ready: Vec<String> = ready(&s, &mut stability, &files, &c)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            ready,
            ["a.hl7"],
            "no waiting for stability, and b has no marker"
        );
    }

    #[test]
    fn the_origin_key_names_source_path_size_and_mtime() {
        let s = settings(&[], None);
        assert_eq!(
            s.origin_key(&file("a.hl7", 42, 1_700_000_000_000)),
            "dir:lab:/in/a.hl7:42:1700000000000"
        );
    }
}
