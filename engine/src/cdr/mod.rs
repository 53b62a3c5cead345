//! The embedded CDR: a FHIR R4 (4.0.1) JSON server backed by sled, served under `/fhir`.
//!
//! Channels write to it in-process with [`Cdr::deliver_bundle`] (the same code a
//! `POST /fhir` runs, on the CDR's delivery thread); clients reach it over HTTP through
//! [`routes`]. It does what a client of
//! HAPI FHIR expects for the common resource types: CRUD with versions and history, search on
//! the common parameters from sled indexes, batch and transaction Bundles with `urn:uuid`
//! references and conditional create/update, structural validation, and OperationOutcomes with
//! the status codes HAPI uses.
//!
//! # Layout
//!
//! - [`Cdr`] (here): the handle the engine holds; cheap to clone, sync, thread-safe;
//! - [`store`]: sled trees, versions and history, the single writer and group commit;
//! - [`index`]: the key layout of the tree and the index entries of a resource;
//! - [`params`]: the search parameters of each resource type and where their values are;
//! - [`search`]: query parsing and what each condition means;
//! - [`plan`]: evaluating a query over the indexes (the planner);
//! - [`searchset`]: the searchset Bundle: a page, includes, paging links;
//! - [`interact`]: create, read, vread, update, delete, history, and the conditional forms;
//! - [`bundle`]: batch and transaction processing, `urn:uuid` resolution;
//! - [`deliveries`]: channels' Bundles on a thread of their own, one fsync a batch;
//! - [`validate`]: structural checks against R4 (types, shapes, formats, references);
//! - [`r4`]: the R4 specification as tables (resource types, element shapes, bindings);
//! - [`datetime`]: FHIR dates as millisecond ranges (validation and date search);
//! - [`request`]: one interaction, independent of HTTP or Bundle entry; the URL grammar;
//! - [`outcome`]: [`CdrError`] and its OperationOutcome;
//! - [`capability`]: the CapabilityStatement, built from the same tables;
//! - [`http`]: the actix-web handler.
//!
//! # Guarantees
//!
//! - A write (REST or Bundle) returns only once it is durable: its commit record in the value
//!   log fsynced, shared by concurrent writers (group commit).
//! - A transaction is all or nothing: its writes are one commit, replayed whole after a crash
//!   from its commit record (see [`store`]).
//! - An update whose content equals the current version (`meta.versionId`/`lastUpdated` aside)
//!   creates no new version; with conditional creates and updates, replaying a Bundle changes
//!   nothing the second time.
//! - Index entries are written and removed in the same commit as the version they describe.

pub mod bundle;
pub mod capability;
pub mod datetime;
mod deliveries;
pub mod http;
pub mod index;
pub mod interact;
pub mod outcome;
pub mod params;
pub mod plan;
pub mod r4;
pub mod request;
pub mod search;
pub mod searchset;
pub mod store;
pub mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

pub use http::routes;
pub use outcome::{CdrError, Issue};
pub use request::{FhirRequest, FhirResponse, Method, Return};

/// The embedded CDR. Cheap to clone (an `Arc` inside); its methods are synchronous and block
/// on disk I/O, so async callers go through [`Cdr::blocking`].
#[derive(Clone)]
pub struct Cdr {
    store: Arc<store::Store>,
    /// Calls on the blocking pool at a time (see [`Cdr::blocking`]).
    admission: Arc<tokio::sync::Semaphore>,
    /// Channels' Bundles (see [`Cdr::deliver_bundle`]). Dropped before `_checkpoints`: its
    /// threads hold the store until they are joined.
    deliveries: Arc<deliveries::Deliveries>,
    /// Declared after `store`: dropped last, it stops and joins the checkpoint thread, so the
    /// store is closed (its last checkpoint written) when the last `Cdr` is gone.
    _checkpoints: Arc<Checkpoints>,
}

/// The thread that checkpoints the store's sled tree every [`values::CHECKPOINT_EVERY`] (see
/// [`store::Store::checkpoint_if_due`]) and, after a failed write, reopens sled once the disk
/// has room (see [`store::Store::recover_if_due`]). It holds the store weakly, so it keeps
/// nothing alive.
struct Checkpoints {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpoints {
    fn start(store: &Arc<store::Store>) -> std::io::Result<Checkpoints> {
        let weak = Arc::downgrade(store);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cdr-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(crate::journal::values::CHECKPOINT_EVERY)
                {
                    let Some(store) = weak.upgrade() else { break };
                    // Halted, sled refuses every write: no checkpoint until it is reopened.
                    if store.halted() {
                        store.recover_if_due();
                    } else if let Err(e) = store.checkpoint_if_due() {
                        tracing::warn!(error = %e, "CDR: checkpoint failed (the log is replayed at open)");
                    }
                }
            })?;
        Ok(Checkpoints {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Calls into the store that may wait on the blocking pool at once. Writers take the store's
/// lock one at a time anyway; a few in flight are enough for group commits to be shared, and a
/// caller waiting here holds no thread. Without a bound, a backlog of deliveries parked ~250
/// blocking threads on the lock, each with its own allocator heap: 1.5-2 GB resident.
const MAX_BLOCKING_CALLS: usize = 8;

impl Cdr {
    /// Opens or creates the store in `dir` (the engine passes `<data_dir>/cdr`), with
    /// `cache_bytes` of sled page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Cdr, CdrError> {
        let store = Arc::new(store::Store::open(dir, cache_bytes)?);
        let io = |source| CdrError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let checkpoints = Checkpoints::start(&store).map_err(io)?;
        let deliveries = deliveries::Deliveries::start(&store).map_err(io)?;
        Ok(Cdr {
            store,
            admission: Arc::new(tokio::sync::Semaphore::new(MAX_BLOCKING_CALLS)),
            deliveries: Arc::new(deliveries),
            _checkpoints: Arc::new(checkpoints),
        })
    }

    /// Runs `f` with this CDR on the blocking pool, at most [`MAX_BLOCKING_CALLS`] at a time;
    /// `None` if the task panicked or the runtime is shutting down.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Cdr) -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.admission.acquire().await.ok()?;
        let cdr = self.clone();
        tokio::task::spawn_blocking(move || f(&cdr)).await.ok()
    }

    /// Processes a batch or transaction Bundle exactly as `POST /fhir` with that Bundle would,
    /// returning the HTTP status and the response Bundle (or an OperationOutcome). `base` is
    /// the base URL used in `fullUrl`s (`http://127.0.0.1:8080/fhir`). Durable when it returns.
    /// The Bundle is taken by value: its resources move into the writes, uncopied.
    pub fn process_bundle(&self, bundle: Value, base: &str) -> (u16, Value) {
        bundle::process(
            &self.store,
            std::borrow::Cow::Owned(bundle),
            base.trim_end_matches('/'),
            Return::Minimal,
        )
    }

    /// [`Cdr::process_bundle`] for a channel's delivery, from async code: on the CDR's delivery
    /// thread, which shares one fsync among the Bundles queued together. There the Bundle is
    /// taken out of its `Arc` (copied only if another holder is left) and `prepare`d. `None`
    /// when the engine is stopping.
    pub async fn deliver_bundle(
        &self,
        bundle: Arc<Value>,
        base: &str,
        prepare: impl FnOnce(&mut Value) + Send + 'static,
    ) -> Option<(u16, Value)> {
        self.deliveries
            .process(bundle, base, Box::new(prepare))
            .await
    }

    /// Answers one FHIR REST interaction (what the HTTP handler does, without HTTP).
    pub fn handle(&self, request: &FhirRequest, base: &str) -> FhirResponse {
        interact::handle(&self.store, request, base.trim_end_matches('/'))
    }

    /// The current version of `ty/id`, if it exists and is not deleted.
    pub fn read(&self, ty: &str, id: &str) -> Result<Option<Value>, CdrError> {
        Ok(self.store.read_live(ty, id)?.map(|(_, v)| v))
    }

    /// Makes everything written so far durable (an fsync of the log, or a checkpoint when one is
    /// due). Every write already is when it returns; this is for shutdown paths that want to be
    /// sure. It goes through the group commit, so it never runs two flushes at once.
    pub fn flush(&self) -> Result<(), CdrError> {
        self.store.wait_durable(self.store.applied())
    }

    /// Whether writes stopped after one failed half way (a full disk): every write answers 503,
    /// and `/ready` says so, until the CDR has reopened its store, on its own once the disk has
    /// room (see [`store::Store::recover`]).
    pub fn halted(&self) -> bool {
        self.store.halted()
    }
}

impl std::fmt::Debug for Cdr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdr").finish_non_exhaustive()
    }
}
