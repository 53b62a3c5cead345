//! The journal's writer threads and their group commit.
//!
//! Every change goes through one OS thread that drains a queue and applies everything waiting
//! (records to the value log, then their pointers to the slots and indexes to sled); a second thread then `fdatasync`s
//! the value-log segments once for all the batches applied meanwhile, and only then answers
//! their waiters. sled is flushed at checkpoints only (see [`super::values`]): after a crash,
//! [`super::replay`] redoes from the log what sled had not flushed. Many appends share one
//! fsync, which is what makes durable ACKs cheap. One thread also sidesteps sled 0.34's
//! `flush_async` deadlock under concurrent callers, keeps blocking I/O off the actix arbiters,
//! and makes read-modify-write of a record race-free.
//!
//! A write that fails (a full disk) fails its whole batch, and every sender in it is told "not
//! stored, resend". So the batch is taken back first ([`Applied::revert`]): its records are
//! cut off the value log, durably, and the slots and sled entries it changed are put back;
//! else a restart's replay would store those messages after all, next to their resent copies.
//! Nothing of this costs the batches that succeed a system call: what each write replaced is
//! returned by the write itself. An `fdatasync` that fails is another matter ([`SyncGate`]):
//! the unsynced batches are cut off too, and the journal halts until a restart.
//!
//! Until it writes again the writer says why ([`Trouble`], published for `/ready`), and gets
//! over it on its own once the disk has room: after a failed batch the next one is simply
//! tried (and an idle writer checks with a checkpoint); but sled 0.34 fails every write after
//! one I/O error until it is opened again, so then the writer refuses everything, reopens sled
//! in place ([`Writer::reopen_sled`]: what a restart would do, without one) and puts back the
//! failed batch's sled entries.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::counts::ChannelCounts;
use super::faults::{FaultPoint, Faults};
use super::keys;
use super::live::LiveBytes;
use super::record::{
    now_ms, Appended, ChannelRun, NewMessage, Status, StatusEvent, Step, Transaction, TxId,
};
use super::retention::{PruneAction, PruneRequest, Pruned};
use super::slots::Slot;
use super::values::{Appender, Kind, Ptr};
use super::{JournalError, Trees};
use crate::metrics::Metrics;

/// A request to the writer thread. (`Append` is by far the largest and the most frequent: boxing
/// it would add an allocation per message to save a few bytes on the rare commands.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Command {
    Append {
        message: NewMessage,
        enqueued: Instant,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    /// Records pipeline steps and, optionally, status events (in order) in one write.
    Record {
        id: TxId,
        steps: Vec<Step>,
        events: Vec<(Status, Option<String>)>,
        reply: RecordReply,
        /// Answer once durable (after the group commit's fsync), or as soon as applied.
        wait: Wait,
    },
    /// A new transaction with the raw message of `of`, linked to it (`rerun_of`), routed to
    /// `channels`; the original gets an event naming the new one.
    AppendRerun {
        of: TxId,
        channels: Vec<ChannelRun>,
        enqueued: Instant,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    /// Retention: removes bodies or whole transactions. Done here, in the one writer, so that a
    /// prune can never race a status change: the status is checked again at apply time.
    Prune {
        requests: Vec<PruneRequest>,
        reply: oneshot::Sender<Result<Vec<Pruned>, JournalError>>,
    },
    /// Compacts the value-log segment with the least live data, if one is worth it; answers
    /// which. (The writer also does this on its own every [`COMPACT_EVERY`].)
    Compact {
        reply: oneshot::Sender<Result<Option<u32>, JournalError>>,
    },
}

/// Who hears how a [`Command::Record`] went.
pub(super) enum RecordReply {
    /// A caller awaiting the answer.
    Answer(oneshot::Sender<Result<(), JournalError>>),
    /// A caller that does not wait: this runs on the writer thread instead, so nobody is woken
    /// only to learn that the record was written.
    Then(Box<dyn FnOnce(Result<(), JournalError>) + Send>),
}

impl RecordReply {
    fn send(self, result: Result<(), JournalError>) {
        match self {
            RecordReply::Answer(reply) => {
                let _ = reply.send(result);
            }
            RecordReply::Then(then) => then(result),
        }
    }
}

/// When the writer answers a [`Command::Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// After the group commit has fsynced it.
    Durable,
    /// Once applied: visible to readers, made durable by the next fsync (the next batch that
    /// someone waits for, or on its own within [`SYNC_HELD_WITHIN`] when none comes; see
    /// [`Flushes`]), but the caller does not wait for the disk.
    Applied,
}

/// How many of the latest written records the writer keeps parsed (see [`Writer::recent`]):
/// at 5,000 messages/s, the last ~200 ms of appends, which is when their outcomes come back.
const RECENT_RECORDS: usize = 1024;

/// How often the writer looks for a value-log segment to compact.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A segment is compacted when less than this share of it is still referenced.
const COMPACT_BELOW: f64 = 0.5;

/// Owned by the writer thread.
pub(super) struct Writer {
    pub trees: Option<Trees>,
    /// The value log's only appender.
    pub values: Appender,
    /// sled's log file, opened separately so that it can be fsynced after sled's flush.
    pub log_file: Option<File>,
    /// `fdatasync` the value log before answering (`journal.fsync`).
    pub fsync: bool,
    pub max_batch: usize,
    pub metrics: Arc<Metrics>,
    /// When sled was last told where the log stands.
    pub last_checkpoint: Instant,
    /// Something was applied since that checkpoint.
    pub dirty: bool,
    /// Segments nothing refers to any more, deleted at the next checkpoint.
    pub dead_segments: Vec<u32>,
    /// The log position of the last checkpoint written (compaction stays before it).
    pub checkpointed: super::values::Position,
    pub last_compaction: Instant,
    /// The id the next new transaction gets: ids are dense, one slot each.
    pub next_id: Cell<u64>,
    /// The records this writer wrote last, as written: recording an outcome takes the record
    /// from here instead of reading and parsing it back from the value log. Only this thread
    /// writes records, so these are the stored versions.
    pub recent: RefCell<BTreeMap<TxId, Transaction>>,
    /// Each segment's live bytes, written to sled at checkpoints.
    pub live: LiveBytes,
    /// Per channel and status, shared with the journal's readers; written to sled at
    /// checkpoints.
    pub counts: ChannelCounts,
    /// The test hook (empty in release builds).
    pub faults: Arc<Faults>,
    /// The slot table (also in [`Writer::trees`], which sled's reopening takes away a moment).
    pub slots: Arc<super::slots::Slots>,
    /// The value log's fsyncs, the flusher's and the checkpoints', and whether one failed.
    pub gate: Arc<SyncGate>,
    /// Why the writer is not writing as usual, if it is not (see [`Trouble`]).
    pub trouble: Option<Trouble>,
    /// When the writer last tried to get over its trouble on its own.
    pub last_try: Instant,
    /// Where [`Writer::trouble`] is published, for `/ready`.
    pub health: Arc<Health>,
    /// The journal's dir (for its free space).
    pub path: std::path::PathBuf,
    /// To reopen sled with ([`Writer::reopen_sled`]), and where the trees are shared with the
    /// journal's readers.
    pub sled_config: sled::Config,
    pub shared: Arc<std::sync::RwLock<Option<Trees>>>,
}

/// The message of [`Writer::trees`].
const SLED_OPEN: &str = "sled is open whenever the writer writes";

/// How often the writer tries on its own to get over a failure.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Free space the writer waits for before it tries again after a failure: a new value-log
/// segment (created full), and as much again for the slots and sled. (`/ready` asks the same.)
const RECOVER_FREE_BYTES: u64 = 2 * super::values::SEGMENT_BYTES;

/// Why the writer is not writing as usual.
pub(super) enum Trouble {
    /// A batch failed and was taken back whole: the next one is tried as usual, and an idle
    /// writer checks on its own, once there is room on the disk, that a checkpoint works.
    Failed(JournalError),
    /// sled failed, and sled 0.34 fails every write after an I/O error until it is opened
    /// again: commands are refused until the writer has reopened it and put back what the
    /// failed batch wrote to it ([`Writer::reopen_sled`]), once there is room on the disk.
    SledDown { error: JournalError, undo: SledUndo },
    /// Only a restart helps: an fsync failed, or a failed batch could not be taken back.
    Halted(JournalError),
}

/// Whether the writer can write, and if not why: published by the writer for `/ready`.
#[derive(Default)]
pub(super) struct Health(std::sync::Mutex<Option<super::Unwritable>>);

impl Health {
    pub fn get(&self) -> Option<super::Unwritable> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, trouble: Option<&Trouble>) {
        let problem = trouble.map(|trouble| {
            let (error, then) = match trouble {
                Trouble::Failed(e) => (e, "it tries again with the next message"),
                Trouble::SledDown { error, .. } => (
                    error,
                    "it reopens its index and writes again on its own once there is room",
                ),
                Trouble::Halted(e) => (e, "restart the engine (which repairs the journal)"),
            };
            let storage_full = error.storage_full();
            let what = if storage_full {
                "the data dir's filesystem is full"
            } else {
                "a write failed"
            };
            super::Unwritable {
                reason: format!("the journal cannot store messages: {what} ({error}); {then}"),
                storage_full,
                restart_needed: matches!(trouble, Trouble::Halted(_)),
            }
        });
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }
}

/// A reply to send once the batch is durable.
enum Reply {
    Append(
        oneshot::Sender<Result<Appended, JournalError>>,
        Result<Appended, JournalError>,
        Instant,
    ),
    Status(RecordReply, Result<(), JournalError>),
    Prune(
        oneshot::Sender<Result<Vec<Pruned>, JournalError>>,
        Result<Vec<Pruned>, JournalError>,
    ),
    Compact(
        Option<oneshot::Sender<Result<Option<u32>, JournalError>>>,
        Result<Option<u32>, JournalError>,
    ),
}

impl Writer {
    /// sled's trees, which the writer always has except while it waits to reopen sled (when
    /// it writes nothing: see [`Writer::refusing`]).
    fn trees(&self) -> &Trees {
        self.trees.as_ref().expect(SLED_OPEN)
    }

    fn set_trouble(&mut self, trouble: Option<Trouble>) {
        self.health.set(trouble.as_ref());
        self.trouble = trouble;
    }

    /// The error every command gets now, if the writer refuses them (sled is down, or the
    /// writer halted).
    fn refusing(&self) -> Option<JournalError> {
        match &self.trouble {
            Some(Trouble::SledDown { error, .. } | Trouble::Halted(error)) => Some(error.clone()),
            _ => None,
        }
    }

    /// Gets over a failure on its own if it is time to try (every [`RETRY_EVERY`]) and there
    /// is room on the disk: after a batch that failed, a checkpoint that works ends the trouble
    /// (batches are tried meanwhile anyway); with sled down, sled is reopened.
    fn try_to_recover(&mut self) {
        let due = match &self.trouble {
            Some(Trouble::Failed(_) | Trouble::SledDown { .. }) => {
                self.last_try.elapsed() >= RETRY_EVERY
            }
            _ => false,
        };
        if !due {
            return;
        }
        self.last_try = Instant::now();
        let free = crate::data_dir::free_bytes(&self.path);
        if free.is_some_and(|free| free < RECOVER_FREE_BYTES) {
            return;
        }
        let recovered = match self.trouble.take() {
            Some(Trouble::SledDown { error, undo }) => match self.reopen_sled(&undo) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "journal: sled could not be reopened yet");
                    self.trouble = Some(Trouble::SledDown { error, undo });
                    false
                }
            },
            other => {
                self.trouble = other;
                match self.checkpoint() {
                    Ok(()) => true,
                    Err(e) => {
                        self.checkpoint_failed(e);
                        false
                    }
                }
            }
        };
        if recovered {
            tracing::info!("journal: writes again");
            self.set_trouble(None);
        }
    }

    /// Reopens sled after it failed, as a restart would but without one: every handle to it
    /// is let go (readers wait meanwhile: sled locks its files while one is open), sled opens
    /// from what it had made durable, the value log replays what it lost since (the failed
    /// batch is no longer in the log), the failed batch's entries are put back as they were,
    /// and a checkpoint makes it all durable, with the writer's own live bytes and counts.
    fn reopen_sled(&mut self, undo: &SledUndo) -> Result<(), JournalError> {
        self.faults.reopen_sled()?;
        let (values, slots) = (self.values.log(), self.slots.clone());
        {
            let mut shared = self.shared.write().unwrap_or_else(|e| e.into_inner());
            *shared = None;
            self.trees = None;
        }
        let db = crate::sled_db::open(&self.sled_config)?;
        let trees = super::trees_of(db, values, slots)?;
        let replayed = super::replay::replay_records(&trees)?;
        let put_back = undo.put_back(&trees);
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = Some(trees.clone());
        self.trees = Some(trees);
        put_back?;
        let trees = self.trees.as_ref().expect(SLED_OPEN);
        self.live.persist_all(trees)?;
        self.counts.persist_all(trees)?;
        self.checkpoint()?;
        tracing::info!(
            records = replayed,
            "journal: reopened sled after a failed write"
        );
        Ok(())
    }

    /// Runs until every sender is dropped, then flushes one last time.
    pub fn run(mut self, rx: Receiver<Command>) {
        // Two stages: this thread applies batch N+1 while the flusher thread makes batch N
        // durable, so the CPU work of inserts overlaps the wait for the disk.
        let (jobs, flush_rx) = std::sync::mpsc::channel::<FlushJob>();
        let flusher = Flusher {
            fsync: self.fsync,
            metrics: self.metrics.clone(),
            faults: self.faults.clone(),
            gate: self.gate.clone(),
        };
        let flusher = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || flusher.run(flush_rx))
            .expect("journal flusher thread starts");
        let mut jobs = Flushes {
            jobs,
            held: None,
            metrics: self.metrics.clone(),
        };
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let idle_after = if jobs.holding() {
                SYNC_HELD_WITHIN
            } else {
                super::values::CHECKPOINT_EVERY
            };
            let first = match rx.recv_timeout(idle_after) {
                Ok(cmd) => cmd,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if jobs.holding() => {
                    if jobs.release().is_err() {
                        break;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    self.notice_failed_fsync();
                    self.try_to_recover();
                    if self.refusing().is_some() {
                        continue;
                    }
                    // Idle: checkpoint what the last batches did; compact when it is time.
                    if self.dirty {
                        self.checkpoint_now();
                    }
                    if self.last_compaction.elapsed() >= COMPACT_EVERY {
                        self.last_compaction = Instant::now();
                        if jobs.send(self.compact(None)).is_err() {
                            break;
                        }
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            self.faults.poll_trigger();
            batch.push(first);
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.notice_failed_fsync();
            if self.refusing().is_some() {
                self.try_to_recover();
            }
            if let Some(error) = self.refusing() {
                if jobs.send(self.refuse(&mut batch, error)).is_err() {
                    break;
                }
                continue;
            }
            // Compactions run alone, after the rest of the batch: each is its own commit, so
            // nothing else staged can interleave with the pointers it moves.
            let mut compactions = Vec::new();
            for cmd in batch.extract_if(.., |c| matches!(c, Command::Compact { .. })) {
                if let Command::Compact { reply } = cmd {
                    compactions.push(Some(reply));
                }
            }
            if self.last_compaction.elapsed() >= COMPACT_EVERY {
                compactions.push(None);
            }
            if !batch.is_empty() && jobs.send(self.commit(&mut batch)).is_err() {
                break;
            }
            if let Some(error) = self.refusing() {
                // The batch failed and sled with it: no compaction until it is back.
                let mut refused = compactions
                    .into_iter()
                    .flatten()
                    .map(|reply| Command::Compact { reply })
                    .collect();
                if jobs.send(self.refuse(&mut refused, error)).is_err() {
                    break;
                }
                continue;
            }
            for reply in compactions {
                self.last_compaction = Instant::now();
                if jobs.send(self.compact(reply)).is_err() {
                    break;
                }
            }
            if self.last_checkpoint.elapsed() >= super::values::CHECKPOINT_EVERY
                && self.refusing().is_none()
            {
                self.checkpoint_now();
            }
        }
        jobs.close();
        let _ = flusher.join();
        self.notice_failed_fsync();
        if self.refusing().is_some() {
            // Left marked open, and with no checkpoint past what failed: the next open
            // replays and repairs (see `replay::repair_torn`).
            return;
        }
        // Shutting down: a last checkpoint, so a clean restart replays nothing; then the
        // journal is no longer marked open (see `replay::repair_torn`).
        let _ = self.checkpoint();
        if !self.dirty {
            let closed = self
                .trees()
                .segments
                .remove(super::replay::OPEN_KEY)
                .map_err(JournalError::from)
                .and_then(|_| self.trees().db.flush().map_err(JournalError::from));
            if let Err(e) = closed {
                tracing::warn!(error = %e, "journal: could not mark the journal closed");
            }
        }
    }

    /// Stops writing until a restart: every command from now on is refused with `error`.
    fn halt(&mut self, error: JournalError, what: &str) {
        if !matches!(self.trouble, Some(Trouble::Halted(_))) {
            tracing::error!(error = %error, "journal: {what}; no more writes until the engine restarts (which replays and repairs the journal)");
        }
        self.set_trouble(Some(Trouble::Halted(error)));
        // Never closed cleanly from now on: the next open repairs.
        self.dirty = true;
    }

    /// After an `fdatasync` of the value log failed (in the flusher or a checkpoint): what
    /// the kernel kept of the batches since the last good one is unknown, and their senders
    /// are told "not stored" ([`SyncGate`]). Their records are cut off the log, so that no
    /// replay brings them back, and the pointers into them rolled back as after a power cut;
    /// then the journal halts.
    fn notice_failed_fsync(&mut self) {
        if matches!(self.trouble, Some(Trouble::Halted(_))) {
            return;
        }
        let Some((durable, error)) = self.gate.failed() else {
            return;
        };
        self.halt(error, "an fsync of the value log failed");
        if let Err(e) = self.values.discard_from(durable) {
            tracing::error!(error = %e, "journal: could not cut the unsynced batches off the value log: a restart may replay them");
            return;
        }
        self.recent.borrow_mut().clear();
        let Some(trees) = &self.trees else {
            return;
        };
        if let Err(e) = super::replay::repair_torn(trees, durable) {
            tracing::error!(error = %e, "journal: could not roll back the pointers to the batches cut off (a restart repairs them)");
        }
    }

    /// Answers every command of `batch` with `error`, touching nothing.
    fn refuse(&mut self, batch: &mut Vec<Command>, error: JournalError) -> FlushJob {
        let mut replies = Vec::with_capacity(batch.len());
        for cmd in batch.drain(..) {
            let refused = Err(error.clone());
            match cmd {
                Command::Append {
                    reply, enqueued, ..
                }
                | Command::AppendRerun {
                    reply, enqueued, ..
                } => replies.push(Reply::Append(reply, Err(error.clone()), enqueued)),
                Command::Record {
                    reply,
                    wait: Wait::Applied,
                    ..
                } => reply.send(refused),
                Command::Record { reply, .. } => replies.push(Reply::Status(reply, refused)),
                Command::Prune { reply, .. } => replies.push(Reply::Prune(reply, Ok(Vec::new()))),
                Command::Compact { reply } => replies.push(Reply::Compact(Some(reply), Ok(None))),
            }
        }
        FlushJob {
            replies,
            status_deltas: HashMap::new(),
            applied: Err(error),
            unsynced: Vec::new(),
            end: self.values.position(),
        }
    }

    /// Flushes sled with the log position it has reached. Done here, on the one thread that
    /// writes to sled, after an fsync of every segment written since the last checkpoint: no
    /// pointer sled makes durable can point past what the log made durable, even across a
    /// power cut. Then the segments found dead since the last checkpoint are deleted.
    fn checkpoint(&mut self) -> Result<(), JournalError> {
        let result = self.write_checkpoint();
        self.last_checkpoint = Instant::now();
        match result {
            Ok(position) => {
                self.checkpointed = position;
                self.dirty = false;
                for segment in std::mem::take(&mut self.dead_segments) {
                    if let Err(e) = self.trees().values.remove_segment(segment) {
                        tracing::warn!(segment, error = %e, "could not delete a value-log segment");
                    }
                }
                Ok(())
            }
            // The log still has everything: replay covers it after a crash.
            Err(e) => {
                tracing::warn!(error = %e, "journal checkpoint failed");
                Err(e)
            }
        }
    }

    /// [`Writer::checkpoint`], as the writer does it every [`super::values::CHECKPOINT_EVERY`]:
    /// one that fails is trouble too. sled fails every write after an I/O error (a flush on a
    /// full disk), so it is reopened; anything else fails until a checkpoint works again.
    fn checkpoint_now(&mut self) {
        if let Err(e) = self.checkpoint() {
            self.checkpoint_failed(e);
        }
    }

    fn checkpoint_failed(&mut self, error: JournalError) {
        match error {
            JournalError::Storage(_) => self.sled_down(error, SledUndo::default()),
            // Noticed by `notice_failed_fsync`.
            _ if self.gate.failed().is_some() => {}
            _ => self.set_trouble(Some(Trouble::Failed(error))),
        }
    }

    /// sled failed: nothing is written until it is reopened and `undo` put back (after what an
    /// earlier failure left to put back, if any).
    fn sled_down(&mut self, error: JournalError, mut undo: SledUndo) {
        if let Some(Trouble::SledDown { undo: earlier, .. }) = self.trouble.take() {
            let mut all = earlier;
            all.0.append(&mut undo.0);
            undo = all;
        }
        self.set_trouble(Some(Trouble::SledDown { error, undo }));
    }

    fn write_checkpoint(&mut self) -> Result<super::values::Position, JournalError> {
        let position = self.values.position();
        let touched = self.values.take_touched();
        self.gate
            .sync(&touched, self.fsync, position, Ok(()))
            .map_err(|(_, e)| e)?;
        let trees = self.trees.as_ref().expect(SLED_OPEN);
        if self.fsync {
            trees.slots.sync()?;
        }
        self.faults.sled()?;
        self.live.persist(trees)?;
        self.counts.persist(trees)?;
        trees.segments.insert(
            super::replay::CHECKPOINT_KEY,
            &super::values::position_bytes(position),
        )?;
        trees.db.flush()?;
        if let Some(file) = &self.log_file {
            file.sync_data()
                .map_err(|e| JournalError::Io(Arc::new(e)))?;
        }
        Ok(position)
    }

    /// Moves what is still referenced in the emptiest old segment to the end of the log; the
    /// segment is then unreferenced and goes at the next checkpoint. Without this, one
    /// long-lived record (a failed transaction kept for review) would keep a whole segment.
    fn compact(
        &mut self,
        reply: Option<oneshot::Sender<Result<Option<u32>, JournalError>>>,
    ) -> FlushJob {
        let mut pending = PendingWrites::new(None);
        let result = self.stage_compaction(&mut pending);
        let applied = self.apply(pending);
        if let Ok(Some(segment)) = &result {
            tracing::debug!(segment, "journal: compacted a value-log segment");
        }
        FlushJob {
            replies: vec![Reply::Compact(reply, result)],
            status_deltas: HashMap::new(),
            applied,
            unsynced: self.values.take_unsynced(),
            end: self.values.position(),
        }
    }

    fn stage_compaction(&self, pending: &mut PendingWrites) -> Result<Option<u32>, JournalError> {
        let Some(segment) = self.compaction_candidate()? else {
            return Ok(None);
        };
        self.trees().values.scan(segment, 0, |record| {
            if record.tombstone {
                return Ok(());
            }
            let current = match record.kind {
                Kind::Raw | Kind::Tx => {
                    let Some(id) = TxId::from_key(&record.key) else {
                        return Ok(());
                    };
                    let slot = self.trees().slots.get(id)?;
                    match (record.kind, slot.status) {
                        (_, None) => None,
                        (Kind::Raw, _) => slot.raw,
                        _ => slot.record,
                    }
                }
                Kind::Step => self
                    .trees()
                    .steps
                    .get(&record.key)?
                    .as_deref()
                    .and_then(Ptr::from_bytes),
                Kind::Resource | Kind::Commit => return Ok(()),
            };
            if current != Some(record.ptr) {
                return Ok(());
            }
            match record.kind {
                Kind::Raw => pending.raw.insert(record.key, record.value),
                Kind::Step => pending.steps.insert(record.key, record.value),
                Kind::Tx => {
                    let Some(id) = TxId::from_key(&record.key) else {
                        return Ok(());
                    };
                    let tx: Transaction = serde_json::from_slice(&record.value)
                        .map_err(|e| JournalError::Corrupt(format!("transaction {id}: {e}")))?;
                    pending.records.insert(id, tx);
                }
                Kind::Resource | Kind::Commit => {}
            }
            Ok(())
        })?;
        Ok(Some(segment))
    }

    /// The old segment (before the last checkpoint) with the smallest live share under
    /// [`COMPACT_BELOW`].
    fn compaction_candidate(&self) -> Result<Option<u32>, JournalError> {
        let mut best: Option<(f64, u32)> = None;
        for (segment, live) in self.live.iter() {
            if segment >= self.checkpointed.0 {
                continue;
            }
            let size = self.trees().values.segment_len(segment);
            if size == 0 {
                continue;
            }
            let share = live as f64 / size as f64;
            if share < COMPACT_BELOW && best.is_none_or(|(b, _)| share < b) {
                best = Some((share, segment));
            }
        }
        Ok(best.map(|(_, segment)| segment))
    }

    /// Applies staged writes; keeps the segments they left dead for the next checkpoint.
    fn apply(&mut self, pending: PendingWrites) -> Result<(), JournalError> {
        self.dirty = true;
        let new_from = pending.new_from;
        let applied = pending.apply(
            self.trees.as_ref().expect(SLED_OPEN),
            &mut self.values,
            &mut self.live,
            &self.counts,
            &self.faults,
        );
        let (dead, records) = match applied {
            Ok(applied) => applied,
            Err(failure) => {
                let Failure {
                    error,
                    reverted,
                    dead,
                } = *failure;
                self.dead_segments.extend(dead);
                match reverted {
                    Reverted::Done => {
                        // Nobody was given its ids: the next batch takes them.
                        if let Some(id) = new_from {
                            self.next_id.set(id.0);
                        }
                        tracing::warn!(error = %error, "journal: a write failed; the batch was taken back and its senders told to resend");
                        self.set_trouble(Some(Trouble::Failed(error.clone())));
                    }
                    Reverted::Sled(undo, e) => {
                        tracing::warn!(error = %error, sled = %e, "journal: a write failed and sled fails too; the batch was taken back but in sled, which is reopened once there is room");
                        self.sled_down(e, undo);
                    }
                    Reverted::Not(e) => self.halt(e, "a write failed and could not be taken back"),
                }
                return Err(error);
            }
        };
        self.dead_segments.extend(dead);
        if matches!(self.trouble, Some(Trouble::Failed(_))) {
            tracing::info!("journal: writes again");
            self.set_trouble(None);
        }
        let mut recent = self.recent.borrow_mut();
        recent.extend(records);
        while recent.len() > RECENT_RECORDS {
            recent.pop_first();
        }
        Ok(())
    }

    /// Applies one batch; returns what the flusher must do once it is durable.
    fn commit(&mut self, batch: &mut Vec<Command>) -> FlushJob {
        self.metrics.journal_batch_size.observe(batch.len() as f64);
        let mut pending = PendingWrites::new(Some(TxId(self.next_id.get())));
        let mut replies = Vec::with_capacity(batch.len());
        let mut on_apply = Vec::new();
        for cmd in batch.drain(..) {
            match cmd {
                Command::Append {
                    message,
                    enqueued,
                    reply,
                } => {
                    let result = self.stage_append(&mut pending, message);
                    replies.push(Reply::Append(reply, result, enqueued));
                }
                Command::Record {
                    id,
                    steps,
                    events,
                    reply,
                    wait,
                } => {
                    let result = self.stage_record(&mut pending, id, steps, events);
                    match wait {
                        Wait::Applied => on_apply.push((reply, result)),
                        Wait::Durable => replies.push(Reply::Status(reply, result)),
                    }
                }
                Command::AppendRerun {
                    of,
                    channels,
                    enqueued,
                    reply,
                } => {
                    let result = self.stage_rerun(&mut pending, of, channels);
                    replies.push(Reply::Append(reply, result, enqueued));
                }
                Command::Prune { requests, reply } => {
                    let result = requests
                        .into_iter()
                        .filter_map(|r| self.stage_prune(&mut pending, r).transpose())
                        .collect();
                    replies.push(Reply::Prune(reply, result));
                }
                // Taken out of the batch by `run`, which compacts on its own.
                Command::Compact { reply } => {
                    replies.push(Reply::Compact(Some(reply), Ok(None)));
                }
            }
        }
        let status_deltas = std::mem::take(&mut pending.status_deltas);
        let applied = self.apply(pending);
        for (reply, result) in on_apply {
            reply.send(applied.clone().and(result));
        }
        FlushJob {
            replies,
            status_deltas,
            applied,
            unsynced: self.values.take_unsynced(),
            end: self.values.position(),
        }
    }

    fn stage_append(
        &self,
        pending: &mut PendingWrites,
        message: NewMessage,
    ) -> Result<Appended, JournalError> {
        if let Some(key) = &message.origin_key {
            let earlier = match pending.first_by_origin.get(key) {
                Some(id) => Some(*id),
                None => self
                    .trees()
                    .by_origin
                    .get(key.as_bytes())?
                    .and_then(|v| TxId::from_key(&v)),
            };
            if let Some(id) = earlier {
                return Ok(Appended {
                    id,
                    duplicate_of: None,
                    already: true,
                });
            }
        }
        self.stage_new(pending, message, None)
    }

    /// A transaction's record, from this batch or the tree.
    fn load(&self, pending: &mut PendingWrites, id: TxId) -> Result<(), JournalError> {
        if pending.deleted.contains(&id) {
            return Err(JournalError::NotFound(id));
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = pending.records.entry(id) {
            // Taken out: it comes back once this batch is applied, or not (a failed batch, a
            // deletion), and then the stored version is read next time.
            let recent = self.recent.borrow_mut().remove(&id);
            let tx = match recent {
                Some(tx) => tx,
                None => self.trees().tx(id)?.ok_or(JournalError::NotFound(id))?,
            };
            slot.insert(tx);
        }
        Ok(())
    }

    fn stage_rerun(
        &self,
        pending: &mut PendingWrites,
        of: TxId,
        channels: Vec<ChannelRun>,
    ) -> Result<Appended, JournalError> {
        self.load(pending, of)?;
        let raw = match pending.raw.latest(&of.to_key()) {
            Some(raw) => raw,
            None => self
                .trees()
                .raw(of)?
                .ok_or_else(|| JournalError::Corrupt(format!("transaction {of}: body pruned")))?,
        };
        let original = pending.records.get(&of).expect("loaded above");
        let message = NewMessage {
            meta: original.meta.clone(),
            channels,
            raw: raw.into(),
            status: Status::Received,
            error: None,
            truncated: original.truncated,
            origin_key: None,
        };
        let appended = self.stage_new(pending, message, Some(of))?;
        let original = pending.records.get_mut(&of).expect("loaded above");
        original.events.push(StatusEvent {
            at_ms: now_ms(),
            status: original.status,
            reason: Some(format!("rerun as transaction {}", appended.id)),
        });
        Ok(appended)
    }

    /// Removes what `request` asks for, if the transaction is still in an allowed status.
    fn stage_prune(
        &self,
        pending: &mut PendingWrites,
        request: PruneRequest,
    ) -> Result<Option<Pruned>, JournalError> {
        let id = request.id;
        match self.load(pending, id) {
            Err(JournalError::NotFound(_)) => return Ok(None),
            other => other?,
        }
        let tx = pending.records.get(&id).expect("loaded above");
        // Never prune work in flight, whatever the request says.
        if tx.status.in_flight() || !request.statuses.contains(&tx.status) {
            return Ok(None);
        }
        let channels: Vec<String> = tx.channel_names().iter().map(|c| c.to_string()).collect();
        let step_keys: Vec<sled::IVec> = self
            .trees()
            .steps
            .scan_prefix(id.to_key())
            .keys()
            .collect::<Result<_, _>>()?;
        match request.action {
            PruneAction::Body => {
                if tx.body_pruned {
                    return Ok(None);
                }
                pending.raw.remove(id.to_key());
                // Step outputs are FHIR made from the body: PHI too. Keep what ran and how it
                // ended.
                for key in step_keys {
                    if let Some(bytes) =
                        self.trees().value(&self.trees().steps, Kind::Step, &key)?
                    {
                        if let Ok(mut step) = serde_json::from_slice::<Step>(&bytes) {
                            step.output = None;
                            step.logs.clear();
                            let json = serde_json::to_vec(&step).expect("step serializes");
                            pending.steps.insert(key, json);
                        }
                    }
                }
                pending
                    .records
                    .get_mut(&id)
                    .expect("loaded above")
                    .body_pruned = true;
            }
            PruneAction::Whole => {
                let tx = pending.records.remove(&id).expect("loaded above");
                pending.deleted.insert(id);
                pending.raw.remove(id.to_key());
                for key in step_keys {
                    pending.steps.remove(key);
                }
                if let Some(control_id) = &tx.meta.control_id {
                    pending.by_control.remove(keys::control(control_id, id));
                }
                *pending.status_deltas.entry(tx.status).or_default() -= 1;
                for channel in tx.channel_names() {
                    *pending
                        .stats_deltas
                        .entry((channel.to_string(), tx.status))
                        .or_default() -= 1;
                }
            }
        }
        Ok(Some(Pruned {
            id,
            action: request.action,
            channels,
        }))
    }

    /// Stages a new transaction; `rerun_of` links a rerun to its original (and skips duplicate
    /// detection: it is a copy on purpose).
    fn stage_new(
        &self,
        pending: &mut PendingWrites,
        message: NewMessage,
        rerun_of: Option<TxId>,
    ) -> Result<Appended, JournalError> {
        let id = TxId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        if let Some(key) = &message.origin_key {
            pending.first_by_origin.insert(key.clone(), id);
            pending.by_origin.insert(key.as_bytes(), id.to_key());
        }
        let received_at_ms = now_ms();
        let sender = keys::sender(&message.meta);
        let duplicate_of = match &message.meta.control_id {
            Some(control_id) if rerun_of.is_some() => {
                pending
                    .by_control
                    .insert(keys::control(control_id, id), sender.into_bytes());
                None
            }
            Some(control_id) => {
                let dup_key = (control_id.clone(), sender.clone());
                let earlier = match pending.first_by_control.get(&dup_key) {
                    Some(id) => Some(*id),
                    None => self.find_by_control(control_id, &sender)?,
                };
                pending
                    .first_by_control
                    .entry(dup_key)
                    .or_insert(earlier.unwrap_or(id));
                pending
                    .by_control
                    .insert(keys::control(control_id, id), sender.into_bytes());
                earlier
            }
            None => None,
        };
        let tx = Transaction {
            id,
            received_at_ms,
            meta: message.meta,
            size: message.raw.len(),
            truncated: message.truncated,
            status: message.status,
            error: message.error.clone(),
            duplicate_of,
            channels: message.channels,
            events: vec![StatusEvent {
                at_ms: received_at_ms,
                status: message.status,
                reason: message
                    .error
                    .or_else(|| rerun_of.map(|of| format!("rerun of transaction {of}"))),
            }],
            rerun_of,
            body_pruned: false,
            step_count: Some(0),
            origin_key: message.origin_key.clone(),
        };
        for channel in tx.channel_names() {
            *pending
                .stats_deltas
                .entry((channel.to_string(), message.status))
                .or_default() += 1;
        }
        pending.raw.insert(id.to_key(), &message.raw);
        *pending.status_deltas.entry(message.status).or_default() += 1;
        pending.records.insert(id, tx);
        Ok(Appended {
            id,
            duplicate_of,
            already: false,
        })
    }

    fn find_by_control(
        &self,
        control_id: &str,
        sender: &str,
    ) -> Result<Option<TxId>, JournalError> {
        for entry in self
            .trees()
            .by_control
            .scan_prefix(keys::control_prefix(control_id))
        {
            let (key, value) = entry?;
            if value.as_ref() == sender.as_bytes() {
                return Ok(keys::control_tx(&key));
            }
        }
        Ok(None)
    }

    fn stage_record(
        &self,
        pending: &mut PendingWrites,
        id: TxId,
        steps: Vec<Step>,
        events: Vec<(Status, Option<String>)>,
    ) -> Result<(), JournalError> {
        self.load(pending, id)?;
        if !steps.is_empty() {
            // Steps are keyed id + sequence; continue after the ones already stored.
            let tx = pending.records.get_mut(&id).expect("loaded above");
            let next = match tx.step_count {
                Some(n) => n,
                None => self.trees().steps.scan_prefix(id.to_key()).count() as u32,
            };
            tx.step_count = Some(next + steps.len() as u32);
            for (n, step) in steps.iter().enumerate() {
                let mut key = id.to_key().to_vec();
                key.extend_from_slice(&(next + n as u32).to_be_bytes());
                let json = serde_json::to_vec(step).expect("step serializes");
                pending.steps.insert(key, json);
            }
        }
        let tx = pending.records.get_mut(&id).expect("inserted above");
        for (status, reason) in events {
            let old = tx.status;
            if old != status {
                *pending.status_deltas.entry(old).or_default() -= 1;
                *pending.status_deltas.entry(status).or_default() += 1;
                for channel in tx.channel_names() {
                    *pending
                        .stats_deltas
                        .entry((channel.to_string(), old))
                        .or_default() -= 1;
                    *pending
                        .stats_deltas
                        .entry((channel.to_string(), status))
                        .or_default() += 1;
                }
            }
            if status == Status::Failed || status == Status::Queued {
                tx.error = reason.clone().or(tx.error.take());
            }
            tx.status = status;
            tx.events.push(StatusEvent {
                at_ms: now_ms(),
                status,
                reason,
            });
        }
        Ok(())
    }
}

/// How long the writer holds back writes no one waits for when nothing else comes.
const SYNC_HELD_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer's side of the flusher's queue. A batch no one waits on the disk for (outcomes
/// recorded with [`Wait::Applied`], whose callers were answered when it was applied) is held
/// back rather than fsynced on its own: its segments go with the next batch sent, whose fsync
/// covers them (the log is written in order), or alone once the writer has been idle for
/// [`SYNC_HELD_WITHIN`]. At 5,000 msg/s that saves one fsync, and the flusher's wake-up, for
/// most outcomes.
struct Flushes {
    jobs: std::sync::mpsc::Sender<FlushJob>,
    /// Segments written by held batches, and where the log ended after them.
    held: Option<(Segments, super::values::Position)>,
    metrics: Arc<Metrics>,
}

impl Flushes {
    fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Hands `job` to the flusher with what is held, or holds it.
    fn send(&mut self, mut job: FlushJob) -> Result<(), FlusherGone> {
        if job.replies.is_empty() && job.applied.is_ok() {
            // Counted now, as its callers were answered: applied and readable.
            for (status, delta) in std::mem::take(&mut job.status_deltas) {
                self.metrics
                    .transactions_by_status
                    .with_label_values(&[status.as_str()])
                    .add(delta);
            }
            let (segments, end) = self.held.get_or_insert_with(Default::default);
            merge_segments(segments, job.unsynced);
            *end = (*end).max(job.end);
            return Ok(());
        }
        if let Some((segments, end)) = self.held.take() {
            merge_segments(&mut job.unsynced, segments);
            job.end = job.end.max(end);
        }
        self.jobs.send(job).map_err(|_| FlusherGone)
    }

    /// Sends what is held to be fsynced on its own.
    fn release(&mut self) -> Result<(), FlusherGone> {
        match self.held.take() {
            Some((unsynced, end)) => self
                .jobs
                .send(FlushJob {
                    replies: Vec::new(),
                    status_deltas: HashMap::new(),
                    applied: Ok(()),
                    unsynced,
                    end,
                })
                .map_err(|_| FlusherGone),
            None => Ok(()),
        }
    }

    /// Releases what is held and lets the flusher finish.
    fn close(mut self) {
        let _ = self.release();
    }
}

/// The flusher thread has ended (it ends only after the writer lets go of its queue, or
/// when it panicked).
struct FlusherGone;

/// Value-log segments written and not yet fsynced, each with its file.
type Segments = Vec<(u32, Arc<File>)>;

fn merge_segments(into: &mut Segments, from: Segments) {
    for (segment, file) in from {
        if !into.iter().any(|(s, _)| *s == segment) {
            into.push((segment, file));
        }
    }
}

/// One applied batch waiting to be made durable.
struct FlushJob {
    replies: Vec<Reply>,
    status_deltas: HashMap<Status, i64>,
    applied: Result<(), JournalError>,
    /// Value-log segments written by this batch: fsynced before the replies go.
    unsynced: Segments,
    /// Where the value log ends after this batch.
    end: super::values::Position,
}

/// The second stage: fsyncs the value log once for every batch applied meanwhile, then answers.
struct Flusher {
    fsync: bool,
    metrics: Arc<Metrics>,
    faults: Arc<Faults>,
    gate: Arc<SyncGate>,
}

impl Flusher {
    fn run(self, jobs: Receiver<FlushJob>) {
        while let Ok(first) = jobs.recv() {
            let mut ready = vec![first];
            while let Ok(job) = jobs.try_recv() {
                ready.push(job);
            }
            let mut unsynced: Vec<(u32, Arc<File>)> = Vec::new();
            for job in &mut ready {
                for (segment, file) in job.unsynced.drain(..) {
                    if !unsynced.iter().any(|(s, _)| *s == segment) {
                        unsynced.push((segment, file));
                    }
                }
            }
            let end = ready.iter().map(|job| job.end).max().unwrap_or_default();
            let started = Instant::now();
            let synced = self.gate.sync(
                &unsynced,
                self.fsync,
                end,
                self.faults.fire(FaultPoint::Fsync),
            );
            self.metrics
                .journal_flush_seconds
                .observe(started.elapsed().as_secs_f64());
            for job in ready {
                // After a failed fsync, a batch is durable only if an earlier fsync (a
                // checkpoint's) covered it.
                let flushed = match &synced {
                    Err((durable, e)) if job.end > *durable => Err(e.clone()),
                    _ => Ok(()),
                };
                self.answer(job, &flushed);
            }
        }
    }

    fn answer(&self, job: FlushJob, flushed: &Result<(), JournalError>) {
        let written = job.applied.and_then(|()| flushed.clone());
        if written.is_ok() {
            for (status, delta) in job.status_deltas {
                self.metrics
                    .transactions_by_status
                    .with_label_values(&[status.as_str()])
                    .add(delta);
            }
        }
        for reply in job.replies {
            match reply {
                Reply::Append(tx, result, enqueued) => {
                    let result = match &written {
                        Ok(()) => result,
                        Err(e) => Err(e.clone()),
                    };
                    self.metrics
                        .journal_append_seconds
                        .observe(enqueued.elapsed().as_secs_f64());
                    let _ = tx.send(result);
                }
                Reply::Status(reply, result) => reply.send(match &written {
                    Ok(()) => result,
                    Err(e) => Err(e.clone()),
                }),
                Reply::Prune(tx, result) => {
                    let _ = tx.send(match &written {
                        Ok(()) => result,
                        Err(e) => Err(e.clone()),
                    });
                }
                Reply::Compact(tx, result) => {
                    if let Some(tx) = tx {
                        let _ = tx.send(match &written {
                            Ok(()) => result,
                            Err(e) => Err(e.clone()),
                        });
                    }
                }
            }
        }
    }
}

/// The value log's fsyncs, one at a time: the flusher's (what ACKs wait for) and the
/// checkpoints'. After a failed `fdatasync` the kernel may have dropped the pages it could not
/// write, and it reports the error to one fsync only (fsyncgate): a later one that succeeds
/// says nothing about them. So the first failure is kept here, and from then on nothing more
/// counts as durable: the flusher fails every batch past the last position an fsync covered,
/// and the writer cuts them off the log and halts ([`Writer::notice_failed_fsync`]).
pub(super) struct SyncGate {
    /// Held through each fsync.
    state: std::sync::Mutex<Synced>,
    /// Set once an fsync failed: what the writer looks at before each batch, without waiting
    /// for the lock (which the flusher holds through its fsync: the writer would lose the
    /// overlap of its work with the flusher's).
    failed: std::sync::atomic::AtomicBool,
}

struct Synced {
    /// The log is durable up to here.
    durable: super::values::Position,
    /// The first failed fsync: where the log was durable up to then, and the error.
    failed: Option<(super::values::Position, JournalError)>,
}

impl SyncGate {
    pub fn new(durable: super::values::Position) -> SyncGate {
        SyncGate {
            state: std::sync::Mutex::new(Synced {
                durable,
                failed: None,
            }),
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Synced> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fsyncs `files` (if `fsync`; `injected` is the test hook's verdict first): the log is
    /// then durable up to `end`. On failure, or after an earlier one: where it is durable up
    /// to, and the error.
    fn sync(
        &self,
        files: &[(u32, Arc<File>)],
        fsync: bool,
        end: super::values::Position,
        injected: Result<(), JournalError>,
    ) -> Result<(), (super::values::Position, JournalError)> {
        let mut state = self.lock();
        if let Some(failed) = &state.failed {
            return Err(failed.clone());
        }
        let synced = injected.and_then(|()| {
            if fsync {
                for (_, file) in files {
                    file.sync_data()
                        .map_err(|e| JournalError::Io(Arc::new(e)))?;
                }
            }
            Ok(())
        });
        match synced {
            Ok(()) => {
                state.durable = state.durable.max(end);
                Ok(())
            }
            Err(e) => {
                let failed = (state.durable, e);
                state.failed = Some(failed.clone());
                self.failed
                    .store(true, std::sync::atomic::Ordering::Release);
                Err(failed)
            }
        }
    }

    /// The first failed fsync, if any: where the log was durable up to, and the error.
    pub fn failed(&self) -> Option<(super::values::Position, JournalError)> {
        if !self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.lock().failed.clone()
    }
}

/// Writes to one tree, applied in order with plain inserts and removes. (sled's `apply_batch`
/// seals and writes an I/O buffer on every call, on a new thread: five of them per commit cost
/// more than the inserts themselves. Atomicity across a batch is not needed: nothing in it is
/// acknowledged before the flush.)
#[derive(Default)]
struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.push((key.as_ref().to_vec(), None));
    }

    /// The value staged last for `key` in this batch (`None` if not staged or removed).
    fn latest(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    }

    /// Applies the writes in order; `before` gets what each key held, for [`SledUndo`].
    fn apply(
        &self,
        tree: &sled::Tree,
        before: &mut Vec<Option<sled::IVec>>,
    ) -> Result<(), JournalError> {
        before.reserve(self.0.len());
        for (key, value) in &self.0 {
            before.push(match value {
                Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                None => tree.remove(key)?,
            });
        }
        Ok(())
    }

    /// Appends the values to the value log; what is left to write to sled is their pointers.
    fn into_pointers(
        self,
        kind: Kind,
        values: &mut Appender,
    ) -> Result<PointerWrites, JournalError> {
        let mut out = PointerWrites::default();
        for (key, value) in self.0 {
            let ptr = match value {
                Some(value) => Some(values.push(kind, &key, &value)?),
                None => {
                    values.push_tombstone(kind, &key)?;
                    None
                }
            };
            out.push(key, ptr);
        }
        Ok(out)
    }
}

/// Pointer changes for one tree, and the bytes they add to each segment.
#[derive(Default)]
struct PointerWrites {
    writes: Vec<(Vec<u8>, Option<Ptr>)>,
}

impl PointerWrites {
    fn push(&mut self, key: Vec<u8>, ptr: Option<Ptr>) {
        self.writes.push((key, ptr));
    }

    fn added(&self, live: &mut HashMap<u32, i64>) {
        for ptr in self.writes.iter().filter_map(|(_, p)| *p) {
            *live.entry(ptr.segment).or_default() += i64::from(ptr.len);
        }
    }

    /// Writes the pointers; counts what the replaced or removed ones referred to. `before`
    /// gets what each key held, for [`SledUndo`].
    fn apply(
        &self,
        tree: &sled::Tree,
        released: &mut HashMap<u32, i64>,
        before: &mut Vec<Option<sled::IVec>>,
    ) -> Result<(), JournalError> {
        before.reserve(self.writes.len());
        for (key, ptr) in &self.writes {
            let old = match ptr {
                Some(ptr) => tree.insert(key.as_slice(), &ptr.to_bytes())?,
                None => tree.remove(key)?,
            };
            if let Some(old) = old.as_deref().and_then(Ptr::from_bytes) {
                *released.entry(old.segment).or_default() -= i64::from(old.len);
            }
            before.push(old);
        }
        Ok(())
    }
}

/// At open: deletes segments no pointer refers to (counted at zero, or never counted: written
/// by a batch that a crash cut short), except the new active one.
pub(super) fn remove_dead_segments(trees: &Trees, active: u32) -> Result<(), JournalError> {
    for segment in trees.values.segments()? {
        if segment == active {
            continue;
        }
        let live = trees
            .segments
            .get(segment.to_be_bytes())?
            .map(|v| keys::count(&v))
            .unwrap_or(0);
        if live <= 0 {
            trees.segments.remove(segment.to_be_bytes())?;
            trees.values.remove_segment(segment)?;
        }
    }
    trees.db.flush()?;
    Ok(())
}

/// Journals from before the value log kept records, bodies and steps inline in the `tx`,
/// `raw` and `steps` trees: move them into the log once, at open. The old trees are dropped
/// only after the new pointers are flushed, so a crash midway just starts over.
pub(super) fn migrate_inline_values(
    trees: &Trees,
    values: &mut Appender,
) -> Result<(), JournalError> {
    let names = trees.db.tree_names();
    if !["tx", "raw", "steps"]
        .iter()
        .any(|name| names.iter().any(|n| n.as_ref() == name.as_bytes()))
    {
        return Ok(());
    }
    // Into pointer trees, which [`super::replay::migrate_pointer_trees`] then moves to slots.
    let old = [
        ("tx", Kind::Tx, &trees.db.open_tree("tx_ptr")?),
        ("raw", Kind::Raw, &trees.db.open_tree("raw_ptr")?),
        ("steps", Kind::Step, &trees.steps),
    ];
    let mut live = HashMap::new();
    for (name, kind, new_tree) in old {
        let inline = trees.db.open_tree(name)?;
        for entry in inline.iter() {
            let (key, value) = entry?;
            let ptr = values.push(kind, &key, &value)?;
            *live.entry(ptr.segment).or_default() += i64::from(ptr.len);
            new_tree.insert(key, &ptr.to_bytes())?;
        }
        values.write_out()?;
    }
    for (_, file) in values.take_unsynced() {
        file.sync_data()
            .map_err(|e| JournalError::Io(Arc::new(e)))?;
    }
    // Replay need not read them again.
    super::replay::set_checkpoint(trees, values.position())?;
    let mut counts = LiveBytes::load(trees)?;
    counts.add(&live, values.active_segment());
    counts.persist(trees)?;
    trees.db.flush()?;
    for name in ["tx", "raw", "steps"] {
        trees.db.drop_tree(name)?;
    }
    trees.db.flush()?;
    Ok(())
}

/// The slot a batch is building for the id in `key`: what the table holds now (kept in
/// `before` too, to put back if the batch fails), or an empty one for ids the batch created
/// (from `new_from` on).
fn slot_of<'a>(
    slots: &'a mut BTreeMap<u64, Slot>,
    before: &mut BTreeMap<u64, Slot>,
    trees: &Trees,
    new_from: u64,
    key: &[u8],
) -> Result<Option<&'a mut Slot>, JournalError> {
    let Some(id) = TxId::from_key(key) else {
        return Ok(None);
    };
    Ok(Some(match slots.entry(id.0) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) if id.0 >= new_from => {
            e.insert(Slot::default())
        }
        std::collections::btree_map::Entry::Vacant(e) => {
            let slot = trees.slots.get(id)?;
            before.insert(id.0, slot);
            e.insert(slot)
        }
    }))
}

/// Everything one batch writes, grouped per tree.
#[derive(Default)]
struct PendingWrites {
    /// Ids from this one on were created by this batch: their slots are known to be empty.
    new_from: Option<TxId>,
    records: HashMap<TxId, Transaction>,
    raw: Writes,
    by_control: Writes,
    by_origin: Writes,
    steps: Writes,
    /// Control ids appended in this batch, so duplicates within one batch are caught too.
    first_by_control: HashMap<(String, String), TxId>,
    /// Origin keys appended in this batch.
    first_by_origin: HashMap<String, TxId>,
    status_deltas: HashMap<Status, i64>,
    /// Per (channel, status) changes to the `stats` counters.
    stats_deltas: HashMap<(String, Status), i64>,
    /// Transactions removed by retention in this batch (their records must not be rewritten).
    deleted: std::collections::HashSet<TxId>,
}

impl PendingWrites {
    fn new(new_from: Option<TxId>) -> PendingWrites {
        PendingWrites {
            new_from,
            ..PendingWrites::default()
        }
    }

    /// Values into the log (one write), then: the segments' new live bytes (in memory, see
    /// [`LiveBytes`]), the indexes, the slots (record and body pointers, status), steps, and
    /// last the bytes released. A crash in between leaves at worst a value nothing points to;
    /// nothing in this batch was acknowledged yet (replies wait for the flush), and readers
    /// skip index entries whose slot is empty. Returns the segments to delete once the flush
    /// is durable, and the records written.
    ///
    /// A write that fails (a full disk) fails the whole batch, whose senders are told "not
    /// stored" and resend: so what it wrote is taken back first ([`Applied::revert`]), the
    /// value log included, or a restart's replay would store it after all, and the resend too.
    fn apply(
        mut self,
        trees: &Trees,
        values: &mut Appender,
        live: &mut LiveBytes,
        counts: &ChannelCounts,
        faults: &Faults,
    ) -> Result<Written, Box<Failure>> {
        let mut applied = Applied {
            start: values.position(),
            slots_end: trees.slots.end(),
            ..Applied::default()
        };
        match self.write(trees, values, live, faults, &mut applied) {
            Ok(dead) => {
                counts.add(std::mem::take(&mut self.stats_deltas));
                Ok((dead, self.records))
            }
            Err(error) => {
                let (reverted, dead) = applied.revert(&self, trees, values, live, faults);
                Err(Box::new(Failure {
                    error,
                    reverted,
                    dead,
                }))
            }
        }
    }

    /// [`PendingWrites::apply`]'s writes, each noted in `applied` as it is made.
    fn write(
        &mut self,
        trees: &Trees,
        values: &mut Appender,
        live: &mut LiveBytes,
        faults: &Faults,
        applied: &mut Applied,
    ) -> Result<Vec<u32>, JournalError> {
        let raw = std::mem::take(&mut self.raw).into_pointers(Kind::Raw, values)?;
        let mut records = Writes::default();
        for (id, tx) in &self.records {
            records.insert(
                id.to_key(),
                serde_json::to_vec(tx).expect("transaction serializes"),
            );
        }
        for id in &self.deleted {
            records.remove(id.to_key());
        }
        let records = records.into_pointers(Kind::Tx, values)?;
        applied.steps = std::mem::take(&mut self.steps).into_pointers(Kind::Step, values)?;
        values.write_out()?;
        faults.fire(FaultPoint::AfterValues)?;
        let mut added = HashMap::new();
        for writes in [&raw, &records, &applied.steps] {
            writes.added(&mut added);
        }
        let active = values.active_segment();
        // Counted before anything points at them: a segment is never found dead while a
        // pointer into it is being written.
        let mut dead = live.add(&added, active);
        applied.added = Some(added);
        let mut released = HashMap::new();
        let mut slots: BTreeMap<u64, Slot> = BTreeMap::new();
        let new_from = self.new_from.map_or(u64::MAX, |id| id.0);
        let before = &mut applied.slots;
        let mut release = |ptr: Option<Ptr>| {
            if let Some(old) = ptr {
                *released.entry(old.segment).or_default() -= i64::from(old.len);
            }
        };
        for (key, ptr) in raw.writes {
            if let Some(slot) = slot_of(&mut slots, before, trees, new_from, &key)? {
                release(slot.raw);
                slot.raw = ptr;
            }
        }
        for (key, ptr) in records.writes {
            let Some(slot) = slot_of(&mut slots, before, trees, new_from, &key)? else {
                continue;
            };
            release(slot.record);
            match ptr.zip(TxId::from_key(&key).and_then(|id| self.records.get(&id))) {
                Some((ptr, tx)) => {
                    slot.record = Some(ptr);
                    slot.status = Some(tx.status);
                    slot.received_at_ms = tx.received_at_ms;
                }
                None => {
                    release(slot.raw);
                    *slot = Slot::default();
                }
            }
        }
        // Indexes before slots: if a crash cuts this short, replay finds the old record still
        // there and can remove what it indexed.
        faults.sled()?;
        self.by_control
            .apply(&trees.by_control, &mut applied.by_control)?;
        self.by_origin
            .apply(&trees.by_origin, &mut applied.by_origin)?;
        faults.fire(FaultPoint::Slots)?;
        applied.slots_written = true;
        trees.slots.write(&slots)?;
        applied
            .steps
            .apply(&trees.steps, &mut released, &mut applied.steps_before)?;
        faults.fire(FaultPoint::Sled)?;
        dead.extend(live.add(&released, active));
        Ok(dead)
    }
}

/// What [`PendingWrites::apply`] has written so far: enough to take a failed batch back.
#[derive(Default)]
struct Applied {
    /// Where the batch's records start in the value log.
    start: super::values::Position,
    /// The slot table's end before the batch: the slots of the ids it creates start there.
    slots_end: u64,
    /// The live bytes the batch counted, once counted.
    added: Option<HashMap<u32, i64>>,
    /// The slots of earlier transactions that the batch changes, as they were.
    slots: BTreeMap<u64, Slot>,
    /// The slot table may hold some of the batch's slots.
    slots_written: bool,
    /// What the `by_control` entries written held before, in the order written.
    by_control: Vec<Option<sled::IVec>>,
    /// The same for `by_origin`.
    by_origin: Vec<Option<sled::IVec>>,
    /// The batch's step pointers, and what their keys held before.
    steps: PointerWrites,
    steps_before: Vec<Option<sled::IVec>>,
}

/// A batch written: the segments it left unreferenced (deleted after the next checkpoint), and
/// its records as written.
type Written = (Vec<u32>, HashMap<TxId, Transaction>);

/// A batch that failed, and how far it was taken back.
struct Failure {
    error: JournalError,
    reverted: Reverted,
    /// Segments that the batch's live bytes, taken back, leave unreferenced.
    dead: Vec<u32>,
}

/// How far a failed batch was taken back.
pub(super) enum Reverted {
    /// All of it: the journal is as before the batch.
    Done,
    /// All but sled's entries, because sled fails too: to put back once it works again (until
    /// then the journal must not write).
    Sled(SledUndo, JournalError),
    /// Not all: the value log or the slots may still hold the batch (a restart's replay and
    /// repair put that right; the journal must not write until then).
    Not(JournalError),
}

impl Applied {
    /// Takes back what the batch wrote: the slots (first, so that no reader follows a pointer
    /// into what is cut next), the records in the value log (cut off, durably, before the
    /// batch's senders hear "not stored"), the live bytes, then sled's entries (put back as
    /// they were, and flushed).
    fn revert(
        self,
        pending: &PendingWrites,
        trees: &Trees,
        values: &mut Appender,
        live: &mut LiveBytes,
        faults: &Faults,
    ) -> (Reverted, Vec<u32>) {
        let mut undo = SledUndo::default();
        let keys = |writes: &Writes| writes.0.iter().map(|(key, _)| key.clone()).collect();
        undo.push(
            UndoTree::ByControl,
            keys(&pending.by_control),
            self.by_control,
        );
        undo.push(UndoTree::ByOrigin, keys(&pending.by_origin), self.by_origin);
        let step_keys = self.steps.writes.iter().map(|(key, _)| key.clone());
        undo.push(UndoTree::Steps, step_keys.collect(), self.steps_before);
        let mut failed = None;
        if self.slots_written {
            let restored = trees
                .slots
                .write(&self.slots)
                .and_then(|()| trees.slots.truncate(self.slots_end));
            failed = restored.err();
        }
        if let Err(e) = values.discard_from(self.start) {
            failed.get_or_insert(e);
        }
        let mut dead = Vec::new();
        if let Some(added) = self.added {
            let taken_back: HashMap<u32, i64> = added.into_iter().map(|(s, n)| (s, -n)).collect();
            // No segment is being appended to any more: the next record starts a new one.
            dead = live.add(&taken_back, u32::MAX);
        }
        if let Some(e) = failed {
            return (Reverted::Not(e), dead);
        }
        if !undo.is_empty() {
            if let Err(e) = undo.apply(trees, faults) {
                return (Reverted::Sled(undo, e), dead);
            }
        }
        (Reverted::Done, dead)
    }
}

/// Which tree an undone sled entry is in.
#[derive(Debug, Clone, Copy)]
enum UndoTree {
    ByControl,
    ByOrigin,
    Steps,
}

/// sled entries of a failed batch, with what they held before it, in the order written.
#[derive(Default)]
pub(super) struct SledUndo(Vec<(UndoTree, Vec<u8>, Option<sled::IVec>)>);

impl SledUndo {
    fn push(&mut self, tree: UndoTree, keys: Vec<Vec<u8>>, before: Vec<Option<sled::IVec>>) {
        // Only the keys written: `before` stops where a write failed.
        for (key, old) in keys.into_iter().zip(before) {
            self.0.push((tree, key, old));
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// [`SledUndo::put_back`], then a flush of sled, so that a crash cannot bring the batch's
    /// entries back.
    fn apply(&self, trees: &Trees, faults: &Faults) -> Result<(), JournalError> {
        faults.sled()?;
        self.put_back(trees)?;
        faults.sled()?;
        trees.db.flush()?;
        Ok(())
    }

    /// Puts every entry back as it was (newest first, so that a key written twice ends as it
    /// was first).
    fn put_back(&self, trees: &Trees) -> Result<(), JournalError> {
        for (tree, key, old) in self.0.iter().rev() {
            let tree = match tree {
                UndoTree::ByControl => &trees.by_control,
                UndoTree::ByOrigin => &trees.by_origin,
                UndoTree::Steps => &trees.steps,
            };
            match old {
                Some(old) => tree.insert(key.as_slice(), old.clone())?,
                None => tree.remove(key.as_slice())?,
            };
        }
        Ok(())
    }
}
