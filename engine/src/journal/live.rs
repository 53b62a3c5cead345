//! How many bytes of each value-log segment are still referenced: what tells the writer that a
//! segment can be deleted, and which one is worth compacting.
//!
//! The writer keeps the counts in memory and writes the changed ones to sled's `segments` tree
//! at each checkpoint, just before sled's flush. Counting in sled on every batch cost a read and
//! a write of the tree per batch (~3% of a message's instructions) for nothing: sled makes them
//! durable only at the flush, and after a crash [`super::replay`] counts them again from the
//! pointers anyway.

use std::collections::{BTreeSet, HashMap};

use super::{keys, JournalError, Trees};

/// Live bytes per segment; owned by the writer thread.
#[derive(Default)]
pub(super) struct LiveBytes {
    counts: HashMap<u32, i64>,
    /// Segments whose count changed (or that went) since the last [`LiveBytes::persist`].
    changed: BTreeSet<u32>,
}

impl LiveBytes {
    /// The counts sled holds (the segment counters are the `segments` keys of four bytes).
    pub fn load(trees: &Trees) -> Result<Self, JournalError> {
        let mut counts = HashMap::new();
        for entry in trees.segments.iter() {
            let (key, value) = entry?;
            if let Ok(segment) = <[u8; 4]>::try_from(key.as_ref()) {
                counts.insert(u32::from_be_bytes(segment), keys::count(&value));
            }
        }
        Ok(LiveBytes {
            counts,
            changed: BTreeSet::new(),
        })
    }

    /// Adds `deltas`; returns the segments (other than `active`) that nothing refers to any
    /// more, which are no longer counted.
    pub fn add(&mut self, deltas: &HashMap<u32, i64>, active: u32) -> Vec<u32> {
        let mut dead = Vec::new();
        for (&segment, &delta) in deltas {
            if delta == 0 {
                continue;
            }
            self.changed.insert(segment);
            let now = self.counts.get(&segment).copied().unwrap_or(0) + delta;
            if now <= 0 && segment != active {
                self.counts.remove(&segment);
                dead.push(segment);
            } else {
                self.counts.insert(segment, now);
            }
        }
        dead
    }

    /// Every counted segment and its live bytes.
    pub fn iter(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.counts.iter().map(|(&segment, &live)| (segment, live))
    }

    /// Writes every count into sled, and removes the counts of segments that went (after sled
    /// was reopened: what it had lost of them is unknown).
    pub fn persist_all(&mut self, trees: &Trees) -> Result<(), JournalError> {
        for key in trees.segments.iter().keys() {
            let key = key?;
            if let Ok(segment) = <[u8; 4]>::try_from(key.as_ref()) {
                self.changed.insert(u32::from_be_bytes(segment));
            }
        }
        self.changed.extend(self.counts.keys().copied());
        self.persist(trees)
    }

    /// Writes the changed counts into sled (made durable by the caller's flush).
    pub fn persist(&mut self, trees: &Trees) -> Result<(), JournalError> {
        while let Some(segment) = self.changed.pop_first() {
            let key = segment.to_be_bytes();
            let written = match self.counts.get(&segment) {
                Some(live) => trees.segments.insert(key, &live.to_be_bytes()).map(drop),
                None => trees.segments.remove(key).map(drop),
            };
            if let Err(e) = written {
                self.changed.insert(segment);
                return Err(e.into());
            }
        }
        Ok(())
    }
}
