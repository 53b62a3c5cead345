//! Every Prometheus metric the engine exports, declared in one place.
//!
//! Names are `orbiter_<thing>_<unit>`. Labels carry listener, outcome, status, reason: never
//! anything from a message body (no patient ids, no control ids).

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Doubling buckets from 100 µs for latencies that can last as long as the engine waits for a
/// destination: 21 bounds reach 104.9 s, past `cdr.timeout_secs` and `mediators.timeout_secs`
/// (30 s) and an `on-delivery` ACK that waits for them (up to 60 s). The first 16 bounds are
/// those the ACK latency had before (they stopped at 3.28 s), so dashboards read on.
fn waits() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 21).expect("valid buckets")
}

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
    /// Requests on the HTTP ingest port answered without journaling anything, by the HTTP
    /// status answered (`401`, `404`, `408`, `413`, `415`, `503`...): nothing else shows them.
    pub http_refused_total: IntCounterVec,
    /// Bytes outside any MLLP frame (skipped, per the protocol).
    pub mllp_bytes_skipped_total: IntCounter,
    pub duplicates_total: IntCounter,
    /// New transactions per channel (a rerun through the API is a new one; a retry or a
    /// resume after a restart is not).
    pub channel_received_total: IntCounterVec,
    /// Runs of a transaction through a channel, by how they ended (`delivered`, `filtered`,
    /// `failed`, `queued`).
    pub channel_messages_total: IntCounterVec,
    pub script_errors_total: IntCounterVec,
    /// Filter + transform + delivery of one transaction.
    pub processing_seconds: Histogram,
    /// Messages whose scripts ran, by the thread they finished on (label `thread`): `inline`
    /// on the receiving thread,
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
    /// 1, labelled with the engine's version.
    pub build_info: IntGaugeVec,
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
            .buckets(waits()),
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
        let http_refused_total = IntCounterVec::new(
            Opts::new(
                "orbiter_http_refused_total",
                "HTTP ingest requests answered without journaling anything, by HTTP status",
            ),
            &["code"],
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

        let channel_received_total = IntCounterVec::new(
            Opts::new(
                "orbiter_channel_received_total",
                "New transactions routed to each channel",
            ),
            &["channel"],
        )
        .expect("metric");
        let channel_messages_total = IntCounterVec::new(
            Opts::new(
                "orbiter_channel_messages_total",
                "Runs of a transaction through a channel, by how the run ended (delivered, \
                 filtered, failed; queued: a destination was down, counted at each attempt)",
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
                "Messages whose channel scripts ran, by the thread they finished on (inline, moved, pool)",
            ),
            &["thread"],
        )
        .expect("metric");
        let processing_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "orbiter_processing_seconds",
                "Filter, transform and delivery of one transaction, until its outcome is journaled",
            )
            // 1-2.5-5 steps from 100 µs to 100 s: one bound at 1 ms, the pipeline's target
            // (BENCHMARKS.md reads the share within it), and past the 30 s a destination may
            // take to answer.
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
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
            .buckets(waits()),
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
        let build_info = IntGaugeVec::new(
            Opts::new(
                "orbiter_build_info",
                "1, labelled with the engine's version",
            ),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
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
            Box::new(http_refused_total.clone()),
            Box::new(mllp_bytes_skipped_total.clone()),
            Box::new(duplicates_total.clone()),
            Box::new(channel_received_total.clone()),
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
            Box::new(build_info.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(process::Process::new()))
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
            http_refused_total,
            mllp_bytes_skipped_total,
            duplicates_total,
            channel_received_total,
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
            build_info,
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

/// The process metrics (`process_*`), from the prometheus crate's collector, except that
/// `process_cpu_seconds_total` keeps its fraction: the crate (0.14) counts it in an integer
/// counter, whole seconds of `/proc/self/stat`'s ticks, so a `rate()` over a minute on an idle
/// engine read 0 or 1/60 by turns.
#[cfg(target_os = "linux")]
mod process {
    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::{Counter, MetricFamily};

    const CPU: &str = "process_cpu_seconds_total";

    pub struct Process(ProcessCollector);

    impl Process {
        pub fn new() -> Process {
            Process(ProcessCollector::for_self())
        }
    }

    impl Collector for Process {
        fn desc(&self) -> Vec<&Desc> {
            self.0.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families = self.0.collect();
            if let Some(seconds) = cpu_seconds() {
                for family in families.iter_mut().filter(|f| f.name() == CPU) {
                    for metric in family.mut_metric() {
                        let mut counter = Counter::default();
                        counter.set_value(seconds);
                        metric.set_counter(counter);
                    }
                }
            }
            families
        }
    }

    /// User and system CPU time of the whole process (every thread, live or ended), to the
    /// microsecond.
    pub fn cpu_seconds() -> Option<f64> {
        // SAFETY: rusage is plain old data; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The finite upper bounds of a histogram's buckets.
    fn bounds(family: &str, metrics: &Metrics) -> Vec<f64> {
        let families = metrics.registry.gather();
        let family = families
            .iter()
            .find(|f| f.name() == family)
            .unwrap_or_else(|| panic!("{family} not gathered"));
        family.get_metric()[0]
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| b.upper_bound())
            .collect()
    }

    #[test]
    fn latency_buckets_reach_past_the_longest_waits_and_keep_their_low_bounds() {
        let metrics = Metrics::new();
        metrics
            .ack_latency_seconds
            .with_label_values(&["mllp"])
            .observe(0.0);
        metrics
            .delivery_seconds
            .with_label_values(&["cdr"])
            .observe(0.0);
        metrics.processing_seconds.observe(0.0);
        let before = exponential_buckets(0.0001, 2.0, 16).unwrap();
        for family in ["orbiter_ack_latency_seconds", "orbiter_delivery_seconds"] {
            let bounds = bounds(family, &metrics);
            // An on-delivery ACK waits for a destination (30 s timeouts) up to 60 s.
            assert!(*bounds.last().unwrap() >= 60.0, "{family}: {bounds:?}");
            assert_eq!(bounds[..16], before[..], "{family}");
        }
        let processing = bounds("orbiter_processing_seconds", &metrics);
        assert!(*processing.last().unwrap() >= 60.0, "{processing:?}");
        // BENCHMARKS.md's share "within 1 ms" is this bucket.
        assert_eq!(processing[..4], [0.0001, 0.00025, 0.0005, 0.001]);
    }

    #[test]
    fn the_build_is_labelled_with_its_version() {
        let text = Metrics::new().render();
        let line = format!(
            "orbiter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == line), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_seconds_keep_their_fraction() {
        // Burn a little CPU so that the figure is not a round number by chance.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let text = Metrics::new().render();
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .unwrap_or_else(|| panic!("no process_cpu_seconds_total in\n{text}"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "{value}");
        assert!(value.fract() != 0.0, "whole seconds only: {value}");
        // Gathered again, it does not go back.
        let again = process::cpu_seconds().unwrap();
        assert!(again >= value, "{again} < {value}");
    }
}
