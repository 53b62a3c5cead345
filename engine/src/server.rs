//! `orbiter run`: wires the parts together in one actix system and runs until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;

use crate::admin::{self, AdminState, AdminToken, TokenSource};
use crate::config::Config;
use crate::intake::Intake;
use crate::journal::Journal;
use crate::listen::MllpListener;
use crate::metrics::Metrics;

/// How often the journal size gauge is refreshed (it walks the files).
const SIZE_GAUGE_EVERY: Duration = Duration::from_secs(10);

/// Runs the engine until SIGINT or SIGTERM, then shuts down in order: stop listening, let the
/// journal writer drain and flush, exit.
pub fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let journal = Journal::open(&config.data_dir, &config.journal, metrics.clone())
        .context("opening the journal")?;
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

    let system = actix_rt::System::new();
    let result = system.block_on(async {
        let workers: Vec<ArbiterHandle> = (0..worker_count()).map(|_| Arbiter::new().handle()).collect();
        let mut mllp_addr: Option<SocketAddr> = None;
        let _mllp = if config.mllp.enabled {
            let intake = Intake::new(journal.clone(), metrics.clone(), "mllp");
            let listener = MllpListener::bind(&config.mllp, intake, metrics.clone(), workers.clone())
                .context("starting the MLLP listener")?;
            mllp_addr = Some(listener.local_addr());
            Some(listener.start())
        } else {
            None
        };
        let state = AdminState { journal: journal.clone(), metrics: metrics.clone() };
        let (admin, admin_addrs) = admin::server(config.admin.addr, config.admin.workers, &config.admin.tls, state, token)
            .context("starting the admin server")?;
        let admin_handle = admin.handle();
        actix_rt::spawn(admin);
        tracing::info!(admin = ?admin_addrs, mllp = ?mllp_addr, data_dir = %config.data_dir.display(), "orbiter running");

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

        shutdown_signal().await;
        tracing::info!("shutting down");
        admin_handle.stop(true).await;
        for worker in &workers {
            worker.stop();
        }
        anyhow::Ok(())
    });
    journal.close();
    tracing::info!("journal closed");
    result
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
