//! Logging through `tracing`, filtered by `ORBITER_LOG` (or `log` in the config).
//!
//! PHI never goes above debug level: our own code logs message bodies nowhere, and dependencies
//! that log whole frames are capped here whatever the filter says (`hl7-mllp-codec` logs every
//! encoded frame at debug).

use tracing_subscriber::filter::{Directive, EnvFilter};
use tracing_subscriber::fmt;

/// Directives appended to every filter: dependencies that would log message contents.
const PHI_SAFE: &[&str] = &["hl7_mllp_codec=off"];

/// Builds the filter: the user's directives, then the PHI caps (which win for those targets).
/// A filter that does not parse falls back to `info`, with a line on stderr: for the client
/// commands (`orbiter send`). The engine refuses to start with one ([`check`], from the
/// configuration's validation).
pub fn filter(spec: &str) -> EnvFilter {
    let mut filter = parse(spec).unwrap_or_else(|e| {
        eprintln!("orbiter: bad log filter `{spec}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    for directive in PHI_SAFE {
        filter = filter.add_directive(directive.parse::<Directive>().expect("static directive"));
    }
    filter
}

/// Whether `spec` is a filter the engine can use; otherwise why not, for a configuration error.
pub fn check(spec: &str) -> Result<(), String> {
    parse(spec)
        .map(drop)
        .map_err(|e| format!("`{spec}` is not a log filter: {e}"))
}

fn parse(spec: &str) -> Result<EnvFilter, String> {
    match bare_target(spec) {
        Some(word) => Err(format!(
            "`{word}` is not a level (error, warn, info, debug, trace, off); \
             for a target write `{word}=debug`"
        )),
        None => EnvFilter::try_new(spec).map_err(|e| e.to_string()),
    }
}

/// A directive that is one word but no level: `EnvFilter` reads `infoo` as "everything from
/// the target `infoo`, nothing else", so a typo in `ORBITER_LOG` silenced the engine entirely.
fn bare_target(spec: &str) -> Option<&str> {
    spec.split(',').map(str::trim).find(|d| {
        !d.is_empty()
            && !d.contains(['=', '['])
            && d.parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
    })
}

/// Installs the global subscriber (once; later calls are ignored) and bridges the `log` crate.
pub fn init(spec: &str, json: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = filter(spec);
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log_max_level(&filter))
        .init();
    // Colour only on a terminal: `kubectl logs` and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry();
    let _ = if json {
        let layer = json_layer(std::io::stderr)
            .with_filter(filter)
            .with_filter(Flood::new(json));
        registry.with(layer).try_init()
    } else {
        let layer = layer.with_filter(filter).with_filter(Flood::new(json));
        registry.with(layer).try_init()
    };
}

/// JSON lines with the event's fields at the top level (`{"timestamp", "level", "message",
/// "destination", ..., "target", "span", "spans"}`), not nested under `"fields"`, so that a
/// log shipper's field names are the ones in the code. Values recorded with `?` (lists, for
/// one) stay their Debug text in a string: `tracing` hands a formatter nothing else for them.
fn json_layer<S, W>(
    writer: W,
) -> fmt::Layer<S, fmt::format::JsonFields, fmt::format::Format<fmt::format::Json>, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

/// The most verbose level the filter lets through, as the `log` crate's static maximum. The
/// bridge's default is TRACE, and `log`'s macros test only that maximum before building a
/// record: sled's `trace!` calls on every page write then each went through the bridge and the
/// filter to be dropped there, 29% of the instructions of a message written to the embedded CDR
/// (`instructions.sh cdr`: 2,051,360 before, 1,457,566 after).
fn log_max_level(filter: &EnvFilter) -> tracing_log::log::LevelFilter {
    use tracing_log::AsLog as _;
    filter
        .max_level_hint()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE)
        .as_log()
}

/// Lines a second that one log statement may write at WARN or ERROR.
const FLOOD_LINES_PER_SECOND: u32 = 20;

/// Caps each WARN/ERROR log statement at [`FLOOD_LINES_PER_SECOND`]: on a full disk every
/// message and every sled flush logged an error, over a million lines in 15 s, on the
/// Raspberry Pi whose same disk keeps the container logs. The first line a statement writes
/// in a later second is preceded by how many of its lines were dropped.
struct Flood {
    json: bool,
    /// Per statement (target, file, line, level): the second and what it let through.
    windows: std::sync::Mutex<std::collections::HashMap<FloodKey, FloodWindow>>,
}

type FloodKey = (String, Option<String>, Option<u32>, tracing::Level);

#[derive(Default)]
struct FloodWindow {
    second: u64,
    passed: u32,
    dropped: u64,
}

impl Flood {
    fn new(json: bool) -> Flood {
        Flood {
            json,
            windows: Default::default(),
        }
    }

    /// Whether this event of `key` may be written now; reports what was dropped before it.
    fn admit(&self, key: FloodKey, now_second: u64) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(key.clone()).or_default();
        if window.second != now_second {
            if window.dropped > 0 {
                self.report(&key, window.dropped);
            }
            *window = FloodWindow {
                second: now_second,
                ..FloodWindow::default()
            };
        }
        if window.passed < FLOOD_LINES_PER_SECOND {
            window.passed += 1;
            true
        } else {
            window.dropped += 1;
            false
        }
    }

    /// Straight to stderr: an event from inside a filter would go through this filter again.
    fn report(&self, (target, file, line, level): &FloodKey, dropped: u64) {
        use std::io::Write as _;
        let place = format!(
            "{target} ({}:{})",
            file.as_deref().unwrap_or("?"),
            line.unwrap_or(0)
        );
        let text = format!("{dropped} more {level} lines from {place} were not written (at most {FLOOD_LINES_PER_SECOND} a second)");
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let line = if self.json {
            serde_json::json!({"timestamp": now, "level": "WARN", "message": text, "target": "orbiter::logging"}).to_string()
        } else {
            format!("{now}  WARN orbiter::logging: {text}")
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

impl<S> tracing_subscriber::layer::Filter<S> for Flood {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        use tracing_log::NormalizeEvent as _;
        // Records from the `log` crate (sled) share one callsite per level: their own target
        // and line tell the statements apart.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *meta.level() > tracing::Level::WARN {
            return true; // INFO and finer: not capped
        }
        let key = (
            meta.target().to_string(),
            meta.file().map(str::to_string),
            meta.line(),
            *meta.level(),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.admit(key, now)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_crate_records_only_what_the_filter_can_let_through() {
        use tracing_log::log::LevelFilter;
        let level = |spec: &str| super::log_max_level(&super::filter(spec));
        assert_eq!(level("warn"), LevelFilter::Warn);
        assert_eq!(level("info"), LevelFilter::Info);
        // The most verbose directive wins: a target at debug needs `log`'s debug records.
        assert_eq!(level("warn,sled=debug"), LevelFilter::Debug);
        assert_eq!(level("orbiter=trace"), LevelFilter::Trace);
        assert_eq!(level("off"), LevelFilter::Off);
    }

    #[test]
    fn a_misspelt_level_falls_back_to_info_instead_of_silence() {
        assert_eq!(super::bare_target("infoo"), Some("infoo"));
        assert_eq!(super::bare_target("warn,orbiter=dbug"), None); // EnvFilter refuses that one
        for good in [
            "info",
            "WARN",
            "off",
            "info,orbiter=debug",
            "orbiter::listen=trace",
            "3",
        ] {
            assert_eq!(super::bare_target(good), None, "{good}");
        }
        let filter = super::filter("infoo").to_string();
        assert!(filter.split(',').any(|d| d == "info"), "{filter}");
        // The engine does not fall back: it refuses to start.
        for bad in ["verbose", "infoo", "warn,orbiter=dbug"] {
            let e = super::check(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(super::check("info,orbiter::route=debug").is_ok());
    }

    #[test]
    fn one_statement_writes_at_most_its_share_of_lines_a_second() {
        let flood = super::Flood::new(false);
        let key = |line| {
            (
                "sled::tree".to_string(),
                None,
                Some(line),
                tracing::Level::ERROR,
            )
        };
        let passed = (0..1000).filter(|_| flood.admit(key(1), 7)).count();
        assert_eq!(passed, super::FLOOD_LINES_PER_SECOND as usize);
        // Another statement has its own share; the next second starts afresh.
        assert!(flood.admit(key(2), 7));
        assert!(flood.admit(key(1), 8));
    }

    #[test]
    fn json_lines_carry_the_fields_at_the_top_level_and_the_span() {
        use tracing_subscriber::layer::SubscriberExt as _;
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(super::json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("delivery", channel = "adt");
            let _entered = span.enter();
            tracing::warn!(destination = "cdr", retries = 3, "destination unavailable");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "destination unavailable", "{line}");
        assert_eq!(line["destination"], "cdr", "{line}");
        assert_eq!(line["retries"], 3, "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(line.get("fields").is_none(), "{line}");
        assert_eq!(line["span"]["name"], "delivery", "{line}");
        assert_eq!(line["span"]["channel"], "adt", "{line}");
    }

    #[test]
    fn codec_frames_are_never_logged_even_at_trace() {
        let filter = super::filter("trace").to_string();
        assert!(filter.contains("hl7_mllp_codec=off"), "{filter}");
    }
}
