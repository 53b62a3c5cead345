//! The `orbiter` command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::hl7::ack::{Expect, ER_WAIT};
use crate::hl7::{split_batch, Ack};
use crate::mllp::MllpClient;

#[derive(Debug, Parser)]
#[command(
    name = "orbiter",
    version,
    about = "Orbiter: a health information mediator (HL7 v2 over MLLP into a durable journal)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine (with no flags: embedded defaults, data in ./data).
    #[command(after_help = RUN_ENV_HELP)]
    Run {
        /// Configuration file (default: ./orbiter.toml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory (journal); overrides the config and ORBITER_DATA_DIR.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Send HL7 v2 files over MLLP and print each ACK; exits non-zero unless every ACK is AA/CA.
    /// A message whose MSH-15 asks for no accept ACK (NE, or ER when it is accepted) is not
    /// waited for: the line says none was requested.
    Send {
        /// Files holding one message each, or FHS/BHS batch files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to send, e.g. 127.0.0.1:2575.
        #[arg(long)]
        to: String,
        /// Seconds to wait for each ACK.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Speak TLS, trusting the CA certificate(s) in this PEM file (for a listener with
        /// `tls.cert`/`tls.key`).
        #[arg(long, value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        /// Client certificate (PEM) for a listener that asks for one (mutual TLS); with --tls-key.
        #[arg(long, value_name = "PEM", requires_all = ["tls_ca", "tls_key"])]
        tls_cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The name to check the server's certificate against (default: the host of --to).
        #[arg(long, requires = "tls_ca")]
        tls_name: Option<String>,
    },
    /// Parse channel definitions and compile their scripts (for a whole channels dir, every
    /// script in the scripts dir too); exit non-zero with file:line:col on errors.
    Check {
        /// A channels directory or one channel file (default: the configured channels dir).
        path: Option<PathBuf>,
        /// Configuration file (default: ./orbiter.toml if it exists); for the channels and
        /// scripts dirs and the script limits.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check what an operator checks first (config, data dir, ports, channels and scripts, CDR,
    /// TLS files, clock); prints ok/warn/fail with the fix, exits non-zero on any fail.
    Doctor {
        /// Configuration file (default: ./orbiter.toml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory; overrides the config and ORBITER_DATA_DIR.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Run one channel's filter and transform on one message and print the output: FHIR JSON,
    /// or HL7 v2 text one segment a line (no journal, no delivery).
    Try {
        /// A channel name (from the channels dir) or a channel file.
        channel: String,
        /// The HL7 v2 message.
        message: PathBuf,
        /// Print a JSON envelope (channel, revision, outcome, output, and the steps with their
        /// logs) instead of just the output.
        #[arg(long)]
        json: bool,
        /// Configuration file (default: ./orbiter.toml if it exists); for the channels and
        /// scripts dirs and the script limits.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// What an operator looks for in `orbiter run --help`: where settings come from.
const RUN_ENV_HELP: &str = "\
Every key of orbiter.toml can be set by an environment variable named after its path
(`mllp.addr` is ORBITER_MLLP_ADDR, `mllp.tls.cert` is ORBITER_MLLP_TLS_CERT); the
environment wins over the file, and --data over both. The main ones:
  ORBITER_DATA_DIR        journal and embedded CDR (default ./data)
  ORBITER_MLLP_ADDR       MLLP listener (default 0.0.0.0:2575)
  ORBITER_HTTP_ADDR       HTTP ingest (default 0.0.0.0:5001)
  ORBITER_ADMIN_ADDR      admin API, /fhir, /metrics, /health, /ready (default 0.0.0.0:8080)
  ORBITER_ADMIN_TOKEN     bootstrap admin token (secret; else generated into <data>/admin.token)
  ORBITER_CDR_URL         external FHIR server (unset: the embedded CDR)
  ORBITER_CDR_TOKEN       bearer token for it (secret; or ORBITER_CDR_USERNAME + ORBITER_CDR_PASSWORD)
  ORBITER_CHANNELS_DIR    channel definitions (default ./channels)
  ORBITER_SCRIPTS_DIR     Rhai scripts (default ./scripts)
  ORBITER_LOG             log filter: error, warn, info (default), debug, or e.g. info,orbiter=debug
  ORBITER_LOG_JSON        true: JSON lines
Secrets are taken from the environment only. A set ORBITER_ variable that names no key is
reported at start-up. `orbiter doctor` checks a configuration without starting the engine.";

pub fn main() -> anyhow::Result<std::process::ExitCode> {
    crate::tls::install_crypto_provider();
    let cli = Cli::parse();
    stop_quietly_on_broken_pipe(run(cli.command))
}

/// The error and its causes on one line, `a: b: c`, as `{:#}` prints them, but without a
/// cause whose text the line already ends with: many error types put their source in their
/// own message too (`TLS: {0}`), and the operator read every cause twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// A reader that goes away (`orbiter try ... | head`) ends the command quietly with status 0,
/// as ripgrep does, instead of an error (or a `println!` panic) about a pipe nobody reads.
fn stop_quietly_on_broken_pipe(
    result: anyhow::Result<std::process::ExitCode>,
) -> anyhow::Result<std::process::ExitCode> {
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(std::process::ExitCode::SUCCESS),
        other => other,
    }
}

/// Only an `io::Error` the command returned itself (a failed `writeln!` on stdout or stderr):
/// one from a socket is wrapped in its own error type (`send`'s MLLP errors) and still counts.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Run { config, data } => {
            let mut config = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(data) = data {
                config.data_dir = data;
            }
            crate::logging::init(&config.log, config.log_json);
            for unknown in crate::config::unknown_env_vars(std::env::vars()) {
                tracing::warn!("{unknown}");
            }
            crate::server::run(config)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Doctor { config, data } => {
            crate::logging::init("off", false);
            Ok(crate::doctor::run(config.as_deref(), data)?)
        }
        Command::Check { path, config } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            crate::logging::init("off", false);
            // An explicit PATH that does not exist is refused by the check itself; the
            // configured dir must be too, or a typo in CI "checks" zero channels and passes.
            if path.is_none() && !config.channels_dir.exists() {
                anyhow::bail!(
                    "the channels dir {} does not exist (channels_dir, ORBITER_CHANNELS_DIR, or \
                     give a PATH)",
                    config.channels_dir.display()
                );
            }
            Ok(crate::channel::check::check(&config, path.as_deref())?)
        }
        Command::Try {
            channel,
            message,
            json,
            config,
        } => {
            let config = Config::load(config.as_deref(), std::env::vars())?;
            crate::logging::init("off", false);
            crate::channel::check::try_channel(&config, &channel, &message, json)
        }
        Command::Send {
            files,
            to,
            timeout,
            tls_ca,
            tls_cert,
            tls_key,
            tls_name,
        } => {
            let tls = match &tls_ca {
                None => None,
                Some(ca) => {
                    let identity = tls_cert.as_deref().zip(tls_key.as_deref());
                    Some(crate::tls::client_config(ca, identity)?)
                }
            };
            crate::logging::init(
                &std::env::var("ORBITER_LOG").unwrap_or_else(|_| "warn".into()),
                false,
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let all_accepted = runtime.block_on(async {
                let timeout = Duration::from_secs(timeout);
                match tls {
                    None => send(MllpClient::connect(&to, timeout).await?, &files, timeout).await,
                    Some(config) => {
                        let client =
                            MllpClient::connect_tls(&to, config, tls_name.as_deref(), timeout)
                                .await?;
                        send(client, &files, timeout).await
                    }
                }
            })?;
            Ok(if all_accepted {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            })
        }
    }
}

/// A message sent whose ACK is not read yet: its MSH-15 let it go without waiting, or it did
/// not come in time. If it comes later, it is printed for this message.
struct Outstanding {
    label: String,
    control_id: String,
}

/// Sends every message of every file on one connection, one at a time; prints each ACK.
/// A message whose MSH-15 asks for no accept ACK (`NE`; `ER` when none comes within
/// [`ER_WAIT`]; `SU` when none comes in time) is not an error: the line says so and the next
/// message goes. An ACK that comes later for such a message (a receiver that answers anyway,
/// or an application ACK) is matched by MSA-2 and printed for it.
async fn send<S>(
    mut client: MllpClient<S>,
    files: &[PathBuf],
    timeout: Duration,
) -> anyhow::Result<bool>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut all_accepted = true;
    let mut outstanding: Vec<Outstanding> = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        // Batch files are split; anything else goes as one message and the server judges it.
        let messages = split_batch(&bytes).unwrap_or_else(|_| vec![&bytes[..]]);
        for (n, message) in messages.iter().enumerate() {
            let label = if messages.len() > 1 {
                format!("{} #{}", file.display(), n + 1)
            } else {
                file.display().to_string()
            };
            let context = || format!("{} (message {})", file.display(), n + 1);
            let expect = Expect::of(message);
            let control_id = crate::hl7::ack::unparsed_header(message)
                .and_then(|h| h.control_id)
                .unwrap_or_default();
            client.write(message).await.with_context(context)?;
            let wait = match expect {
                Expect::Never => {
                    print_line(&format!(
                        "{label}: no ACK requested (MSH-15 NE) for {control_id}"
                    ))?;
                    outstanding.push(Outstanding { label, control_id });
                    continue;
                }
                Expect::OnError => ER_WAIT.min(timeout),
                Expect::Always | Expect::OnSuccess => timeout,
            };
            let ack = read_own_ack(
                &mut client,
                wait,
                &control_id,
                &mut outstanding,
                &mut all_accepted,
            )
            .await;
            match ack.with_context(context)? {
                Some(ack) => all_accepted &= print_ack(&label, &ack)?,
                None if expect == Expect::OnError => {
                    print_line(&format!(
                        "{label}: no ACK (MSH-15 ER: none when accepted) for {control_id}"
                    ))?;
                    outstanding.push(Outstanding { label, control_id });
                }
                None if expect == Expect::OnSuccess => {
                    all_accepted = false;
                    print_line(&format!(
                        "{label}: no ACK within {wait:?} (MSH-15 SU: none when not accepted) for {control_id}"
                    ))?;
                    outstanding.push(Outstanding { label, control_id });
                }
                None => {
                    return Err(anyhow::Error::from(crate::mllp::ClientError::Timeout(wait)))
                        .with_context(context)
                }
            }
        }
    }
    // ACKs still owed to messages that went without one: those that come within a moment.
    while !outstanding.is_empty() {
        let Ok(Ok(ack)) = tokio::time::timeout(ER_WAIT.min(timeout), client.read_ack()).await
        else {
            break;
        };
        let answers = Ack::parse(&ack).ok().and_then(|a| a.control_id);
        let label = match outstanding
            .iter()
            .position(|o| Some(&o.control_id) == answers.as_ref())
        {
            Some(i) => outstanding.remove(i).label,
            None => "an ACK for no message sent".to_string(),
        };
        all_accepted &= print_ack(&label, &ack)?;
    }
    Ok(all_accepted)
}

/// Reads ACKs for up to `wait` until one that is not an outstanding message's (MSA-2): this
/// message's. ACKs of outstanding messages are printed for them on the way. `None`: none came
/// in time.
async fn read_own_ack<S>(
    client: &mut MllpClient<S>,
    wait: Duration,
    control_id: &str,
    outstanding: &mut Vec<Outstanding>,
    all_accepted: &mut bool,
) -> anyhow::Result<Option<bytes::Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ack = match tokio::time::timeout_at(deadline, client.read_ack()).await {
            Err(_) | Ok(Err(crate::mllp::ClientError::Timeout(_))) => return Ok(None),
            Ok(result) => result?,
        };
        let answers = Ack::parse(&ack).ok().and_then(|a| a.control_id);
        let earlier = answers
            .filter(|id| id != control_id)
            .and_then(|id| outstanding.iter().position(|o| o.control_id == id));
        match earlier {
            Some(i) => {
                let earlier = outstanding.remove(i);
                *all_accepted &= print_ack(&earlier.label, &ack)?;
            }
            None => return Ok(Some(ack)),
        }
    }
}

/// Prints one line of the summary.
fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
}

/// Prints an ACK under `label` (a summary line, then the ACK a segment a line); whether it
/// accepts (`AA` or `CA`).
fn print_ack(label: &str, ack: &[u8]) -> std::io::Result<bool> {
    let (accepted, summary) = match Ack::parse(ack) {
        Ok(parsed) => {
            let mut line = format!(
                "{} for {}",
                parsed.code,
                parsed.control_id.as_deref().unwrap_or("?")
            );
            if let Some(text) = &parsed.text {
                line.push_str(&format!(": {text}"));
            }
            (matches!(parsed.code.as_str(), "AA" | "CA"), line)
        }
        Err(e) => (false, format!("unreadable ACK: {e}")),
    };
    // Locked per message: the lock must not be held across the next `await`.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{label}: {summary}")?;
    writeln!(
        out,
        "{}",
        String::from_utf8_lossy(ack).replace('\r', "\n").trim_end()
    )?;
    Ok(accepted)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_repeats_its_cause_prints_it_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("TLS: {0}")]
        struct Repeats(#[from] std::io::Error);
        let io = std::io::Error::other("invalid peer certificate");
        let e = anyhow::Error::from(Repeats(io)).context("starting the MLLP listener");
        assert_eq!(
            error_text(&e),
            "starting the MLLP listener: TLS: invalid peer certificate"
        );
        let chained = anyhow::anyhow!("no such file").context("cannot read x.toml");
        assert_eq!(error_text(&chained), "cannot read x.toml: no such file");
    }

    #[test]
    fn a_closed_stdout_is_a_quiet_success_and_a_closed_socket_is_not() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let wrapped = anyhow::Error::from(pipe).context("printing the output");
        let code = stop_quietly_on_broken_pipe(Err(wrapped)).unwrap();
        assert_eq!(code, std::process::ExitCode::SUCCESS);
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(stop_quietly_on_broken_pipe(Err(other)).is_err());
        // A peer that hung up on `send` is a failure, not a closed stdout.
        let socket = crate::mllp::ClientError::Send(std::io::ErrorKind::BrokenPipe.into());
        assert!(stop_quietly_on_broken_pipe(Err(anyhow::Error::from(socket))).is_err());
    }
}
