//! The journal: every received message, durable before it is acknowledged, and the audit trail
//! of what happened to it.
//!
//! Layout: the records and bodies in the [`values`] log (`<data_dir>/journal/values/`), the
//! [`slots`] table (`<data_dir>/journal/slots`: per id, where its record and raw body are, its
//! receive time and status), and sled (one database under `<data_dir>/journal`) for the rest:
//! - `by_control`, `by_origin`: duplicate detection by control id and by document origin (see
//!   [`keys`]);
//! - `audit`, `api_clients`: the admin API's audit trail and API clients, owned by
//!   `admin::audit` and `admin::clients` (they only reach them through [`Journal::audit_tree`]
//!   and [`Journal::clients_tree`]).
//! - `step_ptr`: id + sequence → one pipeline step (filter, transform, delivery) as JSON, in
//!   the value log;
//! - `segments`: value-log segment → bytes still referenced (a segment at 0 is deleted);
//! - `stats`: (channel, status) → count, kept by the writer on every status change, so that
//!   `GET /api/stats` never walks the journal.
//!
//! `ack_id_prefix` (`<data_dir>/journal/ack_id_prefix`): six random characters made when the
//! journal is, that start the MSH-10 of every ACK (then the transaction id), so that ACK ids
//! do not repeat across engines or data dirs although transaction ids start at 0 in each.
//!
//! [`retention`] prunes old transactions (or only their bodies) through the same writer.
//!
//! Writes go through one writer thread with group commit ([`writer`]); reads go straight to sled,
//! which is safe from any thread (callers on an async runtime should use a blocking pool).

mod counts;
pub mod faults;
mod keys;
mod live;
pub mod record;
mod replay;
pub mod retention;
mod slots;
pub(crate) mod values;
mod writer;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::oneshot;

pub use record::{
    now_ms, Appended, ChannelRun, MessageMeta, NewMessage, Status, StatusEvent, Step, StepKind,
    StepOutput, Transaction, TxId,
};

use crate::config::JournalConfig;
use crate::metrics::Metrics;
use slots::Slots;
use values::{Kind, Ptr, ValueLog};
use writer::{Command, RecordReply, Wait, Writer};

/// Why a journal operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage: {0}")]
    Storage(Arc<sled::Error>),
    #[error("journal I/O: {0}")]
    Io(Arc<std::io::Error>),
    #[error("journal is closed")]
    Closed,
    #[error("transaction {0} not found")]
    NotFound(TxId),
    #[error("journal record is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open journal at {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// For the moment the writer reopens sled after a failed write (see [`writer`]).
    #[error("journal storage is being reopened after a failed write: try again")]
    Reopening,
}

impl JournalError {
    /// The data dir's filesystem is full (`ENOSPC`, or a quota: `EDQUOT`).
    pub fn storage_full(&self) -> bool {
        let io = match self {
            JournalError::Io(io) => Some(&**io),
            JournalError::Storage(sled) => match &**sled {
                sled::Error::Io(io) => Some(io),
                _ => None,
            },
            _ => None,
        };
        io.is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        })
    }

    /// What a sender whose message this failed is told (an ACK's ERR, an OperationOutcome).
    pub fn not_stored(&self) -> &'static str {
        if self.storage_full() {
            "message not stored: the journal cannot store messages, the data dir's filesystem \
             is full; please resend"
        } else {
            "message not stored; please resend"
        }
    }
}

impl From<sled::Error> for JournalError {
    fn from(e: sled::Error) -> Self {
        JournalError::Storage(Arc::new(e))
    }
}

/// The sled trees, shared by the writer thread and readers.
#[derive(Clone)]
pub(crate) struct Trees {
    db: sled::Db,
    /// Bodies, records and steps; the slots and the trees marked "pointers" hold [`Ptr`]s into
    /// it.
    values: Arc<ValueLog>,
    /// Per id: record and body pointers, receive time, status.
    slots: Arc<Slots>,
    by_control: sled::Tree,
    /// Origin key of a document part → its transaction (idempotent file and HTTP ingest).
    by_origin: sled::Tree,
    /// Pointers to pipeline steps.
    steps: sled::Tree,
    audit: sled::Tree,
    api_clients: sled::Tree,
    stats: sled::Tree,
    /// Value-log segment → live bytes.
    segments: sled::Tree,
}

impl Trees {
    /// The value a pointer tree refers to.
    fn value(
        &self,
        tree: &sled::Tree,
        kind: Kind,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, JournalError> {
        let Some(ptr) = tree.get(key)? else {
            return Ok(None);
        };
        let ptr = Ptr::from_bytes(&ptr).ok_or_else(|| {
            JournalError::Corrupt(format!("{kind:?} pointer of {} bytes", ptr.len()))
        })?;
        self.values.read(ptr, kind, key).map(Some)
    }

    /// A transaction record (from the value log).
    fn tx(&self, id: TxId) -> Result<Option<Transaction>, JournalError> {
        read_tx(&self.values, &self.slots, id)
    }

    /// The transaction record at `ptr`.
    fn tx_at(&self, id: TxId, ptr: Ptr) -> Result<Transaction, JournalError> {
        read_tx_at(&self.values, id, ptr)
    }

    /// A raw body (from the value log).
    fn raw(&self, id: TxId) -> Result<Option<Vec<u8>>, JournalError> {
        read_raw(&self.values, &self.slots, id)
    }
}

/// sled's trees in `db` (with the value log and the slot table, which are not sled's): at
/// open, and when the writer reopens sled after a failed write (sled 0.34 fails every write
/// after an I/O error until it is opened again).
fn trees_of(db: sled::Db, values: Arc<ValueLog>, slots: Arc<Slots>) -> Result<Trees, JournalError> {
    Ok(Trees {
        slots,
        by_control: db.open_tree("by_control")?,
        by_origin: db.open_tree("by_origin")?,
        steps: db.open_tree("step_ptr")?,
        audit: db.open_tree("audit")?,
        api_clients: db.open_tree("api_clients")?,
        stats: db.open_tree("stats")?,
        segments: db.open_tree("segments")?,
        values,
        db,
    })
}

/// A transaction record (from the value log).
fn read_tx(
    values: &ValueLog,
    slots: &Slots,
    id: TxId,
) -> Result<Option<Transaction>, JournalError> {
    let Some(ptr) = slots.get(id)?.record else {
        return Ok(None);
    };
    read_tx_at(values, id, ptr).map(Some)
}

/// The transaction record at `ptr`.
fn read_tx_at(values: &ValueLog, id: TxId, ptr: Ptr) -> Result<Transaction, JournalError> {
    let bytes = values.read(ptr, Kind::Tx, &id.to_key())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| JournalError::Corrupt(format!("transaction {id}: {e}")))
}

/// A raw body (from the value log).
fn read_raw(values: &ValueLog, slots: &Slots, id: TxId) -> Result<Option<Vec<u8>>, JournalError> {
    let slot = slots.get(id)?;
    match (slot.status, slot.raw) {
        (Some(_), Some(ptr)) => values.read(ptr, Kind::Raw, &id.to_key()).map(Some),
        _ => Ok(None),
    }
}

/// Ids in `status`, oldest first: a walk of the slots (32 bytes a transaction; no index to
/// keep, so a backlog of a million `received` costs no memory).
fn ids_with_status(slots: &Slots, status: Status, limit: usize) -> Result<Vec<TxId>, JournalError> {
    let mut ids = Vec::new();
    slots.scan(0, u64::MAX, false, |id, slot| {
        if slot.status == Some(status) {
            ids.push(id);
        }
        if ids.len() >= limit {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })?;
    Ok(ids)
}

/// A cheap, cloneable handle to the journal.
#[derive(Clone)]
pub struct Journal {
    /// The value log and the slot table: never reopened, and most reads need nothing else.
    values: Arc<ValueLog>,
    slots: Arc<Slots>,
    /// sled's trees, for the reads that need them: `None` for the moment the writer reopens
    /// sled after a failed write (it waits for the readers holding them).
    trees: Arc<RwLock<Option<Trees>>>,
    /// Whether the writer can write, and if not why (for `/ready`).
    health: Arc<writer::Health>,
    /// `None` once closed. A std `Sender` is `Send + Sync` and never blocks.
    commands: Arc<Mutex<Option<Sender<Command>>>>,
    writer_thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    path: PathBuf,
    /// What was unfinished when the journal opened, oldest first (see
    /// [`Journal::take_in_flight_at_open`]); emptied by the first taker.
    in_flight_at_open: Arc<Mutex<Vec<(TxId, Status)>>>,
    /// Per channel and status counts, kept by the writer.
    counts: counts::ChannelCounts,
    /// Starts the MSH-10 of the ACKs for this journal's transactions (see the module doc).
    ack_id_prefix: Arc<str>,
    /// The test hook that makes writes fail (empty in release builds; see [`faults`]).
    #[cfg_attr(not(any(test, debug_assertions)), allow(dead_code))]
    faults: Arc<faults::Faults>,
}

/// Why the journal cannot store messages (see [`Journal::unwritable`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unwritable {
    /// What a person reads: what fails, and whether it comes back on its own.
    pub reason: String,
    /// The data dir's filesystem is full: freeing space (or growing the volume) is the fix.
    pub storage_full: bool,
    /// Only a restart brings the journal back (an fsync failed: see [`writer::SyncGate`]).
    pub restart_needed: bool,
}

/// Filters for listing transactions (`GET /api/transactions`). Newest first.
#[derive(Debug, Clone, Default)]
pub struct TxFilter {
    pub status: Option<Status>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub control_id: Option<String>,
    /// A channel that took the transaction.
    pub channel: Option<String>,
    /// `ADT^A01`; a trailing `*` matches a prefix (`ADT^*`).
    pub message_type: Option<String>,
    /// The hashed patient identifier (see [`crate::intake::patient_key`]).
    pub patient_key: Option<String>,
    /// Case-insensitive text that the raw message must contain.
    pub text: Option<String>,
    /// Only ids below this one (the `next_cursor` of the previous page).
    pub before: Option<TxId>,
    pub limit: usize,
    /// At most this many records are examined per page (0: [`DEFAULT_SCAN_LIMIT`]); filters
    /// without an index (channel, type, patient, text) cannot make a page walk the whole journal.
    pub scan_limit: usize,
}

/// Records examined per page when the filter does not say.
pub const DEFAULT_SCAN_LIMIT: usize = 10_000;

/// One page of transactions.
#[derive(Debug, Clone)]
pub struct TxPage {
    pub items: Vec<Transaction>,
    /// Pass as `before` to get the next (older) page; `None` on the last page.
    pub next_cursor: Option<TxId>,
    /// Records examined for this page.
    pub scanned: usize,
    /// The page stopped at the scan limit: older matches may exist past `next_cursor`.
    pub scan_limit_reached: bool,
}

/// Transactions per channel and status, from the `stats` counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChannelStats {
    /// Channel name (`""`: transactions no channel took).
    pub channel: String,
    pub counts: std::collections::BTreeMap<Status, i64>,
}

impl Journal {
    /// Opens (or creates) the journal under `data_dir/journal` and starts its writer thread.
    pub fn open(
        data_dir: &Path,
        config: &JournalConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Journal, JournalError> {
        let path = data_dir.join("journal");
        let open_err = |message: String| JournalError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(&path).map_err(|e| open_err(e.to_string()))?;
        let sled_config = sled::Config::new()
            .path(&path)
            .cache_capacity(config.cache_mb * 1024 * 1024)
            // Durability comes from the writer's explicit flush; the background flusher only
            // adds work.
            .flush_every_ms(None)
            .mode(if config.high_throughput {
                sled::Mode::HighThroughput
            } else {
                sled::Mode::LowSpace
            });
        // sled first: its lock says whether another engine has this data dir.
        let db = crate::sled_db::open(&sled_config).map_err(|e| open_err(e.to_string()))?;
        let (values, mut appender) = ValueLog::open(&path.join("values"))?;
        let trees = trees_of(db, values, Arc::new(Slots::open(&path.join("slots"))?))?;
        writer::migrate_inline_values(&trees, &mut appender)?;
        replay::migrate_pointer_trees(&trees)?;
        // Still marked open: the last stop was a crash or a power cut.
        let unclean = trees.segments.get(replay::OPEN_KEY)?.is_some();
        let checkpoint = replay::checkpoint(&trees)?;
        trees.segments.insert(replay::OPEN_KEY, &[])?;
        let replayed = replay::replay(&trees)?;
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "journal: replayed the value log after the last checkpoint"
            );
        }
        if let (true, Some(checkpoint)) = (unclean, checkpoint) {
            replay::repair_torn(&trees, checkpoint)?;
        }
        let appender_position = appender.position();
        replay::set_checkpoint(&trees, appender_position)?;
        writer::remove_dead_segments(&trees, appender.active_segment())?;
        if trees.stats.is_empty() && trees.slots.end() > 0 {
            // Journals written before the `stats` tree existed.
            replay::rebuild_stats(&trees)?;
        }
        // sled 0.34 keeps its log in `<path>/db`.
        let log_file = if config.fsync {
            Some(std::fs::File::open(path.join("db")).map_err(|e| open_err(e.to_string()))?)
        } else {
            None
        };
        // One walk of the slots: the status gauges, and the work start-up resumes.
        let mut counts = [0i64; Status::ALL.len()];
        let mut in_flight_at_open = Vec::new();
        trees.slots.scan(0, u64::MAX, false, |id, slot| {
            if let Some(status) = slot.status {
                counts[status.code() as usize] += 1;
                if status.in_flight() {
                    in_flight_at_open.push((id, status));
                }
            }
            std::ops::ControlFlow::Continue(())
        })?;
        for status in Status::ALL {
            metrics
                .transactions_by_status
                .with_label_values(&[status.as_str()])
                .set(counts[status.code() as usize]);
        }
        let counts = counts::ChannelCounts::load(&trees)?;
        let ack_id_prefix = load_or_make_ack_id_prefix(&path)
            .map_err(|e| open_err(format!("ACK id prefix: {e}")))?;
        let faults = Arc::new(faults::Faults::from_env());
        let health = Arc::new(writer::Health::default());
        let shared = Arc::new(RwLock::new(Some(trees.clone())));
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            trees: Some(trees.clone()),
            shared: shared.clone(),
            sled_config,
            path: path.clone(),
            health: health.clone(),
            values: appender,
            log_file,
            fsync: config.fsync,
            max_batch: config.max_batch,
            metrics,
            last_checkpoint: Instant::now(),
            dirty: false,
            dead_segments: Vec::new(),
            checkpointed: appender_position,
            last_compaction: Instant::now(),
            next_id: std::cell::Cell::new(trees.slots.end()),
            recent: Default::default(),
            live: live::LiveBytes::load(&trees)?,
            counts: counts.clone(),
            faults: faults.clone(),
            gate: Arc::new(writer::SyncGate::new(appender_position)),
            trouble: None,
            last_try: Instant::now(),
            slots: trees.slots.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Journal {
            values: trees.values.clone(),
            slots: trees.slots.clone(),
            trees: shared,
            health,
            commands: Arc::new(Mutex::new(Some(tx))),
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            path,
            in_flight_at_open: Arc::new(Mutex::new(in_flight_at_open)),
            counts,
            ack_id_prefix: ack_id_prefix.into(),
            faults,
        })
    }

    /// Why the journal cannot store messages now, if it cannot (see [`writer`]): `/ready`
    /// says so, and ingest answers "not stored" meanwhile. Cleared as soon as a write works
    /// again (the writer tries on its own once there is room).
    pub fn unwritable(&self) -> Option<Unwritable> {
        self.health.get()
    }

    /// sled's trees, for a read (waits while the writer reopens sled: a read holding them
    /// keeps sled's files locked).
    fn sled<T>(
        &self,
        read: impl FnOnce(&Trees) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let trees = self.trees.read().unwrap_or_else(|e| e.into_inner());
        read(trees.as_ref().ok_or(JournalError::Reopening)?)
    }

    /// Tests: the trees as they are now.
    #[cfg(test)]
    fn trees(&self) -> Trees {
        self.sled(|trees| Ok(trees.clone())).unwrap()
    }

    /// Tests: the next `count` writes at `point` fail as on a full disk (see [`faults`]).
    #[cfg(any(test, debug_assertions))]
    pub fn fail_next_writes(&self, point: faults::FaultPoint, count: u32) {
        self.faults.arm(point, count);
    }

    /// Six characters (RFC 4648 base32) made once per journal, kept across restarts: the start
    /// of every ACK's MSH-10.
    pub fn ack_id_prefix(&self) -> &str {
        &self.ack_id_prefix
    }

    fn send(&self, cmd: Command) -> Result<(), JournalError> {
        let guard = self.commands.lock().map_err(|_| JournalError::Closed)?;
        guard
            .as_ref()
            .ok_or(JournalError::Closed)?
            .send(cmd)
            .map_err(|_| JournalError::Closed)
    }

    /// Queues a message for the journal at once (so callers can pipeline) and returns a future
    /// that resolves once it is durable (flushed and fsynced).
    pub fn append(
        &self,
        message: NewMessage,
    ) -> impl std::future::Future<Output = Result<Appended, JournalError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Command::Append {
            message,
            enqueued: Instant::now(),
            reply,
        });
        async move {
            queued?;
            answer.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// Changes a transaction's status and records the event; resolves once durable.
    pub async fn set_status(
        &self,
        id: TxId,
        status: Status,
        reason: Option<String>,
    ) -> Result<(), JournalError> {
        self.record(id, Vec::new(), vec![(status, reason)]).await
    }

    /// Records pipeline steps and status events in one durable write.
    pub fn record(
        &self,
        id: TxId,
        steps: Vec<Step>,
        events: Vec<(Status, Option<String>)>,
    ) -> impl std::future::Future<Output = Result<(), JournalError>> + Send + 'static {
        self.record_with(id, steps, events, Wait::Durable)
    }

    /// Records pipeline steps and status events in one write, resolving once it is applied
    /// (readable) rather than once it is fsynced; the next fsync makes it durable (the next
    /// write someone waits for, or the flusher's own within 20 ms when none comes). For outcomes a crash may lose safely: a transaction whose outcome was not
    /// yet on disk is resumed and run again, and deliveries are idempotent, exactly as when
    /// the crash comes between a delivery and its record.
    pub fn record_applied(
        &self,
        id: TxId,
        steps: Vec<Step>,
        events: Vec<(Status, Option<String>)>,
    ) -> impl std::future::Future<Output = Result<(), JournalError>> + Send + 'static {
        self.record_with(id, steps, events, Wait::Applied)
    }

    fn record_with(
        &self,
        id: TxId,
        steps: Vec<Step>,
        events: Vec<(Status, Option<String>)>,
        wait: Wait,
    ) -> impl std::future::Future<Output = Result<(), JournalError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Command::Record {
            id,
            steps,
            events,
            reply: RecordReply::Answer(reply),
            wait,
        });
        async move {
            queued?;
            answer.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// [`Journal::record_applied`] for a caller that does not wait: `then` runs on the writer
    /// thread once the record is applied (readable), with how it went; at once, with the error,
    /// if the journal is closed. Spares the caller a wake-up per record.
    pub fn record_then(
        &self,
        id: TxId,
        steps: Vec<Step>,
        events: Vec<(Status, Option<String>)>,
        then: impl FnOnce(Result<(), JournalError>) + Send + 'static,
    ) {
        let then: Box<dyn FnOnce(Result<(), JournalError>) + Send> = Box::new(then);
        let command = Command::Record {
            id,
            steps,
            events,
            reply: RecordReply::Then(then),
            wait: Wait::Applied,
        };
        let refused = match self.commands.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(sender) => sender.send(command).err().map(|e| e.0),
                None => Some(command),
            },
            Err(_) => Some(command),
        };
        if let Some(Command::Record {
            reply: RecordReply::Then(then),
            ..
        }) = refused
        {
            then(Err(JournalError::Closed));
        }
    }

    /// Appends a rerun of `of`: a new transaction with the same raw message and metadata,
    /// linked by `rerun_of`, routed to `channels`; resolves once durable.
    pub fn append_rerun(
        &self,
        of: TxId,
        channels: Vec<ChannelRun>,
    ) -> impl std::future::Future<Output = Result<Appended, JournalError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Command::AppendRerun {
            of,
            channels,
            enqueued: Instant::now(),
            reply,
        });
        async move {
            queued?;
            answer.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// Retention: prunes what each request asks (through the writer; see [`retention`]).
    pub fn prune(
        &self,
        requests: Vec<retention::PruneRequest>,
    ) -> impl std::future::Future<Output = Result<Vec<retention::Pruned>, JournalError>> + Send + 'static
    {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Command::Prune { requests, reply });
        async move {
            queued?;
            answer.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// Compacts the value-log segment with the least live data, if any is under half live;
    /// returns it (the writer also does this every minute on its own).
    pub fn compact(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<u32>, JournalError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Command::Compact { reply });
        async move {
            queued?;
            answer.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// Ids in arrival order (id order) after `after` (`None`: from the oldest), at most
    /// `limit`, with their receive time: what retention walks.
    pub fn oldest(
        &self,
        after: Option<TxId>,
        limit: usize,
    ) -> Result<Vec<(i64, TxId)>, JournalError> {
        let from = after.map_or(0, |id| id.0 + 1);
        let mut out = Vec::with_capacity(limit.min(1024));
        self.slots.scan(from, u64::MAX, false, |id, slot| {
            out.push((slot.received_at_ms, id));
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// Per channel and status counts (from memory).
    pub fn stats(&self) -> Result<Vec<ChannelStats>, JournalError> {
        Ok(self.counts.snapshot())
    }

    /// Oldest first: the transactions whose work was not finished (`received`, `processing`,
    /// `queued`) when the journal opened, with their status: what start-up resumes. Found by
    /// the walk of the slots that open makes anyway, before any listener runs, so a message
    /// that arrives while start-up resumes is not taken for unfinished work and run twice. The
    /// first call takes the list; later calls get nothing.
    pub fn take_in_flight_at_open(&self) -> Vec<(TxId, Status)> {
        std::mem::take(
            &mut self
                .in_flight_at_open
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Oldest first: the transactions in `status`.
    pub fn ids_with_status(&self, status: Status, limit: usize) -> Result<Vec<TxId>, JournalError> {
        ids_with_status(&self.slots, status, limit)
    }

    /// How many transactions are in `status`.
    pub fn count_with_status(&self, status: Status) -> usize {
        ids_with_status(&self.slots, status, usize::MAX).map_or(0, |ids| ids.len())
    }

    /// The pipeline steps recorded for a transaction, in order.
    pub fn steps(&self, id: TxId) -> Result<Vec<Step>, JournalError> {
        let mut steps = Vec::new();
        let pointers: Vec<(sled::IVec, sled::IVec)> = self.sled(|trees| {
            Ok(trees
                .steps
                .scan_prefix(id.to_key())
                .collect::<Result<_, _>>()?)
        })?;
        for (key, ptr) in pointers {
            let ptr = Ptr::from_bytes(&ptr)
                .ok_or_else(|| JournalError::Corrupt(format!("step pointer of {id}")))?;
            let bytes = self.values.read(ptr, Kind::Step, &key)?;
            steps.push(
                serde_json::from_slice(&bytes)
                    .map_err(|e| JournalError::Corrupt(format!("step of {id}: {e}")))?,
            );
        }
        Ok(steps)
    }

    /// One transaction's record.
    pub fn get(&self, id: TxId) -> Result<Option<Transaction>, JournalError> {
        read_tx(&self.values, &self.slots, id)
    }

    /// The raw message bytes as received (`None` once retention pruned them).
    pub fn raw(&self, id: TxId) -> Result<Option<Vec<u8>>, JournalError> {
        read_raw(&self.values, &self.slots, id)
    }

    /// Transactions matching `filter`, newest first, one page.
    pub fn list(&self, filter: &TxFilter) -> Result<TxPage, JournalError> {
        let below = filter.before.map(|c| c.0).unwrap_or(u64::MAX);
        let mut page = PageWalk::new(self, filter);
        // The most selective way in: the control-id index, or the slots newest first (status
        // and time are checked there before a record is read).
        if let Some(control_id) = &filter.control_id {
            let mut ids: Vec<TxId> = self.sled(|trees| {
                Ok(trees
                    .by_control
                    .scan_prefix(keys::control_prefix(control_id))
                    .keys()
                    .filter_map(|k| k.ok().and_then(|k| keys::control_tx(&k)))
                    .filter(|id| id.0 < below)
                    .collect())
            })?;
            ids.sort_unstable_by(|a, b| b.cmp(a));
            for id in ids {
                if page.visit(id)?.is_break() {
                    break;
                }
            }
        } else {
            let mut failed = None;
            let mut slots_seen = 0usize;
            let since = filter.since_ms.unwrap_or(i64::MIN);
            let until = filter.until_ms.unwrap_or(i64::MAX);
            // Newer than `until` (with slack): not walked at all.
            let upper = match filter.until_ms {
                Some(until) => {
                    let bound = self
                        .slots
                        .first_after(until.saturating_add(CLOCK_SLACK_MS))?;
                    below.min(bound)
                }
                None => below,
            };
            self.slots.scan(0, upper, true, |id, slot| {
                slots_seen += 1;
                if slots_seen > SLOT_SCAN_LIMIT {
                    page.stop_at(id);
                    return ControlFlow::Break(());
                }
                if filter.status.is_some_and(|s| slot.status != Some(s))
                    || slot.received_at_ms > until
                {
                    return ControlFlow::Continue(());
                }
                if slot.received_at_ms < since {
                    // Ids follow arrival, so everything older is too, give or take a clock
                    // step: the walk stops once it is well past the window.
                    return if slot.received_at_ms < since.saturating_sub(CLOCK_SLACK_MS) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    };
                }
                match page.visit(id) {
                    Ok(flow) => flow,
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(page.finish())
    }

    /// Bytes on disk: sled's own estimate, the value log and the slots (walks the files: not
    /// for hot paths).
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        Ok(self.sled(|trees| Ok(trees.db.size_on_disk()?))?
            + self.values.size_on_disk()?
            + self.slots.size_on_disk()?)
    }

    /// The admin audit trail (append-only; written and read by `admin::audit` only). Writes to it
    /// bypass the message writer: call [`Journal::flush_side_trees`] to make them durable. A
    /// handle to use at once and drop (held, it keeps sled from being reopened after a failed
    /// write).
    pub fn audit_tree(&self) -> Result<sled::Tree, JournalError> {
        self.sled(|trees| Ok(trees.audit.clone()))
    }

    /// API clients and their token digests (owned by `admin::clients`); as [`Journal::audit_tree`].
    pub fn clients_tree(&self) -> Result<sled::Tree, JournalError> {
        self.sled(|trees| Ok(trees.api_clients.clone()))
    }

    /// A number that is unique and increasing for the life of the database (sled's counter):
    /// orders side-tree entries written in the same millisecond.
    pub fn generate_id(&self) -> Result<u64, JournalError> {
        self.sled(|trees| Ok(trees.db.generate_id()?))
    }

    /// Flushes sled so that writes to the side trees above survive a crash. Blocking: call it
    /// from a blocking pool. (A synchronous `flush`, never `flush_async`: see DEPENDENCIES.md.)
    pub fn flush_side_trees(&self) -> Result<(), JournalError> {
        self.sled(|trees| {
            trees.db.flush()?;
            Ok(())
        })
    }

    /// Whether the journal accepts writes.
    pub fn is_open(&self) -> bool {
        self.commands.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops taking commands, lets the writer finish what is queued, flushes, and waits.
    pub fn close(&self) {
        if let Ok(mut guard) = self.commands.lock() {
            guard.take();
        }
        if let Some(handle) = self.writer_thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

/// Slots walked at most for one page of a listing without an index (a slot is 32 bytes read,
/// no record).
const SLOT_SCAN_LIMIT: usize = 1_000_000;

/// How far outside a `since`..`until` window a listing looks, in case the clock stepped back.
const CLOCK_SLACK_MS: i64 = 10 * 60 * 1000;

/// One page of a listing being gathered: reads records, applies the filters that need them.
struct PageWalk<'a> {
    journal: &'a Journal,
    filter: &'a TxFilter,
    limit: usize,
    scan_limit: usize,
    text: Option<String>,
    items: Vec<Transaction>,
    more: bool,
    scanned: usize,
    last_scanned: Option<TxId>,
    scan_limit_reached: bool,
}

impl<'a> PageWalk<'a> {
    fn new(journal: &'a Journal, filter: &'a TxFilter) -> Self {
        let limit = filter.limit.clamp(1, 1000);
        PageWalk {
            journal,
            filter,
            limit,
            scan_limit: if filter.scan_limit == 0 {
                DEFAULT_SCAN_LIMIT
            } else {
                filter.scan_limit
            },
            text: filter.text.as_ref().map(|t| t.to_lowercase()),
            items: Vec::with_capacity(limit.min(64)),
            more: false,
            scanned: 0,
            last_scanned: None,
            scan_limit_reached: false,
        }
    }

    /// Examines one candidate; `Break` once the page is full or the scan limit is reached.
    fn visit(&mut self, id: TxId) -> Result<ControlFlow<()>, JournalError> {
        if self.scanned == self.scan_limit {
            self.scan_limit_reached = true;
            return Ok(ControlFlow::Break(()));
        }
        self.scanned += 1;
        self.last_scanned = Some(id);
        let Some(tx) = self.journal.get(id)? else {
            return Ok(ControlFlow::Continue(()));
        };
        if !matches(&tx, self.filter) {
            return Ok(ControlFlow::Continue(()));
        }
        if let Some(text) = &self.text {
            let Some(raw) = self.journal.raw(id)? else {
                return Ok(ControlFlow::Continue(()));
            };
            if !String::from_utf8_lossy(&raw).to_lowercase().contains(text) {
                return Ok(ControlFlow::Continue(()));
            }
        }
        if self.items.len() == self.limit {
            self.more = true;
            return Ok(ControlFlow::Break(()));
        }
        self.items.push(tx);
        Ok(ControlFlow::Continue(()))
    }

    /// The walk stopped at its own limit before `id`: the next page goes on from there.
    fn stop_at(&mut self, id: TxId) {
        self.scan_limit_reached = true;
        self.last_scanned = Some(TxId(id.0 + 1));
    }

    fn finish(self) -> TxPage {
        let next_cursor = if self.more {
            self.items.last().map(|t| t.id)
        } else if self.scan_limit_reached {
            self.last_scanned
        } else {
            None
        };
        TxPage {
            items: self.items,
            next_cursor,
            scanned: self.scanned,
            scan_limit_reached: self.scan_limit_reached,
        }
    }
}

fn matches(tx: &Transaction, filter: &TxFilter) -> bool {
    filter.status.is_none_or(|s| tx.status == s)
        && filter.since_ms.is_none_or(|s| tx.received_at_ms >= s)
        && filter.until_ms.is_none_or(|u| tx.received_at_ms <= u)
        && filter
            .control_id
            .as_ref()
            .is_none_or(|c| tx.meta.control_id.as_ref() == Some(c))
        && filter
            .channel
            .as_ref()
            .is_none_or(|c| tx.channels.iter().any(|run| &run.name == c))
        && filter.message_type.as_ref().is_none_or(|wanted| {
            let actual = tx.meta.message_type.as_deref().unwrap_or("");
            match wanted.strip_suffix('*') {
                Some(prefix) => actual.starts_with(prefix),
                None => actual == wanted,
            }
        })
        && filter
            .patient_key
            .as_ref()
            .is_none_or(|k| tx.meta.patient_key.as_ref() == Some(k))
}

/// The file under the journal dir that holds [`Journal::ack_id_prefix`].
const ACK_ID_PREFIX_FILE: &str = "ack_id_prefix";
/// Characters of the prefix: RFC 4648 base32 (32 divides 256, so a random byte picks one
/// without bias).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Reads the journal's ACK id prefix, or makes one (six random base32 characters) and stores
/// it (temp file, fsync, rename) when there is none or what is there is not one.
fn load_or_make_ack_id_prefix(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(ACK_ID_PREFIX_FILE);
    let valid = |s: &str| s.len() == 6 && s.bytes().all(|b| BASE32.contains(&b));
    match std::fs::read_to_string(&path) {
        Ok(text) if valid(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => tracing::warn!(path = %path.display(), "unreadable ACK id prefix: made a new one"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let prefix: String = rand::random::<[u8; 6]>()
        .iter()
        .map(|b| char::from(BASE32[usize::from(*b) % 32]))
        .collect();
    let temp = dir.join(format!("{ACK_ID_PREFIX_FILE}.tmp"));
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(prefix.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, &path)?;
    Ok(prefix)
}

#[cfg(test)]
mod tests;
