//! The ledger: which files of one source were already journaled, so that neither a restart nor
//! `after = "leave"` takes a file twice.
//!
//! One small JSON file per source (`<data_dir>/sources/<kind>-<channel>/ledger.json`),
//! replaced atomically (write a temporary file, fsync, rename, fsync the directory) on every
//! change: after a crash it holds either the old or the new map, never half of one. An entry
//! is written after the journal took the file and before the file is moved or deleted, so a
//! crash between the two finishes the move on restart instead of journaling the file again.
//! Entries are forgotten once their file is no longer in the directory.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the journal took a file: decides where it goes (`processed_dir` or `error_dir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Handled {
    /// Journaled (some messages may be `failed`, but not all of them).
    Processed,
    /// Refused, unreadable, of unknown format, or every message in it failed.
    Error,
}

#[derive(Debug, thiserror::Error)]
#[error("source ledger {}: {source}", path.display())]
pub struct LedgerError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The handled files of one source, by origin key (`<listener>:<path>:<size>:<mtime>`).
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    entries: BTreeMap<String, Handled>,
}

impl Ledger {
    /// Reads the ledger at `path`; a missing file is an empty ledger.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let error = |source| LedgerError {
            path: path.to_path_buf(),
            source,
        };
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(error(e)),
        };
        Ok(Ledger {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, key: &str) -> Option<Handled> {
        self.entries.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remembers a handled file; durable when this returns.
    pub fn record(&mut self, key: &str, handled: Handled) -> Result<(), LedgerError> {
        self.entries.insert(key.to_string(), handled);
        self.save()
    }

    /// Forgets every file whose key is not in `present` (moved, deleted, or changed since);
    /// writes only when something was forgotten.
    pub fn keep_only(&mut self, present: &HashSet<String>) -> Result<(), LedgerError> {
        let before = self.entries.len();
        self.entries.retain(|key, _| present.contains(key));
        if self.entries.len() != before {
            self.save()?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec_pretty(&self.entries).expect("a string map serializes");
        write_atomically(&self.path, &bytes).map_err(|source| LedgerError {
            path: self.path.clone(),
            source,
        })
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    // The rename itself is only durable once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening_and_forgets_files_that_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sources/dir-a/ledger.json");
        let mut ledger = Ledger::open(&path).unwrap();
        assert!(ledger.is_empty());
        ledger
            .record("dir:a:/in/x.hl7:10:1", Handled::Processed)
            .unwrap();
        ledger
            .record("dir:a:/in/y.hl7:20:2", Handled::Error)
            .unwrap();

        let mut reopened = Ledger::open(&path).unwrap();
        assert_eq!(
            reopened.get("dir:a:/in/x.hl7:10:1"),
            Some(Handled::Processed)
        );
        assert_eq!(reopened.get("dir:a:/in/y.hl7:20:2"), Some(Handled::Error));
        assert_eq!(
            reopened.get("dir:a:/in/x.hl7:11:1"),
            None,
            "a changed file is new"
        );

        let present: HashSet<String> = ["dir:a:/in/y.hl7:20:2".to_string()].into();
        reopened.keep_only(&present).unwrap();
        let again = Ledger::open(&path).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.get("dir:a:/in/x.hl7:10:1"), None);
        assert!(
            !path.with_extension("tmp").exists(),
            "no temporary file left"
        );
    }

    #[test]
    fn a_corrupt_ledger_is_an_error_not_an_empty_one() {
        // Empty would mean taking every left file again: better to say so and stop.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = Ledger::open(&path).unwrap_err().to_string();
        assert!(err.contains("ledger.json"), "{err}");
    }
}
