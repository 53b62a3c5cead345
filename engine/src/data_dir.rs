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
}
