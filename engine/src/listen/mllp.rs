//! The MLLP listener actor: accepts connections, reads frames, answers each with its ACK.
//!
//! One actor owns the listening socket; each connection runs as a task on one of the worker
//! arbiters (round robin), so connections use every core. Per connection, a reader half decodes
//! frames and hands each to the [`Intake`] at once (several messages can be in flight), and a
//! writer half writes the ACKs strictly in the order the messages came. `max_in_flight` bounds
//! the messages read but not yet acknowledged: past it the reader stops reading, and TCP flow
//! control slows the sender down.
//!
//! When the engine stops, [`Drain::stop`] closes the listening sockets, and each connection
//! reads no further frame but writes the ACKs it owes for those it read, then closes: a sender
//! loses no answer to a message the journal took, and resends the rest elsewhere.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::ListenError;
use crate::config::MllpConfig;
use crate::intake::{AckReply, Intake};
use crate::metrics::Metrics;
use crate::mllp::{FrameError, MllpCodec};

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection of this listener shares.
struct Shared {
    intake: Intake,
    metrics: Arc<Metrics>,
    max_frame: usize,
    idle_timeout: Duration,
    max_in_flight: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    drain: Drain,
}

/// The engine stopping, as every MLLP listener and connection sees it.
#[derive(Clone)]
pub struct Drain {
    stopping: watch::Sender<bool>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
}

impl Default for Drain {
    fn default() -> Drain {
        Drain {
            stopping: watch::Sender::new(false),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Counts one connection open in its [`Drain`] for as long as it lives.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(drain: &Drain) -> Open {
        drain.open.fetch_add(1, Ordering::SeqCst);
        Open(drain.open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drain {
    /// Stops accepting connections and reading frames, then waits (at most `grace`) for the
    /// connections to write the ACKs they owe and close; returns how many were still open.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.stopping.send_replace(true);
        let deadline = Instant::now() + grace;
        loop {
            let open = self.open.load(Ordering::SeqCst);
            if open == 0 || Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resolves once the engine is stopping.
    async fn stopping(mut stopping: watch::Receiver<bool>) {
        let _ = stopping.wait_for(|stop| *stop).await;
    }
}

/// The listener actor.
pub struct MllpListener {
    /// Taken when the actor starts.
    socket: Option<std::net::TcpListener>,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Bounds open connections; further ones wait in the kernel's accept queue.
    permits: Arc<Semaphore>,
    workers: Vec<ArbiterHandle>,
}

impl MllpListener {
    /// Binds now, so that a port in use fails start-up instead of a background task.
    pub fn bind(
        config: &MllpConfig,
        intake: Intake,
        metrics: Arc<Metrics>,
        workers: Vec<ArbiterHandle>,
        drain: Drain,
    ) -> Result<MllpListener, ListenError> {
        let tls = crate::tls::server_config(&config.tls)?.map(tokio_rustls::TlsAcceptor::from);
        let bind_err = |source| ListenError::Bind {
            addr: config.addr,
            source,
        };
        let socket = std::net::TcpListener::bind(config.addr).map_err(bind_err)?;
        socket.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = socket.local_addr().map_err(bind_err)?;
        Ok(MllpListener {
            socket: Some(socket),
            local_addr,
            shared: Arc::new(Shared {
                intake,
                metrics,
                max_frame: config.max_message_bytes,
                idle_timeout: Duration::from_secs(config.idle_timeout_secs),
                max_in_flight: config.max_in_flight,
                tls,
                drain,
            }),
            permits: Arc::new(Semaphore::new(config.max_connections)),
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Stops accepting connections (open ones finish on their own).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopListening;

impl Handler<StopListening> for MllpListener {
    type Result = ();

    fn handle(&mut self, _: StopListening, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Actor for MllpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "MLLP listener cannot start");
                ctx.stop();
                return;
            }
        };
        tracing::info!(addr = %self.local_addr, tls = self.shared.tls.is_some(), "MLLP listening");
        let accept = accept_loop(
            listener,
            self.shared.clone(),
            self.permits.clone(),
            self.workers.clone(),
        );
        ctx.spawn(accept.into_actor(self));
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    workers: Vec<ArbiterHandle>,
) {
    let mut next_worker = 0usize;
    let stopping = shared.drain.stopping.subscribe();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        // Returning drops the listening socket: new connections are refused.
        let accepted = tokio::select! {
            biased;
            () = Drain::stopping(stopping.clone()) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "MLLP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // A tokio socket belongs to the runtime that registered it: hand over a std socket.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let shared = shared.clone();
        let connection = async move {
            serve(stream, peer, shared).await;
            drop(permit);
        };
        if workers.is_empty() {
            actix_rt::spawn(connection);
        } else {
            workers[next_worker % workers.len()].spawn(connection);
            next_worker = next_worker.wrapping_add(1);
        }
    }
}

async fn serve(stream: std::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _open = Open::new(&shared.drain);
    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
        return;
    };
    shared.metrics.mllp_connections.inc();
    shared.metrics.mllp_connections_total.inc();
    tracing::debug!(%peer, "MLLP connection opened");
    match &shared.tls {
        None => connection(stream, peer.to_string(), &shared).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection(tls, peer.to_string(), &shared).await,
                Ok(Err(e)) if is_plain_text(&e) => tracing::warn!(
                    %peer,
                    "MLLP TLS handshake failed: the client sent plain MLLP, not TLS, to this TLS port (configure the sender for TLS)"
                ),
                Ok(Err(e)) => tracing::warn!(%peer, error = %e, "MLLP TLS handshake failed"),
                Err(_) => tracing::warn!(%peer, "MLLP TLS handshake timed out"),
            }
        }
    }
    shared.metrics.mllp_connections.dec();
    tracing::debug!(%peer, "MLLP connection closed");
}

/// Whether a failed TLS handshake is a client speaking without TLS: its first bytes are no TLS
/// record (an MLLP frame starts with 0x0B).
fn is_plain_text(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    )
}

/// When the connection last read a byte.
#[derive(Clone)]
struct LastRead {
    since: Instant,
    /// Microseconds after `since`.
    micros: Arc<AtomicU64>,
}

impl Default for LastRead {
    fn default() -> LastRead {
        LastRead {
            since: Instant::now(),
            micros: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LastRead {
    fn at(&self) -> Instant {
        self.since + Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    fn now(&self) {
        let micros = self.since.elapsed().as_micros() as u64;
        self.micros.store(micros, Ordering::Relaxed);
    }
}

/// A read half that notes in [`LastRead`] when bytes came in.
struct NotingReads<R> {
    inner: R,
    last_read: LastRead,
}

impl<R: AsyncRead + Unpin> AsyncRead for NotingReads<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_read.now();
        }
        polled
    }
}

/// An ACK on its way: the intake's future, and what the writer needs to finish it.
struct Pending {
    reply: Pin<Box<dyn std::future::Future<Output = AckReply> + Send>>,
    read_at: Instant,
    /// Close the connection after writing this ACK (after an oversize frame).
    close_after: bool,
}

/// Why the ACK writer stopped early.
enum WriteEnd {
    /// The socket failed (the peer is gone).
    Failed,
    /// No progress within the idle timeout (the peer stopped reading).
    Stalled,
}

/// One write to the peer, bounded by `limit`.
async fn within(
    limit: Duration,
    write: impl std::future::Future<Output = std::io::Result<()>>,
) -> Result<(), WriteEnd> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteEnd::Failed),
        Err(_) => Err(WriteEnd::Stalled),
    }
}

async fn connection<S>(stream: S, peer: String, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let last_read = LastRead::default();
    let read_half = NotingReads {
        inner: read_half,
        last_read: last_read.clone(),
    };
    let mut frames = FramedRead::new(read_half, MllpCodec::new(shared.max_frame));
    let mut acks = FramedWrite::new(write_half, MllpCodec::new(shared.max_frame));
    let (queue, mut pending) = mpsc::channel::<Pending>(shared.max_in_flight);
    let metrics = &shared.metrics;
    let latency = metrics.ack_latency_seconds.with_label_values(&["mllp"]);

    // A peer that stops reading its ACKs fills the socket's buffers and would hold the writer
    // (and, through the in-flight queue, the reader) for ever; a write that makes no progress
    // for the idle timeout closes the connection. What it sent is journaled; the ACKs it never
    // read are lost with the connection, as if it had closed.
    let write_timeout = shared.idle_timeout;
    let writer = async move {
        let ended: Result<(), WriteEnd> = async {
            while let Some(mut next) = pending.recv().await {
                // Write out what is buffered before waiting on a reply that is not ready yet.
                let reply = match (&mut next.reply).now_or_never() {
                    Some(reply) => reply,
                    None => {
                        within(write_timeout, acks.flush()).await?;
                        next.reply.await
                    }
                };
                if let Some(ack) = reply.ack {
                    within(write_timeout, acks.feed(BytesMut::from(&ack[..]))).await?;
                }
                latency.observe(next.read_at.elapsed().as_secs_f64());
                if next.close_after {
                    break;
                }
                if pending.is_empty() {
                    within(write_timeout, acks.flush()).await?;
                }
            }
            Ok(())
        }
        .await;
        match ended {
            // Nothing more can be written to a peer that does not read.
            Err(WriteEnd::Stalled) => metrics
                .mllp_frame_errors_total
                .with_label_values(&["stalled"])
                .inc(),
            Ok(()) | Err(WriteEnd::Failed) => {
                let _ = tokio::time::timeout(write_timeout, acks.close()).await;
            }
        }
    };

    let stopping = shared.drain.stopping.subscribe();
    let reader = async move {
        loop {
            // The engine stopping: no further frame is read (a frame half read is neither
            // journaled nor acknowledged, so its sender resends it); the ACKs owed still go out.
            // Idle: no byte for the idle timeout (a large message on a slow link that is still
            // arriving is not cut).
            let next = loop {
                let idle_at = last_read.at() + shared.idle_timeout;
                tokio::select! {
                    biased;
                    () = Drain::stopping(stopping.clone()) => break None,
                    next = frames.next() => break Some(Ok(next)),
                    () = tokio::time::sleep_until(idle_at.into()) => {
                        if last_read.at() + shared.idle_timeout <= Instant::now() {
                            break Some(Err(()));
                        }
                    }
                }
            };
            let Some(next) = next else { break };
            let skipped = frames.decoder_mut().take_skipped();
            if skipped > 0 {
                metrics.mllp_bytes_skipped_total.inc_by(skipped);
            }
            let restarted = frames.decoder_mut().take_restarted();
            if restarted > 0 {
                metrics
                    .mllp_frame_errors_total
                    .with_label_values(&["restarted"])
                    .inc_by(restarted);
            }
            // Bytes that are not a whole message, journaled as failed with `reason`; the
            // connection closes after their answer.
            let broken = |bytes: Bytes, reason: String| Pending {
                reply: Box::pin(
                    shared
                        .intake
                        .submit_broken(bytes, Some(peer.clone()), reason),
                ),
                read_at: Instant::now(),
                close_after: true,
            };
            // A frame cut off (`why`: closed, broke off, went idle) is journaled as truncated.
            let truncated = |partial: Bytes, why: &str| {
                metrics
                    .mllp_frame_errors_total
                    .with_label_values(&["truncated"])
                    .inc();
                tracing::warn!(%peer, bytes = partial.len(), "MLLP connection {why} mid-frame");
                let reason = format!(
                    "connection {why} in the middle of a message ({} bytes received)",
                    partial.len()
                );
                broken(partial, reason)
            };
            // The connection ended in a way the decoder does not see (a reset, a TLS close
            // without close_notify, the idle timeout): the frame it was in, if any.
            let cut_off = |frames: &mut FramedRead<_, MllpCodec>, why: &str| {
                let mut buffer = std::mem::take(frames.read_buffer_mut());
                let partial = frames.decoder_mut().take_partial(&mut buffer)?;
                Some(truncated(partial, why))
            };
            let item = match next {
                Err(_) => {
                    metrics
                        .mllp_frame_errors_total
                        .with_label_values(&["idle"])
                        .inc();
                    tracing::debug!(%peer, "MLLP connection idle, closing");
                    match cut_off(&mut frames, "went idle") {
                        Some(item) => item,
                        None => break,
                    }
                }
                Ok(None) => break,
                Ok(Some(Ok(frame))) => Pending {
                    reply: Box::pin(shared.intake.submit(frame, Some(peer.clone()))),
                    read_at: Instant::now(),
                    close_after: false,
                },
                Ok(Some(Err(FrameError::TooLarge { limit, prefix }))) => {
                    metrics
                        .mllp_frame_errors_total
                        .with_label_values(&["oversize"])
                        .inc();
                    tracing::warn!(%peer, limit, "MLLP frame too large, closing connection");
                    broken(
                        prefix,
                        format!("message exceeds the maximum size of {limit} bytes"),
                    )
                }
                Ok(Some(Err(FrameError::Truncated { partial }))) => truncated(partial, "closed"),
                Ok(Some(Err(FrameError::Io(e)))) => {
                    tracing::debug!(%peer, error = %e, "MLLP read failed");
                    match cut_off(&mut frames, "broke off") {
                        Some(item) => item,
                        None => break,
                    }
                }
            };
            let last = item.close_after;
            if queue.send(item).await.is_err() || last {
                break;
            }
        }
        // Dropping the queue lets the writer finish the ACKs still owed, then close.
        drop(queue);
    };

    // The reader ending (the peer closed) leaves the writer to send the ACKs still owed; the
    // writer ending first (the peer stopped reading, or its socket failed) ends the reader too,
    // instead of leaving it to wait for frames it could never acknowledge. Every frame read was
    // submitted to the journal when it was read, so dropping the reader loses none.
    tokio::pin!(reader, writer);
    tokio::select! {
        () = &mut writer => {}
        () = &mut reader => writer.await,
    }
}
