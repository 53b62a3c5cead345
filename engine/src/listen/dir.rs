//! The folder transport of file sources (`kind = "dir"`): a local directory, polled.
//!
//! Polling rather than inotify: it works the same on every file system (NFS and SMB mounts,
//! where partners' drops often live, do not deliver inotify events) and the shared stability
//! check needs a look at sizes anyway. Files are journaled from where they are, not copied.

use std::path::{Path, PathBuf};

use super::files::{unique_name, Fetched, FileStore, ListedFile, SourceError};

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(dir: &str) -> DirStore {
        DirStore {
            root: PathBuf::from(dir),
        }
    }

    /// `to_dir` under the watched directory, unless absolute.
    fn resolve(&self, to_dir: &str) -> PathBuf {
        self.root.join(to_dir)
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> SourceError {
    move |source| SourceError::Io { what, source }
}

impl FileStore for DirStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn list(&mut self) -> Result<Vec<ListedFile>, SourceError> {
        let what = || format!("listing {}", self.root.display());
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(io(what()))?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io(what()))? {
            // `DirEntry::metadata` does not follow links: a link is skipped like a directory.
            let Ok(meta) = entry.metadata().await else {
                continue; // removed between listing and stat
            };
            if !meta.is_file() {
                continue;
            }
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(dir = %self.root.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            files.push(ListedFile {
                name,
                size: meta.len(),
                modified_ms,
            });
        }
        Ok(files)
    }

    async fn fetch(&mut self, file: &ListedFile, _spool: &Path) -> Result<Fetched, SourceError> {
        let path = self.root.join(&file.name);
        // Open it once now so that an unreadable file is told apart from a journal failure.
        match tokio::fs::File::open(&path).await {
            Ok(_) => Ok(Fetched {
                path,
                spooled: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::Gone {
                name: file.name.clone(),
            }),
            Err(e) => Err(SourceError::Unreadable {
                name: file.name.clone(),
                reason: e.to_string(),
            }),
        }
    }

    async fn move_to(&mut self, name: &str, to_dir: &str) -> Result<(), SourceError> {
        let target_dir = self.resolve(to_dir);
        tokio::fs::create_dir_all(&target_dir)
            .await
            .map_err(io(format!("creating {}", target_dir.display())))?;
        let mut target = target_dir.join(name);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            target = target_dir.join(unique_name(name));
        }
        let from = self.root.join(name);
        tokio::fs::rename(&from, &target).await.map_err(io(format!(
            "moving {} to {} (same file system?)",
            from.display(),
            target.display()
        )))
    }

    async fn remove(&mut self, name: &str) -> Result<(), SourceError> {
        let path = self.root.join(name);
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(format!("deleting {}", path.display()))(e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_regular_files_only_and_moves_without_overwriting() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("a.hl7"), b"MSH|1").unwrap();
        std::fs::create_dir(root.join("processed")).unwrap();
        std::fs::write(root.join("processed/a.hl7"), b"older").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("a.hl7"), root.join("link.hl7")).unwrap();

        let mut store = DirStore::new(root.to_str().unwrap());
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!((listed[0].name.as_str(), listed[0].size), ("a.hl7", 5));

        let fetched = store.fetch(&listed[0], root).await.unwrap();
        assert!(!fetched.spooled);
        assert_eq!(fetched.path, root.join("a.hl7"));

        store.move_to("a.hl7", "processed").await.unwrap();
        assert!(!root.join("a.hl7").exists());
        assert_eq!(
            std::fs::read(root.join("processed/a.hl7")).unwrap(),
            b"older"
        );
        let moved: Vec<_> = std::fs::read_dir(root.join("processed")).unwrap().collect();
        assert_eq!(
            moved.len(),
            2,
            "the older file was kept, the new one renamed"
        );

        let gone = store.fetch(&listed[0], root).await.unwrap_err();
        assert!(matches!(gone, SourceError::Gone { .. }), "{gone}");
        store.remove("a.hl7").await.unwrap();
    }
}
