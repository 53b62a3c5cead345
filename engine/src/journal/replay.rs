//! Redo after a crash: sled is flushed at checkpoints only, so what the writer applied after
//! the last one may be missing from it (or half there). The value log has every change as a
//! record; replaying the records after the checkpoint, in order, brings the slots, sled's
//! pointers and indexes back to what was acknowledged. Every step is idempotent (a pointer moves only
//! forward in log order, index entries are recomputed from the record), so a crash during
//! replay just means replaying again. After an unclean stop, [`repair_torn`] then undoes the
//! pointers that reached the disk before their records (a power cut between a batch's writes
//! and its fsync).

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use super::keys;
use super::record::{Status, Transaction, TxId};
use super::slots::Slot;
use super::values::{self, Kind, Position, Ptr, Scanned};
use super::{JournalError, Trees};

/// The key in the `segments` tree that holds the checkpoint (segment keys are 4 bytes).
pub(super) const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// Where replay starts: everything before it is in sled (`None`: a journal that never
/// checkpointed, replayed from its first segment).
pub(super) fn checkpoint(trees: &Trees) -> Result<Option<Position>, JournalError> {
    Ok(trees
        .segments
        .get(CHECKPOINT_KEY)?
        .and_then(|v| values::position_from_bytes(&v)))
}

/// Records `position` as the checkpoint and flushes sled (at open, after replay), the slots
/// first.
pub(super) fn set_checkpoint(trees: &Trees, position: Position) -> Result<(), JournalError> {
    trees.slots.sync()?;
    trees
        .segments
        .insert(CHECKPOINT_KEY, &values::position_bytes(position))?;
    trees.db.flush()?;
    Ok(())
}

/// Replays the log after the checkpoint; returns how many records it read. When it read any,
/// the per-channel counters and the segments' live bytes are recounted (they are sums, which
/// a half-applied batch leaves in an unknown state).
pub(super) fn replay(trees: &Trees) -> Result<usize, JournalError> {
    let read = replay_records(trees)?;
    if read > 0 {
        recount_live(trees)?;
        rebuild_stats(trees)?;
    }
    Ok(read)
}

/// [`replay`] without the recounts: for the writer, which reopens sled after a failed write
/// and has the counts right in memory.
pub(super) fn replay_records(trees: &Trees) -> Result<usize, JournalError> {
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
                Kind::Raw => redo_raw(trees, &record),
                Kind::Step => redo_pointer(&trees.steps, &record),
                Kind::Tx => redo_transaction(trees, &record),
                // Not the journal's: the CDR keeps its own log.
                Kind::Resource | Kind::Commit => Ok(()),
            })?;
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

/// Writes one slot back.
fn put(trees: &Trees, id: TxId, slot: Slot) -> Result<(), JournalError> {
    trees.slots.write(&BTreeMap::from([(id.0, slot)]))
}

/// A raw body: set or clear the slot's body pointer unless a later record already did.
fn redo_raw(trees: &Trees, record: &Scanned) -> Result<(), JournalError> {
    let Some(id) = TxId::from_key(&record.key) else {
        return Ok(());
    };
    let mut slot = trees.slots.get(id)?;
    if slot
        .raw
        .is_some_and(|p| p.position() >= record.ptr.position())
    {
        return Ok(());
    }
    slot.raw = (!record.tombstone).then_some(record.ptr);
    put(trees, id, slot)
}

fn redo_transaction(trees: &Trees, record: &Scanned) -> Result<(), JournalError> {
    let Some(id) = TxId::from_key(&record.key) else {
        return Ok(());
    };
    let mut slot = trees.slots.get(id)?;
    let now = slot.record.filter(|_| !slot.is_empty());
    if now.is_some_and(|p| p.position() > record.ptr.position()) {
        return Ok(());
    }
    if record.tombstone {
        if let Some(old) = now {
            if let Ok(old) = trees.tx_at(id, old) {
                if let Some(control_id) = &old.meta.control_id {
                    trees.by_control.remove(keys::control(control_id, id))?;
                }
            }
            put(trees, id, Slot::default())?;
        }
        return Ok(());
    }
    let tx: Transaction = serde_json::from_slice(&record.value)
        .map_err(|e| JournalError::Corrupt(format!("transaction {id} in the log: {e}")))?;
    // Indexes are recomputed whole, so a batch that stopped halfway is finished either way.
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
    slot.record = Some(record.ptr);
    slot.status = Some(tx.status);
    slot.received_at_ms = tx.received_at_ms;
    put(trees, id, slot)
}

/// Every segment's live bytes, counted again from the slots and the step pointers.
fn recount_live(trees: &Trees) -> Result<(), JournalError> {
    let mut live: HashMap<u32, i64> = HashMap::new();
    let mut count = |ptr: Option<Ptr>| {
        if let Some(ptr) = ptr {
            *live.entry(ptr.segment).or_default() += i64::from(ptr.len);
        }
    };
    trees.slots.scan(0, u64::MAX, false, |_, slot| {
        count(slot.record);
        count(slot.raw);
        ControlFlow::Continue(())
    })?;
    for value in trees.steps.iter().values() {
        count(Ptr::from_bytes(&value?));
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
    trees.slots.scan(0, u64::MAX, false, |id, slot| {
        if let Some(Ok(tx)) = slot.record.map(|ptr| trees.tx_at(id, ptr)) {
            for channel in tx.channel_names() {
                *counts.entry((channel.to_string(), tx.status)).or_default() += 1;
            }
        }
        ControlFlow::Continue(())
    })?;
    trees.stats.clear()?;
    for ((channel, status), count) in counts {
        trees
            .stats
            .insert(keys::stats(&channel, status), &count.to_be_bytes())?;
    }
    Ok(())
}

/// Journals written before the slots kept record and body pointers in the `tx_ptr` and
/// `raw_ptr` trees, with `by_time` and `by_status` indexes: move the pointers into the slots
/// once, at open, and drop what the slots replace. The trees are dropped only
/// after the slots are fsynced, so a crash midway just starts over.
pub(super) fn migrate_pointer_trees(trees: &Trees) -> Result<(), JournalError> {
    let names = trees.db.tree_names();
    let replaced = ["tx_ptr", "raw_ptr", "by_time", "by_status"];
    if !names.iter().any(|n| n.as_ref() == b"tx_ptr") {
        // A journal of the first slot layout kept an index of statuses in flight.
        if names.iter().any(|n| n.as_ref() == b"by_status") {
            trees.db.drop_tree("by_status")?;
        }
        return Ok(());
    }
    const CHUNK: usize = 65_536;
    let mut batch: BTreeMap<u64, Slot> = BTreeMap::new();
    let records = trees.db.open_tree("tx_ptr")?;
    for entry in records.iter() {
        let (key, ptr) = entry?;
        let (Some(id), Some(ptr)) = (TxId::from_key(&key), Ptr::from_bytes(&ptr)) else {
            continue;
        };
        let Ok(tx) = trees.tx_at(id, ptr) else {
            continue;
        };
        batch.insert(
            id.0,
            Slot {
                record: Some(ptr),
                raw: None,
                received_at_ms: tx.received_at_ms,
                status: Some(tx.status),
            },
        );
        if batch.len() == CHUNK {
            trees.slots.write(&std::mem::take(&mut batch))?;
        }
    }
    trees.slots.write(&std::mem::take(&mut batch))?;
    let bodies = trees.db.open_tree("raw_ptr")?;
    for entry in bodies.iter() {
        let (key, ptr) = entry?;
        let (Some(id), Some(ptr)) = (TxId::from_key(&key), Ptr::from_bytes(&ptr)) else {
            continue;
        };
        let mut slot = trees.slots.get(id)?;
        if !slot.is_empty() {
            slot.raw = Some(ptr);
            batch.insert(id.0, slot);
        }
        if batch.len() == CHUNK {
            trees.slots.write(&std::mem::take(&mut batch))?;
        }
    }
    trees.slots.write(&batch)?;
    trees.slots.sync()?;
    recount_live(trees)?;
    trees.db.flush()?;
    for name in replaced {
        trees.db.drop_tree(name)?;
    }
    trees.db.flush()?;
    Ok(())
}

/// The key in the `segments` tree present while the journal is open: still there at open, the
/// last stop was unclean (a crash or a power cut). Not four bytes long: those keys are the
/// segments' live-byte counters.
pub(super) const OPEN_KEY: &[u8] = b"opened";
const _: () = assert!(OPEN_KEY.len() != 4 && CHECKPOINT_KEY.len() != 4);

/// After an unclean stop, and after [`replay`]: pointers that reached the disk before the
/// records they point to. The writer writes a batch's records, then its slots and sled
/// entries, and the flusher fsyncs the records a moment later; a power cut in between may
/// keep a pointer whose record the log lost (the kernel writes pages back in any order). Only
/// records after `checkpoint` can be missing (the checkpoint fsynced everything before it).
///
/// - A raw body or transaction record that is lost goes back to the last copy on disk (a
///   compaction may have moved it after the checkpoint; an older record of the transaction,
///   whose status is then redone by resuming it).
/// - A transaction with no raw body or no record left on disk was never acknowledged (the ACK
///   waits for the fsync of both): it is removed, with its steps and its `by_control` and
///   `by_origin` entries, so that the sender's resend is taken as new, not as a duplicate.
/// - A step whose record is lost is removed.
///
/// Returns how many transactions and steps it changed.
pub(super) fn repair_torn(trees: &Trees, checkpoint: Position) -> Result<usize, JournalError> {
    let intact = |ptr: Ptr, kind: Kind, key: &[u8]| -> bool {
        ptr.position() < checkpoint || trees.values.read(ptr, kind, key).is_ok()
    };
    // Each slot with a lost pointer, and which: (raw body lost, record lost).
    let mut torn: BTreeMap<TxId, (Slot, bool, bool)> = BTreeMap::new();
    trees.slots.scan(0, u64::MAX, false, |id, slot| {
        let key = id.to_key();
        let lost = |ptr: Option<Ptr>, kind| ptr.is_some_and(|p| !intact(p, kind, &key));
        let (raw_lost, record_lost) = (lost(slot.raw, Kind::Raw), lost(slot.record, Kind::Tx));
        if !slot.is_empty() && (raw_lost || record_lost) {
            torn.insert(id, (slot, raw_lost, record_lost));
        }
        ControlFlow::Continue(())
    })?;
    let mut removed = std::collections::HashSet::new();
    let mut restored = 0;
    if !torn.is_empty() {
        let on_disk = last_on_disk(trees, &torn)?;
        for (&id, &(mut slot, raw_lost, record_lost)) in &torn {
            if raw_lost {
                slot.raw = on_disk.get(&(id, Kind::Raw)).copied();
            }
            if record_lost {
                slot.record = on_disk.get(&(id, Kind::Tx)).copied();
            }
            match (slot.raw, slot.record) {
                (Some(_), Some(ptr)) => {
                    let tx = trees.tx_at(id, ptr)?;
                    slot.status = Some(tx.status);
                    slot.received_at_ms = tx.received_at_ms;
                    put(trees, id, slot)?;
                    restored += 1;
                }
                _ => {
                    put(trees, id, Slot::default())?;
                    removed.insert(id);
                }
            }
        }
    }
    let mut steps = 0;
    for entry in trees.steps.iter() {
        let (key, value) = entry?;
        let lost = Ptr::from_bytes(&value).is_none_or(|p| !intact(p, Kind::Step, &key));
        if lost || TxId::from_key(&key).is_some_and(|id| removed.contains(&id)) {
            trees.steps.remove(&key)?;
            steps += 1;
        }
    }
    if !removed.is_empty() {
        for entry in trees.by_origin.iter() {
            let (key, value) = entry?;
            if TxId::from_key(&value).is_some_and(|id| removed.contains(&id)) {
                trees.by_origin.remove(&key)?;
            }
        }
        for key in trees.by_control.iter().keys() {
            let key = key?;
            if keys::control_tx(&key).is_some_and(|id| removed.contains(&id)) {
                trees.by_control.remove(&key)?;
            }
        }
    }
    let changed = removed.len() + restored + steps;
    if changed > 0 {
        recount_live(trees)?;
        rebuild_stats(trees)?;
        tracing::warn!(
            removed = removed.len(),
            restored,
            steps,
            "journal: records that did not reach the disk before the stop were rolled back (transactions never acknowledged removed, the others back at their last record on disk)"
        );
    }
    Ok(changed)
}

/// For each id of `wanted`, the last raw body and the last transaction record of it that are
/// on disk. Segments are read newest first (a compaction's copy is in a later segment than
/// its original), each to its end or its first torn record, until every id has both or the log
/// is read: the first found is the newest, and what a scan returns reached the disk.
fn last_on_disk<T>(
    trees: &Trees,
    wanted: &BTreeMap<TxId, T>,
) -> Result<HashMap<(TxId, Kind), Ptr>, JournalError> {
    let mut found: HashMap<(TxId, Kind), Ptr> = HashMap::new();
    for segment in trees.values.segments()?.into_iter().rev() {
        if found.len() == 2 * wanted.len() {
            break;
        }
        let mut newest: HashMap<(TxId, Kind), Ptr> = HashMap::new();
        trees.values.scan(segment, 0, |record| {
            match TxId::from_key(&record.key) {
                Some(id)
                    if matches!(record.kind, Kind::Raw | Kind::Tx)
                        && !record.tombstone
                        && wanted.contains_key(&id) =>
                {
                    newest.insert((id, record.kind), record.ptr);
                }
                _ => {}
            }
            Ok(())
        })?;
        for (wanted, ptr) in newest {
            found.entry(wanted).or_insert(ptr);
        }
    }
    Ok(found)
}
