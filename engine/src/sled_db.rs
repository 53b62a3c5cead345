//! Opening a sled database that this process may have just closed.
//!
//! sled 0.34 locks its `db` file for as long as any of its internals hold the file: its IO
//! threads (`sled-io-*`) finish a write in flight after the last `Db` handle is dropped, so an
//! open right after a close (a test that reopens a store, an in-process restart) can find the
//! lock still held for a few milliseconds and fail with "could not acquire lock". sled's own
//! test builds block on the lock for this reason. A lock held by another process is a real
//! conflict (two engines on one data dir) and is reported after [`LOCK_WAIT`].

use std::time::{Duration, Instant};

/// How long an open waits for sled's file lock before reporting it held.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens `config`, retrying while the file lock is held, for up to [`LOCK_WAIT`].
pub fn open(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
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
}
