//! The ACK policy: what happens between a listener reading one message and the sender getting
//! its acknowledgement. Shared by every listener that answers with HL7 ACKs.
//!
//! - bytes that do not parse as HL7: journaled as `failed` with the parse error, answered AR;
//! - a parseable message that cannot be accepted (no MSH-9 or MSH-10, or not one message):
//!   journaled as `failed`, answered AE naming the field; a version (MSH-12) that is not HL7 v2
//!   or a processing id (MSH-11) not in `hl7.processing_ids`: the same, answered AR (203, 202);
//! - otherwise journaled as `received`, answered AA only once the append is durable;
//! - the journal itself failing: AR with code 207, so the sender keeps the message and resends;
//! - a repeated control id from the same sender: accepted (AA), flagged `duplicate_of`, and
//!   processed like any other message.
//!
//! In enhanced mode (MSH-15/16 set) these are accept ACKs: CA/CE/CR, and MSH-15 decides whether
//! one is sent at all (AL, NE, ER, SU).
//!
//! Routing happens before the append (so the fan-out is journaled with the message); channel
//! processing after it. When a channel that takes the message is in ACK mode `on-delivery`, the
//! ACK waits for the pipeline: AA when delivered or filtered, AE when a script rejected or failed
//! it or a destination refused it, AR when a destination was unavailable (queued: resend later).
//! That ACK reports the processing outcome, so it is the application ACK: AA/AE/AR in enhanced
//! mode too, sent as MSH-16 says.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use time::macros::format_description;

use crate::channel::SourceKind;
use crate::config::{AckTiming, Hl7Config};
use crate::hl7::{self, AckCode, AckError, AckMode, ErrorCode, Message, Severity};
use crate::journal::{
    Appended, ChannelRun, Journal, JournalError, MessageMeta, NewMessage, Status, TxId,
};
use crate::metrics::Metrics;
use crate::route::{Pipeline, PipelineOutcome, Routed};
use crate::transform::RunOn;

/// What to answer, once known.
#[derive(Debug, Clone)]
pub struct AckReply {
    /// The ACK message (unframed), or `None` when the sender asked for none (MSH-15 NE...).
    pub ack: Option<Bytes>,
    pub code: AckCode,
    /// The transaction, when the journal took the message.
    pub id: Option<TxId>,
    /// Stored, but an on-delivery destination is down (the AR means "resend later").
    pub queued: bool,
    /// The origin key was known: `id` is the earlier transaction, nothing new was stored.
    pub already: bool,
}

/// How a message arrived, beyond its bytes.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// Remote address (and client certificate subject).
    pub peer: Option<String>,
    /// The file name or HTTP path it came as.
    pub origin: Option<String>,
    /// Idempotency key (see [`crate::ingest::Origin::key`]).
    pub origin_key: Option<String>,
}

/// What became of a document handed to [`Intake::submit_document`].
#[derive(Debug, Clone)]
pub struct DocumentReply {
    pub id: TxId,
    /// The origin key was known: `id` is the earlier transaction.
    pub already: bool,
    /// Journaled as `failed` for this reason (not a well-formed document of its format).
    pub refused: Option<String>,
    /// The pipeline's outcome, when a channel acknowledges on delivery.
    pub delivery: Option<PipelineOutcome>,
}

/// The `[hl7]` settings every intake applies; see [`use_hl7_config`].
static HL7_CONFIG: OnceLock<Hl7Config> = OnceLock::new();

/// Sets the `[hl7]` settings for every intake of this process (`orbiter run` does, before any
/// listener starts; until then, and without it, the defaults apply). `false` when they were set
/// already, or read already.
pub fn use_hl7_config(config: &Hl7Config) -> bool {
    HL7_CONFIG.set(config.clone()).is_ok()
}

fn hl7_config() -> &'static Hl7Config {
    HL7_CONFIG.get_or_init(Hl7Config::default)
}

/// Parses, journals and acknowledges messages for one listener.
#[derive(Clone)]
pub struct Intake {
    journal: Journal,
    metrics: Arc<Metrics>,
    listener: Arc<str>,
    source: SourceKind,
    /// Routing and processing; `None` journals and acknowledges only.
    pipeline: Option<Pipeline>,
}

impl Intake {
    pub fn new(
        journal: Journal,
        metrics: Arc<Metrics>,
        listener: &str,
        source: SourceKind,
        pipeline: Option<Pipeline>,
    ) -> Intake {
        Intake {
            journal,
            metrics,
            listener: listener.into(),
            source,
            pipeline,
        }
    }

    /// The `[csv]` options of the channel this intake feeds (the first that takes from its
    /// listener), or the defaults.
    pub(crate) fn csv_options(&self) -> crate::format::csv::CsvOptions {
        self.pipeline
            .as_ref()
            .and_then(|p| {
                p.channels
                    .current()
                    .channels
                    .iter()
                    .find(|c| c.def.source.kind == self.source && c.def.takes_from(&self.listener))
                    .and_then(|c| c.def.csv.clone())
            })
            .unwrap_or_default()
    }

    /// Parses `raw` and queues it for the journal right away (so that callers can pipeline);
    /// the returned future resolves to the ACK once the journal answered.
    pub fn submit(
        &self,
        raw: Bytes,
        peer: Option<String>,
    ) -> impl Future<Output = AckReply> + Send + 'static {
        self.submit_hl7(
            raw,
            Arrival {
                peer,
                ..Arrival::default()
            },
        )
    }

    /// [`Intake::submit`] for a message that arrived some other way than a frame (an HTTP body,
    /// one message of a batch file), with where it came from.
    pub fn submit_hl7(
        &self,
        raw: Bytes,
        arrival: Arrival,
    ) -> impl Future<Output = AckReply> + Send + 'static {
        let this = self.clone();
        let mut meta = MessageMeta {
            listener: self.listener.to_string(),
            peer: arrival.peer,
            origin: arrival.origin,
            ..MessageMeta::default()
        };
        // `refusal`: why the message is not accepted, as the ACK will say it, and with what.
        let (parsed, refusal) = match Message::parse(&raw) {
            Err(e) => {
                // What the header still says, so the refused message can be found by its
                // control id (the ACK echoes it too).
                fill_unparsed_meta(&mut meta, &raw);
                let error = AckError {
                    code: e.hl7_error_code(),
                    location: e.location(),
                    text: e.to_string(),
                    severity: Severity::Error,
                };
                (None, Some((AckCode::Reject, error)))
            }
            Ok(message) => {
                fill_meta(&mut meta, &message);
                let refusal = match message.check_required() {
                    Err(e) => Some((AckCode::Error, e)),
                    // A version or processing id the engine does not take: AR, do not resend
                    // as is.
                    Ok(()) => message
                        .check_version()
                        .and_then(|()| message.check_processing_id(&hl7_config().processing_ids))
                        .err()
                        .map(|e| (AckCode::Reject, e)),
                };
                (Some(message), refusal)
            }
        };
        let refused = match (&parsed, &refusal) {
            (None, Some((_, e))) => Some(format!("not HL7 v2: {}", e.text)),
            (Some(_), Some((_, e))) => Some(format!("refused: {}", e.text)),
            (_, None) => None,
        };
        let queued = self.enqueue(meta, raw.clone(), refused, arrival.origin_key);
        async move {
            let (appended, delivery) = queued.await;
            let queued = delivery
                .as_ref()
                .is_some_and(|d| d.status == Status::Queued);
            let already = appended.as_ref().is_ok_and(|a| a.already);
            // `application`: the ACK reports the processing outcome (on-delivery), not the commit.
            let (code, error, id, application) = match (appended, refusal) {
                (Err(e), _) => {
                    tracing::error!(listener = %this.listener, error = %e, "journal append failed");
                    let error = AckError {
                        code: ErrorCode::ApplicationInternalError,
                        location: None,
                        text: e.not_stored().into(),
                        severity: Severity::Error,
                    };
                    (AckCode::Reject, Some(error), None, false)
                }
                (Ok(a), Some((code, error))) => (code, Some(error), Some(a.id), false),
                (Ok(a), None) => {
                    if let Some(first) = a.duplicate_of.filter(|_| !a.already) {
                        this.metrics.duplicates_total.inc();
                        tracing::info!(listener = %this.listener, id = %a.id, duplicate_of = %first, "duplicate control id");
                    }
                    match delivery {
                        None => (AckCode::Accept, None, Some(a.id), false),
                        Some(outcome) => {
                            let (code, error) = delivery_ack(&outcome);
                            (code, error, Some(a.id), true)
                        }
                    }
                }
            };
            this.metrics
                .messages_total
                .with_label_values(&[&this.listener, outcome(code)])
                .inc();
            let control_id = ack_control_id(this.journal.ack_id_prefix(), id);
            let timestamp = hl7_timestamp();
            let ack = match &parsed {
                // The processing outcome: an application ACK, as MSH-16 asks, AA/AE/AR.
                Some(message) if application => message.application_ack_wanted(code).then(|| {
                    let error = error.as_ref();
                    let mode = AckMode::Original;
                    hl7::build_ack_as(message, code, mode, error, &control_id, &timestamp)
                }),
                // The commit, or a refusal before it: an accept ACK, as MSH-15 asks.
                Some(message) => message.ack_wanted(code).then(|| {
                    hl7::build_ack(message, code, error.as_ref(), &control_id, &timestamp)
                }),
                None => hl7::ack::unparsed_ack_wanted(&raw, code).then(|| {
                    hl7::build_ack_for_unparsed(&raw, code, error.as_ref(), &control_id, &timestamp)
                }),
            };
            AckReply {
                ack: ack.map(Bytes::from),
                code,
                id,
                queued,
                already,
            }
        }
    }

    /// Routes (unless `refused`), appends, and hands the transaction to its channels; resolves
    /// once the append is durable, or, when a channel acknowledges on delivery, once the
    /// pipeline is done with it.
    fn enqueue(
        &self,
        meta: MessageMeta,
        raw: Bytes,
        refused: Option<String>,
        origin_key: Option<String>,
    ) -> impl Future<Output = (AppendResult, Option<PipelineOutcome>)> + Send + 'static {
        let routed = match (&self.pipeline, &refused) {
            (Some(pipeline), None) => Some(pipeline.route(self.source, &self.listener, &meta)),
            _ => None,
        };
        // Input refused at a channel's own source (its HTTP path, its folder or SFTP dir: a
        // malformed document, a bad CSV row) is recorded under that channel, not run: so that
        // `?channel=` and the per-channel stats show it where its sender's channel is. On the
        // shared MLLP port nothing names a channel until the message parses.
        let refused_at = match (&self.pipeline, &refused) {
            (Some(pipeline), Some(_))
                if matches!(
                    self.source,
                    SourceKind::Http | SourceKind::Dir | SourceKind::Sftp
                ) =>
            {
                pipeline.route(self.source, &self.listener, &meta).1
            }
            _ => Vec::new(),
        };
        let channels: Vec<ChannelRun> = routed
            .iter()
            .flat_map(|(_, routes)| routes.iter())
            .chain(refused_at.iter())
            .map(|c| ChannelRun {
                name: c.name().to_string(),
                revision: c.revision.clone(),
            })
            .collect();
        let (status, error) = match refused {
            Some(reason) => (Status::Failed, Some(reason)),
            None if routed.is_some() && channels.is_empty() => {
                let mut reason = format!(
                    "no channel: none takes {} from {}",
                    meta.message_type.as_deref().unwrap_or("this message"),
                    self.listener
                );
                // A channel switched off is the likeliest reason: name it.
                if let Some((set, _)) = &routed {
                    let disabled = set.disabled_takers(self.source, &self.listener, &meta);
                    if !disabled.is_empty() {
                        reason.push_str(&format!(
                            " ({} would, but is disabled)",
                            disabled.join(", ")
                        ));
                    }
                }
                (Status::Failed, Some(reason))
            }
            None => (Status::Received, None),
        };
        let wait_for_delivery = routed.as_ref().is_some_and(|(_, routes)| {
            routes
                .iter()
                .any(|c| c.def.ack.mode == AckTiming::OnDelivery)
        });
        let patient_key = meta.patient_key.clone();
        let format = meta.format;
        let appended = self.journal.append(NewMessage {
            meta,
            channels,
            raw: raw.clone(),
            status,
            error,
            truncated: false,
            origin_key,
        });
        let mut hand_on = HandOn {
            appended: Some(Box::pin(appended)),
            work: routed.and_then(|(set, routes)| {
                let pipeline = self.pipeline.clone()?;
                (!routes.is_empty()).then(|| Unsent {
                    pipeline,
                    patient_key,
                    format,
                    raw,
                    set,
                    channels: routes,
                    run_on: RunOn::for_source(self.source),
                })
            }),
        };
        async move {
            let appended = match hand_on.appended.as_mut() {
                Some(appended) => appended.await,
                None => unreachable!("taken only when dropped"),
            };
            // Hand the message to its channels; wait for them only in on-delivery mode. A part
            // the journal had already (same origin key) was handed on the first time.
            let mut delivery = None;
            if let (Ok(a), Some(work)) = (&appended, hand_on.work.take()) {
                if !a.already {
                    if wait_for_delivery {
                        delivery = Some(work.process_now(a.id).await);
                    } else {
                        work.dispatch(a.id);
                    }
                }
            }
            (appended, delivery)
        }
    }

    /// Journals a document that is not HL7 v2 (a FHIR resource or Bundle, a C-CDA document, a
    /// CSV row) and routes it to the channels of this source. `refused`: why it cannot be taken
    /// (journaled as `failed` with that reason, not routed).
    pub fn submit_document(
        &self,
        facts: crate::format::DocumentFacts,
        raw: Bytes,
        arrival: Arrival,
    ) -> impl Future<Output = Result<DocumentReply, JournalError>> + Send + 'static {
        let meta = MessageMeta {
            listener: self.listener.to_string(),
            peer: arrival.peer,
            origin: arrival.origin,
            format: facts.format,
            message_type: facts.kind,
            control_id: facts.control_id,
            patient_key: facts.patient_key,
            ..MessageMeta::default()
        };
        let refused = facts.refused.clone();
        let queued = self.enqueue(meta, raw, facts.refused, arrival.origin_key);
        let metrics = self.metrics.clone();
        let listener = self.listener.clone();
        async move {
            let (appended, delivery) = queued.await;
            let appended = appended?;
            let accepted = refused.is_none();
            metrics
                .messages_total
                .with_label_values(&[&*listener, if accepted { "accepted" } else { "rejected" }])
                .inc();
            Ok(DocumentReply {
                id: appended.id,
                already: appended.already,
                refused,
                delivery,
            })
        }
    }

    /// Journals input that never became a whole message (an oversize frame, a frame cut off by
    /// the connection closing) and builds the AR for it, if the sender is still there to read it:
    /// code 100 (what was received is not a whole message), `reason` in ERR-8. The record keeps
    /// what the header says (control id, type, sender), read leniently when the part does not
    /// parse, as the ACK reads it.
    pub fn submit_broken(
        &self,
        prefix: Bytes,
        peer: Option<String>,
        reason: String,
    ) -> impl Future<Output = AckReply> + Send + 'static {
        let this = self.clone();
        let mut meta = MessageMeta {
            listener: self.listener.to_string(),
            peer,
            ..MessageMeta::default()
        };
        match Message::parse(&prefix) {
            Ok(message) => fill_meta(&mut meta, &message),
            Err(_) => fill_unparsed_meta(&mut meta, &prefix),
        }
        let appended = self.journal.append(NewMessage {
            meta,
            channels: Vec::new(),
            raw: prefix.clone(),
            status: Status::Failed,
            error: Some(reason.clone()),
            truncated: true,
            origin_key: None,
        });
        async move {
            let id = appended.await.ok().map(|a| a.id);
            this.metrics
                .messages_total
                .with_label_values(&[&this.listener, outcome(AckCode::Reject)])
                .inc();
            // Not 207 (application internal error): nothing failed here, the message did not
            // arrive whole.
            let error = AckError {
                code: ErrorCode::SegmentSequenceError,
                location: None,
                text: reason,
                severity: Severity::Error,
            };
            let ack = hl7::ack::unparsed_ack_wanted(&prefix, AckCode::Reject).then(|| {
                hl7::build_ack_for_unparsed(
                    &prefix,
                    AckCode::Reject,
                    Some(&error),
                    &ack_control_id(this.journal.ack_id_prefix(), id),
                    &hl7_timestamp(),
                )
            });
            AckReply {
                ack: ack.map(Bytes::from),
                code: AckCode::Reject,
                id,
                queued: false,
                already: false,
            }
        }
    }
}

/// A routed message on its way from the journal to its channels.
struct Unsent {
    pipeline: Pipeline,
    patient_key: Option<String>,
    format: crate::format::Format,
    raw: Bytes,
    set: Arc<crate::channel::ChannelSet>,
    channels: Vec<Arc<crate::channel::Channel>>,
    run_on: RunOn,
}

impl Unsent {
    fn work(self, id: TxId) -> (Pipeline, Routed) {
        let work = Routed {
            id,
            original: id,
            patient_key: self.patient_key,
            format: self.format,
            raw: self.raw,
            set: self.set,
            channels: self.channels,
            run_on: self.run_on,
        };
        (self.pipeline, work)
    }

    fn dispatch(self, id: TxId) {
        let (pipeline, work) = self.work(id);
        pipeline.dispatch(work);
    }

    /// Runs the channels and waits for their outcome. They run on a task of their own, so that
    /// a sender who goes away meanwhile does not stop them half way.
    async fn process_now(self, id: TxId) -> PipelineOutcome {
        let (pipeline, work) = self.work(id);
        let run = actix_rt::spawn(async move { pipeline.process_now(work).await });
        run.await.unwrap_or_else(|e| PipelineOutcome {
            status: Status::Failed,
            reason: Some(format!("processing stopped: {e}")),
            rejected: false,
        })
    }
}

/// A message handed to the journal, and what hands it on to its channels once the journal has
/// it. Whoever waits for the ACK may go away first: a sender that resets the connection or
/// stops reading its ACKs, an HTTP client that hangs up. Dropped before the journal answered,
/// it finishes on a task of its own, so a message the journal took always reaches its
/// channels (not only at the next start, behind later messages of its patient).
struct HandOn {
    appended: Option<std::pin::Pin<Box<dyn Future<Output = AppendResult> + Send>>>,
    work: Option<Unsent>,
}

type AppendResult = Result<Appended, JournalError>;

impl Drop for HandOn {
    fn drop(&mut self) {
        let (Some(appended), Some(work)) = (self.appended.take(), self.work.take()) else {
            return;
        };
        // Every listener runs on an actix arbiter. Without one (the runtime is going down),
        // or if it has stopped, the message is resumed at the next start.
        if let Some(arbiter) = actix_rt::Arbiter::try_current() {
            arbiter.spawn(async move {
                if let Ok(a) = appended.await {
                    if !a.already {
                        work.dispatch(a.id);
                    }
                }
            });
        }
    }
}

/// The ACK for an on-delivery channel's outcome.
pub fn delivery_ack(outcome: &PipelineOutcome) -> (AckCode, Option<AckError>) {
    let error = |code, text: &str| AckError {
        code,
        location: None,
        text: text.to_string(),
        severity: Severity::Error,
    };
    let reason = outcome.reason.as_deref().unwrap_or("");
    match outcome.status {
        Status::Delivered | Status::Filtered | Status::Received | Status::Processing => {
            (AckCode::Accept, None)
        }
        Status::Queued => (
            AckCode::Reject,
            Some(error(
                ErrorCode::ApplicationInternalError,
                &format!("stored, destination unavailable: {reason}"),
            )),
        ),
        Status::Failed => (
            AckCode::Error,
            Some(error(ErrorCode::ApplicationInternalError, reason)),
        ),
    }
}

/// Fills what the first usable `MSH` of input that did not parse still says (control id, type,
/// sender, version) into `meta`, so that the refused input can be found by its control id.
fn fill_unparsed_meta(meta: &mut MessageMeta, raw: &[u8]) {
    if let Some(h) = crate::hl7::ack::unparsed_header(raw) {
        meta.control_id = h.control_id;
        meta.message_type = h.message_type;
        meta.sending_application = h.sending_application;
        meta.sending_facility = h.sending_facility;
        meta.version = h.version;
    }
}

/// Fills what the MSH header says (type, control id, sender, receiver, version) into `meta`.
pub(crate) fn fill_meta(meta: &mut MessageMeta, message: &Message) {
    let owned = |v: Option<std::borrow::Cow<'_, str>>| v.map(|s| s.into_owned());
    meta.control_id = owned(message.control_id());
    meta.message_type = message.message_type().map(|kind| kind.to_string());
    meta.sending_application = owned(message.sending_application());
    meta.sending_facility = owned(message.sending_facility());
    meta.receiving_application = owned(message.receiving_application());
    meta.receiving_facility = owned(message.receiving_facility());
    meta.version = owned(message.version());
    meta.patient_key = patient_key(message);
}

/// SHA-256 of the patient's identifier in PID-3 and its assigning authority, first 16 hex
/// digits; what orders one patient's deliveries.
///
/// With several identifiers in PID-3, the medical record number (identifier type `MR`) keys
/// the patient, else the first: as the shipped scripts pick the identifier their conditional
/// writes match the Patient on (`scripts/lib/patient.rhai`). Keyed on another repetition, two
/// messages that list the same identifiers in another order would not be kept in order.
pub fn patient_key(message: &Message) -> Option<String> {
    let field = |n: usize, component: usize| {
        message
            .get_str(&format!("PID-3[{n}].{component}"))
            .ok()
            .flatten()
            .filter(|v| !v.is_empty())
    };
    let repetitions = crate::hl7::Path::parse("PID-3")
        .map_or(0, |path| message.count_repetitions(&path))
        .min(MAX_PID3_REPETITIONS);
    let mut first = None;
    for n in 1..=repetitions {
        let Some(id) = field(n, 1) else { continue };
        let authority = field(n, 4).unwrap_or_default();
        if field(n, 5).as_deref() == Some("MR") {
            return Some(patient_key_of(&id, &authority));
        }
        first.get_or_insert((id, authority));
    }
    first.map(|(id, authority)| patient_key_of(&id, &authority))
}

/// PID-3 repetitions looked at for the patient key.
const MAX_PID3_REPETITIONS: usize = 20;

/// The hash of a patient identifier (PID-3.1) and its assigning authority (PID-3.4): what the
/// journal stores, and what `GET /api/transactions?patient=` compares against.
pub fn patient_key_of(id: &str, authority: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{id}\u{1f}{authority}").as_bytes(),
    );
    hex::encode(&digest.as_ref()[..8])
}

fn outcome(code: AckCode) -> &'static str {
    match code {
        AckCode::Accept => "accepted",
        AckCode::Error => "error",
        AckCode::Reject => "rejected",
    }
}

/// MSH-10 of an ACK: the journal's prefix (random, made once per journal, so that two engines
/// or a fresh data dir do not repeat ids), then the transaction id; 20 characters at most (the
/// v2.3 limit) for ids below 10^14. Not journaled (the journal failed): `X` and 13 random hex
/// digits after the prefix.
fn ack_control_id(prefix: &str, id: Option<TxId>) -> String {
    match id {
        Some(id) => format!("{prefix}{id}"),
        None => format!("{prefix}X{:013x}", rand::random::<u64>() >> 12),
    }
}

/// `YYYYMMDDHHMMSS+0000`, HL7's DTM in UTC.
pub fn hl7_timestamp() -> String {
    let format = format_description!("[year][month][day][hour][minute][second]+0000");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid3: &str) -> Option<String> {
        let text = format!("MSH|^~\\&|A|B|C|D|20261201||ADT^A08|1|P|2.5.1\rPID|1||{pid3}\r");
        patient_key(&Message::parse(text.as_bytes()).unwrap())
    }

    #[test]
    fn the_medical_record_number_keys_the_patient_whatever_its_place_in_pid_3() {
        let mrn = Some(patient_key_of("M1", "HOSP"));
        assert_eq!(key("M1^^^HOSP^MR~S9^^^SSA^SS"), mrn);
        assert_eq!(key("S9^^^SSA^SS~M1^^^HOSP^MR"), mrn);
        assert_eq!(key("~M1^^^HOSP^MR"), mrn);
        // Without an MR, the first identifier.
        assert_eq!(
            key("S9^^^SSA^SS~X1^^^H^PI"),
            Some(patient_key_of("S9", "SSA"))
        );
        assert_eq!(key("M1^^^HOSP"), mrn);
        assert_eq!(key(""), None);
    }
}
