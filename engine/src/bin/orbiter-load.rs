//! `orbiter-load`: drives N MLLP connections (or N keep-alive HTTP connections, when `--to` is
//! an `http://` URL such as `http://127.0.0.1:5001/hl7v2`) against an engine and reports
//! throughput and ACK latency. Over HTTP each connection has one request in flight. Each connection keeps `--window` messages in flight (1 = wait for each ACK before the
//! next, as most HL7 senders do); `--rate` paces the total to a steady messages/s instead of
//! going flat out.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use orbiter::mllp::MllpClient;

#[derive(Debug, Parser)]
#[command(name = "orbiter-load", about = "MLLP load generator for Orbiter")]
struct Args {
    /// Engine MLLP address, or an HTTP ingest URL (`http://127.0.0.1:5001/hl7v2`).
    #[arg(long, default_value = "127.0.0.1:2575")]
    to: String,
    /// Concurrent connections.
    #[arg(long, short, default_value_t = 16)]
    connections: usize,
    /// Messages in flight per connection (1: each waits for its ACK).
    #[arg(long, short, default_value_t = 1)]
    window: usize,
    /// How long to run, in seconds (after a 1 s warm-up that is not counted).
    #[arg(long, short, default_value_t = 10)]
    duration: u64,
    /// Total messages per second across all connections (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// With `--rate`: start every connection's pacing at the same instant (bursts of one
    /// message per connection, as this tool paced before), instead of spreading them evenly.
    #[arg(long)]
    aligned: bool,
    /// The message to send (MSH-10 is replaced per message); default: a 700-byte ADT^A01.
    #[arg(long)]
    message: Option<PathBuf>,
    /// Starts every message id (MSH-10, and the default message's MRN and account number):
    /// a second run against the same engine gives other ids (new patients, not updates or
    /// duplicates of the first run's). Default: `L` over MLLP, `H` over HTTP.
    #[arg(long)]
    id_prefix: Option<String>,
}

/// Per connection: ACK latencies in microseconds, counted only after the warm-up.
struct Outcome {
    latencies_us: Vec<u32>,
    /// AA/CA answers after the warm-up: the throughput counts these, not refusals.
    accepted_measured: u64,
    not_accepted: u64,
    error: Option<String>,
}

impl Outcome {
    /// Counts an ACK for a message sent at `sent` (its latency once the warm-up is over).
    fn answered(&mut self, sent: Instant, measure_from: Instant, ack: &[u8]) {
        let accepted = ack.windows(4).any(|w| w == b"|AA|" || w == b"|CA|");
        if sent >= measure_from {
            self.latencies_us
                .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            self.accepted_measured += u64::from(accepted);
        }
        if !accepted {
            self.not_accepted += 1;
        }
    }
}

fn template(path: Option<&PathBuf>) -> String {
    match path {
        Some(p) => String::from_utf8_lossy(&std::fs::read(p).expect("readable message file"))
            .replace('\n', "\r"),
        None => "MSH|^~\\&|LOADGEN|SITE|ORBITER|HOSP|20261201120000||ADT^A01^ADT_A01|{ID}|P|2.5.1\r\
EVN|A01|20261201120000|||OP1^OPERATOR^ONE\r\
PID|1||{ID}^^^HOSP^MR~99999^^^SSA^SS||DOE^JANE^QUINN^^MS||19800101|F||2106-3^White^HL70005|100 MAIN ST^APT 4^SPRINGFIELD^IL^62701^USA^H||^PRN^PH^^1^217^5551234|^WPN^PH^^1^217^5554321|EN|M|CHR|ACCT{ID}|123-45-6789\r\
NK1|1|DOE^JOHN^^^MR|SPO^Spouse^HL70063|100 MAIN ST^^SPRINGFIELD^IL^62701|^PRN^PH^^1^217^5551234\r\
PV1|1|I|WARD1^101^A^HOSP||||1234^SMITH^ALICE^^^DR|5678^JONES^BOB^^^DR||MED||||ADM|A0||1234^SMITH^ALICE^^^DR|IN||SELF|||||||||||||||||||HOSP||ADM|||20261201115500\r\
AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives\r\
DG1|1||I10^Essential hypertension^I10|||A"
            .to_string(),
    }
}

fn with_control_id(template: &str, id: &str) -> Vec<u8> {
    if template.contains("{ID}") {
        return template.replace("{ID}", id).into_bytes();
    }
    // A real message file: replace MSH-10.
    let mut fields: Vec<&str> = template.splitn(11, '|').collect();
    if fields.len() == 11 {
        fields[9] = id;
    }
    fields.join("|").into_bytes()
}

/// With `--rate`, when connection `n` sends: every `connections / rate` seconds, its first tick
/// offset by `n / rate` so that the connections take turns and the engine sees a steady stream
/// (with `--aligned`, all start together: bursts of one message per connection).
fn pacer(args: &Args, n: usize) -> Option<tokio::time::Interval> {
    if args.rate == 0 {
        return None;
    }
    let period = Duration::from_secs_f64(args.connections as f64 / args.rate as f64);
    let offset = if args.aligned {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(n as f64 / args.rate as f64)
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    Some(ticker)
}

async fn connection(
    args: &Args,
    n: usize,
    template: &str,
    measure_from: Instant,
    stop_at: Instant,
) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::new(),
        accepted_measured: 0,
        not_accepted: 0,
        error: None,
    };
    if args.to.starts_with("http://") || args.to.starts_with("https://") {
        return http_connection(args, n, template, measure_from, stop_at, out).await;
    }
    let mut client = match MllpClient::connect(&args.to, Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let mut pace = pacer(args, n);
    let mut in_flight: VecDeque<Instant> = VecDeque::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while in_flight.len() < args.window && now < stop_at {
            if let Some(ticker) = pace.as_mut() {
                ticker.tick().await;
            }
            seq += 1;
            let prefix = args.id_prefix.as_deref().unwrap_or("L");
            let message = with_control_id(template, &format!("{prefix}{n}-{seq}"));
            if let Err(e) = client.write(&message).await {
                out.error = Some(e.to_string());
                return out;
            }
            in_flight.push_back(Instant::now());
        }
        let Some(sent) = in_flight.pop_front() else {
            return out;
        };
        match client.read_ack().await {
            Ok(ack) => out.answered(sent, measure_from, &ack),
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
}

/// One keep-alive HTTP connection posting HL7 v2 and reading the ACK in the response.
async fn http_connection(
    args: &Args,
    n: usize,
    template: &str,
    measure_from: Instant,
    stop_at: Instant,
    mut out: Outcome,
) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("HTTP client");
    let mut ticker = pacer(args, n);
    let mut seq = 0u64;
    while Instant::now() < stop_at {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        seq += 1;
        let prefix = args.id_prefix.as_deref().unwrap_or("H");
        let message = with_control_id(template, &format!("{prefix}{n}-{seq}"));
        let sent = Instant::now();
        let response = client
            .post(&args.to)
            .header("Content-Type", "application/hl7-v2")
            .body(message)
            .send()
            .await;
        let body = match response {
            Ok(r) => r.bytes().await,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
        match body {
            Ok(ack) => out.answered(sent, measure_from, &ack),
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
    out
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let template = template(args.message.as_ref());
    let size = with_control_id(&template, "L0-1").len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(1);
    let stop_at = measure_from + Duration::from_secs(args.duration);
    let outcomes = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|n| connection(&args, n, &template, measure_from, stop_at))
            .collect();
        futures_util::future::join_all(tasks).await
    });
    let elapsed = stop_at
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let mut latencies: Vec<u32> = outcomes
        .iter()
        .flat_map(|o| o.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    let not_accepted: u64 = outcomes.iter().map(|o| o.not_accepted).sum();
    // `acked` and the rate count accepted messages only (AA/CA): an engine answering AE or AR
    // fast is not taking messages. The latencies are of every answer.
    let accepted: u64 = outcomes.iter().map(|o| o.accepted_measured).sum();
    println!(
        "connections={} window={} rate={} message_bytes={} duration_s={}",
        args.connections,
        args.window,
        if args.rate == 0 {
            "max".to_string()
        } else {
            args.rate.to_string()
        },
        size,
        args.duration
    );
    println!(
        "acked={} msgs_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} not_accepted={} connection_errors={}",
        accepted,
        accepted as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        not_accepted,
        errors.len()
    );
    if let Some(first) = errors.first() {
        eprintln!("first connection error: {first}");
        std::process::exit(1);
    }
}
