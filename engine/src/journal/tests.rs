use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::JournalConfig;

fn open(dir: &std::path::Path) -> (Journal, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let journal = Journal::open(dir, &JournalConfig::default(), metrics.clone()).unwrap();
    (journal, metrics)
}

fn message(control_id: &str, app: &str) -> NewMessage {
    NewMessage {
        meta: MessageMeta {
            listener: "test".into(),
            control_id: Some(control_id.into()),
            sending_application: Some(app.into()),
            message_type: Some("ADT^A01".into()),
            ..MessageMeta::default()
        },
        channels: Vec::new(),
        raw: Bytes::from(format!("MSH|^~\\&|{app}|||||ADT^A01|{control_id}|P|2.5.1")),
        status: Status::Received,
        error: None,
        truncated: false,
        origin_key: None,
    }
}

fn count(metrics: &Metrics, status: Status) -> i64 {
    metrics
        .transactions_by_status
        .with_label_values(&[status.as_str()])
        .get()
}

#[tokio::test]
async fn append_then_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, metrics) = open(dir.path());
    let m = message("C1", "LAB");
    let raw = m.raw.clone();
    let a = journal.append(m).await.unwrap();
    let b = journal.append(message("C2", "LAB")).await.unwrap();
    assert!(b.id > a.id, "ids grow with arrival");
    let tx = journal.get(a.id).unwrap().unwrap();
    assert_eq!(tx.meta.control_id.as_deref(), Some("C1"));
    assert_eq!(tx.status, Status::Received);
    assert_eq!(tx.events.len(), 1);
    assert_eq!(tx.size, raw.len());
    assert_eq!(journal.raw(a.id).unwrap().unwrap(), raw.to_vec());
    assert_eq!(count(&metrics, Status::Received), 2);
}

#[tokio::test]
async fn duplicates_are_flagged_per_sender_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, metrics) = open(dir.path());
    let first = journal.append(message("DUP", "LAB")).await.unwrap();
    assert_eq!(first.duplicate_of, None);
    // Same control id from another sender: not a duplicate.
    let other = journal.append(message("DUP", "RIS")).await.unwrap();
    assert_eq!(other.duplicate_of, None);
    // Two at once (likely one batch) and one later: all point at the first.
    let (x, y) = tokio::join!(
        journal.append(message("DUP", "LAB")),
        journal.append(message("DUP", "LAB"))
    );
    assert_eq!(x.unwrap().duplicate_of, Some(first.id));
    assert_eq!(y.unwrap().duplicate_of, Some(first.id));
    let tx = journal.get(other.id).unwrap().unwrap();
    assert_eq!(tx.duplicate_of, None);
    // Kept, not dropped.
    assert_eq!(count(&metrics, Status::Received), 4);
}

#[tokio::test]
async fn status_changes_are_events_and_move_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, metrics) = open(dir.path());
    let a = journal.append(message("S1", "LAB")).await.unwrap();
    journal
        .set_status(a.id, Status::Processing, None)
        .await
        .unwrap();
    journal
        .set_status(a.id, Status::Failed, Some("script error".into()))
        .await
        .unwrap();
    let tx = journal.get(a.id).unwrap().unwrap();
    assert_eq!(tx.status, Status::Failed);
    assert_eq!(tx.error.as_deref(), Some("script error"));
    let statuses: Vec<Status> = tx.events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        vec![Status::Received, Status::Processing, Status::Failed]
    );
    let by_status = |status| {
        journal
            .list(&TxFilter {
                status: Some(status),
                limit: 10,
                ..TxFilter::default()
            })
            .unwrap()
            .items
            .len()
    };
    assert_eq!(by_status(Status::Failed), 1);
    assert_eq!(by_status(Status::Received), 0);
    assert_eq!(count(&metrics, Status::Failed), 1);
    assert_eq!(count(&metrics, Status::Received), 0);
    let missing = journal
        .set_status(TxId(999_999), Status::Failed, None)
        .await;
    assert!(matches!(missing, Err(JournalError::NotFound(_))));
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let mut ids = Vec::new();
    for n in 0..25 {
        ids.push(
            journal
                .append(message(&format!("P{n}"), "LAB"))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = journal
            .list(&TxFilter {
                limit: 10,
                before: cursor,
                ..TxFilter::default()
            })
            .unwrap();
        seen.extend(page.items.iter().map(|t| t.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every transaction once, newest first");

    let by_control = journal
        .list(&TxFilter {
            control_id: Some("P7".into()),
            limit: 10,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(by_control.items.len(), 1);
    assert_eq!(by_control.items[0].meta.control_id.as_deref(), Some("P7"));

    let now = record::now_ms();
    let future = journal
        .list(&TxFilter {
            since_ms: Some(now + 60_000),
            limit: 10,
            ..TxFilter::default()
        })
        .unwrap();
    assert!(future.items.is_empty());
    let past = journal
        .list(&TxFilter {
            since_ms: Some(now - 60_000),
            until_ms: Some(now + 60_000),
            limit: 100,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(past.items.len(), 25);
}

#[tokio::test]
async fn survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (journal, _) = open(dir.path());
        let id = journal.append(message("R1", "LAB")).await.unwrap().id;
        journal.close();
        id
    };
    let (journal, metrics) = open(dir.path());
    assert_eq!(
        journal.get(id).unwrap().unwrap().meta.control_id.as_deref(),
        Some("R1")
    );
    assert_eq!(
        count(&metrics, Status::Received),
        1,
        "counts rebuilt on open"
    );
    let next = journal.append(message("R2", "LAB")).await.unwrap();
    assert!(next.id > id, "ids keep growing after a restart");
    let dup = journal.append(message("R1", "LAB")).await.unwrap();
    assert_eq!(
        dup.duplicate_of,
        Some(id),
        "duplicates found across restarts"
    );
}

/// An outcome recorded without waiting for its fsync is readable as soon as the call returns,
/// and on disk once the group commit (here: the close) has run.
#[tokio::test]
async fn an_outcome_recorded_applied_is_readable_at_once_and_durable_after() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let (journal, _) = open(dir.path());
        let id = journal.append(message("O1", "LAB")).await.unwrap().id;
        journal
            .record_applied(
                id,
                Vec::new(),
                vec![(Status::Processing, None), (Status::Delivered, None)],
            )
            .await
            .unwrap();
        assert_eq!(journal.get(id).unwrap().unwrap().status, Status::Delivered);
        journal.close();
        id
    };
    let (journal, metrics) = open(dir.path());
    let tx = journal.get(id).unwrap().unwrap();
    assert_eq!(tx.status, Status::Delivered);
    assert_eq!(tx.events.len(), 3, "received, processing, delivered");
    assert_eq!(count(&metrics, Status::Delivered), 1);
}

/// Outcomes nobody waits on the disk for get no fsync of their own: the next fsync covers
/// them, here the one the writer asks for once it has been idle for `SYNC_HELD_WITHIN`. (Each used to
/// cost one: at 5,000 msg/s that was three fsyncs for every four messages.)
#[tokio::test]
async fn outcomes_recorded_applied_share_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, metrics) = open(dir.path());
    let fsyncs = || metrics.journal_flush_seconds.get_sample_count();
    let id = journal.append(message("D1", "LAB")).await.unwrap().id;
    let before = fsyncs();
    const RECORDS: u64 = 10;
    for n in 0..RECORDS {
        journal
            .record_applied(id, vec![step("adt", serde_json::json!(n))], Vec::new())
            .await
            .unwrap();
        // Idle between records, as a quiet channel is: each found the flusher waiting.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let taken = fsyncs() - before;
    assert!(
        (1..=RECORDS / 2).contains(&taken),
        "{taken} fsyncs for {RECORDS} outcomes recorded applied"
    );
    journal.close();
}

/// `record_then`: nobody waits, and the callback runs once the record is readable (the
/// pipeline observes its processing time there); a closed journal calls it with the error.
#[tokio::test]
async fn a_record_handed_off_calls_back_once_it_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let id = journal.append(message("H1", "LAB")).await.unwrap().id;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = journal.clone();
    journal.record_then(
        id,
        vec![step("adt", serde_json::json!({"resourceType": "Bundle"}))],
        vec![(Status::Processing, None), (Status::Delivered, None)],
        move |recorded| {
            // On the writer thread, after the apply: what a reader sees now.
            let seen = reader.get(id).unwrap().unwrap().status;
            let _ = tx.send((recorded.is_ok(), seen));
        },
    );
    assert_eq!(rx.await.unwrap(), (true, Status::Delivered));
    assert_eq!(journal.steps(id).unwrap().len(), 1);
    journal.close();
    let (tx, rx) = tokio::sync::oneshot::channel();
    journal.record_then(id, Vec::new(), Vec::new(), move |recorded| {
        let _ = tx.send(recorded);
    });
    assert!(matches!(rx.await.unwrap(), Err(JournalError::Closed)));
}

/// Retention's body prune of a delivered transaction.
async fn prune_body(journal: &Journal, id: TxId) {
    use super::retention::{PruneAction, PruneRequest};
    journal
        .prune(vec![PruneRequest {
            id,
            action: PruneAction::Body,
            statuses: vec![Status::Delivered],
        }])
        .await
        .unwrap();
}

/// The writer keeps the records it wrote last and records outcomes on them without reading
/// them back: every change (an outcome, a prune, a reopen) must be seen by the next one.
#[tokio::test]
async fn records_changed_one_after_another_keep_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let id = journal.append(message("K1", "LAB")).await.unwrap().id;
    journal
        .record_applied(
            id,
            vec![step("adt", serde_json::json!(1))],
            vec![(Status::Delivered, None)],
        )
        .await
        .unwrap();
    prune_body(&journal, id).await;
    journal
        .set_status(id, Status::Failed, Some("later".into()))
        .await
        .unwrap();
    let check = |tx: Transaction| {
        assert!(tx.body_pruned, "the prune is kept");
        assert_eq!(tx.status, Status::Failed);
        assert_eq!(tx.events.len(), 3, "received, delivered, failed");
        assert_eq!(tx.step_count, Some(1));
    };
    check(journal.get(id).unwrap().unwrap());
    journal.close();
    drop(journal);
    let (journal, _) = open(dir.path());
    check(journal.get(id).unwrap().unwrap());
}

#[tokio::test]
async fn a_closed_journal_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    journal.close();
    assert!(!journal.is_open());
    assert!(matches!(
        journal.append(message("X", "LAB")).await,
        Err(JournalError::Closed)
    ));
}

#[tokio::test]
async fn an_origin_key_is_journaled_once_within_and_across_batches_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = |control: &str, key: &str| NewMessage {
        origin_key: Some(key.to_string()),
        ..message(control, "LAB")
    };
    let first_id;
    {
        let (journal, _) = open(dir.path());
        // Same key twice in what is likely one batch, and a different key.
        let (a, b, c) = tokio::join!(
            journal.append(keyed("K1", "file-a#1")),
            journal.append(keyed("K2", "file-a#1")),
            journal.append(keyed("K3", "file-a#2")),
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert!(!a.already);
        assert!(b.already, "second append of the same key is known");
        assert_eq!(b.id, a.id);
        assert!(!c.already);
        assert_ne!(c.id, a.id);
        first_id = a.id;
        journal.close();
    }
    let (journal, _) = open(dir.path());
    let again = journal.append(keyed("K4", "file-a#1")).await.unwrap();
    assert!(again.already, "the key survives a restart");
    assert_eq!(again.id, first_id);
    let page = journal
        .list(&crate::journal::TxFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.items.len(), 2, "only two transactions were written");
}

fn routed(control_id: &str, channels: &[&str]) -> NewMessage {
    let mut m = message(control_id, "LAB");
    m.channels = channels
        .iter()
        .map(|name| ChannelRun {
            name: name.to_string(),
            revision: "r1".into(),
        })
        .collect();
    m
}

fn counts(journal: &Journal, channel: &str) -> Vec<(Status, i64)> {
    journal
        .stats()
        .unwrap()
        .into_iter()
        .find(|s| s.channel == channel)
        .map(|s| s.counts.into_iter().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn stats_follow_status_changes_per_channel_and_are_rebuilt_for_old_journals() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let a = journal
        .append(routed("S1", &["adt", "copy"]))
        .await
        .unwrap();
    let b = journal.append(routed("S2", &["adt"])).await.unwrap();
    journal.append(routed("S3", &[])).await.unwrap();
    journal
        .set_status(a.id, Status::Delivered, None)
        .await
        .unwrap();
    journal
        .set_status(b.id, Status::Failed, None)
        .await
        .unwrap();
    assert_eq!(
        counts(&journal, "adt"),
        vec![(Status::Delivered, 1), (Status::Failed, 1)]
    );
    assert_eq!(counts(&journal, "copy"), vec![(Status::Delivered, 1)]);
    assert_eq!(counts(&journal, ""), vec![(Status::Received, 1)]);
    let before = journal.stats().unwrap();
    journal.close();
    drop(journal);
    {
        // A journal from before the counters existed: rebuilt from the records at open.
        let db =
            crate::sled_db::open(&sled::Config::new().path(dir.path().join("journal"))).unwrap();
        db.open_tree("stats").unwrap().clear().unwrap();
        db.flush().unwrap();
    }
    let (journal, _) = open(dir.path());
    assert_eq!(journal.stats().unwrap(), before);
}

#[tokio::test]
async fn a_rerun_is_a_new_transaction_linked_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let original = journal.append(routed("R1", &["adt"])).await.unwrap().id;
    journal
        .set_status(original, Status::Failed, Some("boom".into()))
        .await
        .unwrap();
    let runs = vec![ChannelRun {
        name: "adt".into(),
        revision: "r2".into(),
    }];
    let rerun = journal.append_rerun(original, runs).await.unwrap();
    assert_ne!(rerun.id, original);
    assert_eq!(rerun.duplicate_of, None, "a rerun is a copy on purpose");
    let copy = journal.get(rerun.id).unwrap().unwrap();
    assert_eq!(copy.rerun_of, Some(original));
    assert_eq!(copy.status, Status::Received);
    assert_eq!(copy.channels[0].revision, "r2");
    assert_eq!(
        journal.raw(rerun.id).unwrap(),
        journal.raw(original).unwrap()
    );
    let old = journal.get(original).unwrap().unwrap();
    assert_eq!(old.status, Status::Failed);
    let last = old.events.last().unwrap();
    assert_eq!(
        last.reason.as_deref(),
        Some(format!("rerun as transaction {}", rerun.id).as_str())
    );
    // Both are found by control id, newest first.
    let page = journal
        .list(&TxFilter {
            control_id: Some("R1".into()),
            limit: 10,
            ..TxFilter::default()
        })
        .unwrap();
    let ids: Vec<TxId> = page.items.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![rerun.id, original]);
    assert!(journal.append_rerun(TxId(999_999), vec![]).await.is_err());
}

#[tokio::test]
async fn search_by_channel_type_patient_and_text_within_a_scan_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let mut with_patient = routed("P1", &["adt"]);
    with_patient.meta.patient_key = Some("k1".into());
    journal.append(with_patient).await.unwrap();
    let mut lab = routed("P2", &["lab"]);
    lab.meta.message_type = Some("ORU^R01".into());
    lab.raw = Bytes::from_static(b"MSH|^~\\&|LAB|||||ORU^R01|P2|P|2.5.1\rOBX|1|TX|||Needle");
    journal.append(lab).await.unwrap();
    let find = |filter: TxFilter| {
        let page = journal
            .list(&TxFilter {
                limit: 10,
                ..filter
            })
            .unwrap();
        page.items
            .iter()
            .map(|t| t.meta.control_id.clone().unwrap())
            .collect::<Vec<_>>()
    };
    let by = |f: fn(&mut TxFilter)| {
        let mut filter = TxFilter::default();
        f(&mut filter);
        filter
    };
    assert_eq!(find(by(|f| f.channel = Some("lab".into()))), ["P2"]);
    assert_eq!(find(by(|f| f.message_type = Some("ADT^*".into()))), ["P1"]);
    assert_eq!(
        find(by(|f| f.message_type = Some("ORU^R01".into()))),
        ["P2"]
    );
    assert_eq!(find(by(|f| f.patient_key = Some("k1".into()))), ["P1"]);
    assert_eq!(find(by(|f| f.text = Some("needle".into()))), ["P2"]);
    assert!(find(by(|f| f.text = Some("haystack".into()))).is_empty());
    let page = journal
        .list(&TxFilter {
            text: Some("MSH".into()),
            limit: 10,
            scan_limit: 1,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!((page.items.len(), page.scanned), (1, 1));
    assert!(page.scan_limit_reached);
    assert_eq!(page.next_cursor, Some(page.items[0].id));
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("journal/values"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Not the next segment, prepared in advance.
        .filter(|name| name.ends_with(".vlog"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_value_segment_is_deleted_once_nothing_refers_to_it() {
    use super::retention::{PruneAction, PruneRequest};
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let a = journal.append(routed("V1", &["adt"])).await.unwrap().id;
    let b = journal.append(routed("V2", &["adt"])).await.unwrap().id;
    journal.close();
    drop(journal);
    // A restart starts segment 2; segment 1 holds both bodies and first records.
    let (journal, _) = open(dir.path());
    assert_eq!(segment_files(dir.path()).len(), 2);
    for id in [a, b] {
        journal
            .set_status(id, Status::Delivered, None)
            .await
            .unwrap();
    }
    let prune = |id, action| PruneRequest {
        id,
        action,
        statuses: vec![Status::Delivered],
    };
    // Only a's body goes: b's body keeps segment 1.
    journal
        .prune(vec![prune(a, PruneAction::Whole)])
        .await
        .unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert!(journal.get(a).unwrap().is_none());
    assert_eq!(
        journal.raw(b).unwrap().unwrap().len(),
        journal.get(b).unwrap().unwrap().size
    );
    journal
        .prune(vec![prune(b, PruneAction::Body)])
        .await
        .unwrap();
    // Deleted at the next checkpoint (the writer makes one when idle).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment_files(dir.path()).len() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        segment_files(dir.path()),
        vec!["0000000002.vlog".to_string()]
    );
    assert!(journal.raw(b).unwrap().is_none());
    assert_eq!(journal.get(b).unwrap().unwrap().status, Status::Delivered);
    journal.close();
    drop(journal);
    // Reopened: segment 2 still holds b's record, the new segment 3 is empty.
    let (journal, _) = open(dir.path());
    assert!(journal.get(b).unwrap().unwrap().body_pruned);
    assert_eq!(segment_files(dir.path()).len(), 2);
}

/// A delivered transaction's record as journals of an older layout hold it.
fn delivered_record(id: TxId, control_id: &str, received_at_ms: i64, size: usize) -> Transaction {
    Transaction {
        id,
        received_at_ms,
        meta: MessageMeta {
            control_id: Some(control_id.into()),
            ..MessageMeta::default()
        },
        size,
        truncated: false,
        status: Status::Delivered,
        error: None,
        duplicate_of: None,
        channels: Vec::new(),
        events: Vec::new(),
        rerun_of: None,
        body_pruned: false,
        origin_key: None,
        step_count: None,
    }
}

/// Writes a journal in the layout from before the value log (JSON and bytes inline in sled):
/// one record, its body and its steps.
fn write_old_layout(dir: &std::path::Path, tx: &Transaction, raw: &[u8], steps: &[Step]) {
    let db = crate::sled_db::open(&sled::Config::new().path(dir.join("journal"))).unwrap();
    let key = tx.id.to_key();
    db.open_tree("tx")
        .unwrap()
        .insert(key, serde_json::to_vec(tx).unwrap())
        .unwrap();
    db.open_tree("raw").unwrap().insert(key, raw).unwrap();
    if !steps.is_empty() {
        let tree = db.open_tree("steps").unwrap();
        for (n, step) in steps.iter().enumerate() {
            let mut step_key = key.to_vec();
            step_key.extend_from_slice(&(n as u32).to_be_bytes());
            tree.insert(step_key, serde_json::to_vec(step).unwrap())
                .unwrap();
        }
    }
    db.flush().unwrap();
}

#[tokio::test]
async fn a_journal_with_inline_values_is_moved_into_the_value_log_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let raw = b"MSH|^~\\&|OLD|||||ADT^A01|OLD1|P|2.5.1".to_vec();
    let tx = delivered_record(TxId(7), "OLD1", 1_700_000_000_000, raw.len());
    write_old_layout(dir.path(), &tx, &raw, &[]);
    let (journal, _) = open(dir.path());
    assert_eq!(journal.get(TxId(7)).unwrap().unwrap(), tx);
    assert_eq!(journal.raw(TxId(7)).unwrap().unwrap(), raw);
    assert!(!journal.trees().db.tree_names().iter().any(|n| [
        &b"tx"[..],
        b"raw",
        b"tx_ptr",
        b"raw_ptr"
    ]
    .contains(&n.as_ref())));
    journal.close();
    drop(journal);
    // Twice opened: still there (now from the log), not migrated again.
    let (journal, _) = open(dir.path());
    assert_eq!(journal.raw(TxId(7)).unwrap().unwrap(), raw);
}

fn step(channel: &str, output: serde_json::Value) -> Step {
    Step {
        channel: channel.into(),
        revision: "r1".into(),
        kind: StepKind::Transform,
        at_ms: 1,
        ok: true,
        output: Some(StepOutput::of(&output)),
        logs: vec!["a log line".into()],
        error: None,
        destination: None,
    }
}

/// Steps are keyed by the transaction and a sequence number that the record keeps
/// (`step_count`); a record written before it was kept has its stored steps counted instead.
#[tokio::test]
async fn steps_recorded_later_follow_the_earlier_ones_in_old_and_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let raw = b"MSH|^~\\&|OLD|||||ADT^A01|OLD2|P|2.5.1".to_vec();
    let old = delivered_record(TxId(7), "OLD2", 1_700_000_000_000, raw.len());
    // Two steps stored, and no step count.
    let steps: Vec<Step> = (0..2)
        .map(|n| step(&format!("old{n}"), serde_json::json!(n)))
        .collect();
    write_old_layout(dir.path(), &old, &raw, &steps);
    let (journal, _) = open(dir.path());
    let new = journal.append(routed("N1", &["adt"])).await.unwrap().id;
    for (id, name) in [(TxId(7), "again"), (new, "first"), (new, "second")] {
        journal
            .record(id, vec![step(name, serde_json::json!(name))], Vec::new())
            .await
            .unwrap();
    }
    let names = |id| -> Vec<String> {
        journal
            .steps(id)
            .unwrap()
            .into_iter()
            .map(|s| s.channel)
            .collect()
    };
    assert_eq!(names(TxId(7)), ["old0", "old1", "again"]);
    assert_eq!(names(new), ["first", "second"]);
    assert_eq!(journal.get(TxId(7)).unwrap().unwrap().step_count, Some(3));
    assert_eq!(journal.get(new).unwrap().unwrap().step_count, Some(2));
    journal.close();
    drop(journal);
    // After a reopen, the count read back from the record carries on.
    let (journal, _) = open(dir.path());
    journal
        .record(new, vec![step("third", serde_json::json!(3))], Vec::new())
        .await
        .unwrap();
    let names: Vec<String> = journal
        .steps(new)
        .unwrap()
        .into_iter()
        .map(|s| s.channel)
        .collect();
    assert_eq!(names, ["first", "second", "third"]);
}

/// Everything a reader can see of the journal, for before/after comparisons.
type Snapshot = Vec<(Transaction, Option<Vec<u8>>, Vec<Step>)>;

fn snapshot(journal: &Journal) -> Snapshot {
    try_snapshot(journal).unwrap()
}

fn try_snapshot(journal: &Journal) -> Result<Snapshot, JournalError> {
    let page = journal.list(&TxFilter {
        limit: 1000,
        ..TxFilter::default()
    })?;
    page.items
        .into_iter()
        .map(|tx| {
            let raw = journal.raw(tx.id)?;
            let steps = journal.steps(tx.id)?;
            Ok((tx, raw, steps))
        })
        .collect()
}

#[tokio::test]
async fn what_sled_lost_after_the_checkpoint_is_replayed_from_the_value_log() {
    use super::retention::{PruneAction, PruneRequest};
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let a = journal.append(routed("W1", &["adt"])).await.unwrap().id;
    let b = journal
        .append(routed("W2", &["adt", "copy"]))
        .await
        .unwrap()
        .id;
    let c = journal.append(routed("W3", &["adt"])).await.unwrap().id;
    let mut doc = message("", "FILES");
    doc.meta.control_id = None;
    doc.origin_key = Some("inbox/a.csv#2".into());
    let d = journal.append(doc).await.unwrap().id;
    journal
        .record(
            a,
            vec![step("adt", serde_json::json!({"resourceType": "Bundle"}))],
            vec![(Status::Delivered, None)],
        )
        .await
        .unwrap();
    journal
        .set_status(b, Status::Failed, Some("no route".into()))
        .await
        .unwrap();
    journal
        .set_status(c, Status::Delivered, None)
        .await
        .unwrap();
    journal
        .prune(vec![PruneRequest {
            id: c,
            action: PruneAction::Whole,
            statuses: vec![Status::Delivered],
        }])
        .await
        .unwrap();
    let before = snapshot(&journal);
    let stats = journal.stats().unwrap();
    assert_eq!(before.len(), 3);
    journal.close();
    drop(journal);
    {
        // A crash before any checkpoint: neither sled nor the slots have any of it.
        std::fs::remove_file(dir.path().join("journal/slots")).unwrap();
        let db =
            crate::sled_db::open(&sled::Config::new().path(dir.path().join("journal"))).unwrap();
        for name in ["step_ptr", "by_control", "by_origin", "stats", "segments"] {
            db.open_tree(name).unwrap().clear().unwrap();
        }
        db.flush().unwrap();
    }
    let (journal, metrics) = open(dir.path());
    assert_eq!(snapshot(&journal), before);
    assert_eq!(journal.stats().unwrap(), stats);
    assert_eq!(count(&metrics, Status::Failed), 1);
    assert_eq!(count(&metrics, Status::Received), 1);
    assert_eq!(
        journal.ids_with_status(Status::Delivered, 10).unwrap(),
        vec![a]
    );
    // The pruned one stays pruned; the indexes point where they did.
    assert!(journal.get(c).unwrap().is_none());
    let by_control = journal
        .list(&TxFilter {
            control_id: Some("W2".into()),
            limit: 10,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(by_control.items.len(), 1);
    assert_eq!(by_control.items[0].id, b);
    // The origin key still makes a second copy of the document part a no-op.
    let mut again = message("", "FILES");
    again.meta.control_id = None;
    again.origin_key = Some("inbox/a.csv#2".into());
    let appended = journal.append(again).await.unwrap();
    assert!(appended.already);
    assert_eq!(appended.id, d);
    journal.close();
    drop(journal);
    // Replayed once: a clean reopen replays nothing and changes nothing.
    let (journal, _) = open(dir.path());
    assert_eq!(snapshot(&journal), before);
}

#[tokio::test]
async fn compaction_moves_what_is_still_referenced_and_frees_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let a = journal.append(routed("C1", &["adt"])).await.unwrap().id;
    let b = journal.append(routed("C2", &["adt"])).await.unwrap().id;
    // c stays as it is: it alone keeps segment 1 referenced.
    let c = journal.append(routed("C3", &["adt"])).await.unwrap().id;
    let c_raw = journal.raw(c).unwrap().unwrap();
    journal.close();
    drop(journal);
    let (journal, _) = open(dir.path());
    // Nothing is worth compacting yet: segment 1 is all live.
    assert_eq!(journal.compact().await.unwrap(), None);
    for id in [a, b] {
        journal
            .set_status(id, Status::Delivered, None)
            .await
            .unwrap();
        prune_body(&journal, id).await;
    }
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(journal.compact().await.unwrap(), Some(1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment_files(dir.path()).contains(&"0000000001.vlog".to_string())
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        segment_files(dir.path()),
        vec!["0000000002.vlog".to_string()]
    );
    let tx = journal.get(c).unwrap().unwrap();
    assert_eq!(tx.status, Status::Received);
    assert_eq!(journal.raw(c).unwrap().unwrap(), c_raw);
    journal.close();
    drop(journal);
    let (journal, _) = open(dir.path());
    assert_eq!(journal.raw(c).unwrap().unwrap(), c_raw);
    assert!(journal.get(a).unwrap().unwrap().body_pruned);
}

#[tokio::test]
async fn a_journal_with_pointer_trees_moves_them_into_the_slots_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let raw = b"MSH|^~\\&|PTR|||||ADT^A01|PTR1|P|2.5.1".to_vec();
    // sled's generate_id left gaps of up to a million ids at each restart.
    let id = TxId(3_000_005);
    let tx = delivered_record(id, "PTR1", 1_760_000_000_000, raw.len());
    {
        // The layout of the first value-log journals: pointers in `tx_ptr` and `raw_ptr`, a
        // `by_time` index, every status in `by_status`.
        let db = crate::sled_db::open(&sled::Config::new().path(&path)).unwrap();
        let (_, mut appender) = ValueLog::open(&path.join("values")).unwrap();
        let record = appender
            .push(Kind::Tx, &id.to_key(), &serde_json::to_vec(&tx).unwrap())
            .unwrap();
        let body = appender.push(Kind::Raw, &id.to_key(), &raw).unwrap();
        appender.write_out().unwrap();
        db.open_tree("tx_ptr")
            .unwrap()
            .insert(id.to_key(), &record.to_bytes())
            .unwrap();
        db.open_tree("raw_ptr")
            .unwrap()
            .insert(id.to_key(), &body.to_bytes())
            .unwrap();
        db.open_tree("by_time")
            .unwrap()
            .insert(b"some time key", &[])
            .unwrap();
        db.open_tree("by_status")
            .unwrap()
            .insert(
                [Status::Delivered.code(), 0, 0, 0, 0, 0, 0x2d, 0xc6, 0xc5],
                &[],
            )
            .unwrap();
        db.open_tree("segments")
            .unwrap()
            .insert(
                super::replay::CHECKPOINT_KEY,
                &super::values::position_bytes(appender.position()),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let (journal, metrics) = open(dir.path());
    assert_eq!(journal.get(id).unwrap().unwrap(), tx);
    assert_eq!(journal.raw(id).unwrap().unwrap(), raw);
    assert_eq!(count(&metrics, Status::Delivered), 1);
    assert_eq!(
        journal.ids_with_status(Status::Delivered, 10).unwrap(),
        vec![id]
    );
    assert!(!journal.trees().db.tree_names().iter().any(|n| [
        &b"tx_ptr"[..],
        b"raw_ptr",
        b"by_time",
        b"by_status"
    ]
    .contains(&n.as_ref())));
    // New ids continue after the highest one.
    let next = journal.append(message("NEW1", "APP")).await.unwrap().id;
    assert_eq!(next, TxId(id.0 + 1));
    let page = journal
        .list(&TxFilter {
            limit: 10,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(
        page.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![next, id]
    );
    journal.close();
    drop(journal);
    let (journal, _) = open(dir.path());
    assert_eq!(journal.raw(id).unwrap().unwrap(), raw);
    assert_eq!(journal.get(next).unwrap().unwrap().id, next);
}

#[tokio::test]
async fn listings_by_time_and_finished_status_walk_the_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let mut ids = Vec::new();
    for n in 0..30 {
        let id = journal
            .append(routed(&format!("L{n}"), &["adt"]))
            .await
            .unwrap()
            .id;
        if n % 3 == 0 {
            journal.set_status(id, Status::Failed, None).await.unwrap();
        }
        ids.push(id);
    }
    let failed: Vec<TxId> = ids.iter().copied().step_by(3).rev().collect();
    let page = journal
        .list(&TxFilter {
            status: Some(Status::Failed),
            limit: 4,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(
        page.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        failed[..4]
    );
    let rest = journal
        .list(&TxFilter {
            status: Some(Status::Failed),
            before: page.next_cursor,
            limit: 100,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        failed[4..]
    );
    assert_eq!(journal.count_with_status(Status::Failed), 10);
    assert_eq!(journal.count_with_status(Status::Received), 20);
    // What start-up resumes: what was unfinished when the journal opened, oldest first.
    assert!(journal.take_in_flight_at_open().is_empty(), "opened empty");
    journal.close();
    drop(journal);
    let (journal, _) = open(dir.path());
    let unfinished: Vec<TxId> = ids
        .iter()
        .copied()
        .filter(|id| !failed.contains(id))
        .collect();
    assert_eq!(
        journal.take_in_flight_at_open(),
        unfinished
            .iter()
            .map(|id| (*id, Status::Received))
            .collect::<Vec<_>>()
    );
    assert!(journal.take_in_flight_at_open().is_empty(), "taken once");
    // A time window: everything was received now, nothing an hour ago.
    let now = now_ms();
    let all = journal
        .list(&TxFilter {
            since_ms: Some(now - 60_000),
            limit: 100,
            ..TxFilter::default()
        })
        .unwrap();
    assert_eq!(all.items.len(), 30);
    let none = journal
        .list(&TxFilter {
            until_ms: Some(now - 3_600_000),
            limit: 100,
            ..TxFilter::default()
        })
        .unwrap();
    assert!(none.items.is_empty());
    // Retention walks arrival order.
    let oldest = journal.oldest(None, 5).unwrap();
    assert_eq!(
        oldest.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        ids[..5]
    );
    let after = journal.oldest(Some(ids[4]), 2).unwrap();
    assert_eq!(
        after.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        ids[5..7]
    );
    journal.append(message("LATE", "APP")).await.unwrap();
    assert!(
        journal.take_in_flight_at_open().is_empty(),
        "a message received after open is not start-up's work"
    );
}

/// A power cut right after a batch was applied, before the flusher's fsync: the kernel may have
/// written the slots (and sled's pages) back while the value log lost the batch's records. At
/// the next open, an acknowledged message is back at its last record on disk (and resumed from
/// there), and a message that was never acknowledged is gone, its dedup key included, so the
/// sender's resend is taken.
#[tokio::test]
async fn records_lost_in_a_power_cut_roll_back_at_open_and_the_resend_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let acked = journal.append(message("C1", "LAB")).await.unwrap().id;
    let steps = vec![step("adt", serde_json::json!({"resourceType": "Bundle"}))];
    let events = vec![(Status::Processing, None), (Status::Delivered, None)];
    journal.record_applied(acked, steps, events).await.unwrap();
    let mut resent = message("C2", "LAB");
    resent.origin_key = Some("LAB|C2".into());
    let unacked = journal.append(resent.clone()).await.unwrap().id;
    // Where the lost part of the log starts: the status update of the first message (its
    // step and record) and everything of the second.
    let slot = |id| journal.slots.get(id).unwrap();
    let step_ptrs: Vec<Ptr> = journal
        .trees()
        .steps
        .iter()
        .values()
        .map(|v| Ptr::from_bytes(&v.unwrap()).unwrap())
        .collect();
    assert_eq!(step_ptrs.len(), 1);
    let lost_from = [slot(acked).record, slot(unacked).raw, slot(unacked).record]
        .into_iter()
        .flatten()
        .chain(step_ptrs)
        .map(Ptr::position)
        .min()
        .unwrap();
    assert!(slot(acked).raw.unwrap().position() < lost_from);
    journal.close();
    drop(journal);
    {
        // The cut: sled and the slots as written, the checkpoint before the lost records, the
        // journal still marked open, and the log zeroed from where it was last fsynced.
        let path = dir.path().join("journal");
        let db = crate::sled_db::open(&sled::Config::new().path(&path)).unwrap();
        let segments = db.open_tree("segments").unwrap();
        segments
            .insert(replay::CHECKPOINT_KEY, &values::position_bytes(lost_from))
            .unwrap();
        segments.insert(replay::OPEN_KEY, &[]).unwrap();
        db.flush().unwrap();
        values::cut_at(&path.join("values"), lost_from);
    }
    let (journal, metrics) = open(dir.path());
    let tx = journal
        .get(acked)
        .unwrap()
        .expect("an acknowledged message is kept");
    assert_eq!(tx.status, Status::Received, "back at its record on disk");
    assert!(
        journal.steps(acked).unwrap().is_empty(),
        "its lost step is gone"
    );
    assert_eq!(
        journal.raw(acked).unwrap().unwrap(),
        message("C1", "LAB").raw.to_vec()
    );
    assert!(
        journal
            .take_in_flight_at_open()
            .contains(&(acked, Status::Received)),
        "resumed at start"
    );
    assert!(
        journal.get(unacked).unwrap().is_none(),
        "never acknowledged: gone"
    );
    assert_eq!(count(&metrics, Status::Received), 1);
    assert_eq!(count(&metrics, Status::Delivered), 0);
    let again = journal.append(resent).await.unwrap();
    assert!(
        !again.already,
        "the resend is stored, not taken for a duplicate"
    );
    assert!(journal.get(again.id).unwrap().is_some());
    journal.close();
    drop(journal);
    // A clean stop leaves nothing to repair: the same state again.
    let (journal, _) = open(dir.path());
    assert_eq!(
        journal.get(acked).unwrap().unwrap().status,
        Status::Received
    );
    assert!(journal.get(again.id).unwrap().is_some());
}

#[test]
fn the_ack_id_prefix_is_made_once_per_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(&dir.path().join("one"));
    let prefix = journal.ack_id_prefix().to_string();
    assert_eq!(prefix.len(), 6);
    assert!(prefix.bytes().all(|b| BASE32.contains(&b)), "{prefix}");
    journal.close();
    drop(journal);
    let (journal, _) = open(&dir.path().join("one"));
    assert_eq!(journal.ack_id_prefix(), prefix, "kept across a restart");
    let (other, _) = open(&dir.path().join("two"));
    assert_ne!(
        other.ack_id_prefix(),
        prefix,
        "another data dir, another prefix"
    );
    // A file that does not hold one is replaced.
    std::fs::create_dir_all(dir.path().join("three/journal")).unwrap();
    std::fs::write(dir.path().join("three/journal/ack_id_prefix"), "no!\n").unwrap();
    let (third, _) = open(&dir.path().join("three"));
    assert_eq!(third.ack_id_prefix().len(), 6);
}

/// A document part with an origin key (as file and HTTP ingest append them).
fn part(origin: &str) -> NewMessage {
    let mut m = message("", "FILES");
    m.meta.control_id = None;
    m.origin_key = Some(origin.into());
    m
}

/// The transactions with this control id or origin key.
fn copies(journal: &Journal, control_id: Option<&str>, origin: Option<&str>) -> usize {
    snapshot(journal)
        .iter()
        .filter(|(tx, _, _)| {
            control_id.is_some_and(|c| tx.meta.control_id.as_deref() == Some(c))
                || origin.is_some_and(|o| tx.origin_key.as_deref() == Some(o))
        })
        .count()
}

/// A batch that failed once (part of) it had reached the disk was answered "not stored", so
/// its sender resends it: neither the journal as it runs nor a restart's replay may bring it
/// back, and the resend is a new message, not a duplicate or "already there".
async fn a_failed_batch_is_never_brought_back(point: faults::FaultPoint) {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    let kept = journal.append(message("K1", "LAB")).await.unwrap().id;
    let kept_part = journal.append(part("inbox/k.csv#1")).await.unwrap().id;
    let steps = vec![step("adt", serde_json::json!({"resourceType": "Bundle"}))];
    journal
        .record(kept, steps, vec![(Status::Delivered, None)])
        .await
        .unwrap();
    let before = snapshot(&journal);
    // Where a restart's replay starts if the engine stops without a checkpoint after this:
    // what the disk holds after a crash (or when the full disk fails the checkpoints too).
    let checkpoint = journal
        .trees()
        .segments
        .get(replay::CHECKPOINT_KEY)
        .unwrap()
        .unwrap();
    // One batch if the writer takes them together, else one each: every one fails.
    journal.fail_next_writes(point, 3);
    let (a, b, c) = tokio::join!(
        journal.append(message("R1", "LAB")),
        journal.append(part("inbox/r.csv#1")),
        journal.record(
            kept,
            vec![step("adt", serde_json::json!({"resourceType": "Patient"}))],
            vec![(Status::Failed, Some("later".into()))],
        ),
    );
    journal.fail_next_writes(point, 0);
    assert!(a.is_err() && b.is_err() && c.is_err(), "{a:?} {b:?} {c:?}");
    let err = a.unwrap_err();
    assert!(err.storage_full(), "{err}");
    let mut before = before;
    if point == faults::FaultPoint::Sled {
        // sled fails every write from then on, until it is reopened: the writer does that on
        // its own (once there is room), and puts back what the batch wrote to it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while journal.prune(Vec::new()).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "sled never came back");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    if point == faults::FaultPoint::Fsync {
        // What the kernel kept is unknown (fsyncgate): the batch is cut off the log and rolled
        // back as after a power cut (once the writer notices, within a checkpoint interval),
        // and nothing more is taken until a restart.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        // (Reads may fail for a moment, between the cut and the roll-back.)
        let settled = || try_snapshot(&journal).is_ok_and(|now| now == before);
        while !settled() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(snapshot(&journal), before);
        let refused = journal.append(message("N1", "LAB")).await.unwrap_err();
        assert!(refused.storage_full(), "{refused}");
    } else {
        // The journal is as it was before, and writes again.
        assert_eq!(snapshot(&journal), before);
        assert_eq!(
            journal.get(kept).unwrap().unwrap().status,
            Status::Delivered
        );
        journal.append(message("N1", "LAB")).await.unwrap();
        before = snapshot(&journal);
    }
    journal.close();
    drop(journal);
    {
        let db =
            crate::sled_db::open(&sled::Config::new().path(dir.path().join("journal"))).unwrap();
        let segments = db.open_tree("segments").unwrap();
        segments.insert(replay::CHECKPOINT_KEY, checkpoint).unwrap();
        segments.insert(replay::OPEN_KEY, &[]).unwrap();
        db.flush().unwrap();
    }

    let (journal, metrics) = open(dir.path());
    assert_eq!(
        snapshot(&journal),
        before,
        "restarted: nothing of the failed batch"
    );
    let received = before
        .iter()
        .filter(|(tx, _, _)| tx.status == Status::Received);
    assert_eq!(count(&metrics, Status::Received), received.count() as i64);
    assert_eq!(count(&metrics, Status::Delivered), 1);
    assert_eq!(journal.steps(kept).unwrap().len(), 1);
    assert!(journal.get(kept_part).unwrap().is_some());
    // The senders resend: new messages, once each.
    let again = journal.append(message("R1", "LAB")).await.unwrap();
    assert_eq!(
        again.duplicate_of, None,
        "not a duplicate of the refused copy"
    );
    let again_part = journal.append(part("inbox/r.csv#1")).await.unwrap();
    assert!(!again_part.already, "the refused part was not stored");
    assert_eq!(copies(&journal, Some("R1"), None), 1);
    assert_eq!(copies(&journal, None, Some("inbox/r.csv#1")), 1);
    journal.close();
    drop(journal);
    let (journal, _) = open(dir.path());
    assert_eq!(copies(&journal, Some("R1"), Some("inbox/r.csv#1")), 2);
    assert_eq!(snapshot(&journal).len(), before.len() + 2);
}

#[tokio::test]
async fn a_batch_that_failed_after_the_value_log_is_never_brought_back() {
    a_failed_batch_is_never_brought_back(faults::FaultPoint::AfterValues).await;
}

#[tokio::test]
async fn a_batch_whose_slots_failed_is_never_brought_back() {
    a_failed_batch_is_never_brought_back(faults::FaultPoint::Slots).await;
}

#[tokio::test]
async fn a_batch_whose_sled_write_failed_is_never_brought_back() {
    a_failed_batch_is_never_brought_back(faults::FaultPoint::Sled).await;
}

#[tokio::test]
async fn a_batch_whose_fsync_failed_is_never_brought_back() {
    a_failed_batch_is_never_brought_back(faults::FaultPoint::Fsync).await;
}

/// Waits (10 s at most) until the journal's trouble is as `wanted` says.
async fn until_unwritable(journal: &Journal, wanted: impl Fn(Option<Unwritable>) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !wanted(journal.unwritable()) {
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}",
            journal.unwritable()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_journal_that_cannot_write_says_why_and_writes_again_on_its_own() {
    use faults::FaultPoint;
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path());
    journal.append(message("A1", "LAB")).await.unwrap();
    assert_eq!(journal.unwritable(), None);

    // A batch failed: said at once, and the next one is tried as usual.
    journal.fail_next_writes(FaultPoint::Slots, 1);
    let refused = journal.append(message("A2", "LAB")).await.unwrap_err();
    assert!(refused.storage_full(), "{refused}");
    let problem = journal.unwritable().expect("says why");
    assert!(
        problem.storage_full && !problem.restart_needed,
        "{problem:?}"
    );
    assert!(
        problem
            .reason
            .starts_with("the journal cannot store messages: the data dir's filesystem is full"),
        "{problem:?}"
    );
    journal.append(message("A3", "LAB")).await.unwrap();
    assert_eq!(journal.unwritable(), None);

    // With nothing to write (a pod out of its Service gets no traffic), the writer finds out
    // on its own that it can write again.
    journal.fail_next_writes(FaultPoint::AfterValues, 1);
    journal.append(message("A4", "LAB")).await.unwrap_err();
    assert!(journal.unwritable().is_some());
    until_unwritable(&journal, |u| u.is_none()).await;

    // sled down: every write refused at once until the writer has reopened it, on its own.
    journal.fail_next_writes(FaultPoint::Sled, 2);
    journal.append(message("A5", "LAB")).await.unwrap_err();
    let problem = journal.unwritable().expect("says why");
    assert!(
        problem.storage_full && !problem.restart_needed,
        "{problem:?}"
    );
    let refused = journal.append(message("A6", "LAB")).await.unwrap_err();
    assert!(refused.storage_full(), "{refused}");
    until_unwritable(&journal, |u| u.is_none()).await;
    journal.append(message("A7", "LAB")).await.unwrap();

    // A failed fsync: only a restart helps.
    journal.fail_next_writes(FaultPoint::Fsync, 1);
    journal.append(message("A8", "LAB")).await.unwrap_err();
    until_unwritable(&journal, |u| u.is_some_and(|u| u.restart_needed)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    journal.append(message("A9", "LAB")).await.unwrap_err();
    journal.close();
    drop(journal);

    let (journal, _) = open(dir.path());
    assert_eq!(journal.unwritable(), None);
    let stored: Vec<String> = snapshot(&journal)
        .into_iter()
        .rev()
        .filter_map(|(tx, _, _)| tx.meta.control_id)
        .collect();
    assert_eq!(stored, ["A1", "A3", "A7"]);
}
