//! Channels with their own MLLP port (`[source] addr = "…"`): one listener per address, kept in
//! step with the channel set, so that adding such a channel opens its port without a restart
//! and removing it closes the port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;

use super::mllp::{Drain, MllpListener, StopListening};
use crate::channel::def::own_mllp_listener;
use crate::channel::{ChannelSet, SourceKind};
use crate::config::MllpConfig;
use crate::intake::Intake;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::route::Pipeline;

/// The running per-channel MLLP listeners, by address.
pub struct ChannelPorts {
    shared_config: MllpConfig,
    journal: Journal,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    workers: Vec<ArbiterHandle>,
    drain: Drain,
    running: HashMap<SocketAddr, Addr<MllpListener>>,
    /// Ports that could not be opened, with why: logged as an error once (and again when the
    /// reason changes), not at every retry.
    failing: HashMap<SocketAddr, String>,
}

impl ChannelPorts {
    pub fn new(
        shared_config: MllpConfig,
        journal: Journal,
        metrics: Arc<Metrics>,
        pipeline: Pipeline,
        workers: Vec<ArbiterHandle>,
        drain: Drain,
    ) -> ChannelPorts {
        ChannelPorts {
            shared_config,
            journal,
            metrics,
            pipeline,
            workers,
            drain,
            running: HashMap::new(),
            failing: HashMap::new(),
        }
    }

    /// Opens the ports channels ask for and closes those no channel asks for any more. A port
    /// that cannot be bound is logged, counted in `orbiter_channel_ports_failing` (and `/ready`)
    /// and tried again at the next reconcile.
    pub fn reconcile(&mut self, set: &ChannelSet) {
        let wanted: Vec<SocketAddr> = set
            .channels
            .iter()
            .filter(|c| c.def.enabled && c.def.source.kind == SourceKind::Mllp)
            .filter_map(|c| c.def.source.addr)
            .collect();
        self.running.retain(|addr, listener| {
            let keep = wanted.contains(addr);
            if !keep {
                tracing::info!(%addr, "closing a channel's MLLP port");
                listener.do_send(StopListening);
            }
            keep
        });
        self.failing.retain(|addr, _| wanted.contains(addr));
        for addr in wanted {
            if self.running.contains_key(&addr) {
                continue;
            }
            let config = MllpConfig {
                addr,
                ..self.shared_config.clone()
            };
            let intake = Intake::new(
                self.journal.clone(),
                self.metrics.clone(),
                &own_mllp_listener(addr),
                SourceKind::Mllp,
                Some(self.pipeline.clone()),
            );
            match MllpListener::bind(
                &config,
                intake,
                self.metrics.clone(),
                self.workers.clone(),
                self.drain.clone(),
            ) {
                Ok(listener) => {
                    if self.failing.remove(&addr).is_some() {
                        tracing::info!(%addr, "a channel's MLLP port is open now");
                    }
                    self.running.insert(addr, listener.start());
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.failing.get(&addr) != Some(&why) {
                        tracing::error!(%addr, error = %why, "a channel's MLLP port cannot open (retried every few seconds)");
                    } else {
                        tracing::debug!(%addr, error = %why, "a channel's MLLP port still cannot open");
                    }
                    self.failing.insert(addr, why);
                }
            }
        }
        self.metrics
            .channel_ports_failing
            .set(self.failing.len() as i64);
    }

    /// The addresses listening now.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.running.keys().copied().collect()
    }
}
