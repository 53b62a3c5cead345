//! `orbiter run`: wires the parts together in one actix system and runs until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;

use crate::admin::{self, AdminState, AdminToken, TokenSource};
use crate::cdr::Cdr;
use crate::channel::{ChannelPaths, Channels, SourceKind};
use crate::config::Config;
use crate::deliver::{CdrTarget, Credentials, Deliverer, FhirHttp, MediatorTarget};
use crate::intake::Intake;
use crate::journal::Journal;
use crate::listen::mllp::Drain;
use crate::listen::{FileSources, MllpListener};
use crate::mediator::Mediators;
use crate::metrics::Metrics;
use crate::route::Pipeline;

/// How often channel and script files are checked for edits.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// How often queued transactions are looked at for a retry.
const RETRY_POLL: Duration = Duration::from_secs(1);
/// How often an external CDR is asked for its `metadata` (readiness).
const CDR_PROBE: Duration = Duration::from_secs(5);
/// How often the backlog (journaled, waiting for room in the pipeline) is fed in.
const BACKLOG_POLL: Duration = Duration::from_millis(50);

/// How long a stop waits for MLLP connections to write the ACKs they owe (inside Kubernetes'
/// default 30 s grace period, with room for a preStop delay).
const MLLP_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How often the journal size gauge is refreshed (it walks the files).
const SIZE_GAUGE_EVERY: Duration = Duration::from_secs(10);

/// Runs the engine until SIGINT or SIGTERM, then shuts down in order: stop listening, let the
/// journal writer drain and flush, exit.
pub fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    // Before any listener starts: every intake reads it.
    crate::intake::use_hl7_config(&config.hl7);
    crate::data_dir::never_for_others();
    crate::data_dir::create(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    crate::data_dir::report_privacy(&config.data_dir);
    // Alive but not ready while the journal and the CDR open (best effort: if the port is
    // taken, the real bind below reports it).
    let starting = if config.admin.tls.enabled() {
        None
    } else {
        admin::starting::Starting::start(config.admin.addr).ok()
    };
    crate::data_dir::check_writable(&config.data_dir)?;
    refuse_a_full_disk(&config.data_dir)?;
    let journal =
        Journal::open(&config.data_dir, &config.journal, metrics.clone()).map_err(|e| {
            let hint = full_disk_hint(&config.data_dir).unwrap_or_default();
            anyhow::Error::new(e).context(format!("opening the journal{hint}"))
        })?;
    let (token, source) =
        AdminToken::load_or_generate(config.admin.token.as_deref(), &config.data_dir)
            .context("loading the admin token")?;
    match source {
        TokenSource::Environment => tracing::info!("admin token from ORBITER_ADMIN_TOKEN"),
        TokenSource::File(path) => tracing::info!(path = %path.display(), "admin token from file"),
        TokenSource::Generated(path) => {
            tracing::warn!(path = %path.display(), "no ORBITER_ADMIN_TOKEN: generated an admin token (mode 0600)")
        }
    }

    let (channels, report) = Channels::load(ChannelPaths {
        channels_dir: config.channels_dir.clone(),
        scripts_dir: config.scripts_dir.clone(),
        limits: config.script.clone(),
    });
    tracing::info!(
        channels = channels.current().channels.len(),
        errors = report.errors.len(),
        dir = %config.channels_dir.display(),
        "channels loaded"
    );
    // Every message would be ACKed and then fail with "no channel": say why at once.
    if !config.channels_dir.is_dir() {
        tracing::warn!(
            dir = %config.channels_dir.display(),
            "the channels dir does not exist: no message will be processed (set ORBITER_CHANNELS_DIR or channels_dir)"
        );
    } else if channels.current().channels.is_empty() && report.errors.is_empty() {
        tracing::warn!(
            dir = %config.channels_dir.display(),
            "no channel in the channels dir: messages are stored, and fail with `no channel`"
        );
    }
    let embedded_cdr = match &config.cdr.url {
        None => Some(
            Cdr::open(
                &config.data_dir.join("cdr"),
                config.cdr.cache_mb * 1024 * 1024,
            )
            .context("opening the embedded CDR")?,
        ),
        Some(_) => None,
    };
    let cdr_target = match (&embedded_cdr, &config.cdr.url) {
        (Some(cdr), _) => CdrTarget::Embedded(cdr.clone()),
        (None, Some(url)) => CdrTarget::External(
            FhirHttp::new(
                url,
                cdr_credentials(&config),
                Duration::from_secs(config.cdr.timeout_secs),
                config.cdr.tls_ca.as_deref(),
            )
            .map_err(anyhow::Error::msg)
            .context(if config.cdr.tls_ca.is_some() {
                "cdr.url, cdr.tls_ca"
            } else {
                "cdr.url"
            })?,
        ),
        (None, None) => unreachable!("one of the two is set"),
    };

    let mediators = Mediators::open(
        &config.data_dir,
        Duration::from_secs(config.mediators.offline_after_secs),
    )
    .context("loading the mediator registry")?;
    let mediator_target = MediatorTarget::new(
        mediators.clone(),
        Duration::from_secs(config.mediators.timeout_secs),
    )
    .context("building the mediator HTTP client")?;

    let system = actix_rt::System::with_tokio_rt(runtime);
    let result = system.block_on(async {
        let workers: Vec<ArbiterHandle> =
            (0..worker_count()).map(|_| Arbiter::with_tokio_rt(runtime).handle()).collect();
        let transforms = crate::transform::Transforms::start(config.script.clone(), worker_count(), metrics.clone());
        let cdr_target_probe = cdr_target.clone();
        let deliverer = Deliverer::new(cdr_target, &config.data_dir, metrics.clone()).with_mediators(mediator_target);
        let pipeline = Pipeline::new(channels.clone(), transforms, journal.clone(), deliverer, metrics.clone());
        let mut mllp_addr: Option<SocketAddr> = None;
        let drain = Drain::default();
        // Bound now, started once every other port is bound too: a port in use fails start-up
        // before any listener actor runs (one started and then torn down with the runtime
        // panicked in `TcpListener::from_std`).
        let mllp_listener = if config.mllp.enabled {
            let intake = Intake::new(journal.clone(), metrics.clone(), "mllp", SourceKind::Mllp, Some(pipeline.clone()));
            let listener = MllpListener::bind(&config.mllp, intake, metrics.clone(), workers.clone(), drain.clone())
                .context("starting the MLLP listener")?;
            mllp_addr = Some(listener.local_addr());
            Some(listener)
        } else {
            None
        };
        let mut http_addrs: Vec<SocketAddr> = Vec::new();
        let http_handle = if config.http.enabled {
            let (http, addrs) = crate::listen::http::server(&config.http, journal.clone(), metrics.clone(), pipeline.clone(), &config.data_dir)
                .context("starting the HTTP ingest port")?;
            http_addrs = addrs;
            let handle = http.handle();
            actix_rt::spawn(http);
            Some(handle)
        } else {
            None
        };
        // Dir and SFTP sources: one poller per channel, on their own arbiter, following reloads.
        let files_arbiter = Arbiter::new();
        let file_sources = FileSources::new(
            crate::listen::files::Engine {
                journal: journal.clone(),
                metrics: metrics.clone(),
                pipeline: pipeline.clone(),
                data_dir: config.data_dir.clone(),
            },
            channels.clone(),
            files_arbiter.handle(),
        );
        actix_rt::spawn(file_sources.supervise());
        let cdr_reachable = Arc::new(std::sync::atomic::AtomicBool::new(embedded_cdr.is_some()));
        if let CdrTarget::External(http) = &cdr_target_probe {
            let (http, reachable) = (http.clone(), cdr_reachable.clone());
            actix_rt::spawn(async move {
                loop {
                    let up = http.metadata().await.is_ok();
                    if up != reachable.swap(up, std::sync::atomic::Ordering::Relaxed) {
                        tracing::info!(cdr = http.base(), up, "CDR reachability changed");
                    }
                    tokio::time::sleep(CDR_PROBE).await;
                }
            });
        }
        let state = AdminState {
            journal: journal.clone(),
            metrics: metrics.clone(),
            channels: channels.clone(),
            pipeline: pipeline.clone(),
            cdr: embedded_cdr.clone(),
            cdr_reachable,
            mediators,
        };
        if let Some(starting) = starting {
            starting.stop();
        }
        let (admin, admin_addrs) = admin::server(config.admin.addr, config.admin.workers, &config.admin.tls, state, token)
            .context("starting the admin server")?;
        let admin_handle = admin.handle();
        actix_rt::spawn(admin);
        let _mllp = mllp_listener.map(Actor::start);
        let mllp_addr = mllp_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
        tracing::info!(version = env!("CARGO_PKG_VERSION"), admin = ?admin_addrs, mllp = %mllp_addr, http = ?http_addrs, data_dir = %config.data_dir.display(), "orbiter running");

        let gauge_journal = journal.clone();
        let gauge_metrics = metrics.clone();
        actix_rt::spawn(async move {
            loop {
                let j = gauge_journal.clone();
                if let Ok(Ok(size)) = tokio::task::spawn_blocking(move || j.size_on_disk()).await {
                    gauge_metrics.journal_size_bytes.set(size as i64);
                }
                tokio::time::sleep(SIZE_GAUGE_EVERY).await;
            }
        });

        // Channels with their own MLLP port: opened now, kept in step with reloads.
        let mut ports = crate::listen::ports::ChannelPorts::new(config.mllp.clone(), journal.clone(), metrics.clone(), pipeline.clone(), workers.clone(), drain.clone());
        ports.reconcile(&channels.current());
        if !ports.addrs().is_empty() {
            tracing::info!(ports = ?ports.addrs(), "channel MLLP ports listening");
        }
        actix_rt::spawn(retention_loop(
            journal.clone(),
            channels.clone(),
            config.retention.clone(),
            metrics.clone(),
        ));

        // Hot reload: poll the files; a broken edit keeps the running revision.
        let watched = channels.clone();
        actix_rt::spawn(async move {
            let mut seen = watched.fingerprint();
            loop {
                tokio::time::sleep(RELOAD_POLL).await;
                let now = watched.fingerprint();
                if now != seen {
                    seen = now;
                    let reloading = watched.clone();
                    let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
                }
                // Also after a reload through the API.
                ports.reconcile(&watched.current());
            }
        });
        // Messages that were received but not processed before a stop, then the retry loop.
        let resuming = pipeline.clone();
        actix_rt::spawn(async move {
            resuming.resume().await;
            let mut last_retry = std::time::Instant::now();
            loop {
                resuming.drain_backlog(1024).await;
                if last_retry.elapsed() >= RETRY_POLL {
                    resuming.retry_due().await;
                    last_retry = std::time::Instant::now();
                }
                tokio::time::sleep(BACKLOG_POLL).await;
            }
        });

        // SIGHUP reloads the channels, as the file watch and the API do.
        #[cfg(unix)]
        if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            let reloading = channels.clone();
            actix_rt::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the channels");
                    let channels = reloading.clone();
                    let _ = tokio::task::spawn_blocking(move || channels.reload()).await;
                }
            });
        }

        shutdown_signal().await;
        tracing::info!("shutting down");
        // MLLP first: no new connection or frame, the ACKs owed written while the journal is
        // still open.
        let still_open = drain.stop(MLLP_DRAIN_GRACE).await;
        if still_open > 0 {
            tracing::warn!(connections = still_open, grace = ?MLLP_DRAIN_GRACE, "MLLP connections still owed ACKs at the stop; their senders resend");
        }
        if let Some(http) = &http_handle {
            http.stop(true).await;
        }
        admin_handle.stop(true).await;
        files_arbiter.stop();
        for worker in &workers {
            worker.stop();
        }
        anyhow::Ok(())
    });
    journal.close();
    if let Some(cdr) = &embedded_cdr {
        let _ = cdr.flush();
    }
    tracing::info!("journal closed");
    result
}

/// The journal needs room for two value-log segments (the active one and the next, created
/// full) and sled's files before it opens: far more than "No space left on device" suggests
/// to someone who sees a few MB free in `df`.
const JOURNAL_OPEN_NEEDS_BYTES: u64 = 64 * 1024 * 1024;

/// Refuses to start with less than [`JOURNAL_OPEN_NEEDS_BYTES`] free in `dir`, before the
/// journal or the CDR writes anything: an open that fails half way on a full disk leaves files
/// the next start must clean up, and the error it gives does not say what to do.
fn refuse_a_full_disk(dir: &std::path::Path) -> anyhow::Result<()> {
    match full_disk_hint(dir) {
        Some(hint) => anyhow::bail!("not opening the journal{hint}"),
        None => Ok(()),
    }
}

/// `: the filesystem of … is full …` and what to do, when `dir` has less than
/// [`JOURNAL_OPEN_NEEDS_BYTES`] free (also after a failed open, whose error may have lost the
/// I/O error's kind on the way); `None` with room enough or where free space cannot be told.
fn full_disk_hint(dir: &std::path::Path) -> Option<String> {
    let free = crate::data_dir::free_bytes(dir).filter(|&b| b < JOURNAL_OPEN_NEEDS_BYTES)?;
    Some(format!(
        ": the filesystem of {} is full, {} MiB free; the journal needs about {} MiB free to \
         open. Free space or grow the volume, then start again; nothing is lost",
        dir.display(),
        free / (1024 * 1024),
        JOURNAL_OPEN_NEEDS_BYTES / (1024 * 1024)
    ))
}

/// Prunes the journal every `interval_secs`, one small writer batch at a time with a pause in
/// between, so that ingest never waits behind a long prune.
async fn retention_loop(
    journal: Journal,
    channels: Channels,
    config: crate::journal::retention::RetentionConfig,
    metrics: Arc<Metrics>,
) {
    use crate::journal::retention::{self, Policies, Pruner};
    let mut pruner = Pruner::new(journal.clone(), config.batch);
    loop {
        tokio::time::sleep(Duration::from_secs(config.interval_secs.max(1))).await;
        let set = channels.current();
        let policies = Policies::new(
            &config,
            set.channels
                .iter()
                .map(|c| (c.name(), c.def.retention.as_ref())),
        );
        let now = crate::journal::now_ms();
        let (mut bodies, mut whole) = (0, 0);
        loop {
            match pruner.step(&policies, now).await {
                Ok((report, done)) => {
                    for pruned in &report.pruned {
                        for channel in &pruned.channels {
                            metrics
                                .retention_pruned_total
                                .with_label_values(&[channel, pruned.action.as_str()])
                                .inc();
                        }
                    }
                    bodies += report.count(crate::journal::retention::PruneAction::Body);
                    whole += report.count(crate::journal::retention::PruneAction::Whole);
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention pass stopped");
                    break;
                }
            }
            tokio::time::sleep(RETENTION_PAUSE).await;
        }
        if bodies + whole > 0 {
            tracing::info!(bodies, transactions = whole, "retention pruned the journal");
        }
        if config.audit_max_age_days > 0.0 {
            let cutoff = now - (config.audit_max_age_days * retention::DAY_MS as f64) as i64;
            let journal = journal.clone();
            let pruned = tokio::task::spawn_blocking(move || {
                crate::admin::audit::prune_before(&journal, cutoff)
            })
            .await;
            match pruned {
                Ok(Ok(0)) => {}
                Ok(Ok(events)) => tracing::info!(events, "retention pruned the audit trail"),
                Ok(Err(error)) => tracing::warn!(%error, "audit retention stopped"),
                Err(_) => break,
            }
        }
    }
}

/// Between two retention batches: room for the writer to serve ingest.
const RETENTION_PAUSE: Duration = Duration::from_millis(20);

/// A bearer token, or basic auth when a username is configured.
fn cdr_credentials(config: &Config) -> Option<Credentials> {
    match (&config.cdr.token, &config.cdr.username) {
        (Some(token), _) => Some(Credentials::Bearer(token.clone())),
        (None, Some(username)) => Some(Credentials::Basic {
            username: username.clone(),
            password: config.cdr.password.clone().unwrap_or_default(),
        }),
        (None, None) => None,
    }
}

/// Threads a runtime may start for blocking work (journal reads, file writes, CDR calls).
/// tokio's default is 512: with 256 transactions in flight, each reading its record on the
/// blocking pool, a backlog grew it to ~100 threads, each with an allocator heap of its own.
/// What waits for a thread here is a short read or write, not a long wait.
const BLOCKING_THREADS: usize = 16;

/// The runtime of the system and of every arbiter.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("a tokio runtime can be built")
}

/// One arbiter per core for connections; the journal has its own thread.
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
