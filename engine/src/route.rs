//! The router: which channels take a journaled message, and what happens to it next.
//!
//! Routing itself is a cheap match on the message's metadata, done before the journal append so
//! that the fan-out is recorded with the message. Processing (filter, transform, delivery) runs
//! after the append: in ACK mode `on-commit` the sender already has its AA; in `on-delivery` the
//! ACK waits for [`Pipeline::process`]. A transaction that no channel takes is marked `failed`
//! with the reason "no channel" (rerunnable once a channel exists), as OpenHIM does.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::channel::{Channel, ChannelSet, Channels, SourceKind};
use crate::deliver::{Deliverer, Delivery, IdSeed};
use crate::journal::{
    now_ms, ChannelRun, Journal, JournalError, MessageMeta, Status, Step, StepKind, StepOutput,
    Transaction, TxId,
};
use crate::metrics::Metrics;
use crate::transform::{ChannelOutcome, RunChannels, RunOn, Transforms};

/// A journaled transaction and the channels that take it: the pipeline's unit of work.
pub struct Routed {
    pub id: TxId,
    /// The transaction whose deliveries this one repeats: `id` itself, or, for a rerun, the one
    /// its rerun chain started from. The ids of plain creates derive from it
    /// ([`crate::deliver::creates`]), so a rerun writes over what its original wrote.
    pub original: TxId,
    /// Deliveries for one patient keep their order (see [`crate::intake::patient_key`]).
    pub patient_key: Option<String>,
    /// What `raw` is: decides what the scripts see.
    pub format: crate::format::Format,
    pub raw: Bytes,
    /// The channel set the routes came from (its library revision compiles them).
    pub set: Arc<ChannelSet>,
    pub channels: Vec<Arc<Channel>>,
    /// Where its scripts may start ([`RunOn::for_source`]).
    pub run_on: RunOn,
}

/// How one transaction ended up.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutcome {
    pub status: Status,
    pub reason: Option<String>,
    /// A channel script called `reject()`: answered AE in `on-delivery` mode.
    pub rejected: bool,
}

impl Routed {
    /// A journaled message run again (resumed, retried, rerun): on the transform pool.
    fn stored(
        id: TxId,
        original: TxId,
        tx: &Transaction,
        raw: &[u8],
        set: Arc<ChannelSet>,
        channels: Vec<Arc<Channel>>,
    ) -> Routed {
        Routed {
            id,
            original,
            patient_key: tx.meta.patient_key.clone(),
            format: tx.meta.format,
            raw: Bytes::copy_from_slice(raw),
            set,
            channels,
            run_on: RunOn::Pool,
        }
    }
}

/// The transaction `tx` (numbered `id`) repeats: `id` unless it is a rerun, else the first of
/// its rerun chain, as far as retention left the records (an original's record gone, the id
/// its rerun names is the answer). A journal read per rerun in the chain; none for the rest.
fn original_of(journal: &Journal, id: TxId, tx: &Transaction) -> TxId {
    let mut original = id;
    let mut earlier = tx.rerun_of;
    // A rerun is always newer than what it reruns: the ids go down, and the walk ends.
    while let Some(of) = earlier.filter(|of| *of < original) {
        original = of;
        earlier = journal.get(of).ok().flatten().and_then(|t| t.rerun_of);
    }
    original
}

/// Whether [`Pipeline::process`] waits for its outcome to be journaled before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Wait: the caller answers a sender or a person next, who may read the transaction.
    Await,
    /// Hand the record to the journal and return: for work nobody waits on (on-commit
    /// dispatch, the backlog). The journal's writer observes the processing time when it has
    /// applied the record, so the figure still ends at the journaled outcome.
    Handoff,
}

/// Why a rerun requested through the API did not start.
#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    #[error("transaction {0} not found")]
    NotFound(TxId),
    #[error("transaction {0} has no message body any more (pruned by retention)")]
    BodyPruned(TxId),
    #[error("no enabled channel takes transaction {0} now")]
    NoChannel(TxId),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Everything after the journal: routing, transforms, delivery.
#[derive(Clone)]
pub struct Pipeline {
    pub channels: Channels,
    transforms: Transforms,
    journal: Journal,
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
    order: Arc<PatientOrder>,
    admission: Arc<Admission>,
    retries: Arc<RetrySchedule>,
}

/// When each queued transaction is due for its next attempt, in memory: the retry loop looks
/// only at what is due instead of re-reading every queued record each second. Rebuilt from the
/// journal at start ([`Pipeline::resume`]).
#[derive(Default)]
struct RetrySchedule {
    inner: Mutex<ScheduleInner>,
}

#[derive(Default)]
struct ScheduleInner {
    /// (due at, Unix ms; transaction), soonest first.
    due: BTreeSet<(i64, TxId)>,
    /// Each scheduled transaction's due time, to replace it.
    at: HashMap<TxId, i64>,
}

impl RetrySchedule {
    fn set(&self, id: TxId, due_ms: i64) {
        let mut inner = self.inner.lock().expect("retry schedule lock");
        if let Some(old) = inner.at.insert(id, due_ms) {
            inner.due.remove(&(old, id));
        }
        inner.due.insert((due_ms, id));
    }

    fn remove(&self, id: TxId) {
        let mut inner = self.inner.lock().expect("retry schedule lock");
        if let Some(old) = inner.at.remove(&id) {
            inner.due.remove(&(old, id));
        }
    }

    /// Takes every transaction due by `now_ms`, soonest first.
    fn take_due(&self, now_ms: i64) -> Vec<TxId> {
        let mut inner = self.inner.lock().expect("retry schedule lock");
        let mut out = Vec::new();
        while let Some(&(due, id)) = inner.due.first() {
            if due > now_ms {
                break;
            }
            inner.due.pop_first();
            inner.at.remove(&id);
            out.push(id);
        }
        out
    }

    fn len(&self) -> usize {
        self.inner.lock().expect("retry schedule lock").at.len()
    }
}

/// How many transactions may be in the pipeline at once. Past it, new transactions wait in the
/// journal, `received` (a durable queue), and the backlog loop feeds them in oldest first: the
/// senders keep getting their ACKs at journal speed and memory stays bounded.
pub const MAX_IN_FLIGHT: usize = 256;

struct Admission {
    permits: Arc<tokio::sync::Semaphore>,
    /// Journaled, routed, not yet started; oldest first.
    backlog: Mutex<BTreeSet<TxId>>,
    /// Taken from the backlog, not yet in its patient's line ([`InTransit`]): a new message
    /// waits behind them as behind the backlog.
    in_transit: Arc<AtomicUsize>,
}

/// One transaction between the backlog and its patient's line: counted in
/// [`Admission::in_transit`] from the moment it leaves the backlog until its task has first run
/// (and so taken its place in line, see [`Pipeline::process`]), or it is dropped.
struct InTransit(Arc<AtomicUsize>);

impl InTransit {
    fn new(count: &Arc<AtomicUsize>) -> InTransit {
        count.fetch_add(1, Ordering::SeqCst);
        InTransit(count.clone())
    }
}

impl Drop for InTransit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `inner`, with `transit` dropped after its first poll.
async fn after_first_poll<F: std::future::Future>(inner: F, transit: InTransit) -> F::Output {
    let mut inner = std::pin::pin!(inner);
    let mut transit = Some(transit);
    std::future::poll_fn(move |cx| {
        let polled = inner.as_mut().poll(cx);
        transit.take();
        polled
    })
    .await
}

/// Keeps deliveries for one patient in order: one transaction per patient key in the pipeline
/// at a time (FIFO), and none delivered while an earlier one for the same patient is queued.
#[derive(Default)]
struct PatientOrder {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Queued transactions per patient key.
    queued: Mutex<HashMap<String, BTreeSet<TxId>>>,
}

impl PatientOrder {
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("order lock");
        // Forget keys nobody holds, so the map stays small.
        if locks.len() > 4096 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.to_string()).or_default().clone()
    }

    /// An earlier transaction of this patient that is still queued.
    fn blocked_by(&self, key: &str, id: TxId) -> Option<TxId> {
        let queued = self.queued.lock().expect("order lock");
        queued.get(key)?.range(..id).next().copied()
    }

    fn set_queued(&self, key: &str, id: TxId, queued_now: bool) {
        let mut queued = self.queued.lock().expect("order lock");
        let ids = queued.entry(key.to_string()).or_default();
        if queued_now {
            ids.insert(id);
        } else {
            ids.remove(&id);
            if ids.is_empty() {
                queued.remove(key);
            }
        }
    }
}

impl Pipeline {
    pub fn new(
        channels: Channels,
        transforms: Transforms,
        journal: Journal,
        deliverer: Deliverer,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline {
            channels,
            transforms,
            journal,
            deliverer,
            metrics,
            order: Arc::new(PatientOrder::default()),
            retries: Arc::default(),
            admission: Arc::new(Admission {
                permits: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
                backlog: Mutex::default(),
                in_transit: Arc::default(),
            }),
        }
    }

    /// The channels that take this message, and the set they belong to.
    pub fn route(
        &self,
        source: SourceKind,
        listener: &str,
        meta: &MessageMeta,
    ) -> (Arc<ChannelSet>, Vec<Arc<Channel>>) {
        let set = self.channels.current();
        let routes = set.route(source, listener, meta);
        (set, routes)
    }

    /// Starts processing a journaled transaction now if there is room and nothing older is
    /// waiting; otherwise it joins the backlog (it is durable, `received`, in the journal).
    pub fn dispatch(&self, work: Routed) {
        self.count_received(&work);
        let permit = {
            let mut backlog = self.admission.backlog.lock().expect("backlog lock");
            let permit =
                if backlog.is_empty() && self.admission.in_transit.load(Ordering::SeqCst) == 0 {
                    self.admission.permits.clone().try_acquire_owned().ok()
                } else {
                    None
                };
            if permit.is_none() {
                backlog.insert(work.id);
                self.metrics.backlog_depth.set(backlog.len() as i64);
            }
            permit
        };
        if let Some(permit) = permit {
            let this = self.clone();
            actix_rt::spawn(async move {
                this.process(work, Record::Handoff).await;
                drop(permit);
            });
        }
    }

    /// Processes now, waiting for room in the pipeline (ACK mode `on-delivery`).
    pub async fn process_now(&self, work: Routed) -> PipelineOutcome {
        self.count_received(&work);
        let _permit = self.admission.permits.acquire().await;
        self.process(work, Record::Await).await
    }

    /// `orbiter_channel_received_total`: once per new transaction and channel (retries and
    /// resumes go through [`Pipeline::rerun`] and are not counted again). Not a status of
    /// `orbiter_channel_messages_total`, whose sum over its statuses would count each
    /// transaction twice.
    fn count_received(&self, work: &Routed) {
        for channel in &work.channels {
            self.metrics
                .channel_received_total
                .with_label_values(&[channel.name()])
                .inc();
        }
    }

    /// Feeds the backlog into the pipeline, oldest first, as room frees up; returns after at
    /// most `batch` transactions so that the caller's other duties are not starved.
    ///
    /// Each transaction is read from the journal here, one after another, and only then handed
    /// to a task of its own: the tasks start in id order, and each takes its patient's turn
    /// when it first runs (see [`Pipeline::process`]), so deliveries for one patient keep their
    /// order however many run at once. (Reading inside each task let a later transaction whose
    /// read finished first take the turn of an earlier one.)
    pub async fn drain_backlog(&self, batch: usize) {
        for _ in 0..batch {
            let next = {
                let mut backlog = self.admission.backlog.lock().expect("backlog lock");
                let next = backlog.pop_first();
                self.metrics.backlog_depth.set(backlog.len() as i64);
                // Counted before the lock is let go: a message dispatched meanwhile (the
                // backlog may be empty now) waits behind this one.
                next.map(|id| (id, InTransit::new(&self.admission.in_transit)))
            };
            let Some((id, transit)) = next else { break };
            let Ok(permit) = self.admission.permits.clone().acquire_owned().await else {
                return;
            };
            let work = match self.load(id, None).await {
                Some(Ok(work)) => work,
                Some(Err(reason)) => {
                    self.fail(id, reason).await;
                    continue;
                }
                None => continue,
            };
            let this = self.clone();
            actix_rt::spawn(async move {
                after_first_poll(this.process(work, Record::Handoff), transit).await;
                drop(permit);
            });
        }
    }

    /// Filter, transform and deliver one journaled message through its channels, then record
    /// every step and the final status in one journal write.
    pub async fn process(&self, work: Routed, record: Record) -> PipelineOutcome {
        let Routed {
            id,
            original,
            patient_key,
            format,
            raw,
            set,
            channels,
            run_on,
        } = work;
        // Taken before the first await: tasks for one patient line up in arrival order.
        let lock = patient_key.as_deref().map(|k| self.order.lock_for(k));
        let _turn = match &lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let started = std::time::Instant::now();
        let results = self
            .transforms
            .run(
                RunChannels {
                    transaction: Some(id),
                    format,
                    // Kept for destinations that send the message as received (`payload = "raw"`).
                    raw: raw.clone(),
                    channels: channels.clone(),
                    lib_revision: set.lib_revision.clone(),
                    lib_dir: set.lib_dir.clone(),
                },
                run_on,
            )
            .await;
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                return self
                    .fail(id, format!("transform pool unavailable: {e}"))
                    .await;
            }
        };
        let mut steps: Vec<Step> = Vec::new();
        let mut per_channel: Vec<(Status, Option<String>)> = Vec::new();
        let mut rejected = false;
        for result in results {
            let channel = result.channel.clone();
            let name = channel.name().to_string();
            steps.extend(result.steps);
            let outcome = match result.outcome {
                ChannelOutcome::Filtered { reason } => (
                    Status::Filtered,
                    Some(format!(
                        "{name}: {}",
                        reason.unwrap_or_else(|| "filtered".into())
                    )),
                ),
                ChannelOutcome::Rejected { reason } => {
                    rejected = true;
                    (Status::Failed, Some(format!("{name}: rejected: {reason}")))
                }
                ChannelOutcome::Failed { error } => {
                    self.metrics
                        .script_errors_total
                        .with_label_values(&[&name])
                        .inc();
                    (Status::Failed, Some(format!("{name}: {error}")))
                }
                ChannelOutcome::Output { value } => {
                    let earlier = patient_key
                        .as_deref()
                        .and_then(|k| self.order.blocked_by(k, id));
                    match earlier {
                        Some(earlier) => (
                            Status::Queued,
                            Some(format!(
                                "{name}: {WAITING_BEHIND} {earlier} for the same patient"
                            )),
                        ),
                        None => {
                            self.deliver(id, original, &channel, value, &raw, &mut steps)
                                .await
                        }
                    }
                }
            };
            self.metrics
                .channel_messages_total
                .with_label_values(&[&name, outcome.0.as_str()])
                .inc();
            if outcome.0 == Status::Failed {
                // Failures reach the log as well as the API and the metrics. The reason can
                // quote the message (a script's error, a CDR's OperationOutcome): debug only.
                tracing::warn!(%id, channel = %name, "transaction failed in its channel");
                tracing::debug!(%id, channel = %name, reason = outcome.1.as_deref().unwrap_or(""), "why");
            }
            per_channel.push(outcome);
        }
        let (status, reason) = combine(&per_channel);
        if let Some(key) = &patient_key {
            self.order.set_queued(key, id, status == Status::Queued);
        }
        let events = vec![(Status::Processing, None), (status, reason.clone())];
        // Not waiting for the fsync: the outcome is on disk with the next group commit, and a
        // crash before that resumes the transaction and runs it again (deliveries are
        // idempotent), as a crash between the delivery and this record always did. A queued
        // outcome is always awaited: its retry plan reads the record.
        if record == Record::Handoff && status != Status::Queued {
            let metrics = self.metrics.clone();
            self.journal
                .record_then(id, steps, events, move |recorded| {
                    if let Err(e) = recorded {
                        tracing::error!(%id, error = %e, "cannot record pipeline result");
                    }
                    metrics
                        .processing_seconds
                        .observe(started.elapsed().as_secs_f64());
                });
        } else {
            if let Err(e) = self.journal.record_applied(id, steps, events).await {
                tracing::error!(%id, error = %e, "cannot record pipeline result");
            }
            self.metrics
                .processing_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if status == Status::Queued {
            self.schedule_retry(id).await;
        } else {
            self.retries.remove(id);
        }
        PipelineOutcome {
            status,
            reason,
            rejected,
        }
    }

    /// Marks a transaction failed for `reason` (outside any channel's steps).
    async fn fail(&self, id: TxId, reason: String) -> PipelineOutcome {
        if let Err(e) = self
            .journal
            .record(id, Vec::new(), vec![(Status::Failed, Some(reason.clone()))])
            .await
        {
            tracing::error!(%id, error = %e, "cannot record failure");
        }
        PipelineOutcome {
            status: Status::Failed,
            reason: Some(reason),
            rejected: false,
        }
    }

    /// Sends one channel's output to each of its destinations (the last one is given the
    /// value itself, so that the embedded CDR takes it without a copy). `original`: see
    /// [`Routed::original`].
    async fn deliver(
        &self,
        id: TxId,
        original: TxId,
        channel: &Arc<Channel>,
        value: serde_json::Value,
        raw: &[u8],
        steps: &mut Vec<Step>,
    ) -> (Status, Option<String>) {
        let name = channel.name();
        if channel.def.destinations.is_empty() {
            return (
                Status::Delivered,
                Some(format!(
                    "{name}: transformed; the channel has no destinations"
                )),
            );
        }
        let seed = IdSeed {
            journal: self.journal.ack_id_prefix(),
            original,
        };
        let mut worst = (Status::Delivered, None);
        let mut value = Some(Arc::new(value));
        let last = channel.def.destinations.len() - 1;
        for (n, destination) in channel.def.destinations.iter().enumerate() {
            let value = if n == last {
                value.take()
            } else {
                value.clone()
            };
            let value = value.expect("taken at the last destination only");
            let delivery = self
                .deliverer
                .deliver(destination, id, seed, channel, value, raw)
                .await;
            let (ok, output, error, status) = match delivery {
                Delivery::Delivered { response } => (
                    true,
                    response.as_ref().map(StepOutput::of),
                    None,
                    Status::Delivered,
                ),
                Delivery::Failed { error, response } => (
                    false,
                    response.as_ref().map(StepOutput::of),
                    Some(error),
                    Status::Failed,
                ),
                Delivery::Retry { error, response } => (
                    false,
                    response.as_ref().map(StepOutput::of),
                    Some(error),
                    Status::Queued,
                ),
            };
            steps.push(Step {
                channel: name.to_string(),
                revision: channel.revision.clone(),
                kind: StepKind::Deliver,
                at_ms: now_ms(),
                ok,
                output,
                logs: Vec::new(),
                error: error.clone(),
                destination: Some(destination.display_name()),
            });
            let rank = |s: Status| match s {
                Status::Failed => 2,
                Status::Queued => 1,
                _ => 0,
            };
            if rank(status) > rank(worst.0) {
                worst = (
                    status,
                    error.map(|e| format!("{name} -> {}: {e}", destination.display_name())),
                );
            }
        }
        worst
    }
}

impl Pipeline {
    /// After a start: what was received but not processed before the last stop (crash or
    /// restart) joins the backlog, and queued transactions block later ones of their patient.
    pub async fn resume(&self) {
        // What the journal found unfinished when it opened (before any listener ran).
        let in_flight = self.journal.take_in_flight_at_open();
        let of = |wanted: Status| {
            in_flight
                .iter()
                .filter(move |(_, status)| *status == wanted)
                .map(|(id, _)| *id)
        };
        // Received (never processed) and processing (cut short) transactions join the backlog,
        // before anything else here awaits: the backlog loop feeds them in oldest first, as
        // many at once as live traffic gets, `orbiter_backlog_depth` counts what is left, and
        // a message that arrives meanwhile waits behind them (keeping each patient's order).
        // They used to be run here one after another, each awaiting its outcome, at a third of
        // the live rate and invisible to the gauge.
        let unfinished: Vec<TxId> = of(Status::Received).chain(of(Status::Processing)).collect();
        if !unfinished.is_empty() {
            for status in [Status::Received, Status::Processing] {
                let count = of(status).count();
                if count > 0 {
                    tracing::info!(count, status = status.as_str(), "resuming transactions");
                }
            }
            let mut backlog = self.admission.backlog.lock().expect("backlog lock");
            backlog.extend(unfinished);
            self.metrics.backlog_depth.set(backlog.len() as i64);
        }
        // Queued transactions block later ones of the same patient, across restarts too.
        let queued: Vec<TxId> = of(Status::Queued).collect();
        for &id in &queued {
            if let Ok(Some(tx)) = self.journal.get(id) {
                if let Some(key) = &tx.meta.patient_key {
                    self.order.set_queued(key, id, true);
                }
            }
        }
        for id in queued {
            self.schedule_retry(id).await;
        }
    }

    /// Runs a stored transaction through its channels again (all current channels that take it,
    /// or only those named). Returns `None` if it is gone.
    pub async fn rerun(
        &self,
        id: TxId,
        only: Option<&[String]>,
        record: Record,
    ) -> Option<PipelineOutcome> {
        Some(match self.load(id, only).await? {
            Ok(work) => self.process(work, record).await,
            Err(reason) => self.fail(id, reason).await,
        })
    }

    /// A stored transaction as work for the pipeline, routed by the current channels (or only
    /// those named): `None` if it is gone, `Err` with the reason to fail it if no channel
    /// takes it now.
    async fn load(&self, id: TxId, only: Option<&[String]>) -> Option<Result<Routed, String>> {
        let journal = self.journal.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Option<_> {
            let tx = journal.get(id).ok()??;
            let original = original_of(&journal, id, &tx);
            Some((tx, journal.raw(id).ok()??, original))
        })
        .await
        .ok()??;
        let (tx, raw, original) = loaded;
        let source = source_of(&tx.meta.listener);
        let (set, mut routes) = self.route(source, &tx.meta.listener, &tx.meta);
        if let Some(only) = only {
            routes.retain(|c| only.iter().any(|n| n == c.name()));
        }
        if routes.is_empty() {
            return Some(Err("no channel: none takes it now".into()));
        }
        Some(Ok(Routed::stored(id, original, &tx, &raw, set, routes)))
    }

    /// A rerun requested by a person: routes the stored message with the channels in force now
    /// (their current revisions) and journals it as a new transaction linked to the original
    /// (`rerun_of`, plus an event on the original). Returns the work to process or dispatch.
    pub async fn start_rerun(&self, of: TxId) -> Result<Routed, RerunError> {
        let journal = self.journal.clone();
        let (tx, raw, original) = tokio::task::spawn_blocking(move || {
            let tx = journal.get(of)?;
            let original = tx.as_ref().map(|tx| original_of(&journal, of, tx));
            Ok::<_, JournalError>((tx, journal.raw(of)?, original))
        })
        .await
        .map_err(|_| JournalError::Closed)??;
        let tx: Transaction = tx.ok_or(RerunError::NotFound(of))?;
        let original = original.unwrap_or(of);
        let raw = raw.ok_or(RerunError::BodyPruned(of))?;
        let source = source_of(&tx.meta.listener);
        let (set, routes) = self.route(source, &tx.meta.listener, &tx.meta);
        if routes.is_empty() {
            return Err(RerunError::NoChannel(of));
        }
        let runs = routes
            .iter()
            .map(|c| ChannelRun {
                name: c.name().to_string(),
                revision: c.revision.clone(),
            })
            .collect();
        let appended = self.journal.append_rerun(of, runs).await?;
        Ok(Routed::stored(
            appended.id,
            original,
            &tx,
            &raw,
            set,
            routes,
        ))
    }

    /// Retries queued transactions whose backoff has passed, oldest first; gives up (failed)
    /// after the channel's `max_attempts`.
    pub async fn retry_due(&self) {
        for id in self.retries.take_due(now_ms()) {
            let Some(plan) = self.retry_plan(id).await else {
                continue;
            };
            match plan {
                RetryPlan::GiveUp { attempts } => self.give_up(id, attempts).await,
                RetryPlan::At(due) if due > now_ms() => self.retries.set(id, due),
                RetryPlan::At(_) => {
                    let names = self.journal.get(id).ok().flatten().map(|tx| {
                        tx.channels
                            .iter()
                            .map(|c| c.name.clone())
                            .collect::<Vec<_>>()
                    });
                    if let Some(names) = names {
                        self.rerun(id, Some(&names), Record::Await).await;
                    }
                }
            }
        }
        self.metrics.queue_depth.set(self.retries.len() as i64);
    }

    /// Fails a queued transaction whose attempts are used up. Its last attempt was counted as
    /// `queued` (channel) and `retry` (destination): the give-up is what counts it `failed`, for
    /// each destination still undelivered and the channels they belong to.
    async fn give_up(&self, id: TxId, attempts: u32) {
        let journal = self.journal.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<_, JournalError> {
            Ok((journal.get(id)?, journal.steps(id)?))
        })
        .await;
        let (tx, steps) = match found {
            Ok(Ok((tx, steps))) => (tx, steps),
            _ => (None, Vec::new()),
        };
        let destinations = undelivered(&steps);
        let mut channels: Vec<String> = destinations.iter().map(|(c, _)| c.clone()).collect();
        channels.dedup();
        if channels.is_empty() {
            // Queued without a delivery (waiting behind an earlier transaction of its patient).
            channels = tx
                .iter()
                .flat_map(|tx| tx.channels.iter().map(|c| c.name.clone()))
                .collect();
        }
        // Ids and configured names only: nothing from the message.
        tracing::warn!(
            %id,
            channels = ?channels,
            destinations = ?destinations.iter().map(|(_, d)| d).collect::<Vec<_>>(),
            attempts,
            "queued transaction gave up: failed"
        );
        for channel in &channels {
            self.metrics
                .channel_messages_total
                .with_label_values(&[channel, Status::Failed.as_str()])
                .inc();
        }
        for (_, destination) in &destinations {
            self.metrics
                .deliveries_total
                .with_label_values(&[destination, "failed"])
                .inc();
        }
        // With the last attempt's error: the reason a person reads first (the transaction's
        // `error`) says why, not only how many times.
        let last_error = tx.as_ref().and_then(|tx| {
            tx.events
                .iter()
                .rev()
                .filter(|e| e.status == Status::Queued)
                .filter_map(|e| e.reason.as_deref())
                .find(|r| !r.contains(WAITING_BEHIND))
                .map(str::to_string)
        });
        let reason = match last_error {
            Some(last) => format!("gave up after {attempts} attempts; the last: {last}"),
            None => format!("gave up after {attempts} attempts"),
        };
        self.fail(id, reason).await;
        // No longer queued: the patient's later transactions may be delivered.
        if let Some(key) = tx.as_ref().and_then(|tx| tx.meta.patient_key.as_deref()) {
            self.order.set_queued(key, id, false);
        }
    }

    /// Puts a queued transaction on the retry schedule (or fails it when its attempts are
    /// used up).
    async fn schedule_retry(&self, id: TxId) {
        match self.retry_plan(id).await {
            Some(RetryPlan::At(due)) => self.retries.set(id, due),
            // Due now: the retry loop fails it with the reason.
            Some(RetryPlan::GiveUp { .. }) => self.retries.set(id, 0),
            None => {}
        }
        self.metrics.queue_depth.set(self.retries.len() as i64);
    }

    /// When a queued transaction should be tried again: after its backoff, counted from its
    /// last event, under the retry policy of the channel that took it.
    async fn retry_plan(&self, id: TxId) -> Option<RetryPlan> {
        let journal = self.journal.clone();
        let tx = tokio::task::spawn_blocking(move || journal.get(id))
            .await
            .ok()?
            .ok()??;
        if tx.status != Status::Queued {
            return None;
        }
        // Attempts are deliveries tried: a check that found the transaction still behind an
        // earlier one of its patient is none (a long queue must not run a patient's last
        // updates out of attempts while their destination is up).
        let attempts = tx
            .events
            .iter()
            .filter(|e| e.status == Status::Queued)
            .filter(|e| {
                !e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains(WAITING_BEHIND))
            })
            .count() as u32;
        let last = tx.events.last().map(|e| e.at_ms).unwrap_or(0);
        let set = self.channels.current();
        let retry = tx
            .channels
            .iter()
            .find_map(|c| set.get(&c.name))
            .map(|c| c.def.retry)
            .unwrap_or_default();
        if attempts >= retry.max_attempts {
            return Some(RetryPlan::GiveUp { attempts });
        }
        Some(RetryPlan::At(
            last + backoff_ms(&retry, attempts, id) as i64,
        ))
    }
}

/// `(channel, destination)` pairs whose last delivery step did not succeed, sorted.
fn undelivered(steps: &[Step]) -> Vec<(String, String)> {
    let mut last: Vec<((String, String), bool)> = Vec::new();
    for step in steps.iter().filter(|s| s.kind == StepKind::Deliver) {
        let Some(destination) = &step.destination else {
            continue;
        };
        let key = (step.channel.clone(), destination.clone());
        match last.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = step.ok,
            None => last.push((key, step.ok)),
        }
    }
    let mut failed: Vec<(String, String)> = last
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(k, _)| k)
        .collect();
    failed.sort();
    failed
}

/// What the retry loop does with a queued transaction.
/// The words of a `queued` event whose transaction waits behind an earlier one of its patient
/// (not a delivery attempt; see [`Pipeline::retry_plan`]).
const WAITING_BEHIND: &str = "waiting behind transaction";

enum RetryPlan {
    /// Try again at this time (Unix ms).
    At(i64),
    GiveUp {
        attempts: u32,
    },
}

/// The source kind a stored transaction came from (its listener's name).
fn source_of(listener: &str) -> SourceKind {
    // Listener names start with their kind: `mllp`, `mllp:<addr>`, `http:/ccda`, `dir:<channel>`;
    // HL7 v2 over HTTP (`http`) is routed as the shared MLLP port's.
    if listener == crate::channel::def::HL7_OVER_HTTP_LISTENER {
        return SourceKind::Mllp;
    }
    match listener.split(':').next().unwrap_or_default() {
        "mllp" => SourceKind::Mllp,
        "http" => SourceKind::Http,
        "sftp" => SourceKind::Sftp,
        _ => SourceKind::Dir,
    }
}

/// Exponential backoff with ±20% jitter derived from the id (stable across polls, different
/// across transactions, so retries of many messages spread out).
fn backoff_ms(retry: &crate::channel::def::RetryDef, attempts: u32, id: TxId) -> u64 {
    let exponent = attempts.saturating_sub(1).min(30);
    let base = retry
        .initial_backoff_ms
        .saturating_mul(1u64 << exponent)
        .min(retry.max_backoff_ms);
    let spread = (id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ attempts as u64) % 41; // 0..=40
    base * (80 + spread) / 100
}

/// One status for the transaction from each channel's: failed beats queued beats delivered;
/// filtered only if every channel filtered it.
fn combine(per_channel: &[(Status, Option<String>)]) -> (Status, Option<String>) {
    for wanted in [Status::Failed, Status::Queued] {
        if let Some((status, reason)) = per_channel.iter().find(|(s, _)| *s == wanted) {
            return (*status, reason.clone());
        }
    }
    if per_channel.iter().all(|(s, _)| *s == Status::Filtered) {
        let reason = per_channel.first().and_then(|(_, r)| r.clone());
        return (Status::Filtered, reason);
    }
    let reasons: Vec<String> = per_channel
        .iter()
        .filter(|(s, _)| *s == Status::Delivered)
        .filter_map(|(_, r)| r.clone())
        .collect();
    (
        Status::Delivered,
        (!reasons.is_empty()).then(|| reasons.join("; ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_beats_queued_beats_delivered_and_filtered_needs_all() {
        let d = (Status::Delivered, None);
        let f = (Status::Filtered, Some("f".to_string()));
        let q = (Status::Queued, Some("q".to_string()));
        let x = (Status::Failed, Some("x".to_string()));
        assert_eq!(
            combine(&[d.clone(), q.clone(), x.clone()]).0,
            Status::Failed
        );
        assert_eq!(combine(&[d.clone(), q.clone()]).0, Status::Queued);
        assert_eq!(combine(&[d.clone(), f.clone()]).0, Status::Delivered);
        assert_eq!(combine(&[f.clone(), f.clone()]).0, Status::Filtered);
        assert_eq!(combine(&[x]).1.as_deref(), Some("x"));
    }

    /// The script of [`engine_parts`]' channel: `Patient/p1` named after the control id.
    const PUT_P1: &str =
        "let p = #{resourceType: \"Patient\", id: \"p1\", name: [#{family: msg.control_id}]};\n\
         #{resourceType: \"Bundle\", type: \"transaction\", \
           entry: [#{resource: p, request: #{method: \"PUT\", url: \"Patient/p1\"}}]}";

    /// A channel `c` (MLLP, every message) whose script writes `Patient/p1` named after the
    /// message's control id to the embedded CDR, and a journal in `dir`.
    fn engine_parts(dir: &std::path::Path) -> (Channels, Journal, crate::cdr::Cdr, Arc<Metrics>) {
        engine_parts_with(dir, PUT_P1)
    }

    /// [`engine_parts`] with another script for channel `c`.
    fn engine_parts_with(
        dir: &std::path::Path,
        script: &str,
    ) -> (Channels, Journal, crate::cdr::Cdr, Arc<Metrics>) {
        let paths = crate::channel::ChannelPaths {
            channels_dir: dir.join("channels"),
            scripts_dir: dir.join("scripts"),
            limits: Default::default(),
        };
        std::fs::create_dir_all(&paths.channels_dir).unwrap();
        std::fs::create_dir_all(paths.lib_dir()).unwrap();
        std::fs::write(
            paths.channels_dir.join("c.toml"),
            "name = \"c\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"scripts/c.rhai\"\n\
             [[destination]]\nkind = \"cdr\"\n",
        )
        .unwrap();
        std::fs::write(paths.scripts_dir.join("c.rhai"), script).unwrap();
        let (channels, report) = Channels::load(paths);
        assert!(report.errors.is_empty(), "{report:?}");
        let metrics = Arc::new(Metrics::new());
        let journal = Journal::open(
            &dir.join("journal"),
            &crate::config::JournalConfig::default(),
            metrics.clone(),
        )
        .unwrap();
        let cdr = crate::cdr::Cdr::open(&dir.join("cdr"), 1 << 20).unwrap();
        (channels, journal, cdr, metrics)
    }

    /// A pipeline over [`engine_parts`], delivering into its embedded CDR.
    struct Parts {
        pipeline: Pipeline,
        channels: Channels,
        journal: Journal,
        cdr: crate::cdr::Cdr,
        metrics: Arc<Metrics>,
    }

    fn pipeline_parts(dir: &std::path::Path) -> Parts {
        pipeline_parts_with(dir, PUT_P1)
    }

    /// [`pipeline_parts`] with another script for channel `c`.
    fn pipeline_parts_with(dir: &std::path::Path, script: &str) -> Parts {
        let (channels, journal, cdr, metrics) = engine_parts_with(dir, script);
        let transforms = Transforms::start(Default::default(), 2, metrics.clone());
        let deliverer = Deliverer::new(
            crate::deliver::CdrTarget::Embedded(cdr.clone()),
            dir,
            metrics.clone(),
        );
        let pipeline = Pipeline::new(
            channels.clone(),
            transforms,
            journal.clone(),
            deliverer,
            metrics.clone(),
        );
        Parts {
            pipeline,
            channels,
            journal,
            cdr,
            metrics,
        }
    }

    fn received(control_id: &str) -> crate::journal::NewMessage {
        crate::journal::NewMessage {
            meta: MessageMeta {
                listener: "mllp".into(),
                control_id: Some(control_id.into()),
                message_type: Some("ADT^A08".into()),
                patient_key: Some("one patient".into()),
                ..MessageMeta::default()
            },
            channels: vec![ChannelRun {
                name: "c".into(),
                revision: "r".into(),
            }],
            raw: Bytes::from(format!(
                "MSH|^~\\&|APP|FAC|||20240101||ADT^A08|{control_id}|P|2.5.1\rPID|1||P1^^^H||DOE^J\r"
            )),
            status: Status::Received,
            error: None,
            truncated: false,
            origin_key: None,
        }
    }

    /// After a restart, what was received but not processed waits in the backlog (counted by
    /// `orbiter_backlog_depth`) and is fed in by the backlog loop, many at once, each patient's
    /// transactions still delivered in the order they were received.
    #[actix_web::test]
    async fn resumed_transactions_wait_in_the_backlog_and_keep_their_patients_order() {
        const N: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let (_, journal, _, _) = engine_parts(dir.path());
        for n in 0..N {
            journal.append(received(&format!("C{n:02}"))).await.unwrap();
        }
        journal.close();
        drop(journal);

        let Parts {
            pipeline,
            journal,
            cdr,
            metrics,
            ..
        } = pipeline_parts(dir.path());
        pipeline.resume().await;
        assert_eq!(metrics.backlog_depth.get(), N as i64, "all of them wait");
        assert_eq!(journal.count_with_status(Status::Received), N);

        pipeline.drain_backlog(N / 2).await;
        assert!(
            metrics.backlog_depth.get() <= (N / 2) as i64,
            "the gauge follows the drain: {}",
            metrics.backlog_depth.get()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while journal.count_with_status(Status::Delivered) < N {
            assert!(std::time::Instant::now() < deadline, "not all delivered");
            pipeline.drain_backlog(N).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.backlog_depth.get(), 0);

        // Patient/p1's versions, oldest first: one per transaction, in the order received.
        let base = "http://orbiter/fhir";
        let history = cdr.handle(
            &crate::cdr::FhirRequest::new(
                crate::cdr::Method::Get,
                "Patient/p1/_history?_count=100",
                base,
            ),
            base,
        );
        let body = history.body.unwrap();
        let mut families: Vec<String> = body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["resource"]["name"][0]["family"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        families.reverse(); // _history is newest first
        let expected: Vec<String> = (0..N).map(|n| format!("C{n:02}")).collect();
        assert_eq!(families, expected);
    }

    /// The last transaction of the backlog is taken out, and while it is read from the journal
    /// a new one of the same patient is dispatched (the backlog looks empty then): the new one
    /// waits its turn instead of overtaking.
    #[actix_web::test]
    async fn a_message_dispatched_while_the_backlog_hands_on_its_last_waits_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, journal, _, _) = engine_parts(dir.path());
        journal.append(received("OLD")).await.unwrap();
        journal.close();
        drop(journal);

        let Parts {
            pipeline,
            channels,
            journal,
            cdr,
            metrics,
        } = pipeline_parts(dir.path());
        pipeline.resume().await;
        assert_eq!(metrics.backlog_depth.get(), 1);

        // The drain takes OLD out of the backlog and waits for its record.
        let mut drain = std::pin::pin!(pipeline.drain_backlog(1));
        assert!(futures_util::FutureExt::now_or_never(drain.as_mut()).is_none());
        assert_eq!(metrics.backlog_depth.get(), 0);
        // NEW arrives now.
        let new = journal.append(received("NEW")).await.unwrap();
        let set = channels.current();
        let routed = Routed {
            id: new.id,
            original: new.id,
            patient_key: Some("one patient".into()),
            format: crate::format::Format::Hl7v2,
            raw: Bytes::from_static(
                b"MSH|^~\\&|APP|FAC|||20240101||ADT^A08|NEW|P|2.5.1\rPID|1||P1^^^H||DOE^J\r",
            ),
            channels: set.channels.clone(),
            set,
            run_on: RunOn::Pool,
        };
        pipeline.dispatch(routed);
        drain.await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while journal.count_with_status(Status::Delivered) < 2 {
            assert!(std::time::Instant::now() < deadline, "not both delivered");
            pipeline.drain_backlog(8).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let base = "http://orbiter/fhir";
        let read = cdr.handle(
            &crate::cdr::FhirRequest::new(crate::cdr::Method::Get, "Patient/p1", base),
            base,
        );
        assert_eq!(read.body.unwrap()["name"][0]["family"], "NEW");
    }

    /// A Bundle of plain creates (`POST Type`, no `ifNoneExist`) delivered again, as a retry
    /// or a resume after a crash runs it (the same transaction), and as reruns (new
    /// transactions, one a rerun of the other), leaves the CDR as delivering it once: each
    /// resource once, the Observation still pointing at the Patient.
    #[actix_web::test]
    async fn plain_creates_delivered_again_are_written_once() {
        const PLAIN_CREATES: &str = "\
            let patient = \"urn:uuid:0b8bd2b1-2a1e-4b8e-8a5a-0c2d9d0e0f11\";\n\
            #{resourceType: \"Bundle\", type: \"transaction\", entry: [\
              #{fullUrl: patient, request: #{method: \"POST\", url: \"Patient\"},\
                resource: #{resourceType: \"Patient\", name: [#{family: msg.control_id}]}},\
              #{request: #{method: \"POST\", url: \"Observation\"},\
                resource: #{resourceType: \"Observation\", status: \"final\",\
                  code: #{text: \"weight\"}, subject: #{reference: patient}}}]}";
        let dir = tempfile::tempdir().unwrap();
        let Parts {
            pipeline,
            journal,
            cdr,
            ..
        } = pipeline_parts_with(dir.path(), PLAIN_CREATES);
        let id = journal.append(received("C1")).await.unwrap().id;
        // Delivered, then delivered again (the outcome not known to have been recorded).
        for _ in 0..2 {
            let outcome = pipeline.rerun(id, None, Record::Await).await.unwrap();
            assert_eq!(outcome.status, Status::Delivered, "{outcome:?}");
        }
        // Rerun through the API, and that rerun rerun.
        let mut of = id;
        for _ in 0..2 {
            let work = pipeline.start_rerun(of).await.unwrap();
            assert_eq!(work.original, id);
            of = work.id;
            let outcome = pipeline.process(work, Record::Await).await;
            assert_eq!(outcome.status, Status::Delivered, "{outcome:?}");
        }

        let base = "http://orbiter/fhir";
        let search = |query: &str| {
            let request = crate::cdr::FhirRequest::new(crate::cdr::Method::Get, query, base);
            cdr.handle(&request, base).body.unwrap()
        };
        let patients = search("Patient");
        assert_eq!(patients["total"], 1, "{patients}");
        let observations = search("Observation");
        assert_eq!(observations["total"], 1, "{observations}");
        let patient_id = patients["entry"][0]["resource"]["id"].as_str().unwrap();
        assert_eq!(
            observations["entry"][0]["resource"]["subject"]["reference"],
            format!("Patient/{patient_id}")
        );
    }

    /// Waiting behind an earlier transaction of the patient is not a delivery attempt: however
    /// often it was found still waiting, it is not given up.
    #[actix_web::test]
    async fn waiting_behind_a_patients_earlier_transaction_uses_no_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let Parts {
            pipeline, journal, ..
        } = pipeline_parts(dir.path());
        let waiting = journal.append(received("LATER")).await.unwrap().id;
        for _ in 0..30 {
            let reason = format!("c: {WAITING_BEHIND} 1 for the same patient");
            journal
                .set_status(waiting, Status::Queued, Some(reason))
                .await
                .unwrap();
        }
        assert!(matches!(
            pipeline.retry_plan(waiting).await,
            Some(RetryPlan::At(_))
        ));
        // Thirty failed deliveries are more than the channel's 20 attempts.
        let tried = journal.append(received("TRIED")).await.unwrap().id;
        for _ in 0..30 {
            journal
                .set_status(tried, Status::Queued, Some("c: HTTP 503".into()))
                .await
                .unwrap();
        }
        assert!(matches!(
            pipeline.retry_plan(tried).await,
            Some(RetryPlan::GiveUp { attempts: 30 })
        ));
    }

    #[test]
    fn undelivered_is_what_the_last_attempt_did_not_deliver() {
        let step = |channel: &str, destination: &str, ok: bool| Step {
            channel: channel.into(),
            revision: "r".into(),
            kind: StepKind::Deliver,
            at_ms: 0,
            ok,
            output: None,
            logs: Vec::new(),
            error: None,
            destination: Some(destination.into()),
        };
        let steps = [
            step("b", "http", false),
            step("a", "cdr", false),
            step("a", "file", true),
            // The next attempt: the CDR took it, the HTTP destination is still down.
            step("b", "http", false),
            step("a", "cdr", true),
            step("a", "file", true),
        ];
        assert_eq!(undelivered(&steps), vec![("b".into(), "http".into())]);
        assert!(undelivered(&steps[2..3]).is_empty());
    }
}
