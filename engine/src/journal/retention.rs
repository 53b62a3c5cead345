//! Retention: prunes old transactions from the journal, per channel, by age and status.
//!
//! Two horizons, as in OpenHIM and Mirth: message bodies (the raw message and the FHIR the steps
//! produced, i.e. the PHI) can go after `bodies_after_days` while the metadata and status events
//! stay (the transaction is marked `body_pruned`); whole transactions go after `max_age_days`.
//! Only transactions in one of `statuses` are touched, and never one in `received`,
//! `processing` or `queued` (work in flight), whatever the configuration says.
//!
//! A pass walks the journal's slots oldest first (ids follow arrival) in small batches; each batch is one command to
//! the journal writer, which checks the status again when it applies it, so pruning cannot race
//! the pipeline and ingest only waits for a batch at a time. The walk stops at the youngest
//! horizon of any policy, so a pass over a journal with nothing to prune reads little.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Journal, JournalError, Status, Transaction, TxId};

pub(crate) const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The global `[retention]` table of `orbiter.toml`: defaults for every channel, and the pace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Whole transactions older than this are deleted; 0 keeps them forever (the default:
    /// deleting is a decision for the site, not for us). Fractions are allowed (`0.5`: 12 h).
    pub max_age_days: f64,
    /// Bodies older than this are pruned, metadata kept; 0 never prunes bodies on age alone.
    pub bodies_after_days: f64,
    /// Statuses that may be pruned (`queued`, `processing` and `received` never are).
    #[serde(deserialize_with = "statuses")]
    pub statuses: Vec<Status>,
    /// Audit events (`GET /api/audit`) older than this are deleted; 0 keeps them forever (the
    /// default: audit trails often must be kept for years, e.g. six under HIPAA).
    pub audit_max_age_days: f64,
    /// Seconds between passes.
    pub interval_secs: u64,
    /// Transactions examined per journal command (one writer batch).
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age_days: 0.0,
            bodies_after_days: 0.0,
            statuses: vec![Status::Delivered, Status::Filtered],
            audit_max_age_days: 0.0,
            interval_secs: 60,
            batch: 500,
        }
    }
}

/// A channel's own `[retention]` table: any key left out takes the global value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRetention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_days: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies_after_days: Option<f64>,
    #[serde(
        default,
        deserialize_with = "some_statuses",
        skip_serializing_if = "Option::is_none"
    )]
    pub statuses: Option<Vec<Status>>,
}

/// Statuses as a TOML list or, from the environment (`ORBITER_RETENTION_STATUSES`), a
/// comma-separated string.
fn statuses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Status>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<Status>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::List(list) => Ok(list),
        Either::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Status>().map_err(serde::de::Error::custom))
            .collect(),
    }
}

fn some_statuses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Status>>, D::Error> {
    statuses(d).map(Some)
}

/// Why a retention setting is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetentionError {
    #[error("retention.statuses: `{0}` transactions are work in flight and are never pruned")]
    InFlightStatus(&'static str),
    #[error("retention.batch must be positive")]
    ZeroBatch,
    #[error("retention ages are days, 0 or more")]
    NegativeAge,
}

/// Statuses that are never pruned.
const IN_FLIGHT: [Status; 3] = [Status::Received, Status::Processing, Status::Queued];

pub fn validate_statuses(statuses: &[Status]) -> Result<(), RetentionError> {
    match statuses.iter().find(|s| IN_FLIGHT.contains(s)) {
        Some(s) => Err(RetentionError::InFlightStatus(s.as_str())),
        None => Ok(()),
    }
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<(), RetentionError> {
        if self.batch == 0 {
            return Err(RetentionError::ZeroBatch);
        }
        if !(self.max_age_days >= 0.0
            && self.bodies_after_days >= 0.0
            && self.audit_max_age_days >= 0.0)
        {
            return Err(RetentionError::NegativeAge);
        }
        validate_statuses(&self.statuses)
    }
}

/// What retention does to one transaction. Ordered from least to most destructive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneAction {
    /// Remove the raw message and step outputs; keep metadata and events.
    Body,
    /// Remove everything.
    Whole,
}

impl PruneAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PruneAction::Body => "body",
            PruneAction::Whole => "transaction",
        }
    }
}

/// One transaction to prune, if it is still in one of `statuses` when the writer gets to it.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub id: TxId,
    pub action: PruneAction,
    pub statuses: Vec<Status>,
}

/// What the writer pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    pub id: TxId,
    pub action: PruneAction,
    /// The channels it counted under (for the metrics).
    pub channels: Vec<String>,
}

/// One channel's effective rules, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub max_age_ms: Option<i64>,
    pub bodies_after_ms: Option<i64>,
    pub statuses: Vec<Status>,
}

impl Policy {
    fn new(max_age_days: f64, bodies_after_days: f64, statuses: Vec<Status>) -> Policy {
        let ms = |days: f64| (days > 0.0).then_some((days * DAY_MS as f64) as i64);
        Policy {
            max_age_ms: ms(max_age_days),
            bodies_after_ms: ms(bodies_after_days),
            statuses: statuses
                .into_iter()
                .filter(|s| !IN_FLIGHT.contains(s))
                .collect(),
        }
    }

    /// What this policy does to `tx` at `now_ms`.
    fn decide(&self, tx: &Transaction, now_ms: i64) -> Option<PruneAction> {
        if !self.statuses.contains(&tx.status) {
            return None;
        }
        let age = now_ms - tx.received_at_ms;
        if self.max_age_ms.is_some_and(|max| age > max) {
            return Some(PruneAction::Whole);
        }
        if !tx.body_pruned && self.bodies_after_ms.is_some_and(|after| age > after) {
            return Some(PruneAction::Body);
        }
        None
    }

    /// The youngest age at which this policy prunes anything.
    fn horizon_ms(&self) -> Option<i64> {
        match (self.max_age_ms, self.bodies_after_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The global policy and each channel's.
#[derive(Debug, Clone)]
pub struct Policies {
    pub default: Policy,
    pub per_channel: HashMap<String, Policy>,
}

impl Policies {
    /// The global `[retention]` with each channel's table laid over it.
    pub fn new<'a>(
        global: &RetentionConfig,
        channels: impl IntoIterator<Item = (&'a str, Option<&'a ChannelRetention>)>,
    ) -> Policies {
        let default = Policy::new(
            global.max_age_days,
            global.bodies_after_days,
            global.statuses.clone(),
        );
        let per_channel = channels
            .into_iter()
            .filter_map(|(name, own)| {
                let own = own?;
                let policy = Policy::new(
                    own.max_age_days.unwrap_or(global.max_age_days),
                    own.bodies_after_days.unwrap_or(global.bodies_after_days),
                    own.statuses.clone().unwrap_or(global.statuses.clone()),
                );
                Some((name.to_string(), policy))
            })
            .collect();
        Policies {
            default,
            per_channel,
        }
    }

    fn for_channel(&self, name: &str) -> &Policy {
        self.per_channel.get(name).unwrap_or(&self.default)
    }

    /// A transaction that several channels took is pruned only as far as every one of them
    /// allows (the least destructive action wins).
    pub fn decide(&self, tx: &Transaction, now_ms: i64) -> Option<(PruneAction, Vec<Status>)> {
        let mut decided: Option<(PruneAction, Vec<Status>)> = None;
        for name in tx.channel_names() {
            let policy = self.for_channel(name);
            let action = policy.decide(tx, now_ms)?;
            if decided.as_ref().is_none_or(|(a, _)| action < *a) {
                decided = Some((action, policy.statuses.clone()));
            }
        }
        decided
    }

    /// Nothing received after `now_ms - horizon` can be pruned by any policy.
    fn horizon_ms(&self) -> Option<i64> {
        std::iter::once(&self.default)
            .chain(self.per_channel.values())
            .filter_map(Policy::horizon_ms)
            .min()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    /// Transactions looked at.
    pub examined: usize,
    pub pruned: Vec<Pruned>,
}

impl PassReport {
    pub fn count(&self, action: PruneAction) -> usize {
        self.pruned.iter().filter(|p| p.action == action).count()
    }
}

/// Walks the journal oldest first; remembers where it stopped between batches.
pub struct Pruner {
    journal: Journal,
    batch: usize,
    /// The last transaction examined; `None` starts from the oldest.
    cursor: Option<TxId>,
}

impl Pruner {
    pub fn new(journal: Journal, batch: usize) -> Pruner {
        Pruner {
            journal,
            batch: batch.max(1),
            cursor: None,
        }
    }

    /// One batch: reads up to `batch` transactions from the cursor (on the blocking pool) and
    /// prunes what the policies say. Returns the report and whether the pass is complete (the
    /// cursor then starts over).
    pub async fn step(
        &mut self,
        policies: &Policies,
        now_ms: i64,
    ) -> Result<(PassReport, bool), JournalError> {
        let mut report = PassReport::default();
        let Some(horizon) = policies.horizon_ms() else {
            self.cursor = None;
            return Ok((report, true));
        };
        let (journal, cursor, batch) = (self.journal.clone(), self.cursor, self.batch);
        let policies = policies.clone();
        let plan = tokio::task::spawn_blocking(move || {
            plan(&journal, cursor, batch, &policies, horizon, now_ms)
        })
        .await
        .map_err(|_| JournalError::Closed)??;
        report.examined = plan.examined;
        if !plan.requests.is_empty() {
            report.pruned = self.journal.prune(plan.requests).await?;
        }
        self.cursor = if plan.done { None } else { plan.cursor };
        Ok((report, plan.done))
    }

    /// Batches until the pass is complete.
    pub async fn pass(
        &mut self,
        policies: &Policies,
        now_ms: i64,
    ) -> Result<PassReport, JournalError> {
        let mut total = PassReport::default();
        loop {
            let (report, done) = self.step(policies, now_ms).await?;
            total.examined += report.examined;
            total.pruned.extend(report.pruned);
            if done {
                return Ok(total);
            }
        }
    }
}

/// What one batch found to prune, and where it stopped.
struct Plan {
    requests: Vec<PruneRequest>,
    examined: usize,
    cursor: Option<TxId>,
    /// The walk reached the end of the journal or the youngest horizon.
    done: bool,
}

fn plan(
    journal: &Journal,
    mut cursor: Option<TxId>,
    batch: usize,
    policies: &Policies,
    horizon: i64,
    now_ms: i64,
) -> Result<Plan, JournalError> {
    let entries = journal.oldest(cursor, batch)?;
    let mut done = entries.len() < batch;
    let mut requests = Vec::new();
    let mut examined = 0;
    for (received_at_ms, id) in entries {
        if now_ms - received_at_ms <= horizon {
            done = true;
            break;
        }
        cursor = Some(id);
        examined += 1;
        let Some(tx) = journal.get(id)? else {
            continue;
        };
        if let Some((action, statuses)) = policies.decide(&tx, now_ms) {
            requests.push(PruneRequest {
                id,
                action,
                statuses,
            });
        }
    }
    Ok(Plan {
        requests,
        examined,
        cursor,
        done,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::config::JournalConfig;
    use crate::journal::{ChannelRun, MessageMeta, NewMessage, Step, StepKind, StepOutput};
    use crate::metrics::Metrics;

    fn open(dir: &std::path::Path) -> (Journal, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let journal = Journal::open(dir, &JournalConfig::default(), metrics.clone()).unwrap();
        (journal, metrics)
    }

    async fn add(journal: &Journal, channel: &str, status: Status) -> TxId {
        let id = journal
            .append(NewMessage {
                meta: MessageMeta {
                    listener: "test".into(),
                    control_id: Some(format!("C{}", rand::random::<u32>())),
                    ..MessageMeta::default()
                },
                channels: vec![ChannelRun {
                    name: channel.into(),
                    revision: "r1".into(),
                }],
                raw: Bytes::from_static(b"MSH|^~\\&|A|B"),
                status: Status::Received,
                error: None,
                truncated: false,
                origin_key: None,
            })
            .await
            .unwrap()
            .id;
        let step = Step {
            channel: channel.into(),
            revision: "r1".into(),
            kind: StepKind::Transform,
            at_ms: 0,
            ok: true,
            output: Some(StepOutput::of(
                &serde_json::json!({"resourceType": "Bundle"}),
            )),
            logs: vec!["name DOE".into()],
            error: None,
            destination: None,
        };
        let events = if status == Status::Received {
            vec![]
        } else {
            vec![(status, None)]
        };
        journal.record(id, vec![step], events).await.unwrap();
        id
    }

    fn config(max_age_days: f64, bodies_after_days: f64) -> RetentionConfig {
        RetentionConfig {
            max_age_days,
            bodies_after_days,
            ..RetentionConfig::default()
        }
    }

    fn days(n: i64) -> i64 {
        super::super::now_ms() + n * DAY_MS
    }

    #[tokio::test]
    async fn bodies_go_first_then_whole_transactions_and_in_flight_work_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, metrics) = open(dir.path());
        let delivered = add(&journal, "adt", Status::Delivered).await;
        let failed = add(&journal, "adt", Status::Failed).await;
        let queued = add(&journal, "adt", Status::Queued).await;
        let received = add(&journal, "adt", Status::Received).await;
        let policies = Policies::new(&config(30.0, 7.0), []);
        let mut pruner = Pruner::new(journal.clone(), 2);

        // Day 1: too young for anything.
        let report = pruner.pass(&policies, days(1)).await.unwrap();
        assert!(report.pruned.is_empty(), "{report:?}");
        assert!(journal.raw(delivered).unwrap().is_some());

        // Day 8: the delivered body goes, its metadata and the step's outcome stay.
        let report = pruner.pass(&policies, days(8)).await.unwrap();
        assert_eq!(report.count(PruneAction::Body), 1, "{report:?}");
        let tx = journal.get(delivered).unwrap().unwrap();
        assert!(tx.body_pruned);
        assert!(journal.raw(delivered).unwrap().is_none());
        let steps = journal.steps(delivered).unwrap();
        assert_eq!(steps.len(), 1);
        assert!(steps[0].ok && steps[0].output.is_none() && steps[0].logs.is_empty());
        // `failed` is not in the default statuses; in-flight work never is.
        for id in [failed, queued, received] {
            assert!(journal.raw(id).unwrap().is_some(), "{id}");
        }
        // A second pass the same day finds nothing more to do.
        assert!(pruner
            .pass(&policies, days(8))
            .await
            .unwrap()
            .pruned
            .is_empty());

        // Day 31: the delivered transaction goes entirely, with its indexes and counters.
        let report = pruner.pass(&policies, days(31)).await.unwrap();
        assert_eq!(report.count(PruneAction::Whole), 1, "{report:?}");
        assert!(journal.get(delivered).unwrap().is_none());
        assert!(journal.steps(delivered).unwrap().is_empty());
        assert_eq!(journal.count_with_status(Status::Delivered), 0);
        for id in [failed, queued, received] {
            assert!(journal.get(id).unwrap().is_some(), "{id}");
        }
        let stats = journal.stats().unwrap();
        let adt = stats.iter().find(|s| s.channel == "adt").unwrap();
        assert_eq!(adt.counts.get(&Status::Delivered), None);
        assert_eq!(adt.counts.get(&Status::Queued), Some(&1));
        assert_eq!(
            metrics
                .transactions_by_status
                .with_label_values(&["delivered"])
                .get(),
            0
        );
    }

    #[tokio::test]
    async fn channel_tables_override_the_global_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        let keep = add(&journal, "keep", Status::Delivered).await;
        let short = add(&journal, "short", Status::Failed).await;
        let default = add(&journal, "other", Status::Delivered).await;
        let short_rules = ChannelRetention {
            max_age_days: Some(2.0),
            bodies_after_days: None,
            statuses: Some(vec![Status::Failed]),
        };
        let keep_rules = ChannelRetention {
            max_age_days: Some(0.0),
            bodies_after_days: Some(0.0),
            statuses: None,
        };
        let policies = Policies::new(
            &config(10.0, 0.0),
            [("short", Some(&short_rules)), ("keep", Some(&keep_rules))],
        );
        let mut pruner = Pruner::new(journal.clone(), 100);
        pruner.pass(&policies, days(3)).await.unwrap();
        assert!(
            journal.get(short).unwrap().is_none(),
            "failed pruned on day 3"
        );
        assert!(journal.get(default).unwrap().is_some());
        pruner.pass(&policies, days(11)).await.unwrap();
        assert!(journal.get(default).unwrap().is_none(), "global 10 days");
        assert!(journal.get(keep).unwrap().is_some(), "0 keeps forever");
    }

    #[tokio::test]
    async fn the_writer_rechecks_the_status_before_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = open(dir.path());
        let id = add(&journal, "adt", Status::Delivered).await;
        // Decided while delivered; a rerun put it back in flight before the writer got to it.
        journal
            .set_status(id, Status::Processing, None)
            .await
            .unwrap();
        let pruned = journal
            .prune(vec![PruneRequest {
                id,
                action: PruneAction::Whole,
                statuses: vec![Status::Delivered, Status::Processing],
            }])
            .await
            .unwrap();
        assert!(pruned.is_empty());
        assert!(journal.get(id).unwrap().is_some());
    }

    #[test]
    fn in_flight_statuses_are_refused_in_config() {
        let mut c = RetentionConfig::default();
        assert!(c.validate().is_ok());
        c.statuses.push(Status::Queued);
        assert_eq!(c.validate(), Err(RetentionError::InFlightStatus("queued")));
        let parsed: RetentionConfig =
            serde_json::from_value(serde_json::json!({"statuses": "delivered, failed"})).unwrap();
        assert_eq!(parsed.statuses, vec![Status::Delivered, Status::Failed]);
    }
}
