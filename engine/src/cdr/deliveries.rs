//! Channels' Bundles into the store: a thread of their own, one fsync a batch.
//!
//! A channel's delivery used to take a thread of the blocking pool per Bundle, and wait there
//! for its own group commit. Draining a backlog, that was ~7 context switches a Bundle on the
//! pool's threads alone (its queue's lock contended, a wake-up to start, another after the
//! fsync) and an fsync every three Bundles. Here one thread takes what is queued, up to
//! [`MAX_BATCH`] Bundles at a time, processes each as `POST /fhir` would (each its own atomic
//! commit, in queue order), waits once for the last one to be durable, then answers them all.
//! Nothing is answered before its writes are on disk; if the fsync fails, every Bundle of the
//! batch that wrote is answered with that error (and retried by its channel: a replay writes
//! nothing new).
//!
//! One thread, not a pool: the store takes one writer at a time anyway, and a second thread
//! (validating or waiting for its fsync while the first writes) cost more in lock hand-offs
//! and switches than it overlapped: draining into the CDR, two threads gave 3,503-4,014
//! Bundles/s at 392-458 µs of CPU each, one 4,474-4,520 at 358 µs (BENCHMARKS.md).

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

use super::bundle::{self, Durability};
use super::outcome::CdrError;
use super::request::Return;
use super::store::Store;

/// At most this many Bundles share one wait for durability (and delay each other's answer).
const MAX_BATCH: usize = 32;

/// What a delivery does to its Bundle before it is written (on the delivery thread).
pub(super) type Prepare = Box<dyn FnOnce(&mut Value) + Send>;

/// One Bundle to write, and who hears how it went.
struct Job {
    bundle: Arc<Value>,
    prepare: Prepare,
    base: String,
    answer: oneshot::Sender<(u16, Value)>,
}

/// The queue into the delivery thread. Dropping it ends the thread, once it has answered what
/// it took, and joins it: the store it holds is released when this returns.
pub(super) struct Deliveries {
    queue: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Deliveries {
    pub(super) fn start(store: &Arc<Store>) -> std::io::Result<Deliveries> {
        let (queue, jobs) = mpsc::channel();
        let store = store.clone();
        let thread = std::thread::Builder::new()
            .name("cdr-deliver".into())
            .spawn(move || work(&store, &jobs))?;
        Ok(Deliveries {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `bundle`; the answer comes once it is processed and durable. `None` when the
    /// thread is gone (the engine is stopping).
    pub(super) async fn process(
        &self,
        bundle: Arc<Value>,
        base: &str,
        prepare: Prepare,
    ) -> Option<(u16, Value)> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .as_ref()?
            .send(Job {
                bundle,
                prepare,
                base: base.trim_end_matches('/').to_owned(),
                answer,
            })
            .ok()?;
        answered.await.ok()
    }
}

fn work(store: &Store, jobs: &Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Waits for one, then takes all that is queued behind it.
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        batch.extend(jobs.try_iter().take(MAX_BATCH - 1));
        let mut answers = Vec::with_capacity(batch.len());
        let mut last = 0;
        for job in batch.drain(..) {
            // A bug that panics fails this Bundle (a 500, retried by its channel), not the
            // thread every later delivery needs.
            let processed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut bundle = Arc::unwrap_or_clone(job.bundle);
                (job.prepare)(&mut bundle);
                bundle::process_with(
                    store,
                    Cow::Owned(bundle),
                    &job.base,
                    Return::Minimal,
                    Durability::ByCaller,
                )
            }));
            let (status, body, seq) = processed.unwrap_or_else(|panic| {
                let error = CdrError::Internal(panic_message(&*panic));
                tracing::error!(error = %error, "CDR delivery panicked; the delivery is retried");
                (error.status(), error.to_outcome(), store.applied())
            });
            last = last.max(seq);
            answers.push((job.answer, status, body));
        }
        let durable = store.wait_durable(last);
        for (answer, status, body) in answers {
            // A refused Bundle wrote nothing: its answer stands.
            let _ = answer.send(match &durable {
                Err(e) if status < 300 => (e.status(), e.to_outcome()),
                _ => (status, body),
            });
        }
    }
}

/// What a caught panic said (its `&str` or `String` payload).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
