//! Every Prometheus metric the engine exports, declared in one place.
//!
//! Names are `orbiter_<thing>_<unit>`. Labels carry listener, outcome, status, reason: never
//! anything from a message body (no patient ids, no control ids).

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The engine's metrics, shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    /// Messages per listener and outcome (`accepted`, `rejected`, `error`).
    pub messages_total: IntCounterVec,
    /// From the last byte of a frame read to its ACK handed to the socket.
    pub ack_latency_seconds: HistogramVec,
    /// From enqueueing an append to it being durable.
    pub journal_append_seconds: Histogram,
    /// One group commit: the value log's fdatasync.
    pub journal_flush_seconds: Histogram,
    /// Commands per group commit.
    pub journal_batch_size: Histogram,
    pub journal_size_bytes: IntGauge,
    pub transactions_by_status: IntGaugeVec,
    pub mllp_connections: IntGauge,
    /// Channels' own MLLP ports that cannot be opened (taken, not permitted); retried.
    pub channel_ports_failing: IntGauge,
    pub mllp_connections_total: IntCounter,
    /// Frames the MLLP decoder refused or lost, by reason (`oversize`, `truncated`, `idle`).
    pub mllp_frame_errors_total: IntCounterVec,
    /// Bytes outside any MLLP frame (skipped, per the protocol).
    pub mllp_bytes_skipped_total: IntCounter,
    pub duplicates_total: IntCounter,
    /// Per channel and final status (`delivered`, `filtered`, `queued`, `failed`).
    pub channel_messages_total: IntCounterVec,
    pub script_errors_total: IntCounterVec,
    /// Filter + transform + delivery of one transaction.
    pub processing_seconds: Histogram,
    /// Messages whose scripts ran, by where they finished: `inline` on the receiving thread,
    /// `moved` to the pool after a run used up the inline slice, `pool` sent there at once
    /// (no slice configured, or the channel's runs used it up lately).
    pub transform_runs_total: IntCounterVec,
    /// Deliveries per destination and outcome (`delivered`, `failed`, `retry`).
    pub deliveries_total: IntCounterVec,
    pub delivery_seconds: HistogramVec,
    /// HTTP status codes answered by CDRs and other HTTP destinations.
    pub cdr_responses_total: IntCounterVec,
    /// Transactions waiting for a destination.
    pub queue_depth: IntGauge,
    /// Journaled transactions waiting for room in the pipeline.
    pub backlog_depth: IntGauge,
    /// Files taken by dir and SFTP sources, per listener (`sftp:<channel>`) and outcome
    /// (`ingested`, `refused`).
    pub source_files_total: IntCounterVec,
    /// Polls of a file source that failed (server down, host key refused, journal unavailable).
    pub source_errors_total: IntCounterVec,
    /// Retention: what was pruned, per channel and kind (`body`, `transaction`).
    pub retention_pruned_total: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency = exponential_buckets(0.0001, 2.0, 16).expect("valid buckets");
        let messages_total = IntCounterVec::new(
            Opts::new(
                "orbiter_messages_total",
                "Messages received, by listener and outcome",
            ),
            &["listener", "outcome"],
        )
        .expect("metric");
        let ack_latency_seconds = HistogramVec::new(
            HistogramOpts::new(
                "orbiter_ack_latency_seconds",
                "Time from a message's last byte to its ACK being written",
            )
            .buckets(latency.clone()),
            &["listener"],
        )
        .expect("metric");
        let journal_append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "orbiter_journal_append_seconds",
                "Time from queueing an append to it being durable",
            )
            .buckets(latency.clone()),
        )
        .expect("metric");
        let journal_flush_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "orbiter_journal_flush_seconds",
                "Duration of one group commit (fdatasync of the journal's value log)",
            )
            .buckets(latency),
        )
        .expect("metric");
        let journal_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "orbiter_journal_batch_size",
                "Journal commands sharing one group commit",
            )
            .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
        )
        .expect("metric");
        let journal_size_bytes =
            IntGauge::new("orbiter_journal_size_bytes", "Journal size on disk").expect("metric");
        let transactions_by_status = IntGaugeVec::new(
            Opts::new(
                "orbiter_transactions_by_status",
                "Transactions in the journal, by status",
            ),
            &["status"],
        )
        .expect("metric");
        let mllp_connections =
            IntGauge::new("orbiter_mllp_connections", "Open MLLP connections").expect("metric");
        let channel_ports_failing = IntGauge::new(
            "orbiter_channel_ports_failing",
            "Channels' own MLLP ports that cannot be opened (retried every few seconds)",
        )
        .expect("metric");
        let mllp_connections_total = IntCounter::new(
            "orbiter_mllp_connections_total",
            "MLLP connections accepted",
        )
        .expect("metric");
        let mllp_frame_errors_total = IntCounterVec::new(
            Opts::new(
                "orbiter_mllp_frame_errors_total",
                "MLLP frames refused or cut off, by reason",
            ),
            &["reason"],
        )
        .expect("metric");
        let mllp_bytes_skipped_total = IntCounter::new(
            "orbiter_mllp_bytes_skipped_total",
            "Bytes received outside MLLP frames",
        )
        .expect("metric");
        let duplicates_total = IntCounter::new(
            "orbiter_duplicates_total",
            "Messages whose sender and control id were seen before",
        )
        .expect("metric");

        let channel_messages_total = IntCounterVec::new(
            Opts::new(
                "orbiter_channel_messages_total",
                "Transactions processed per channel, by final status",
            ),
            &["channel", "status"],
        )
        .expect("metric");
        let script_errors_total = IntCounterVec::new(
            Opts::new(
                "orbiter_script_errors_total",
                "Script errors and limit hits per channel",
            ),
            &["channel"],
        )
        .expect("metric");
        let transform_runs_total = IntCounterVec::new(
            Opts::new(
                "orbiter_transform_runs_total",
                "Messages whose channel scripts ran, by where they finished (inline, moved, pool)",
            ),
            &["on"],
        )
        .expect("metric");
        let processing_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "orbiter_processing_seconds",
                "Filter, transform and delivery of one transaction, until its outcome is journaled",
            )
            // 1-2.5-5 steps from 100 µs to 25 s: one bound at 1 ms, the pipeline's target.
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 25.0,
            ]),
        )
        .expect("metric");
        let deliveries_total = IntCounterVec::new(
            Opts::new(
                "orbiter_deliveries_total",
                "Deliveries per destination and outcome",
            ),
            &["destination", "outcome"],
        )
        .expect("metric");
        let delivery_seconds = HistogramVec::new(
            HistogramOpts::new(
                "orbiter_delivery_seconds",
                "Time to deliver to a destination",
            )
            .buckets(exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")),
            &["destination"],
        )
        .expect("metric");
        let cdr_responses_total = IntCounterVec::new(
            Opts::new(
                "orbiter_cdr_responses_total",
                "HTTP status codes answered by CDRs and HTTP destinations",
            ),
            &["destination", "code"],
        )
        .expect("metric");
        let queue_depth = IntGauge::new(
            "orbiter_queue_depth",
            "Transactions queued for a destination that was unavailable",
        )
        .expect("metric");

        let backlog_depth = IntGauge::new(
            "orbiter_backlog_depth",
            "Journaled transactions waiting for room in the pipeline",
        )
        .expect("metric");

        let source_files_total = IntCounterVec::new(
            Opts::new(
                "orbiter_source_files_total",
                "Files taken by dir and SFTP sources, by listener and outcome",
            ),
            &["listener", "outcome"],
        )
        .expect("metric");
        let source_errors_total = IntCounterVec::new(
            Opts::new(
                "orbiter_source_errors_total",
                "Failed polls of dir and SFTP sources, by listener",
            ),
            &["listener"],
        )
        .expect("metric");
        let retention_pruned_total = IntCounterVec::new(
            Opts::new(
                "orbiter_retention_pruned_total",
                "Transactions (or only their bodies) pruned by retention, per channel",
            ),
            &["channel", "kind"],
        )
        .expect("metric");

        for collector in [
            Box::new(messages_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ack_latency_seconds.clone()),
            Box::new(journal_append_seconds.clone()),
            Box::new(journal_flush_seconds.clone()),
            Box::new(journal_batch_size.clone()),
            Box::new(journal_size_bytes.clone()),
            Box::new(transactions_by_status.clone()),
            Box::new(mllp_connections.clone()),
            Box::new(channel_ports_failing.clone()),
            Box::new(mllp_connections_total.clone()),
            Box::new(mllp_frame_errors_total.clone()),
            Box::new(mllp_bytes_skipped_total.clone()),
            Box::new(duplicates_total.clone()),
            Box::new(channel_messages_total.clone()),
            Box::new(script_errors_total.clone()),
            Box::new(processing_seconds.clone()),
            Box::new(transform_runs_total.clone()),
            Box::new(deliveries_total.clone()),
            Box::new(delivery_seconds.clone()),
            Box::new(cdr_responses_total.clone()),
            Box::new(queue_depth.clone()),
            Box::new(backlog_depth.clone()),
            Box::new(source_files_total.clone()),
            Box::new(source_errors_total.clone()),
            Box::new(retention_pruned_total.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics");

        Metrics {
            registry,
            messages_total,
            ack_latency_seconds,
            journal_append_seconds,
            journal_flush_seconds,
            journal_batch_size,
            journal_size_bytes,
            transactions_by_status,
            mllp_connections,
            channel_ports_failing,
            mllp_connections_total,
            mllp_frame_errors_total,
            mllp_bytes_skipped_total,
            duplicates_total,
            channel_messages_total,
            script_errors_total,
            processing_seconds,
            transform_runs_total,
            deliveries_total,
            delivery_seconds,
            cdr_responses_total,
            queue_depth,
            backlog_depth,
            source_files_total,
            source_errors_total,
            retention_pruned_total,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
