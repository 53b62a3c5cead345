//! A test hook: makes the journal's next writes fail as a full disk makes them fail, at a chosen
//! point of a commit (see [`FaultPoint`]), so that tests can check what a sender is told and
//! what survives, without filling a disk.
//!
//! Only in test and debug builds. In a release build [`Faults`] is empty and every check is a
//! constant `Ok` that the compiler removes: the writer's hot path is unchanged. Unit tests arm
//! it with [`super::Journal::fail_next_writes`]; end-to-end tests, which run the debug binary,
//! write `<point> <count>` (`values`, `slots`, `sled` or `fsync`; e.g. `sled 3`) into the file
//! named by [`TRIGGER_ENV`], which the writer reads, then deletes, before each batch.

#[cfg(any(test, debug_assertions))]
use std::sync::Arc;

use super::JournalError;

/// The variable naming the trigger file (read by debug builds only).
pub const TRIGGER_ENV: &str = "ORBITER_TEST_JOURNAL_FAULTS";

/// Where an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Once the batch's records are in the value log, before any pointer to them is written.
    AfterValues,
    /// The slot table's write (after the `by_control` and `by_origin` entries).
    Slots,
    /// sled, once everything of the batch is applied. As with sled 0.34 after an I/O error,
    /// sled then stays failed (every later write and flush fails) until it is reopened; each
    /// attempt to reopen it fails too while the count lasts.
    Sled,
    /// The flusher's `fdatasync` of the value log.
    Fsync,
}

impl FaultPoint {
    pub fn parse(name: &str) -> Option<FaultPoint> {
        match name {
            "values" => Some(FaultPoint::AfterValues),
            "slots" => Some(FaultPoint::Slots),
            "sled" => Some(FaultPoint::Sled),
            "fsync" => Some(FaultPoint::Fsync),
            _ => None,
        }
    }
}

#[cfg(any(test, debug_assertions))]
fn injected(point: FaultPoint) -> JournalError {
    let io = std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        format!("No space left on device (injected at {point:?} by the journal's test hook)"),
    );
    match point {
        FaultPoint::Sled => JournalError::Storage(Arc::new(sled::Error::Io(io))),
        _ => JournalError::Io(Arc::new(io)),
    }
}

/// The armed failures (test and debug builds).
#[cfg(any(test, debug_assertions))]
#[derive(Default)]
pub(crate) struct Faults {
    state: std::sync::Mutex<State>,
    /// The trigger file ([`TRIGGER_ENV`]), if any.
    trigger: Option<std::path::PathBuf>,
}

#[cfg(any(test, debug_assertions))]
#[derive(Default)]
struct State {
    armed: Option<(FaultPoint, u32)>,
    /// An injected sled failure that lasts until sled is reopened.
    sled_down: bool,
}

#[cfg(any(test, debug_assertions))]
impl Faults {
    /// With the trigger file named by [`TRIGGER_ENV`], if set.
    pub fn from_env() -> Faults {
        Faults {
            trigger: std::env::var_os(TRIGGER_ENV).map(std::path::PathBuf::from),
            ..Faults::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `count` writes at `point` fail.
    pub fn arm(&self, point: FaultPoint, count: u32) {
        self.state().armed = (count > 0).then_some((point, count));
    }

    /// Arms what the trigger file says, if there is one.
    pub fn poll_trigger(&self) {
        let Some(path) = &self.trigger else {
            return;
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        let _ = std::fs::remove_file(path);
        let mut words = text.split_whitespace();
        let point = words.next().and_then(FaultPoint::parse);
        let count = words.next().map_or(Some(1), |n| n.parse().ok());
        match (point, count) {
            (Some(point), Some(count)) => {
                tracing::warn!(?point, count, "journal test hook: the next writes fail");
                self.arm(point, count);
            }
            _ => tracing::warn!(text, "journal test hook: not `<point> <count>`"),
        }
    }

    /// Whether the write at `point` fails now (it counts as one of the armed ones).
    pub fn fire(&self, point: FaultPoint) -> Result<(), JournalError> {
        let mut state = self.state();
        match state.armed {
            Some((armed, n)) if armed == point => {
                state.armed = (n > 1).then_some((point, n - 1));
                if point == FaultPoint::Sled {
                    state.sled_down = true;
                }
                Err(injected(point))
            }
            _ => Ok(()),
        }
    }

    /// A write to sled: fails while an injected sled failure lasts.
    pub fn sled(&self) -> Result<(), JournalError> {
        if self.state().sled_down {
            return Err(injected(FaultPoint::Sled));
        }
        Ok(())
    }

    /// An attempt to reopen sled: fails while armed `Sled` failures remain, else ends an
    /// injected sled failure.
    pub fn reopen_sled(&self) -> Result<(), JournalError> {
        let mut state = self.state();
        if state.sled_down {
            if let Some((FaultPoint::Sled, n)) = state.armed {
                state.armed = (n > 1).then_some((FaultPoint::Sled, n - 1));
                return Err(injected(FaultPoint::Sled));
            }
        }
        state.sled_down = false;
        Ok(())
    }
}

/// Release builds: nothing to arm, nothing ever fails.
#[cfg(not(any(test, debug_assertions)))]
#[derive(Default)]
pub(crate) struct Faults;

#[cfg(not(any(test, debug_assertions)))]
impl Faults {
    pub fn from_env() -> Faults {
        Faults
    }

    #[inline(always)]
    pub fn poll_trigger(&self) {}

    #[inline(always)]
    pub fn fire(&self, _point: FaultPoint) -> Result<(), JournalError> {
        Ok(())
    }

    #[inline(always)]
    pub fn sled(&self) -> Result<(), JournalError> {
        Ok(())
    }

    #[inline(always)]
    pub fn reopen_sled(&self) -> Result<(), JournalError> {
        Ok(())
    }
}
