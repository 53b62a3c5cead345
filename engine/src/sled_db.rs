//! Opening a sled database that this process may have just closed.
//!
//! sled 0.34 locks its `db` file for as long as any of its internals hold the file: its IO
//! threads (`sled-io-*`) finish a write in flight after the last `Db` handle is dropped, so an
//! open right after a close (a test that reopens a store, an in-process restart) can find the
//! lock still held for a few milliseconds and fail with "could not acquire lock". sled's own
//! test builds block on the lock for this reason. A lock held by another process is a real
//! conflict (two engines on one data dir) and is reported after [`LOCK_WAIT`].
//!
//! sled writes a snapshot to `snap.<lsn>.generating` and renames it to `snap.<lsn>` once it is
//! complete and synced; the rename is the commit. But at open it reads the last `snap.*` file
//! by name, `.generating` ones included, and refuses a short one as corrupt. A start on a full
//! disk leaves an empty `.generating` file behind (the snapshot sled writes as it opens), so
//! every later start failed with "Read corrupted data", free space or not (sled issue #1527).
//! Such a file was never committed: the snapshot before it and the log replace it, as if the
//! write had not begun, so [`open`] removes it first.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long an open waits for sled's file lock before reporting it held.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens `config`, retrying while the file lock is held, for up to [`LOCK_WAIT`].
pub fn open(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        remove_unfinished_snapshots(&config.path)?;
        match config.open() {
            Err(e) if is_lock_held(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// sled reports a held lock as an `Io` error of kind `Other` with this message (config.rs).
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// Removes the `snap.*.generating` files in `dir`: snapshots whose write never finished (see
/// the module doc). Only while nothing holds sled's lock: an open database (another engine on
/// the same data dir, which its open then reports) may be writing one at this moment. A
/// missing dir has none.
fn remove_unfinished_snapshots(dir: &Path) -> std::io::Result<()> {
    if lock_held(dir)? {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(
                file = %entry.path().display(),
                "removing a snapshot whose write did not finish (a crash or a full disk while it was written); the database opens from its log"
            );
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Whether an open handle holds sled's lock on `<dir>/db` (sled takes an exclusive `flock` on
/// it for as long as the database is open, on Linux). Probed with a non-blocking lock of our
/// own, released when the probe's file closes.
#[cfg(target_os = "linux")]
fn lock_held(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    let file = match std::fs::File::open(dir.join("db")) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // SAFETY: flock on a descriptor this function owns; it is closed (and unlocked) on return.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(false);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(true)
    } else {
        Err(e)
    }
}

/// Elsewhere sled's lock cannot be probed the same way: assume it free, as before this check.
#[cfg(not(target_os = "linux"))]
fn lock_held(_: &Path) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_waits_for_a_lock_released_meanwhile_and_reports_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path()).flush_every_ms(None);
        let first = open(&config).unwrap();
        // Kept past the wait: a clear error, after about LOCK_WAIT.
        let started = Instant::now();
        let held = open(&config).expect_err("the lock is held");
        assert!(is_lock_held(&held), "{held}");
        assert!(started.elapsed() >= LOCK_WAIT);
        // Released while waiting: the open succeeds.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(first);
        });
        let second = open(&config).expect("opens once the first handle is gone");
        releaser.join().unwrap();
        drop(second);
    }

    #[test]
    fn an_unfinished_snapshot_left_by_a_full_disk_does_not_stop_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path()).flush_every_ms(None);
        let db = open(&config).unwrap();
        for i in 0u32..2_000 {
            db.insert(i.to_be_bytes(), vec![7u8; 100]).unwrap();
        }
        db.flush().unwrap();
        drop(db);
        // What a start on a full disk leaves: sled created the file and could write nothing.
        let unfinished = dir.path().join("snap.00000000FFFFFFFF.generating");
        std::fs::write(&unfinished, b"").unwrap();
        // sled by itself (waiting out the lock its IO threads may still hold) takes the empty
        // file for its last snapshot.
        let started = Instant::now();
        let refused = loop {
            match config.open() {
                Err(e) if is_lock_held(&e) && started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => break e,
                Ok(_) => panic!("sled opened a database whose last snapshot is empty"),
            }
        };
        assert!(
            matches!(refused, sled::Error::Corruption { .. }),
            "{refused}"
        );

        let db = open(&config).expect("opens from the log");
        assert!(!unfinished.exists());
        assert_eq!(db.len(), 2_000);
        assert_eq!(db.get(1_999u32.to_be_bytes()).unwrap().unwrap().len(), 100);
    }

    #[test]
    fn a_snapshot_being_written_by_an_open_database_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = sled::Config::new().path(dir.path()).flush_every_ms(None);
        let running = open(&config).unwrap();
        // As if the running database were writing its next snapshot.
        let in_progress = dir.path().join("snap.00000000FFFFFFFF.generating");
        std::fs::write(&in_progress, b"").unwrap();
        let second = sled::Config::new().path(dir.path()).flush_every_ms(None);
        let refused = open(&second).expect_err("the first holds the lock");
        assert!(is_lock_held(&refused), "{refused}");
        assert!(
            in_progress.exists(),
            "a second open removed the running one's snapshot"
        );
        drop(running);
    }
}
