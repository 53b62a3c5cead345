//! The data dir: the journal and the embedded CDR in it hold patient data, so a new one is
//! private to the engine's user (0700 on Unix), whatever the umask.

use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents, private to this user. An existing dir keeps its
/// mode: an operator may have opened it on purpose (a backup group); see [`open_to_others`].
pub fn create(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// From now on, nothing this process creates is open to other users (files at most 0640,
/// directories 0750, whatever the umask allowed before): the journal, the CDR, spooled and
/// written documents hold patient data. The group keeps what the umask gives it, for an
/// operator who shares the data dir with a backup group on purpose. Call once, at start,
/// before anything is created.
#[cfg(unix)]
pub fn never_for_others() {
    // SAFETY: umask only swaps the process's file mode creation mask; it cannot fail.
    unsafe {
        let old = libc::umask(0o077);
        libc::umask(old | 0o007);
    }
}

#[cfg(not(unix))]
pub fn never_for_others() {}

/// Takes away other users' access to `path` and, for a directory, everything under it (stores
/// made by versions before [`never_for_others`], or by a start with a wider umask); what cannot
/// be changed (another owner) is left and named at debug level.
pub fn close_to_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.file_type().is_symlink() {
            return;
        }
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            let closed = std::fs::Permissions::from_mode(mode & !0o007);
            if let Err(e) = std::fs::set_permissions(path, closed) {
                tracing::debug!(path = %path.display(), error = %e, "cannot close to others");
            }
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                close_to_others(&entry.path());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The permission bits of `dir` when its group or others may enter or read it (for a
/// warning with the fix); `None` when it is private, or on platforms without modes.
pub fn open_to_others(dir: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Bytes free for this user on the filesystem of `dir`; `None` where that cannot be told.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stats` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    (rc == 0).then(|| stats.f_bavail as u64 * stats.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn free_bytes(_: &Path) -> Option<u64> {
    None
}

/// Fails unless this user can create a file in `dir`, with what to do about it: otherwise the
/// first sign is a bare "Permission denied" from deep inside the journal.
pub fn check_writable(dir: &Path) -> Result<(), NotWritable> {
    let probe = dir.join(format!(".orbiter-write-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(NotWritable {
            dir: dir.to_owned(),
            // chown does not help on a read-only mount (a volume mounted readOnly, or the
            // data dir left on the image's read-only root filesystem).
            why: if source.kind() == io::ErrorKind::ReadOnlyFilesystem {
                " is on a read-only filesystem: mount a writable volume there (in Kubernetes, \
                 the data volume at that path, not readOnly)"
                    .to_string()
            } else {
                format!(
                    " is not writable by this process{}: give the engine's user write access \
                     (chown it; in Kubernetes, the pod's fsGroup)",
                    owner_note(dir)
                )
            },
            source,
        }),
    }
}

/// The data dir refused a file.
#[derive(Debug, thiserror::Error)]
#[error("the data dir {dir}{why}, or point --data / ORBITER_DATA_DIR elsewhere")]
pub struct NotWritable {
    dir: std::path::PathBuf,
    /// What is wrong and the fix, with ` (uid 65532; the dir belongs to uid 0, mode 700)`
    /// where that can be told.
    why: String,
    source: io::Error,
}

#[cfg(unix)]
fn owner_note(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    match std::fs::metadata(dir) {
        Ok(m) => format!(
            " (uid {uid}; the dir belongs to uid {}, mode {:o})",
            m.uid(),
            m.mode() & 0o7777
        ),
        Err(_) => format!(" (uid {uid})"),
    }
}

#[cfg(not(unix))]
fn owner_note(_: &Path) -> String {
    String::new()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_data_dir_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/data");
        create(&dir).unwrap();
        for d in [&dir, &root.path().join("var")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        assert_eq!(open_to_others(&dir), None);
        // Existing: left as it is, and reported.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        create(&dir).unwrap();
        assert_eq!(open_to_others(&dir), Some(0o750));
    }

    #[test]
    fn stores_from_before_are_closed_to_others() {
        let root = tempfile::tempdir().unwrap();
        let journal = root.path().join("journal");
        std::fs::create_dir_all(journal.join("values")).unwrap();
        std::fs::write(journal.join("values/0.vlog"), "MSH|...").unwrap();
        std::fs::write(journal.join("db"), "").unwrap();
        for (path, mode) in [
            (journal.clone(), 0o755),
            (journal.join("values"), 0o757),
            (journal.join("values/0.vlog"), 0o644),
            (journal.join("db"), 0o666),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        close_to_others(&journal);
        for (path, mode) in [
            (journal.clone(), 0o750),
            (journal.join("values"), 0o750),
            (journal.join("values/0.vlog"), 0o640),
            (journal.join("db"), 0o660),
        ] {
            let now = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(now, mode, "{}", path.display());
        }
    }
}
