//! The slot table: one fixed 32-byte slot per transaction id in `<journal>/slots`, saying where
//! the transaction's record and raw body are in the value log, when it arrived, and its status.
//!
//! Why not sled: every sled entry costs ~30 bytes of resident memory for as long as it exists
//! (its page table and node copies, whatever `cache_capacity` says) and a node copy on every
//! insert. A journal of millions of messages with five entries each (record and body pointers,
//! time and status indexes) grew by ~150 MB per million messages and spent most of its writer
//! thread in sled. Ids are dense (the writer hands them out in order), so a file indexed by id
//! needs no tree at all: a read is one `pread`, a batch of appends one `pwrite`, and listing by
//! time or status walks 32 bytes a transaction. Resident memory does not grow with the journal
//! (the kernel's page cache holds the file).
//!
//! Durability follows the sled pointers it replaces: slots are written after the value log and
//! fsynced at checkpoints only; [`super::replay`] rewrites those after the checkpoint, and after
//! an unclean stop puts back those that reached the disk before their records
//! ([`super::replay::repair_torn`]).
//!
//! Layout of a slot (big-endian): record [`Ptr`] (12 bytes), raw body [`Ptr`] (12; length 0 =
//! none), received time in ms (6), status code + 1 (1; 0 = no transaction), check byte (1).
//! An all-zero slot (a hole in a sparse file) is an empty slot.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::record::{Status, TxId};
use super::values::Ptr;
use super::JournalError;

const SLOT_BYTES: usize = 32;

/// Slots read at a time by a scan (64 KiB).
const SCAN_CHUNK: u64 = 2048;

/// What the table knows of one transaction id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub record: Option<Ptr>,
    pub raw: Option<Ptr>,
    pub received_at_ms: i64,
    /// `None`: no transaction has this id (never had, or it was deleted).
    pub status: Option<Status>,
}

impl Slot {
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
    }

    fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        if let Some(ptr) = self.record {
            out[..12].copy_from_slice(&ptr.to_bytes());
        }
        if let Some(ptr) = self.raw {
            out[12..24].copy_from_slice(&ptr.to_bytes());
        }
        let ms = (self.received_at_ms.max(0) as u64).to_be_bytes();
        out[24..30].copy_from_slice(&ms[2..]);
        out[30] = self.status.map_or(0, |s| s.code() + 1);
        if out != [0u8; SLOT_BYTES] {
            out[31] = check(&out[..31]);
        }
        out
    }

    /// `None` when the check byte does not match (a read that raced a write, or damage).
    fn decode(bytes: &[u8]) -> Option<Slot> {
        if bytes.iter().all(|b| *b == 0) {
            return Some(Slot::default());
        }
        if bytes[31] != check(&bytes[..31]) {
            return None;
        }
        let ptr = |b: &[u8]| Ptr::from_bytes(b).filter(|p| p.len > 0);
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&bytes[24..30]);
        let status = match bytes[30] {
            0 => None,
            code => Some(Status::ALL.into_iter().find(|s| s.code() + 1 == code)?),
        };
        Some(Slot {
            record: ptr(&bytes[..12]),
            raw: ptr(&bytes[12..24]),
            received_at_ms: u64::from_be_bytes(ms) as i64,
            status,
        })
    }
}

/// A one-byte check over the slot (never 0 for a non-empty slot, so a zeroed tail is caught).
fn check(bytes: &[u8]) -> u8 {
    let sum = bytes
        .iter()
        .fold(0x5au8, |acc, b| acc.rotate_left(1) ^ b.wrapping_mul(31));
    sum.max(1)
}

fn io_err(e: std::io::Error) -> JournalError {
    JournalError::Io(Arc::new(e))
}

/// The slot file. Reads from any thread; writes from the journal writer only.
pub(crate) struct Slots {
    file: File,
    /// One past the highest id written: where the next id goes.
    end: AtomicU64,
}

impl Slots {
    pub fn open(path: &Path) -> Result<Slots, JournalError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        Ok(Slots {
            file,
            end: AtomicU64::new(len / SLOT_BYTES as u64),
        })
    }

    /// One past the highest id ever written (ids below it may be empty).
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    pub fn get(&self, id: TxId) -> Result<Slot, JournalError> {
        if id.0 >= self.end() {
            return Ok(Slot::default());
        }
        let mut buf = [0u8; SLOT_BYTES];
        // A read can meet a write of the same slot halfway: the check byte catches it, and
        // the next read sees the whole write.
        for _ in 0..3 {
            self.file
                .read_exact_at(&mut buf, id.0 * SLOT_BYTES as u64)
                .map_err(io_err)?;
            if let Some(slot) = Slot::decode(&buf) {
                return Ok(slot);
            }
        }
        Err(JournalError::Corrupt(format!("slot of transaction {id}")))
    }

    /// Writes the slots, one `pwrite` per run of consecutive ids (a batch of appends is one).
    pub fn write(&self, slots: &BTreeMap<u64, Slot>) -> Result<(), JournalError> {
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        let mut highest = None;
        for (&id, slot) in slots {
            if !run.is_empty() && run_start + (run.len() / SLOT_BYTES) as u64 != id {
                self.write_run(run_start, &run)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = id;
            }
            run.extend_from_slice(&slot.encode());
            highest = Some(id);
        }
        if !run.is_empty() {
            self.write_run(run_start, &run)?;
        }
        if let Some(id) = highest {
            self.end.fetch_max(id + 1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Forgets every slot from `end` on (those of a batch that failed): the file is cut there,
    /// which needs no free space.
    pub fn truncate(&self, end: u64) -> Result<(), JournalError> {
        let len = end * SLOT_BYTES as u64;
        if self.file.metadata().map_err(io_err)?.len() > len {
            self.file.set_len(len).map_err(io_err)?;
        }
        self.end.fetch_min(end, Ordering::AcqRel);
        Ok(())
    }

    fn write_run(&self, first: u64, bytes: &[u8]) -> Result<(), JournalError> {
        self.file
            .write_all_at(bytes, first * SLOT_BYTES as u64)
            .map_err(io_err)
    }

    /// Blocks the file takes on disk (a sparse file's holes take none).
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata().map_err(io_err)?.blocks() * 512)
    }

    pub fn sync(&self) -> Result<(), JournalError> {
        self.file.sync_data().map_err(io_err)
    }

    /// Calls `each` with every non-empty slot with an id in `from..to`, in id order (or the
    /// reverse), until it breaks.
    pub fn scan(
        &self,
        from: u64,
        to: u64,
        reverse: bool,
        mut each: impl FnMut(TxId, Slot) -> ControlFlow<()>,
    ) -> Result<(), JournalError> {
        let to = to.min(self.end());
        if from >= to {
            return Ok(());
        }
        let mut buf = vec![0u8; SCAN_CHUNK as usize * SLOT_BYTES];
        let chunks = (to - from).div_ceil(SCAN_CHUNK);
        for n in 0..chunks {
            let n = if reverse { chunks - 1 - n } else { n };
            let start = from + n * SCAN_CHUNK;
            let count = (to - start).min(SCAN_CHUNK);
            let bytes = &mut buf[..count as usize * SLOT_BYTES];
            self.file
                .read_exact_at(bytes, start * SLOT_BYTES as u64)
                .map_err(io_err)?;
            let mut visit = |i: u64| -> Result<ControlFlow<()>, JournalError> {
                let id = TxId(start + i);
                let at = i as usize * SLOT_BYTES;
                let slot = match Slot::decode(&bytes[at..at + SLOT_BYTES]) {
                    Some(slot) => slot,
                    None => self.get(id)?,
                };
                Ok(if slot.is_empty() {
                    ControlFlow::Continue(())
                } else {
                    each(id, slot)
                })
            };
            if reverse {
                for i in (0..count).rev() {
                    if visit(i)?.is_break() {
                        return Ok(());
                    }
                }
            } else {
                for i in 0..count {
                    if visit(i)?.is_break() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// The first id whose transaction arrived after `ms`, by binary search: ids follow arrival
    /// order (a clock that steps back makes the answer approximate, so callers add slack).
    /// Empty slots are skipped forward.
    pub fn first_after(&self, ms: i64) -> Result<u64, JournalError> {
        let (mut lo, mut hi) = (0u64, self.end());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let mut found = None;
            self.scan(mid, hi, false, |id, slot| {
                found = Some((id.0, slot.received_at_ms));
                ControlFlow::Break(())
            })?;
            match found {
                // Only empty slots from `mid` up: the answer is below.
                None => hi = mid,
                Some((_, received)) if received > ms => hi = mid,
                Some((id, _)) => lo = id + 1,
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(segment: u32, offset: u32) -> Ptr {
        Ptr {
            segment,
            offset,
            len: 40,
        }
    }

    #[test]
    fn slots_round_trip_and_holes_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(&dir.path().join("slots")).unwrap();
        let full = Slot {
            record: Some(ptr(3, 1000)),
            raw: Some(ptr(2, 77)),
            received_at_ms: 1_764_660_000_123,
            status: Some(Status::Received),
        };
        let no_body = Slot {
            raw: None,
            status: Some(Status::Failed),
            ..full
        };
        let mut writes = BTreeMap::new();
        writes.insert(5, full);
        writes.insert(6, no_body);
        writes.insert(1_000_000, full);
        slots.write(&writes).unwrap();
        assert_eq!(slots.end(), 1_000_001);
        // The gap is a hole: the file is 32 MB long but takes a few blocks.
        assert!(slots.size_on_disk().unwrap() < 1 << 20);
        assert_eq!(slots.get(TxId(5)).unwrap(), full);
        assert_eq!(slots.get(TxId(6)).unwrap(), no_body);
        assert!(slots.get(TxId(7)).unwrap().is_empty());
        assert!(slots.get(TxId(2_000_000)).unwrap().is_empty());
        let mut seen = Vec::new();
        slots
            .scan(0, u64::MAX, true, |id, _| {
                seen.push(id.0);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(seen, vec![1_000_000, 6, 5]);
        // Reopened, the end is where the file ends.
        drop(slots);
        let slots = Slots::open(&dir.path().join("slots")).unwrap();
        assert_eq!(slots.end(), 1_000_001);
        assert_eq!(slots.get(TxId(1_000_000)).unwrap(), full);
    }

    #[test]
    fn a_damaged_slot_is_an_error_not_a_wrong_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slots");
        let slots = Slots::open(&path).unwrap();
        let slot = Slot {
            record: Some(ptr(1, 2)),
            raw: None,
            received_at_ms: 9,
            status: Some(Status::Delivered),
        };
        slots.write(&BTreeMap::from([(0, slot)])).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(slots.get(TxId(0)), Err(JournalError::Corrupt(_))));
    }

    #[test]
    fn first_after_finds_the_arrival_boundary_across_holes() {
        let dir = tempfile::tempdir().unwrap();
        let slots = Slots::open(&dir.path().join("slots")).unwrap();
        let at = |ms| Slot {
            record: Some(ptr(1, 0)),
            raw: None,
            received_at_ms: ms,
            status: Some(Status::Delivered),
        };
        // Ids 0..10 at 100, 110, ...; then a hole (a restart of an old journal); 5000.. at 500...
        let mut writes: BTreeMap<u64, Slot> =
            (0..10).map(|i| (i, at(100 + 10 * i as i64))).collect();
        writes.extend((5000..5010).map(|i| (i, at(500 + (i - 5000) as i64))));
        slots.write(&writes).unwrap();
        assert_eq!(slots.first_after(0).unwrap(), 0);
        assert_eq!(slots.first_after(100).unwrap(), 1);
        assert_eq!(slots.first_after(155).unwrap(), 6);
        assert_eq!(slots.first_after(190).unwrap(), 10);
        assert_eq!(slots.first_after(499).unwrap(), 10);
        assert_eq!(slots.first_after(503).unwrap(), 5004);
        assert_eq!(slots.first_after(10_000).unwrap(), 5010);
    }
}
