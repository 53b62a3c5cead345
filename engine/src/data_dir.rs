//! The data dir: the journal and the embedded CDR in it hold patient data, so a new one is
//! private to the engine's user (0700 on Unix), whatever the umask.

use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents, private to this user. An existing dir keeps its
/// mode: an operator may have opened it on purpose (a backup group); see [`privacy`].
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

/// The stores that hold patient data, closed to others at start ([`close_to_others`]).
pub const STORES: &[&str] = &["journal", "cdr"];

/// Who besides the engine's user may reach the data dir and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privacy {
    /// Only this user (and on platforms without modes, as far as can be told).
    Private,
    /// Its group or others may enter it, and this user can change that: `chmod 700` it.
    Open { mode: u32 },
    /// Open, and not this user's to change (another owner: a volume's root, such as K3s
    /// local-path's root-owned 0777 dir for an engine running as uid 65532), but every entry in
    /// it (the journal, the CDR...) is closed to others: they can list names, not read data.
    DirOnly { mode: u32, owner: u32, uid: u32 },
    /// Open, not this user's to change, and these entries of it are open to others too.
    Exposed {
        mode: u32,
        owner: u32,
        uid: u32,
        entries: Vec<String>,
    },
}

/// How private `dir` is (see [`Privacy`]), as it is now.
pub fn privacy(dir: &Path) -> Privacy {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(dir) else {
            return Privacy::Private;
        };
        let entries: Vec<(String, u32)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let meta = std::fs::symlink_metadata(entry.path()).ok()?;
                // A link's own mode means nothing; where it leads is not ours to judge.
                (!meta.file_type().is_symlink()).then(|| {
                    (
                        entry.file_name().to_string_lossy().into_owned(),
                        meta.mode(),
                    )
                })
            })
            .collect();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        judge(meta.mode(), meta.uid(), uid, &entries)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Privacy::Private
    }
}

/// [`privacy`] from the facts: the dir's mode and owner, this process's uid, and the name and
/// mode of each entry of the dir.
fn judge(mode: u32, owner: u32, uid: u32, entries: &[(String, u32)]) -> Privacy {
    let mode = mode & 0o777;
    if mode & 0o077 == 0 {
        return Privacy::Private;
    }
    // The owner, or root, can chmod it.
    if owner == uid || uid == 0 {
        return Privacy::Open { mode };
    }
    let mut exposed: Vec<String> = entries
        .iter()
        .filter(|(_, mode)| mode & 0o007 != 0)
        .map(|(name, _)| name.clone())
        .collect();
    exposed.sort();
    if exposed.is_empty() {
        Privacy::DirOnly { mode, owner, uid }
    } else {
        Privacy::Exposed {
            mode,
            owner,
            uid,
            entries: exposed,
        }
    }
}

/// At start: closes the stores in `dir` to others (see [`STORES`]), then says how private
/// `dir` is. WARN when others may read patient data, or when this user can close the dir and
/// has not; INFO, without a fix nobody here can make, when only the dir itself is open and is
/// not this user's (the entries holding data are closed).
pub fn report_privacy(dir: &Path) {
    for store in STORES {
        close_to_others(&dir.join(store));
    }
    let shown = dir.display();
    match privacy(dir) {
        Privacy::Private => {}
        Privacy::Open { mode } => tracing::warn!(
            dir = %shown,
            mode = format!("{mode:o}"),
            "the data dir (patient data) is open to other users: chmod 700 it"
        ),
        Privacy::DirOnly { mode, owner, uid } => tracing::info!(
            dir = %shown,
            mode = format!("{mode:o}"),
            owner,
            uid,
            "the data dir is open to other users but belongs to another user (a volume's root?), \
             so this process cannot close it; what it holds is closed to them: they may list \
             its entries (and rename them where it is writable to them), not read their data"
        ),
        Privacy::Exposed {
            mode,
            owner,
            uid,
            entries,
        } => tracing::warn!(
            dir = %shown,
            mode = format!("{mode:o}"),
            owner,
            uid,
            entries = entries.join(", "),
            "the data dir (patient data) and these entries of it are open to other users; \
             the dir belongs to another user: close the entries (chmod o-rwx, as their owner), \
             or have the dir's owner chmod 700 it"
        ),
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
        assert_eq!(privacy(&dir), Privacy::Private);
        // Existing: left as it is, and reported.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        create(&dir).unwrap();
        assert_eq!(privacy(&dir), Privacy::Open { mode: 0o750 });
    }

    #[test]
    fn a_dir_that_is_not_ours_is_judged_by_what_it_holds() {
        let closed = [
            ("journal".to_string(), 0o40750),
            ("admin.token".into(), 0o100600),
        ];
        // Private, whoever owns it.
        assert_eq!(judge(0o40700, 0, 65532, &closed), Privacy::Private);
        // Ours (or we are root): the fix is ours to make.
        assert_eq!(
            judge(0o40755, 65532, 65532, &closed),
            Privacy::Open { mode: 0o755 }
        );
        assert_eq!(judge(0o40777, 0, 0, &closed), Privacy::Open { mode: 0o777 });
        // K3s local-path: root's 0777 dir, the engine as 65532, its stores closed.
        assert_eq!(
            judge(0o40777, 0, 65532, &closed),
            Privacy::DirOnly {
                mode: 0o777,
                owner: 0,
                uid: 65532
            }
        );
        // The same with a store that others can read: still a warning, naming it.
        let mut open = closed.to_vec();
        open.push(("cdr".into(), 0o40755));
        open.push(("out".into(), 0o40751));
        assert_eq!(
            judge(0o40777, 0, 65532, &open),
            Privacy::Exposed {
                mode: 0o777,
                owner: 0,
                uid: 65532,
                entries: vec!["cdr".into(), "out".into()]
            }
        );
    }

    #[test]
    fn privacy_reads_the_dir_and_its_entries() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        create(&dir).unwrap();
        assert_eq!(privacy(&dir), Privacy::Private);
        std::fs::create_dir(dir.join("journal")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        // This process owns it (or is root): its to close.
        assert_eq!(privacy(&dir), Privacy::Open { mode: 0o777 });
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
