//! Redo after a crash: sled is flushed at checkpoints only, so what the writer applied after
//! the last one may be missing from it (or half there). The value log has every change as a
//! record; replaying the records after the checkpoint, in order, brings sled's pointers and
//! indexes back to what was acknowledged. Every step is idempotent (a pointer moves only
//! forward in log order, index entries are recomputed from the record), so a crash during
//! replay just means replaying again.

use std::collections::HashMap;

use super::keys;
use super::record::{Status, Transaction, TxId};
use super::values::{Kind, Position, Ptr, Scanned};
use super::{JournalError, Trees};

/// The key in the `segments` tree that holds the checkpoint (segment keys are 4 bytes).
pub(super) const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// Where replay starts: everything before it is in sled (`None`: a journal that never
/// checkpointed, replayed from its first segment).
fn checkpoint(trees: &Trees) -> Result<Option<Position>, JournalError> {
    Ok(trees.segments.get(CHECKPOINT_KEY)?.and_then(|v| {
        let v: [u8; 8] = v.as_ref().try_into().ok()?;
        Some((
            u32::from_be_bytes(v[..4].try_into().ok()?),
            u32::from_be_bytes(v[4..].try_into().ok()?),
        ))
    }))
}

/// Records `position` as the checkpoint and flushes sled (at open, after replay).
pub(super) fn set_checkpoint(trees: &Trees, position: Position) -> Result<(), JournalError> {
    let mut value = position.0.to_be_bytes().to_vec();
    value.extend_from_slice(&position.1.to_be_bytes());
    trees.segments.insert(CHECKPOINT_KEY, value)?;
    trees.db.flush()?;
    Ok(())
}

/// Replays the log after the checkpoint; returns how many records it read. When it read any,
/// the per-channel counters and the segments' live bytes are recounted (they are sums, which
/// a half-applied batch leaves in an unknown state).
pub(super) fn replay(trees: &Trees) -> Result<usize, JournalError> {
    let from = checkpoint(trees)?;
    let mut read = 0;
    for segment in trees.values.segments()? {
        let offset = match from {
            Some((s, _)) if segment < s => continue,
            Some((s, offset)) if segment == s => offset,
            _ => 0,
        };
        read += trees
            .values
            .scan(segment, offset, |record| match record.kind {
                Kind::Raw => redo_pointer(&trees.raw, &record),
                Kind::Step => redo_pointer(&trees.steps, &record),
                Kind::Tx => redo_transaction(trees, &record),
                // Not the journal's: the CDR keeps its own log.
                Kind::Resource => Ok(()),
            })?;
    }
    if read > 0 {
        recount_live(trees)?;
        rebuild_stats(trees)?;
    }
    Ok(read)
}

/// The pointer `tree` holds for `key`, if any.
fn current(tree: &sled::Tree, key: &[u8]) -> Result<Option<Ptr>, JournalError> {
    Ok(tree.get(key)?.as_deref().and_then(Ptr::from_bytes))
}

/// A raw body or a step: set or remove the pointer unless a later record already did.
fn redo_pointer(tree: &sled::Tree, record: &Scanned) -> Result<(), JournalError> {
    let now = current(tree, &record.key)?;
    if now.is_some_and(|p| p.position() >= record.ptr.position()) {
        return Ok(());
    }
    if record.tombstone {
        if now.is_some() {
            tree.remove(&record.key)?;
        }
    } else {
        tree.insert(&record.key, &record.ptr.to_bytes())?;
    }
    Ok(())
}

fn redo_transaction(trees: &Trees, record: &Scanned) -> Result<(), JournalError> {
    let Some(id) = TxId::from_key(&record.key) else {
        return Ok(());
    };
    let now = current(&trees.tx, &record.key)?;
    if now.is_some_and(|p| p.position() > record.ptr.position()) {
        return Ok(());
    }
    if record.tombstone {
        if let Some(old) = now {
            let bytes = trees.values.read(old, Kind::Tx, &record.key)?;
            if let Ok(old) = serde_json::from_slice::<Transaction>(&bytes) {
                trees.by_time.remove(keys::time(old.received_at_ms, id))?;
                if let Some(control_id) = &old.meta.control_id {
                    trees.by_control.remove(keys::control(control_id, id))?;
                }
            }
            for status in Status::ALL {
                trees.by_status.remove(keys::status(status, id))?;
            }
            trees.tx.remove(&record.key)?;
        }
        return Ok(());
    }
    let tx: Transaction = serde_json::from_slice(&record.value)
        .map_err(|e| JournalError::Corrupt(format!("transaction {id} in the log: {e}")))?;
    // Indexes are recomputed whole, so a batch that stopped halfway is finished either way.
    trees
        .by_time
        .insert(keys::time(tx.received_at_ms, id), &[])?;
    for status in Status::ALL {
        if status == tx.status {
            trees.by_status.insert(keys::status(status, id), &[])?;
        } else {
            trees.by_status.remove(keys::status(status, id))?;
        }
    }
    if let Some(control_id) = &tx.meta.control_id {
        trees.by_control.insert(
            keys::control(control_id, id),
            keys::sender(&tx.meta).into_bytes(),
        )?;
    }
    if let Some(origin) = &tx.origin_key {
        // The first transaction of an origin key keeps it (as when it was appended).
        if trees.by_origin.get(origin.as_bytes())?.is_none() {
            trees.by_origin.insert(origin.as_bytes(), &id.to_key())?;
        }
    }
    if now != Some(record.ptr) {
        trees.tx.insert(&record.key, &record.ptr.to_bytes())?;
    }
    Ok(())
}

/// Every segment's live bytes, counted again from the pointers.
fn recount_live(trees: &Trees) -> Result<(), JournalError> {
    let mut live: HashMap<u32, i64> = HashMap::new();
    for tree in [&trees.tx, &trees.raw, &trees.steps] {
        for value in tree.iter().values() {
            if let Some(ptr) = Ptr::from_bytes(&value?) {
                *live.entry(ptr.segment).or_default() += i64::from(ptr.len);
            }
        }
    }
    for key in trees.segments.iter().keys() {
        let key = key?;
        if key.len() == 4 {
            trees.segments.remove(key)?;
        }
    }
    for (segment, bytes) in live {
        trees
            .segments
            .insert(segment.to_be_bytes(), &bytes.to_be_bytes())?;
    }
    Ok(())
}

/// The per-channel counters, counted again from the records.
pub(super) fn rebuild_stats(trees: &Trees) -> Result<(), JournalError> {
    let mut counts: HashMap<(String, Status), i64> = HashMap::new();
    for key in trees.tx.iter().keys() {
        let Some(id) = TxId::from_key(&key?) else {
            continue;
        };
        let Ok(Some(tx)) = trees.tx(id) else {
            continue;
        };
        for channel in tx.channel_names() {
            *counts.entry((channel.to_string(), tx.status)).or_default() += 1;
        }
    }
    trees.stats.clear()?;
    for ((channel, status), count) in counts {
        trees
            .stats
            .insert(keys::stats(&channel, status), &count.to_be_bytes())?;
    }
    Ok(())
}
