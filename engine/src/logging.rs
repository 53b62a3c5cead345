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
    let parsed = match bare_target(spec) {
        Some(word) => Err(format!(
            "`{word}` is not a level (error, warn, info, debug, trace, off); \
             for a target write `{word}=debug`"
        )),
        None => EnvFilter::try_new(spec).map_err(|e| e.to_string()),
    };
    let mut filter = parsed.unwrap_or_else(|e| {
        eprintln!("orbiter: bad log filter `{spec}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    for directive in PHI_SAFE {
        filter = filter.add_directive(directive.parse::<Directive>().expect("static directive"));
    }
    filter
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
    }

    #[test]
    fn codec_frames_are_never_logged_even_at_trace() {
        let filter = super::filter("trace").to_string();
        assert!(filter.contains("hl7_mllp_codec=off"), "{filter}");
    }
}
