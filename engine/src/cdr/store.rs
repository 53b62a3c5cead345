//! Resources, versions and history in sled, one writer at a time, durable by group commit.
//!
//! Writes go through a [`Writer`], which holds the store's write lock: the checks a write
//! depends on (the current version for `If-Match`, the matches of a conditional create) and the
//! write itself cannot interleave with another writer. A writer stages everything (the current
//! record, the new version, the index entries removed and added) and [`Writer::commit`] applies
//! it; dropping a writer without committing writes nothing, which is how a failed transaction
//! leaves no trace.
//!
//! Atomicity and durability come from the value log, used as a redo log (as the journal does):
//! a commit appends one [`Kind::Commit`] record holding all its sled operations, after the
//! bodies of its versions, then applies the operations with plain inserts and removes (not
//! `sled::Batch`: sled 0.34 guards `apply_batch` with a process-wide lock that every insert in
//! the process then takes, the journal's included). A caller then waits in
//! [`Store::wait_durable`]: the first waiter `fdatasync`s the log for every commit applied so
//! far (group commit) while later writers keep going. sled itself is flushed only at
//! checkpoints (every [`CHECKPOINT_EVERY`] by a thread of its own, so that no writer waits for
//! a sled flush, and when the store is dropped), with
//! the log position it covers; at open, the commit records after that position are applied
//! again in order (puts and removes of whole values: idempotent), so sled holds every commit
//! that was answered. Checkpoints fsync the log before flushing sled. sled also writes its
//! pages out on its own, though, so after a power cut it may hold a commit that was never
//! answered whose bodies the log lost: at the next open after an unclean stop, such versions
//! are rolled back to the last one that reached the disk ([`Store::repair_torn_versions`]).
//! Readers may see a commit's writes land one by one
//! during the microseconds it is applied; writers are serialised by the write lock and never
//! do. (Stores from before the redo log kept an `intents` tree for the same purpose; an intent
//! left by a crash is still applied at open.)
//!
//! A failed sled write (a full disk) stops writes, not reads: sled 0.34 fails every write after
//! one I/O error until it is opened again, and the commit it failed may be half applied, so
//! writes answer [`CdrError::Halted`] (503; `/ready` says `cdr_halted`) until sled is reopened.
//! That happens in place, without a restart, once the filesystem has [`RECOVER_FREE_BYTES`] free
//! ([`Store::recover`]; the CDR's checkpoint thread tries every second): every sled handle is
//! let go, sled is opened again with the same config, and the commit records after the last
//! checkpoint are applied again as at open. The failed commit's record is among them, so it is
//! completed, as a restart would complete it: **a write answered 503 `Halted` may still have
//! been written.** A channel's retry of it is idempotent (its plain creates are written as
//! `PUT`s with ids derived from the delivery: see [`crate::deliver::creates`]); a REST client
//! that retries a plain `POST` may create a second copy. The record is not cut off the log, as
//! the journal cuts a failed batch, because sled may already hold part of that commit on disk
//! (it writes its pages out on its own), and only applying the commit whole makes that part
//! consistent again without a list of what each of its writes replaced.
//!
//! The current version lives in the resource's `R` record (one insert for a create); when it is
//! replaced, it moves to the `H` history keys. A version's JSON is appended to the CDR's value
//! log (`<dir>/values/`, the journal's [`ValueLog`]) and the record holds its header and a
//! 12-byte pointer: sled 0.34 copies a whole leaf node (up to ~17 values) on every insert and
//! keeps its pages in memory, so bodies in sled cost CPU and memory for every write near them,
//! and a replaced version moved to the history would be copied again. The log is append-only
//! (history is kept for ever), so it needs no compaction. Stores written before the log keep their
//! versions in sled, in chunks of at most [`CHUNK`] bytes (a header with a chunk count of 0
//! marks a version in the log); both are read.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::datetime;
use super::index;
use super::outcome::CdrError;
use super::request::Method;
use crate::journal::values::{
    position_bytes, position_from_bytes, Appender, Kind, Position, Ptr, ValueLog, SEGMENT_BYTES,
};

// For the doc links to the checkpoint pace (the journal's).
#[cfg(doc)]
use crate::journal::values::CHECKPOINT_EVERY;

/// Largest piece of a version's JSON stored under one key.
pub const CHUNK: usize = 2048;

/// Free space on the CDR's filesystem before sled is reopened after a failed write: the
/// journal's bound for its own reopen (two value-log segments, 32 MiB; `/ready` asks as much).
pub const RECOVER_FREE_BYTES: u64 = 2 * SEGMENT_BYTES;

/// How often [`Store::recover_if_due`] tries, at most (the journal's pace too).
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The current state of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Its latest version number (1-based).
    pub vid: u64,
    /// Whether that version is a deletion.
    pub deleted: bool,
    /// When that version was written (Unix ms).
    pub last_updated: i64,
}

/// One version of a resource, as stored.
#[derive(Debug, Clone)]
pub struct Version {
    /// The version number.
    pub vid: u64,
    /// A deletion (no body).
    pub deleted: bool,
    /// The interaction that wrote it (POST, PUT, DELETE), for history entries.
    pub method: Method,
    /// When it was written (Unix ms).
    pub last_updated: i64,
    /// The resource's JSON, `meta` included; `None` for deletions.
    pub body: Option<Vec<u8>>,
}

impl Version {
    /// The resource, parsed.
    pub fn resource(&self) -> Result<Option<Value>, CdrError> {
        match &self.body {
            None => Ok(None),
            Some(b) => serde_json::from_slice(b)
                .map(Some)
                .map_err(|e| CdrError::Corrupt(format!("stored resource is not JSON: {e}"))),
        }
    }

    fn current(&self) -> Current {
        Current {
            vid: self.vid,
            deleted: self.deleted,
            last_updated: self.last_updated,
        }
    }
}

/// Header of the first chunk of a version (in `R` for the current one, `H` for older ones):
/// version, deleted, method, lastUpdated, chunk count (0: the body is in the value log, and a
/// [`Ptr`] follows the header).
const HEADER: usize = 8 + 1 + 1 + 8 + 2;

struct Header {
    vid: u64,
    deleted: bool,
    method: Method,
    last_updated: i64,
    chunks: u16,
}

impl Header {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.vid.to_be_bytes());
        out.push(u8::from(self.deleted));
        out.push(method_code(self.method));
        out.extend_from_slice(&self.last_updated.to_be_bytes());
        out.extend_from_slice(&self.chunks.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Result<Header, CdrError> {
        let h = b
            .get(..HEADER)
            .ok_or_else(|| CdrError::Corrupt("version header too short".into()))?;
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[i..i + 8]);
            a
        };
        Ok(Header {
            vid: u64::from_be_bytes(u64_at(0)),
            deleted: h[8] != 0,
            method: method_of(h[9]),
            last_updated: i64::from_be_bytes(u64_at(10)),
            chunks: u16::from_be_bytes([h[18], h[19]]),
        })
    }
}

fn method_code(m: Method) -> u8 {
    match m {
        Method::Post => 1,
        Method::Put => 2,
        Method::Delete => 3,
        _ => 0,
    }
}

fn method_of(code: u8) -> Method {
    match code {
        1 => Method::Post,
        3 => Method::Delete,
        _ => Method::Put,
    }
}

/// The sled store of the CDR.
pub struct Store {
    /// sled's handles: `None` only while they are reopened after a failed write (see
    /// [`Store::recover`]); readers then get [`CdrError::Reopening`].
    sled: RwLock<Option<Arc<Sled>>>,
    /// What sled is opened (and reopened) with.
    sled_config: sled::Config,
    /// Held by the one [`Writer`] at a time.
    write_lock: Mutex<()>,
    /// Group commit state: what is applied, what is durable, who is flushing.
    commit: Mutex<CommitState>,
    /// Wakes writers waiting for a flush.
    flushed: Condvar,
    /// Version bodies (see the module docs).
    values: Arc<ValueLog>,
    /// The value log's appender; used under the write lock, so never contended.
    appender: Mutex<Appender>,
    /// For error messages.
    dir: PathBuf,
    /// A commit's record reached the log but sled failed to apply it (a full disk): no write
    /// is taken until sled is reopened and that commit completed from the log, in place once
    /// the disk has room ([`Store::recover`]) or at the next open. Writing on would plan
    /// against a half-applied commit, and a client retrying it would create its resources
    /// again under new ids.
    halted: AtomicBool,
    /// When [`Store::recover_if_due`] last tried.
    last_try: Mutex<Option<Instant>>,
    /// Free space [`Store::recover`] waits for: [`RECOVER_FREE_BYTES`]; tests change it
    /// rather than fill a disk.
    recover_free_bytes: AtomicU64,
    /// Tests: the next commit fails as sled failing would.
    #[cfg(test)]
    fail_next_apply: AtomicBool,
}

/// sled's handles, let go of together when sled is reopened: sled locks its files for as long
/// as any of them is alive.
struct Sled {
    /// Kept for flushing; the data is in `tree`.
    db: sled::Db,
    /// The one tree holding resources, versions and indexes (see [`index`]).
    tree: sled::Tree,
    /// Commits interrupted by a crash in stores from before the redo log (see the module docs).
    intents: sled::Tree,
    /// The checkpoint: the value-log position up to which sled holds every commit.
    wal: sled::Tree,
    /// sled's log file, opened to fsync it after sled's flush.
    log_file: File,
    /// Tests: this sled failed, as sled 0.34 does after an I/O error: every later write and
    /// flush fails until it is opened again.
    #[cfg(test)]
    failed: AtomicBool,
}

impl Sled {
    fn open(config: &sled::Config, dir: &Path) -> Result<Sled, CdrError> {
        let db = crate::sled_db::open(config)?;
        let tree = db.open_tree("cdr")?;
        let intents = db.open_tree("intents")?;
        let wal = db.open_tree("wal")?;
        // sled 0.34 keeps its log in `<dir>/db`.
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(|source| CdrError::Io {
            path: log_path,
            source,
        })?;
        Ok(Sled {
            db,
            tree,
            intents,
            wal,
            log_file,
            #[cfg(test)]
            failed: AtomicBool::new(false),
        })
    }

    /// Flushes sled and fsyncs its log file: at open and at checkpoints (one at a time: once the
    /// store is open, only the checkpoint thread checkpoints or reopens sled, and the drop after
    /// it stopped).
    fn flush(&self, dir: &Path) -> Result<(), CdrError> {
        #[cfg(test)]
        if self.failed.load(Ordering::SeqCst) {
            return Err(injected());
        }
        self.db.flush()?;
        self.log_file.sync_data().map_err(|source| CdrError::Io {
            path: dir.join("db"),
            source,
        })
    }
}

/// A read handle on the store's tree (see [`Store::tree`]). It keeps the sled it came from
/// open, which a reopen waits for: hold it for one read or one scan, not longer.
pub struct TreeRef(Arc<Sled>);

impl std::ops::Deref for TreeRef {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.0.tree
    }
}

#[derive(Default)]
struct CommitState {
    /// Number of batches applied so far (a sequence number).
    applied: u64,
    /// All batches up to this number are durable.
    durable: u64,
    /// Someone is flushing now.
    flushing: bool,
    /// The value-log position after the last applied commit's record.
    applied_position: Position,
    /// The last batch sled was checkpointed with (flushed, with its log position).
    checkpointed: u64,
}

impl Store {
    /// Opens or creates the store in `dir`; rebuilds the index if its layout changed.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, CdrError> {
        let io = |source| CdrError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let sled_config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Every write is flushed by its writer (group commit); a background flusher
            // would only add work and keep a thread holding the files after the store is
            // dropped.
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput);
        let sled = Arc::new(Sled::open(&sled_config, dir)?);
        let (values, appender) = ValueLog::open(&dir.join("values")).map_err(values_err)?;
        let store = Store {
            sled: RwLock::new(Some(sled.clone())),
            sled_config,
            write_lock: Mutex::new(()),
            commit: Mutex::new(CommitState::default()),
            flushed: Condvar::new(),
            values,
            appender: Mutex::new(appender),
            dir: dir.to_path_buf(),
            halted: Default::default(),
            last_try: Mutex::new(None),
            recover_free_bytes: AtomicU64::new(RECOVER_FREE_BYTES),
            #[cfg(test)]
            fail_next_apply: Default::default(),
        };
        store.finish_interrupted_commits(&sled)?;
        // A store still marked open was not closed: a crash, or a power cut.
        let unclean = sled.wal.get(OPEN_KEY)?.is_some();
        let checkpoint = checkpoint_position(&sled)?;
        sled.wal.insert(OPEN_KEY, &[])?;
        store.replay(&sled)?;
        if let (true, Some(checkpoint)) = (unclean, checkpoint) {
            store.repair_torn_versions(&sled, checkpoint)?;
        }
        drop(sled);
        store.check_layout()?;
        Ok(store)
    }

    /// sled's handles, unless they are being reopened.
    fn sled(&self) -> Result<Arc<Sled>, CdrError> {
        self.sled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(CdrError::Reopening)
    }

    /// The tree holding resources, versions and indexes, for reads (see [`TreeRef`]).
    pub fn tree(&self) -> Result<TreeRef, CdrError> {
        self.sled().map(TreeRef)
    }

    /// After an unclean stop, puts back the last version that reached the disk wherever the
    /// current one did not. sled writes its pages out when it likes, so after a power cut it may
    /// hold the records of a commit that was never answered while the value log lost that
    /// commit's bodies (they were not fsynced yet). Such a record points past the checkpoint
    /// into a torn or missing body. The version it replaced (moved to the history by the same
    /// commit) is put back as current, or the resource removed if it had none; then the indexes
    /// are rebuilt, since the lost version's entries may be there. Versions before the
    /// checkpoint are durable, so only pointers after it are read.
    fn repair_torn_versions(&self, sled: &Sled, checkpoint: Position) -> Result<(), CdrError> {
        let mut torn = Vec::new();
        for item in sled.tree.scan_prefix(index::all_current_prefix()) {
            let (key, record) = item?;
            let Some((ty, id)) = index::parse_current_key(&key) else {
                continue;
            };
            if !self.body_intact(ty, id, &record, checkpoint)? {
                let vid = Header::decode(&record)?.vid;
                torn.push((key.to_vec(), ty.to_string(), id.to_string(), vid));
            }
        }
        for (key, ty, id, vid) in &torn {
            let mut restored = None;
            for older in (1..*vid).rev() {
                let history_key = index::version_key(ty, id, older, 0);
                let Some(record) = sled.tree.get(&history_key)? else {
                    break;
                };
                sled.tree.remove(&history_key)?;
                if self.body_intact(ty, id, &record, checkpoint)? {
                    restored = Some(record);
                    break;
                }
            }
            match restored {
                Some(record) => sled.tree.insert(key, record)?,
                None => sled.tree.remove(key)?,
            };
        }
        if !torn.is_empty() {
            tracing::warn!(
                resources = torn.len(),
                "CDR: versions whose bodies did not reach the disk before the stop were rolled back to the last one that did (none had been answered)"
            );
            // The layout check at open then rebuilds every index entry.
            sled.tree.remove(index::meta_key("layout"))?;
            sled.flush(&self.dir)?;
        }
        Ok(())
    }

    /// Whether the body a current or history record points to is readable: always for bodies
    /// kept in sled (stores from before the value log) and for those before the checkpoint.
    fn body_intact(
        &self,
        ty: &str,
        id: &str,
        record: &[u8],
        checkpoint: Position,
    ) -> Result<bool, CdrError> {
        let h = Header::decode(record)?;
        if h.deleted || h.chunks != 0 {
            return Ok(true);
        }
        let Some(ptr) = record.get(HEADER..).and_then(Ptr::from_bytes) else {
            return Ok(false);
        };
        Ok(ptr.position() < checkpoint
            || self
                .values
                .read(ptr, Kind::Resource, &index::version_key(ty, id, h.vid, 0))
                .is_ok())
    }

    /// Applies again, in order, the commit records after the checkpoint; then checkpoints at
    /// the start of the new segment. A store without a checkpoint predates the redo log (every
    /// commit of it was flushed) or is new: nothing to replay.
    fn replay(&self, sled: &Sled) -> Result<(), CdrError> {
        let from = checkpoint_position(sled)?;
        let mut replayed = 0usize;
        if let Some((from_segment, from_offset)) = from {
            for segment in self.values.segments().map_err(values_err)? {
                if segment < from_segment {
                    continue;
                }
                let offset = if segment == from_segment {
                    from_offset
                } else {
                    0
                };
                let mut failed = None;
                self.values
                    .scan(segment, offset, |record| {
                        if record.kind == Kind::Commit && !record.tombstone {
                            match Ops::decode(&record.value) {
                                Some(ops) => {
                                    if let Err(e) = ops.apply(&sled.tree) {
                                        failed = Some(e);
                                    }
                                    replayed += 1;
                                }
                                None => {
                                    failed = Some(CdrError::Corrupt(
                                        "unreadable commit record in the CDR log".into(),
                                    ))
                                }
                            }
                        }
                        Ok(())
                    })
                    .map_err(values_err)?;
                if let Some(e) = failed {
                    return Err(e);
                }
            }
        }
        if replayed > 0 {
            tracing::info!(
                commits = replayed,
                "CDR: replayed the log after the last checkpoint"
            );
        } else if from.is_some() {
            tracing::info!("CDR: the last checkpoint covers every commit: nothing to replay");
        }
        let position = self
            .appender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .position();
        self.commit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .applied_position = position;
        self.checkpoint(sled, position)
    }

    /// Flushes sled with the log position it covers (every commit up to `position` is
    /// applied), after an fsync of every segment written since the last checkpoint.
    fn checkpoint(&self, sled: &Sled, position: Position) -> Result<(), CdrError> {
        let touched = self
            .appender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_touched();
        self.sync_segments(touched)?;
        sled.wal.insert(CHECKPOINT_KEY, &position_bytes(position))?;
        sled.flush(&self.dir)
    }

    /// Makes the commit records written so far durable: what a commit's answer waits for.
    fn sync_log(&self) -> Result<(), CdrError> {
        let unsynced = self
            .appender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_unsynced();
        self.sync_segments(unsynced)
    }

    fn sync_segments(&self, segments: Vec<(u32, std::sync::Arc<File>)>) -> Result<(), CdrError> {
        for (_, file) in segments {
            file.sync_data().map_err(|source| CdrError::Io {
                path: self.dir.join("values"),
                source,
            })?;
        }
        Ok(())
    }

    /// Applies the commits a crash interrupted (their intent records are still there).
    fn finish_interrupted_commits(&self, sled: &Sled) -> Result<(), CdrError> {
        let mut finished = 0;
        for item in sled.intents.iter() {
            let (key, value) = item?;
            let ops = Ops::decode(&value)
                .ok_or_else(|| CdrError::Corrupt("unreadable commit intent".into()))?;
            ops.apply(&sled.tree)?;
            sled.intents.remove(key)?;
            finished += 1;
        }
        if finished > 0 {
            tracing::warn!(
                commits = finished,
                "CDR: finished commits interrupted by a crash"
            );
            sled.flush(&self.dir)?;
        }
        Ok(())
    }

    /// Rebuilds every index entry from the current versions when [`index::LAYOUT_VERSION`]
    /// differs from the one stored (or none is stored but resources are).
    fn check_layout(&self) -> Result<(), CdrError> {
        let key = index::meta_key("layout");
        let sled = self.sled()?;
        let stored = sled
            .tree
            .get(&key)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if stored == Some(index::LAYOUT_VERSION) {
            return Ok(());
        }
        // Runs at open, before anything else uses the store; a crash part-way leaves the layout
        // key unwritten, so the rebuild runs again.
        let _guard = self.lock();
        for item in sled.tree.iter().keys() {
            let k = item?;
            if index::is_index_key(&k) {
                sled.tree.remove(k)?;
            }
        }
        for item in sled.tree.scan_prefix(index::all_current_prefix()) {
            let (k, _) = item?;
            let Some((ty, id)) = index::parse_current_key(&k) else {
                continue;
            };
            if let Some((_, Some(resource))) = self.read(ty, id)? {
                for (ik, iv) in index::entries(ty, id, &resource) {
                    sled.tree.insert(ik, iv)?;
                }
            }
        }
        sled.flush(&self.dir)?;
        sled.tree
            .insert(key, index::LAYOUT_VERSION.to_be_bytes().to_vec())?;
        sled.flush(&self.dir)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave a half-applied commit behind unnoticed:
        // its intent record is applied again at the next open.
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether writes stopped after a commit failed half way (see [`Store::halted`]'s field).
    pub fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    fn halt(&self, cause: impl std::fmt::Display) -> CdrError {
        if !self.halted.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %cause, "CDR: a commit failed half way (disk full?): no more writes until sled is reopened, on its own once there is room, which completes it from the log");
        }
        CdrError::Halted
    }

    /// After a failed write, gets writes going again if it is time to try (every
    /// [`RETRY_EVERY`]) and there is room: see [`Store::recover`]. Called by the CDR's
    /// checkpoint thread, which wakes every [`CHECKPOINT_EVERY`] anyway (see
    /// [`super::Cdr::open`]): so the CDR comes back without a write to prompt it, and `/ready`
    /// with it, and no writer ever waits for a reopen it did not ask for. Returns whether
    /// writes go again.
    pub fn recover_if_due(&self) -> bool {
        if !self.halted() {
            return false;
        }
        {
            let mut last = self.last_try.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.recover() {
            Ok(recovered) => recovered,
            Err(e) => {
                tracing::warn!(error = %e, "CDR: sled could not be reopened yet (tried again in a moment)");
                false
            }
        }
    }

    /// Reopens sled in place after a failed write, as a restart would but without one, once
    /// the CDR's filesystem has [`RECOVER_FREE_BYTES`] free (or its free space cannot be told):
    /// sled 0.34 fails every write after an I/O error until it is opened again. Under the
    /// write lock, so no writer runs meanwhile: every handle to sled is let go, sled opens from
    /// what it had made durable, the commit records after the last checkpoint are applied again
    /// ([`Store::replay`], as at open: the failed commit's included, which completes it; see the
    /// module docs), and a checkpoint makes that durable before writes are taken again.
    /// Returns whether writes go again (`false`: not enough room yet).
    ///
    /// What an open does besides is not needed here: commits from before the redo log
    /// (`intents`) were all finished at open, the value log lost nothing (no power was cut:
    /// what was written to it is in the page cache, so no version is torn), and the index
    /// layout is the one checked at open.
    pub fn recover(&self) -> Result<bool, CdrError> {
        let free = crate::data_dir::free_bytes(&self.dir);
        if free.is_some_and(|free| free < self.recover_free_bytes.load(Ordering::SeqCst)) {
            return Ok(false);
        }
        let _guard = self.lock();
        if !self.halted() {
            return Ok(true);
        }
        self.reopen_sled()?;
        self.halted.store(false, Ordering::SeqCst);
        tracing::info!("CDR: reopened sled after a failed write: writes again");
        Ok(true)
    }

    /// Lets go of sled's handles, opens it again and replays the log into it; the new handles
    /// are published only then, so no reader sees sled without the commits it had not made
    /// durable. Readers meanwhile get [`CdrError::Reopening`] (503) rather than wait: a read
    /// that holds a handle and asks for another (a search reading resources as it scans) would
    /// otherwise wait on this while this waits on its handle. The handles readers hold are
    /// waited for (sled keeps its files locked while one is alive), [`crate::sled_db::LOCK_WAIT`]
    /// at most: then they are put back, and the next try waits for them again.
    fn reopen_sled(&self) -> Result<(), CdrError> {
        let slot = || self.sled.write().unwrap_or_else(|e| e.into_inner());
        let taken = slot().take();
        if let Some(mut old) = taken {
            let started = Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(sled) => {
                        drop(sled);
                        break;
                    }
                    Err(held) if started.elapsed() < crate::sled_db::LOCK_WAIT => {
                        old = held;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(held) => {
                        *slot() = Some(held);
                        return Err(CdrError::Reopening);
                    }
                }
            }
        }
        // Waits out sled's own threads, which may hold its lock a moment longer.
        let sled = Sled::open(&self.sled_config, &self.dir)?;
        self.replay(&sled)?;
        *slot() = Some(Arc::new(sled));
        Ok(())
    }

    /// Starts a write: takes the write lock until the writer is committed or dropped.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            _guard: self.lock(),
            ops: Ops::default(),
            staged: 0,
        }
    }

    /// The current record of `ty/id`.
    pub fn current(&self, ty: &str, id: &str) -> Result<Option<Current>, CdrError> {
        match self.tree()?.get(index::current_key(ty, id))? {
            Some(v) => Header::decode(&v).map(|h| {
                Some(Current {
                    vid: h.vid,
                    deleted: h.deleted,
                    last_updated: h.last_updated,
                })
            }),
            None => Ok(None),
        }
    }

    /// Assembles a version from its first chunk; `more(n)` is the key of chunk `n` (stores
    /// from before the value log), `body_key(vid)` the value-log key of version `vid`.
    fn assemble(
        &self,
        first: &[u8],
        more: impl Fn(u16) -> Vec<u8>,
        body_key: impl Fn(u64) -> Vec<u8>,
    ) -> Result<Version, CdrError> {
        let h = Header::decode(first)?;
        let body = if h.deleted {
            None
        } else if h.chunks == 0 {
            let ptr = first
                .get(HEADER..)
                .and_then(Ptr::from_bytes)
                .ok_or_else(|| {
                    CdrError::Corrupt(format!("bad body pointer of version {}", h.vid))
                })?;
            Some(
                self.values
                    .read(ptr, Kind::Resource, &body_key(h.vid))
                    .map_err(values_err)?,
            )
        } else {
            let mut body = first[HEADER..].to_vec();
            for c in 1..h.chunks {
                match self.tree()?.get(more(c))? {
                    Some(part) => body.extend_from_slice(&part),
                    None => {
                        return Err(CdrError::Corrupt(format!(
                            "missing chunk {c} of version {}",
                            h.vid
                        )))
                    }
                }
            }
            Some(body)
        };
        Ok(Version {
            vid: h.vid,
            deleted: h.deleted,
            method: h.method,
            last_updated: h.last_updated,
            body,
        })
    }

    /// The current version of `ty/id` (body included).
    fn current_version(&self, ty: &str, id: &str) -> Result<Option<Version>, CdrError> {
        match self.tree()?.get(index::current_key(ty, id))? {
            Some(first) => self
                .assemble(
                    &first,
                    |c| index::chunk_key(ty, id, c),
                    |vid| index::version_key(ty, id, vid, 0),
                )
                .map(Some),
            None => Ok(None),
        }
    }

    /// Version `vid` of `ty/id`.
    pub fn version(&self, ty: &str, id: &str, vid: u64) -> Result<Option<Version>, CdrError> {
        if let Some(cur) = self.current_version(ty, id)? {
            if cur.vid == vid {
                return Ok(Some(cur));
            }
        }
        match self.tree()?.get(index::version_key(ty, id, vid, 0))? {
            Some(first) => self
                .assemble(
                    &first,
                    |c| index::version_key(ty, id, vid, c),
                    |vid| index::version_key(ty, id, vid, 0),
                )
                .map(Some),
            None => Ok(None),
        }
    }

    /// The current record and, unless deleted, the current resource.
    pub fn read(&self, ty: &str, id: &str) -> Result<Option<(Current, Option<Value>)>, CdrError> {
        match self.current_version(ty, id)? {
            Some(v) => Ok(Some((v.current(), v.resource()?))),
            None => Ok(None),
        }
    }

    /// The live resource `ty/id` (not deleted), if any.
    pub fn read_live(&self, ty: &str, id: &str) -> Result<Option<(Current, Value)>, CdrError> {
        Ok(match self.read(ty, id)? {
            Some((cur, Some(v))) => Some((cur, v)),
            _ => None,
        })
    }

    /// Every version of `ty/id`, newest first.
    pub fn history(&self, ty: &str, id: &str) -> Result<Vec<Version>, CdrError> {
        let Some(current) = self.current_version(ty, id)? else {
            return Ok(Vec::new());
        };
        let prefix = index::history_prefix(ty, id);
        let mut vids = Vec::new();
        for key in self.tree()?.scan_prefix(&prefix).keys() {
            let key = key?;
            if let Some((vid, 0)) = index::version_of(&key, prefix.len()) {
                vids.push(vid);
            }
        }
        let mut out = Vec::with_capacity(vids.len() + 1);
        out.push(current);
        for vid in vids.into_iter().rev() {
            if let Some(first) = self.tree()?.get(index::version_key(ty, id, vid, 0))? {
                out.push(self.assemble(
                    &first,
                    |c| index::version_key(ty, id, vid, c),
                    |vid| index::version_key(ty, id, vid, 0),
                )?);
            }
        }
        Ok(out)
    }

    /// The ids of the live resources of `ty`, sorted.
    pub fn live_ids(&self, ty: &str) -> Result<BTreeSet<String>, CdrError> {
        let prefix = index::current_prefix(ty);
        let mut out = BTreeSet::new();
        for item in self.tree()?.scan_prefix(&prefix) {
            let (k, v) = item?;
            if !Header::decode(&v)?.deleted {
                if let Ok(id) = std::str::from_utf8(&k[prefix.len()..]) {
                    out.insert(id.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The sequence number of the last applied batch (what a read may have seen).
    pub fn applied(&self) -> u64 {
        self.commit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .applied
    }

    /// Returns once every batch up to `seq` is on disk (its commit record fsynced). sled is
    /// checkpointed elsewhere ([`Store::checkpoint_if_due`]), so no writer waits for a flush.
    pub fn wait_durable(&self, seq: u64) -> Result<(), CdrError> {
        let mut st = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.durable >= seq {
                return Ok(());
            }
            if st.flushing {
                st = self.flushed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.flushing = true;
            let target = st.applied;
            drop(st);
            let result = self.sync_log();
            st = self.commit.lock().unwrap_or_else(|e| e.into_inner());
            st.flushing = false;
            if result.is_ok() {
                st.durable = st.durable.max(target);
            }
            self.flushed.notify_all();
            result?;
        }
    }

    /// Checkpoints sled when something was applied since the last checkpoint: called every
    /// [`CHECKPOINT_EVERY`] by the CDR's checkpoint thread (see [`super::Cdr::open`]), the
    /// one caller, so checkpoints never overlap. Returns whether it checkpointed.
    pub fn checkpoint_if_due(&self) -> Result<bool, CdrError> {
        let (applied, position) = {
            let st = self.commit.lock().unwrap_or_else(|e| e.into_inner());
            if st.applied == st.checkpointed {
                return Ok(false);
            }
            (st.applied, st.applied_position)
        };
        let sled = self.sled()?;
        self.checkpoint(&sled, position)?;
        let mut st = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        st.checkpointed = st.checkpointed.max(applied);
        Ok(true)
    }

    /// Tests: flushes sled and fsyncs its log file, as open and checkpoints do ([`Sled::flush`]).
    #[cfg(test)]
    fn flush(&self) -> Result<(), CdrError> {
        self.sled()?.flush(&self.dir)
    }

    /// Marks a batch applied, its record ending at `position`, and returns its sequence number.
    fn mark_applied(&self, position: Position) -> u64 {
        let mut st = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        st.applied += 1;
        st.applied_position = position;
        st.applied
    }
}

impl Drop for Store {
    /// A last checkpoint, so that a clean restart replays nothing.
    fn drop(&mut self) {
        let st = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let position = st.applied_position;
        drop(st);
        let closed = self.sled().and_then(|sled| {
            self.checkpoint(&sled, position)?;
            sled.wal.remove(OPEN_KEY)?;
            sled.flush(&self.dir)
        });
        if let Err(e) = closed {
            tracing::warn!(error = %e, "CDR: last checkpoint failed (the log is replayed at open)");
        }
    }
}

/// The key of the checkpoint in the `wal` tree.
const CHECKPOINT_KEY: &[u8] = b"checkpoint";

/// The log position of the last checkpoint (`None`: a store from before the redo log, or a
/// new one).
fn checkpoint_position(sled: &Sled) -> Result<Option<Position>, CdrError> {
    Ok(sled
        .wal
        .get(CHECKPOINT_KEY)?
        .and_then(|v| position_from_bytes(&v)))
}

/// In the `wal` tree while the store is open: still there at open, the last stop was unclean.
const OPEN_KEY: &[u8] = b"open";

/// What identifies a new version besides its content.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Its version number: 1 only for a resource's first version (no current record yet).
    pub vid: u64,
    /// The interaction writing it (for history entries).
    pub method: Method,
    /// When (Unix ms): `meta.lastUpdated`.
    pub last_updated: i64,
}

/// A write in progress; holds the store's write lock.
pub struct Writer<'a> {
    store: &'a Store,
    _guard: MutexGuard<'a, ()>,
    ops: Ops,
    staged: usize,
}

impl Writer<'_> {
    /// The store, for the reads a write depends on.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// Stages version `vid` of `ty/id`: `resource` is the new content (with its `meta`), `None`
    /// for a deletion; `previous` is the content being replaced, whose index entries go.
    pub fn stage(
        &mut self,
        ty: &str,
        id: &str,
        stamp: Stamp,
        resource: Option<&Value>,
        previous: Option<&Value>,
    ) -> Result<(), CdrError> {
        let Stamp {
            vid,
            method,
            last_updated,
        } = stamp;
        // Everything that can fail comes before the first insert: a failed stage stages nothing
        // (a body already appended to the value log is then simply never referenced).
        let body = match resource {
            Some(r) => serde_json::to_vec(r).map_err(|e| CdrError::Corrupt(e.to_string()))?,
            None => Vec::new(),
        };
        let ptr = match resource {
            Some(_) => Some(
                self.store
                    .appender
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Kind::Resource, &index::version_key(ty, id, vid, 0), &body)
                    .map_err(values_err)?,
            ),
            None => None,
        };
        // The version being replaced moves to the history, chunk for chunk.
        let mut moved = Vec::new();
        let mut old_chunks = 0;
        // Version 1 has no current record to move: every caller numbers a resource's first
        // version 1 (a create, or an update that creates), so the lookup is saved for each
        // new resource, whichever method created it.
        let existing = match vid {
            1 => None,
            _ => self.store.tree()?.get(index::current_key(ty, id))?,
        };
        if let Some(first) = existing {
            let h = Header::decode(&first)?;
            old_chunks = h.chunks;
            moved.push((index::version_key(ty, id, h.vid, 0), first.to_vec()));
            for c in 1..h.chunks {
                let part = self
                    .store
                    .tree()?
                    .get(index::chunk_key(ty, id, c))?
                    .ok_or_else(|| CdrError::Corrupt(format!("missing chunk {c} of {ty}/{id}")))?;
                moved.push((index::version_key(ty, id, h.vid, c), part.to_vec()));
            }
        }
        for (k, v) in moved {
            self.ops.insert(k, v);
        }
        // Chunks of a version from before the value log (chunk 0 is in `R` itself).
        for c in 1..old_chunks {
            self.ops.remove(index::chunk_key(ty, id, c));
        }
        let header = Header {
            vid,
            deleted: resource.is_none(),
            method,
            last_updated,
            // A deletion has no body: one empty chunk, as before the value log.
            chunks: if ptr.is_some() { 0 } else { 1 },
        };
        let mut value = Vec::with_capacity(HEADER + Ptr::BYTES);
        header.encode(&mut value);
        if let Some(ptr) = ptr {
            value.extend_from_slice(&ptr.to_bytes());
        }
        self.ops.insert(index::current_key(ty, id), value);
        let old = previous
            .map(|p| index::entries(ty, id, p))
            .unwrap_or_default();
        let new = resource
            .map(|r| index::entries(ty, id, r))
            .unwrap_or_default();
        for key in old.keys() {
            if !new.contains_key(key) {
                self.ops.remove(key.as_slice());
            }
        }
        for (key, value) in new {
            if old.get(&key) != Some(&value) {
                self.ops.insert(key, value);
            }
        }
        self.staged += 1;
        Ok(())
    }

    /// How many versions are staged.
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Applies what is staged so far in one atomic batch and keeps the lock; returns the
    /// sequence number of the last applied batch.
    pub fn apply(&mut self) -> Result<u64, CdrError> {
        if self.staged == 0 {
            return Ok(self.store.applied());
        }
        if self.store.halted() {
            return Err(CdrError::Halted);
        }
        let sled = self.store.sled()?;
        // The commit record after the bodies of its versions, in one write; durable once a
        // waiter has fsynced the log (group commit), and replayed after a crash until a
        // checkpoint covers it. Writers are serialised by the write lock, so the next sequence
        // number is ours; it is marked applied only once every operation is in, so that a
        // concurrent flush cannot count it durable too early.
        let ops = std::mem::take(&mut self.ops);
        let position = {
            let mut appender = self
                .store
                .appender
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            appender
                .push(Kind::Commit, b"commit", &ops.encode())
                .map_err(values_err)?;
            appender.write_out().map_err(values_err)?;
            appender.position()
        };
        #[cfg(test)]
        if self.store.fail_next_apply.swap(false, Ordering::SeqCst) {
            // As sled failing part way through: some of the commit is in, and this sled
            // refuses every write from now on.
            Ops(ops.0[..ops.0.len() / 2].to_vec()).apply(&sled.tree)?;
            sled.failed.store(true, Ordering::SeqCst);
        }
        #[cfg(test)]
        if sled.failed.load(Ordering::SeqCst) {
            return Err(self.store.halt(injected()));
        }
        if let Err(e) = ops.apply(&sled.tree) {
            return Err(self.store.halt(e));
        }
        self.staged = 0;
        Ok(self.store.mark_applied(position))
    }

    /// Applies everything staged in one atomic batch, releases the lock, and returns the
    /// sequence number to pass to [`Store::wait_durable`]. With nothing staged, returns the last
    /// applied sequence (what the reads of this writer may have depended on).
    pub fn commit(mut self) -> Result<u64, CdrError> {
        self.apply()
    }
}

/// The writes of one commit, in order: a key and its new value, or `None` to remove it.
#[derive(Default)]
struct Ops(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Ops {
    fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.push((key.as_ref().to_vec(), None));
    }

    fn apply(&self, tree: &sled::Tree) -> Result<(), CdrError> {
        for (key, value) in &self.0 {
            match value {
                Some(v) => tree.insert(key.as_slice(), v.as_slice())?,
                None => tree.remove(key.as_slice())?,
            };
        }
        Ok(())
    }

    /// `u32 key length, key, then 0 (remove) or 1 + u32 value length + value`, per operation.
    fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .0
            .iter()
            .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let mut out = Vec::with_capacity(size);
        for (key, value) in &self.0 {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
            match value {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Ops> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
            *bytes = tail;
            Some(head)
        }
        fn len(bytes: &mut &[u8]) -> Option<usize> {
            Some(u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?) as usize)
        }
        let mut ops = Ops::default();
        while !bytes.is_empty() {
            let n = len(&mut bytes)?;
            let key = take(&mut bytes, n)?.to_vec();
            let value = match take(&mut bytes, 1)?[0] {
                0 => None,
                1 => {
                    let n = len(&mut bytes)?;
                    Some(take(&mut bytes, n)?.to_vec())
                }
                _ => return None,
            };
            ops.0.push((key, value));
        }
        Some(ops)
    }
}

/// Tests: what a sled that failed on a full disk answers.
#[cfg(test)]
fn injected() -> CdrError {
    CdrError::Storage(sled::Error::Io(std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "No space left on device (injected by the CDR's test hook)",
    )))
}

/// A value-log error as the CDR reports it.
fn values_err(e: crate::journal::JournalError) -> CdrError {
    CdrError::Corrupt(format!("CDR value log: {e}"))
}

/// A new server-assigned id: a UUID version 7 (time-ordered, so new resources append to the
/// end of the key space, and unguessable).
pub fn new_id() -> String {
    let mut b: [u8; 16] = rand::random();
    let ms = datetime::now_ms().max(0) as u64;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    let mut id = String::with_capacity(36);
    crate::script::util::push_uuid_text(&mut id, &b);
    id
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_in_chunks_from_before_the_value_log_are_still_read_and_moved() {
        let dir = tempfile::tempdir().unwrap();
        let big = json!({"resourceType": "Basic", "id": "old", "text": {"div": "y".repeat(2 * CHUNK + 9)}});
        {
            // The old layout: header + first chunk in `R`, the other chunks under `C`.
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let body = serde_json::to_vec(&big).unwrap();
            let chunks: Vec<&[u8]> = body.chunks(CHUNK).collect();
            let mut first = Vec::new();
            Header {
                vid: 1,
                deleted: false,
                method: Method::Put,
                last_updated: 3,
                chunks: chunks.len() as u16,
            }
            .encode(&mut first);
            first.extend_from_slice(chunks[0]);
            store
                .tree()
                .unwrap()
                .insert(index::current_key("Basic", "old"), first)
                .unwrap();
            for (c, chunk) in chunks.iter().enumerate().skip(1) {
                store
                    .tree()
                    .unwrap()
                    .insert(index::chunk_key("Basic", "old", c as u16), *chunk)
                    .unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.read_live("Basic", "old").unwrap().unwrap().1, big);
        let new = json!({"resourceType": "Basic", "id": "old", "active": true});
        let mut w = store.writer();
        w.stage(
            "Basic",
            "old",
            Stamp {
                vid: 2,
                method: Method::Put,
                last_updated: 4,
            },
            Some(&new),
            Some(&big),
        )
        .unwrap();
        store.wait_durable(w.commit().unwrap()).unwrap();
        let h = store.history("Basic", "old").unwrap();
        assert_eq!(h[0].resource().unwrap().unwrap(), new);
        assert_eq!(h[1].resource().unwrap().unwrap(), big);
        assert_eq!(store.tree().unwrap().scan_prefix([b'C']).count(), 0);
    }

    #[test]
    fn versions_round_trip_through_the_value_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let big =
            json!({"resourceType": "Basic", "id": "b", "text": {"div": "x".repeat(3 * CHUNK + 5)}});
        let mut w = store.writer();
        w.stage(
            "Basic",
            "b",
            Stamp {
                vid: 1,
                method: Method::Put,
                last_updated: 5,
            },
            Some(&big),
            None,
        )
        .unwrap();
        let seq = w.commit().unwrap();
        store.wait_durable(seq).unwrap();
        let v = store.version("Basic", "b", 1).unwrap().unwrap();
        assert_eq!(v.resource().unwrap().unwrap(), big);
        assert_eq!(v.last_updated, 5);
        let mut w = store.writer();
        w.stage(
            "Basic",
            "b",
            Stamp {
                vid: 2,
                method: Method::Delete,
                last_updated: 6,
            },
            None,
            Some(&big),
        )
        .unwrap();
        drop(w); // not committed: nothing written
        assert_eq!(store.current("Basic", "b").unwrap().unwrap().vid, 1);
        // A small version replaces the big one: the big one moves to the history whole.
        let small = json!({"resourceType": "Basic", "id": "b"});
        let mut w = store.writer();
        w.stage(
            "Basic",
            "b",
            Stamp {
                vid: 2,
                method: Method::Put,
                last_updated: 7,
            },
            Some(&small),
            Some(&big),
        )
        .unwrap();
        w.commit().unwrap();
        let mut w = store.writer();
        w.stage(
            "Basic",
            "b",
            Stamp {
                vid: 3,
                method: Method::Delete,
                last_updated: 8,
            },
            None,
            Some(&small),
        )
        .unwrap();
        w.commit().unwrap();
        let h = store.history("Basic", "b").unwrap();
        let vids: Vec<u64> = h.iter().map(|v| v.vid).collect();
        assert_eq!(vids, [3, 2, 1]);
        assert!(h[0].deleted && h[0].method == Method::Delete);
        assert_eq!(h[1].resource().unwrap().unwrap(), small);
        assert_eq!(h[2].resource().unwrap().unwrap(), big);
        assert_eq!(
            store
                .version("Basic", "b", 1)
                .unwrap()
                .unwrap()
                .last_updated,
            5
        );
        assert!(store.read("Basic", "b").unwrap().unwrap().1.is_none());
        assert!(store.live_ids("Basic").unwrap().is_empty());
        // No chunk of the big version is left under the current record.
        assert_eq!(store.tree().unwrap().scan_prefix([b'C']).count(), 0);
        let id = new_id();
        assert!(super::super::validate::is_uuid(&id) && id.as_bytes()[14] == b'7');
    }
}

#[cfg(test)]
mod intent_tests {
    use super::*;

    #[test]
    fn ops_round_trip_through_their_encoding() {
        let mut ops = Ops::default();
        ops.insert(b"a", b"1");
        ops.remove(b"b");
        ops.insert(b"", b"");
        let decoded = Ops::decode(&ops.encode()).unwrap();
        assert_eq!(decoded.0, ops.0);
        assert!(
            Ops::decode(&[0, 0, 0, 9, 1]).is_none(),
            "truncated input is refused"
        );
    }

    #[test]
    fn a_commit_interrupted_after_its_intent_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.tree().unwrap().insert(b"Zstale", b"old").unwrap();
            // What a crash between writing the intent and applying it leaves behind.
            let mut ops = Ops::default();
            ops.insert(b"Znew", b"value");
            ops.remove(b"Zstale");
            store
                .sled()
                .unwrap()
                .intents
                .insert(7u64.to_be_bytes(), ops.encode())
                .unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            store.tree().unwrap().get(b"Znew").unwrap().as_deref(),
            Some(&b"value"[..])
        );
        assert!(store.tree().unwrap().get(b"Zstale").unwrap().is_none());
        assert_eq!(
            store.sled().unwrap().intents.len(),
            0,
            "the intent is gone once applied"
        );
    }

    #[test]
    fn committed_writes_leave_no_intent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut writer = store.writer();
        let patient = serde_json::json!({"resourceType": "Patient", "id": "p1"});
        let stamp = Stamp {
            vid: 1,
            method: Method::Put,
            last_updated: 0,
        };
        writer
            .stage("Patient", "p1", stamp, Some(&patient), None)
            .unwrap();
        let seq = writer.commit().unwrap();
        store.wait_durable(seq).unwrap();
        assert_eq!(store.sled().unwrap().intents.len(), 0);
        assert!(store.current("Patient", "p1").unwrap().is_some());
    }

    /// A commit that reached the log but that sled failed to apply stops writes until sled is
    /// opened again (here by a restart, before the store reopened it on its own), which
    /// completes it: a client retrying the write cannot add a second copy meanwhile.
    #[test]
    fn a_commit_sled_failed_halts_writes_until_it_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = Stamp {
            vid: 1,
            method: Method::Put,
            last_updated: 0,
        };
        let write = |store: &Store, id: &str| {
            let patient = serde_json::json!({"resourceType": "Patient", "id": id});
            let mut writer = store.writer();
            writer.stage("Patient", id, stamp, Some(&patient), None)?;
            writer.commit()
        };
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            write(&store, "before").unwrap();
            store.fail_next_apply.store(true, Ordering::SeqCst);
            assert!(matches!(write(&store, "failed"), Err(CdrError::Halted)));
            assert!(store.halted());
            // Nothing more is written, whatever comes next.
            let again = write(&store, "after");
            assert_eq!(again.map_err(|e| e.status()).unwrap_err(), 503);
            assert!(store.current("Patient", "after").unwrap().is_none());
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(!store.halted());
        for id in ["before", "failed"] {
            assert!(store.current("Patient", id).unwrap().is_some(), "{id}");
        }
        assert!(store.current("Patient", "after").unwrap().is_none());
        write(&store, "after").unwrap();
    }

    /// Writes `Patient/<id>` (a first version) and waits until it is durable.
    fn write_patient(store: &Store, id: &str) -> Result<(), CdrError> {
        let patient = patient(id);
        let stamp = Stamp {
            vid: 1,
            method: Method::Put,
            last_updated: 0,
        };
        let mut writer = store.writer();
        writer.stage("Patient", id, stamp, Some(&patient), None)?;
        store.wait_durable(writer.commit()?)
    }

    fn patient(id: &str) -> Value {
        serde_json::json!({"resourceType": "Patient", "id": id, "gender": "female"})
    }

    /// Exactly the Patients `ids` are there, each with its one version and its index entries.
    fn assert_patients(store: &Store, ids: &[&str]) {
        let live = store.live_ids("Patient").unwrap();
        assert_eq!(live.iter().map(String::as_str).collect::<Vec<_>>(), ids);
        for id in ids {
            let (current, body) = store.read_live("Patient", id).unwrap().unwrap();
            assert_eq!((current.vid, body), (1, patient(id)), "{id}");
            assert_eq!(store.history("Patient", id).unwrap().len(), 1, "{id}");
            for (key, _) in index::entries("Patient", id, &patient(id)) {
                assert!(
                    store.tree().unwrap().get(&key).unwrap().is_some(),
                    "{id}: {key:?}"
                );
            }
        }
    }

    /// sled failing half way through a commit halts writes; once the disk has room, the store
    /// reopens sled in place (the same `Store`, no restart), completes that commit from the log
    /// and writes again. Reads are answered all along; a restart then finds the same.
    #[test]
    fn a_commit_sled_failed_is_completed_in_place_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        write_patient(&store, "before").unwrap();
        store.fail_next_apply.store(true, Ordering::SeqCst);
        assert!(matches!(
            write_patient(&store, "failed"),
            Err(CdrError::Halted)
        ));
        assert!(store.halted());
        assert_eq!(
            store.read_live("Patient", "before").unwrap().unwrap().1,
            patient("before"),
            "reads go on"
        );

        // No room yet: nothing is tried, writes are still refused.
        store.recover_free_bytes.store(u64::MAX, Ordering::SeqCst);
        assert!(!store.recover().unwrap());
        assert!(store.halted());
        let refused = write_patient(&store, "after").unwrap_err();
        assert_eq!(refused.status(), 503, "{refused}");

        // Room: sled is reopened in place and the failed commit completed from the log.
        store.recover_free_bytes.store(0, Ordering::SeqCst);
        assert!(store.recover().unwrap());
        assert!(!store.halted());
        write_patient(&store, "after").unwrap();
        assert_patients(&store, &["after", "before", "failed"]);

        drop(store);
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_patients(&store, &["after", "before", "failed"]);
        write_patient(&store, "later").unwrap();
    }

    /// A reopen waits for the tree handles readers hold (sled keeps its files locked while one
    /// is alive); reads asked for meanwhile are refused with a 503, not blocked.
    #[test]
    fn a_reopen_waits_for_the_handles_readers_hold_and_refuses_reads_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        write_patient(&store, "p1").unwrap();
        store.fail_next_apply.store(true, Ordering::SeqCst);
        assert!(write_patient(&store, "p2").is_err());
        store.recover_free_bytes.store(0, Ordering::SeqCst);
        let held = store.tree().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        std::thread::scope(|s| {
            let store = &store;
            s.spawn(move || {
                // Reads work until the reopen takes sled's handles; then they are refused,
                // and this reader lets go of the one it holds.
                let refused = loop {
                    match store.read_live("Patient", "p1") {
                        Ok(found) => assert!(found.is_some()),
                        Err(e) => break e,
                    }
                    assert!(Instant::now() < deadline, "never refused");
                    std::thread::sleep(Duration::from_millis(1));
                };
                assert!(matches!(refused, CdrError::Reopening), "{refused}");
                assert_eq!(refused.status(), 503);
                assert!(held.get(b"anything").is_ok(), "a held handle still reads");
                drop(held);
            });
            // As the checkpoint thread does: a try that waited too long gives the handles back,
            // and the next one waits for them again.
            while !store.recover().unwrap_or(false) {
                assert!(Instant::now() < deadline, "never reopened");
            }
        });
        assert!(!store.halted());
        write_patient(&store, "p3").unwrap();
        assert_patients(&store, &["p1", "p2", "p3"]);
    }

    /// Through the engine's handle: the checkpoint thread reopens sled on its own once there
    /// is room, and not before; no write has to come along to prompt it.
    #[test]
    fn the_checkpoint_thread_brings_writes_back_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let cdr = crate::cdr::Cdr::open(dir.path(), 1 << 20).unwrap();
        cdr.store
            .recover_free_bytes
            .store(u64::MAX, Ordering::SeqCst);
        write_patient(&cdr.store, "p1").unwrap();
        cdr.store.fail_next_apply.store(true, Ordering::SeqCst);
        assert!(write_patient(&cdr.store, "p2").is_err());
        std::thread::sleep(RETRY_EVERY * 2);
        assert!(cdr.halted(), "reopened without room");
        cdr.store.recover_free_bytes.store(0, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while cdr.halted() {
            assert!(Instant::now() < deadline, "still halted");
            std::thread::sleep(Duration::from_millis(50));
        }
        write_patient(&cdr.store, "p3").unwrap();
        assert_eq!(cdr.read("Patient", "p2").unwrap(), Some(patient("p2")));
        assert_patients(&cdr.store, &["p1", "p2", "p3"]);
    }

    #[test]
    fn commits_sled_lost_are_replayed_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = Stamp {
            vid: 1,
            method: Method::Put,
            last_updated: 0,
        };
        let p1 = serde_json::json!({"resourceType": "Patient", "id": "p1", "gender": "female"});
        let p2 = serde_json::json!({"resourceType": "Patient", "id": "p2", "gender": "male"});
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            for (id, patient) in [("p1", &p1), ("p2", &p2)] {
                let mut writer = store.writer();
                writer
                    .stage("Patient", id, stamp, Some(patient), None)
                    .unwrap();
                store.wait_durable(writer.commit().unwrap()).unwrap();
            }
        }
        {
            // A crash before any checkpoint covered them: sled has none of it.
            let db = crate::sled_db::open(&sled::Config::new().path(dir.path())).unwrap();
            db.open_tree("cdr").unwrap().clear().unwrap();
            db.open_tree("wal")
                .unwrap()
                .insert(CHECKPOINT_KEY, vec![0u8; 8])
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.read_live("Patient", "p1").unwrap().unwrap().1, p1);
        assert_eq!(store.read_live("Patient", "p2").unwrap().unwrap().1, p2);
        assert_eq!(store.live_ids("Patient").unwrap().len(), 2);
        drop(store);
        // Replayed once: the checkpoint moved past it.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.read_live("Patient", "p2").unwrap().unwrap().1, p2);
    }

    /// A power cut can leave sled holding a commit whose bodies the value log lost (sled
    /// writes pages out on its own; the log was not fsynced yet, so the commit was never
    /// answered). At the next open, each such resource is back at its last version that
    /// reached the disk, or gone if it had none, and the indexes match.
    #[test]
    fn versions_whose_bodies_were_lost_in_a_power_cut_are_rolled_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = |vid| Stamp {
            vid,
            method: Method::Put,
            last_updated: 0,
        };
        let kept = serde_json::json!({"resourceType": "Patient", "id": "kept", "gender": "other"});
        let v1 = serde_json::json!({"resourceType": "Patient", "id": "p1", "gender": "female"});
        let v2 = serde_json::json!({"resourceType": "Patient", "id": "p1", "gender": "male"});
        let new = serde_json::json!({"resourceType": "Patient", "id": "new", "gender": "unknown"});
        let durable_until = {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let write = |id: &str, vid, resource: &Value, previous: Option<&Value>| {
                let mut writer = store.writer();
                writer
                    .stage("Patient", id, stamp(vid), Some(resource), previous)
                    .unwrap();
                store.wait_durable(writer.commit().unwrap()).unwrap();
            };
            write("kept", 1, &kept, None);
            write("p1", 1, &v1, None);
            let durable_until = store.commit.lock().unwrap().applied_position;
            // Neither of these reaches the disk's copy of the log below.
            write("p1", 2, &v2, Some(&v1));
            write("new", 1, &new, None);
            durable_until
        };
        {
            // What the power cut leaves: sled as flushed above, the last checkpoint before the
            // two lost commits, the store still marked open, and the log cut where it was
            // last fsynced.
            let db = crate::sled_db::open(&sled::Config::new().path(dir.path())).unwrap();
            let wal = db.open_tree("wal").unwrap();
            wal.insert(CHECKPOINT_KEY, &position_bytes(durable_until))
                .unwrap();
            wal.insert(OPEN_KEY, &[]).unwrap();
            db.flush().unwrap();
            crate::journal::values::cut_at(&dir.path().join("values"), durable_until);
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let (current, body) = store.read_live("Patient", "p1").unwrap().unwrap();
        assert_eq!(
            (current.vid, body),
            (1, v1.clone()),
            "back at its durable version"
        );
        assert_eq!(store.history("Patient", "p1").unwrap().len(), 1);
        assert!(
            store.read("Patient", "new").unwrap().is_none(),
            "never durable: gone"
        );
        assert_eq!(store.read_live("Patient", "kept").unwrap().unwrap().1, kept);
        let live = store.live_ids("Patient").unwrap();
        assert_eq!(live.into_iter().collect::<Vec<_>>(), ["kept", "p1"]);
        // The indexes were rebuilt: the lost versions' entries are gone, the restored one's there.
        for (key, _) in index::entries("Patient", "p1", &v2)
            .into_iter()
            .chain(index::entries("Patient", "new", &new))
        {
            if !index::entries("Patient", "p1", &v1).contains_key(&key) {
                assert!(
                    store.tree().unwrap().get(&key).unwrap().is_none(),
                    "stale entry {key:?}"
                );
            }
        }
        for (key, _) in index::entries("Patient", "p1", &v1) {
            assert!(
                store.tree().unwrap().get(&key).unwrap().is_some(),
                "missing entry {key:?}"
            );
        }
        drop(store);
        // Closed cleanly this time: the next open finds nothing to repair and the same data.
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.read_live("Patient", "p1").unwrap().unwrap().1, v1);
        assert!(
            store.sled().unwrap().wal.get(OPEN_KEY).unwrap().is_some(),
            "open again"
        );
    }

    /// A checkpoint is due once something was applied after the last one, and only then; the
    /// CDR's own thread takes it without any writer waiting (see `Cdr::open`).
    #[test]
    fn a_checkpoint_is_due_after_a_commit_and_taken_by_the_cdr_thread() {
        let dir = tempfile::tempdir().unwrap();
        let stamp = Stamp {
            vid: 1,
            method: Method::Put,
            last_updated: 0,
        };
        let patient = serde_json::json!({"resourceType": "Patient", "id": "p1"});
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(!store.checkpoint_if_due().unwrap(), "nothing since open");
        let mut writer = store.writer();
        writer
            .stage("Patient", "p1", stamp, Some(&patient), None)
            .unwrap();
        store.wait_durable(writer.commit().unwrap()).unwrap();
        assert!(store.checkpoint_if_due().unwrap());
        assert!(!store.checkpoint_if_due().unwrap(), "taken once");
        drop(store);

        let cdr = crate::cdr::Cdr::open(dir.path(), 1 << 20).unwrap();
        let mut writer = cdr.store.writer();
        let stamp = Stamp { vid: 2, ..stamp };
        writer
            .stage("Patient", "p1", stamp, Some(&patient), None)
            .unwrap();
        cdr.store.wait_durable(writer.commit().unwrap()).unwrap();
        std::thread::sleep(crate::journal::values::CHECKPOINT_EVERY * 3);
        assert!(
            !cdr.store.checkpoint_if_due().unwrap(),
            "the checkpoint thread took it"
        );
        drop(cdr);
        // Dropping the last handle closed the store: it opens again at once.
        Store::open(dir.path(), 1 << 20).unwrap();
    }
}
