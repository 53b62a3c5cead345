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
pub fn filter(spec: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|e| {
        eprintln!("orbiter: bad log filter `{spec}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    for directive in PHI_SAFE {
        filter = filter.add_directive(directive.parse::<Directive>().expect("static directive"));
    }
    filter
}

/// Installs the global subscriber (once; later calls are ignored) and bridges the `log` crate.
pub fn init(spec: &str, json: bool) {
    let _ = tracing_log::LogTracer::init();
    // Colour only on a terminal: `kubectl logs` and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter(spec))
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn codec_frames_are_never_logged_even_at_trace() {
        let filter = super::filter("trace").to_string();
        assert!(filter.contains("hl7_mllp_codec=off"), "{filter}");
    }
}
