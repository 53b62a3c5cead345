//! Transactions per channel and status (`GET /api/channels/stats`, the dashboard's counters).
//!
//! The writer changes them with each batch and the API reads them, both from memory; the
//! changed ones go to sled's `stats` tree at each checkpoint, just before sled's flush. Reading
//! and rewriting the tree on every batch cost ~3% of a message's instructions for nothing:
//! sled makes them durable only at the flush, and after a crash [`super::replay`] counts them
//! again from the records anyway.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::record::Status;
use super::{keys, ChannelStats, JournalError, Trees};

/// Shared by the writer (which alone changes them) and the journal's readers.
#[derive(Clone, Default)]
pub(super) struct ChannelCounts {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    /// By `stats` key (channel, NUL, status byte): the tree's own order.
    by_key: BTreeMap<Vec<u8>, i64>,
    /// Keys changed since the last [`ChannelCounts::persist`].
    changed: BTreeSet<Vec<u8>>,
}

impl ChannelCounts {
    /// The counts sled holds.
    pub fn load(trees: &Trees) -> Result<Self, JournalError> {
        let mut by_key = BTreeMap::new();
        for entry in trees.stats.iter() {
            let (key, value) = entry?;
            by_key.insert(key.to_vec(), keys::count(&value));
        }
        Ok(ChannelCounts {
            inner: Arc::new(Mutex::new(Counts {
                by_key,
                changed: BTreeSet::new(),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A panic while holding it leaves plain numbers behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one batch's changes (a count never goes below zero).
    pub fn add(&self, deltas: HashMap<(String, Status), i64>) {
        let mut counts = self.lock();
        for ((channel, status), delta) in deltas {
            if delta == 0 {
                continue;
            }
            let key = keys::stats(&channel, status);
            let count = counts.by_key.entry(key.clone()).or_default();
            *count = (*count + delta).max(0);
            counts.changed.insert(key);
        }
    }

    /// Per channel, the statuses with a count above zero.
    pub fn snapshot(&self) -> Vec<ChannelStats> {
        let counts = self.lock();
        let mut out: Vec<ChannelStats> = Vec::new();
        for (key, &count) in &counts.by_key {
            let Some((channel, status)) = keys::stats_parts(key) else {
                continue;
            };
            if out.last().is_none_or(|s| s.channel != channel) {
                out.push(ChannelStats {
                    channel,
                    counts: Default::default(),
                });
            }
            if count != 0 {
                out.last_mut()
                    .expect("pushed above")
                    .counts
                    .insert(status, count);
            }
        }
        out
    }

    /// Writes every count into sled (after sled was reopened: what it had lost of them is
    /// unknown).
    pub fn persist_all(&self, trees: &Trees) -> Result<(), JournalError> {
        {
            let mut counts = self.lock();
            let keys: Vec<Vec<u8>> = counts.by_key.keys().cloned().collect();
            counts.changed.extend(keys);
        }
        self.persist(trees)
    }

    /// Writes the changed counts into sled (made durable by the caller's flush).
    pub fn persist(&self, trees: &Trees) -> Result<(), JournalError> {
        let mut counts = self.lock();
        while let Some(key) = counts.changed.pop_first() {
            let count = counts.by_key.get(&key).copied().unwrap_or(0);
            if let Err(e) = trees.stats.insert(&key, &count.to_be_bytes()) {
                counts.changed.insert(key);
                return Err(e.into());
            }
        }
        Ok(())
    }
}
