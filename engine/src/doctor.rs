//! `orbiter doctor`: what an operator checks first, each as `ok`, `warn` or `fail` with the fix.
//!
//! Works against a stopped engine (ports must be free) and a running one (a port in use is fine
//! when `/health` on the admin port answers as an Orbiter). Never opens the journal: a running
//! engine holds its lock, and a check must not change anything.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::channel::{ChannelPaths, Channels};
use crate::config::{Config, TlsConfig};

/// Free space under which the data dir is a failure, and under which it is a warning.
const FAIL_BELOW_BYTES: u64 = 100 * 1024 * 1024;
const WARN_BELOW_BYTES: u64 = 1024 * 1024 * 1024;
/// Certificates expiring sooner than this are a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How far the CDR's clock may be from ours.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    /// What was checked, e.g. `data dir`, `port admin`.
    pub subject: String,
    pub message: String,
    /// What to do about it (for warn and fail).
    pub fix: Option<String>,
}

impl Finding {
    fn ok(subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        }
    }

    fn warn(
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Warn,
            subject: subject.into(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Fail,
            subject: subject.into(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// `ok    data dir: …` and, for warn/fail, an indented `fix: …` line.
    pub fn render(&self) -> String {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        let mut line = format!("{level:<5} {}: {}", self.subject, self.message);
        if let Some(fix) = &self.fix {
            line.push_str(&format!("\n      fix: {fix}"));
        }
        line
    }
}

/// Runs every check and prints them; exit code 1 on any `fail`. Fails only if stdout does.
pub fn run(
    config_file: Option<&Path>,
    data: Option<PathBuf>,
) -> std::io::Result<std::process::ExitCode> {
    use std::io::Write as _;
    let findings = check_all(config_file, data);
    let mut out = std::io::stdout().lock();
    for finding in &findings {
        writeln!(out, "{}", finding.render())?;
    }
    let fails = findings.iter().filter(|f| f.level == Level::Fail).count();
    let warns = findings.iter().filter(|f| f.level == Level::Warn).count();
    writeln!(out, "{fails} failure(s), {warns} warning(s)")?;
    Ok(if fails > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Every check, in the order an operator would look.
pub fn check_all(config_file: Option<&Path>, data: Option<PathBuf>) -> Vec<Finding> {
    let mut findings = vec![clock()];
    let mut config = match Config::load(config_file, std::env::vars()) {
        Ok(config) => {
            let source = config_file
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "defaults and environment".into());
            findings.push(Finding::ok("config", format!("{source} parses")));
            config
        }
        Err(e) => {
            findings.push(Finding::fail(
                "config",
                // With its cause (a file that cannot be read says why on the next link).
                format!("{:#}", anyhow::Error::from(e)),
                "correct the named key or variable (`orbiter.toml` keys are listed in config.rs)",
            ));
            return findings;
        }
    };
    for unknown in crate::config::unknown_env_vars(std::env::vars()) {
        findings.push(Finding::warn(
            "config",
            unknown.to_string(),
            "correct or remove the variable (every key's variable is ORBITER_ + its path)",
        ));
    }
    if let Some(data) = data {
        config.data_dir = data;
    }
    findings.extend(data_dir(&config.data_dir));
    let engine_running = engine_answers(config.admin.addr, config.admin.tls.enabled());
    findings.extend(ports(&config, engine_running));
    findings.extend(channels(&config));
    findings.extend(tls_files(&config));
    findings.extend(cdr(&config));
    findings
}

fn clock() -> Finding {
    let year = time::OffsetDateTime::now_utc().year();
    if year >= 2024 {
        Finding::ok("clock", format!("year {year}"))
    } else {
        Finding::fail(
            "clock",
            format!("the system clock says {year}"),
            "set the time (NTP); TLS and message timestamps depend on it",
        )
    }
}

/// Exists (or can be created), writable, with free space.
fn data_dir(dir: &Path) -> Vec<Finding> {
    let subject = "data dir";
    if let Err(e) = crate::data_dir::create(dir) {
        return vec![Finding::fail(
            subject,
            format!("cannot create {}: {e}", dir.display()),
            "create it and give the engine's user write access, or point --data elsewhere",
        )];
    }
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"orbiter doctor")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    let mut findings = vec![match written {
        Ok(()) => Finding::ok(subject, format!("{} is writable", dir.display())),
        Err(e) => {
            return vec![Finding::fail(
                subject,
                format!("cannot write in {}: {e}", dir.display()),
                "give the engine's user write access (in Kubernetes: the volume's fsGroup)",
            )]
        }
    }];
    match crate::data_dir::privacy(dir) {
        crate::data_dir::Privacy::Private => {}
        crate::data_dir::Privacy::Open { mode } => findings.push(Finding::warn(
            "data dir mode",
            format!(
                "{} is {mode:o}: other users may read the journal (patient data)",
                dir.display()
            ),
            format!("chmod 700 {}", dir.display()),
        )),
        // Not ours to close, and nothing in it readable by others: nothing to fix here.
        crate::data_dir::Privacy::DirOnly { mode, owner, .. } => findings.push(Finding::ok(
            "data dir mode",
            format!(
                "{} is {mode:o} and belongs to uid {owner}; what it holds is closed to other users",
                dir.display()
            ),
        )),
        crate::data_dir::Privacy::Exposed {
            mode,
            owner,
            entries,
            ..
        } => findings.push(Finding::warn(
            "data dir mode",
            format!(
                "{} is {mode:o} (uid {owner}'s), and other users may read {} in it",
                dir.display(),
                entries.join(", ")
            ),
            "chmod o-rwx those entries as their owner, or have the dir's owner chmod 700 it",
        )),
    }
    findings.push(match crate::data_dir::free_bytes(dir) {
        Some(free) if free < FAIL_BELOW_BYTES => Finding::fail(
            "free space",
            format!("{} MiB free under {}", free >> 20, dir.display()),
            "free space or grow the volume; the journal stops taking messages when the disk is full",
        ),
        Some(free) if free < WARN_BELOW_BYTES => Finding::warn(
            "free space",
            format!("{} MiB free under {}", free >> 20, dir.display()),
            "grow the volume or shorten retention (`[retention]`)",
        ),
        Some(free) => Finding::ok("free space", format!("{} MiB free", free >> 20)),
        None => Finding::warn(
            "free space",
            "cannot tell on this platform",
            "check the volume by hand (df)",
        ),
    });
    findings
}

/// Where to reach a listener bound to `addr` from this host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// Whether an Orbiter answers `/health` on the admin port.
fn engine_answers(admin: SocketAddr, tls: bool) -> bool {
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{}/health", reachable(admin));
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    runtime.block_on(async {
        let Ok(client) = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            // Our own port: a self-signed certificate is still ours.
            .danger_accept_invalid_certs(true)
            .build()
        else {
            return false;
        };
        match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => resp
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|body| body["status"] == "ok"),
            _ => false,
        }
    })
}

/// Each enabled listener's port: free, or held by our running engine.
fn ports(config: &Config, engine_running: bool) -> Vec<Finding> {
    let mut listeners = vec![("admin", config.admin.addr)];
    if config.mllp.enabled {
        listeners.push(("mllp", config.mllp.addr));
    }
    if config.http.enabled {
        listeners.push(("http", config.http.addr));
    }
    listeners
        .into_iter()
        .map(|(name, addr)| {
            let subject = format!("port {name}");
            match TcpListener::bind(addr) {
                Ok(_) => Finding::ok(subject, format!("{addr} is free")),
                Err(_) if engine_running => Finding::ok(
                    subject,
                    format!("{addr} is in use by the running engine"),
                ),
                Err(e) => Finding::fail(
                    subject,
                    format!("cannot bind {addr}: {e}"),
                    format!(
                        "stop what holds the port (`ss -ltnp 'sport = :{}'`) or set ORBITER_{}_ADDR",
                        addr.port(),
                        name.to_ascii_uppercase()
                    ),
                ),
            }
        })
        .collect()
}

/// Every channel and script compiles (the same load `orbiter run` does).
fn channels(config: &Config) -> Vec<Finding> {
    if !config.channels_dir.is_dir() {
        return vec![Finding::warn(
            "channels",
            format!("{} is not a directory", config.channels_dir.display()),
            "set ORBITER_CHANNELS_DIR to the channel definitions",
        )];
    }
    let (channels, report) = Channels::load(ChannelPaths {
        channels_dir: config.channels_dir.clone(),
        scripts_dir: config.scripts_dir.clone(),
        limits: config.script.clone(),
    });
    let mut findings: Vec<Finding> = report
        .errors
        .iter()
        .map(|e| {
            Finding::fail(
                "channels",
                e.clone(),
                "fix the file at the line and column shown (`orbiter check` and `orbiter try` help)",
            )
        })
        .collect();
    let count = channels.current().channels.len();
    if findings.is_empty() {
        findings.push(if count == 0 {
            Finding::warn(
                "channels",
                format!("no channels in {}", config.channels_dir.display()),
                "add a channel definition, or no message will be processed",
            )
        } else {
            Finding::ok(
                "channels",
                format!("{count} channel(s) and their scripts compile"),
            )
        });
    }
    findings
}

/// Certificates, keys and CA bundles readable; certificates not expired or expiring soon.
fn tls_files(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (name, tls) in [
        ("mllp", &config.mllp.tls),
        ("http", &config.http.tls),
        ("admin", &config.admin.tls),
    ] {
        if !tls.enabled() {
            continue;
        }
        findings.extend(tls_listener(name, tls));
    }
    findings
}

fn tls_listener(name: &str, tls: &TlsConfig) -> Vec<Finding> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let subject = format!("tls {name}");
    let mut findings = Vec::new();
    if let Some(cert) = &tls.cert {
        let certs: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(cert).and_then(|it| it.collect());
        match certs {
            Ok(certs) if !certs.is_empty() => {
                findings.push(expiry(&subject, cert, &certs[0], SystemTime::now()))
            }
            Ok(_) => findings.push(Finding::fail(
                &subject,
                format!("{}: no certificate in the file", cert.display()),
                "give a PEM file with the certificate chain, leaf first",
            )),
            Err(e) => findings.push(Finding::fail(
                &subject,
                format!("{}: {e}", cert.display()),
                "make the file readable by the engine and PEM-encoded",
            )),
        }
    }
    if let Some(key) = &tls.key {
        if let Err(e) = PrivateKeyDer::from_pem_file(key) {
            findings.push(Finding::fail(
                &subject,
                format!("{}: {e}", key.display()),
                "give a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
            ));
        }
    }
    if let Some(ca) = &tls.client_ca {
        let certs: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(ca).and_then(|it| it.collect());
        if !certs.is_ok_and(|c| !c.is_empty()) {
            findings.push(Finding::fail(
                &subject,
                format!("{}: no readable CA certificate", ca.display()),
                "give the PEM bundle that client certificates chain to",
            ));
        }
    }
    // Each file reads: do they make a server config together, as the engine will build it?
    // (A key of another certificate, or an X.509 v1 certificate, only fails there.)
    if !findings.iter().any(|f| f.level == Level::Fail) {
        if let Err(e) = crate::tls::server_config(tls) {
            findings.push(Finding::fail(
                &subject,
                e.to_string(),
                "give the key that belongs to the certificate, and a v3 certificate",
            ));
        }
    }
    findings
}

fn expiry(subject: &str, file: &Path, cert: &[u8], now: SystemTime) -> Finding {
    let Some(not_after) = x509_not_after(cert) else {
        return Finding::warn(
            subject,
            format!("{}: cannot read the certificate's expiry", file.display()),
            "check it by hand: openssl x509 -enddate -noout -in <file>",
        );
    };
    let date = time::OffsetDateTime::from(not_after).date();
    match not_after.duration_since(now) {
        Err(_) => Finding::fail(
            subject,
            format!("{} expired on {date}", file.display()),
            "renew the certificate",
        ),
        Ok(left) if left < EXPIRY_WARNING => Finding::warn(
            subject,
            format!(
                "{} expires on {date} (in {} days)",
                file.display(),
                left.as_secs() / 86_400
            ),
            "renew the certificate soon",
        ),
        Ok(_) => Finding::ok(subject, format!("{} valid until {date}", file.display())),
    }
}

/// A certificate's `notAfter`, by walking the DER: Certificate → tbsCertificate → (version),
/// serial, signature algorithm, issuer, validity → notAfter. Enough for a check; no new crate.
pub fn x509_not_after(cert: &[u8]) -> Option<SystemTime> {
    use crate::tls::der;
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = der(rest)?;
    if tag == 0xa0 {
        rest = after; // explicit version
    }
    for _ in 0..3 {
        rest = der(rest)?.2; // serial, signature, issuer
    }
    let (_, validity, _) = der(rest)?;
    let (_, _, after_not_before) = der(validity)?;
    let (tag, not_after, _) = der(after_not_before)?;
    let text = std::str::from_utf8(not_after).ok()?;
    let digits = text.strip_suffix('Z')?;
    let full = match tag {
        // UTCTime: YYMMDDHHMMSS, years 1950-2049.
        0x17 if digits.len() == 12 => {
            let yy: i32 = digits[..2].parse().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            format!("{century}{digits}")
        }
        // GeneralizedTime: YYYYMMDDHHMMSS.
        0x18 if digits.len() == 14 => digits.to_string(),
        _ => return None,
    };
    let n = |range: std::ops::Range<usize>| full.get(range)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        n(0..4)? as i32,
        time::Month::try_from(n(4..6)? as u8).ok()?,
        n(6..8)? as u8,
    )
    .ok()?;
    let moment = date
        .with_hms(n(8..10)? as u8, n(10..12)? as u8, n(12..14)? as u8)
        .ok()?
        .assume_utc();
    Some(moment.into())
}

/// The CDR: embedded (nothing to reach), or an external server answering `metadata`, whose
/// `Date` header also checks our clock.
fn cdr(config: &Config) -> Vec<Finding> {
    let Some(url) = &config.cdr.url else {
        return vec![Finding::ok("cdr", "embedded (under the data dir)")];
    };
    let metadata = format!("{}/metadata", url.trim_end_matches('/'));
    // What this report prints: the URL without the `user:password@` or query it may carry.
    let shown_url = crate::deliver::shown_url(url);
    let shown = format!("{shown_url}/metadata");
    let builder = match crate::deliver::client_builder(config.cdr.tls_ca.as_deref()) {
        Ok(builder) => builder,
        Err(e) => {
            return vec![Finding::fail(
                "cdr",
                e,
                "cdr.tls_ca (ORBITER_CDR_TLS_CA) must be a readable PEM file of CA certificates",
            )]
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return vec![Finding::fail("cdr", e.to_string(), "report this as a bug")],
    };
    let answer = runtime.block_on(async {
        let client = builder.timeout(PROBE_TIMEOUT).build()?;
        let mut request = client
            .get(&metadata)
            .header("Accept", "application/fhir+json");
        if let Some(token) = &config.cdr.token {
            request = request.bearer_auth(token);
        } else if let Some(user) = &config.cdr.username {
            request = request.basic_auth(user, config.cdr.password.as_deref());
        }
        let response = request.send().await?;
        let status = response.status();
        let date = response
            .headers()
            .get("date")
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, date, body))
    });
    let mut findings = Vec::new();
    match answer {
        Err(e) => findings.push(Finding::fail(
            "cdr",
            format!("{shown}: {}", crate::deliver::error_chain(&e.without_url())),
            "check ORBITER_CDR_URL and that the FHIR server is up and reachable from here \
             (an https server under a private CA: cdr.tls_ca)",
        )),
        Ok((status, _, _)) if status == 401 || status == 403 => findings.push(Finding::fail(
            "cdr",
            format!("{shown} answered {status}"),
            "set ORBITER_CDR_TOKEN (or cdr.username and ORBITER_CDR_PASSWORD)",
        )),
        Ok((status, date, body)) => {
            if status.is_success() && body["resourceType"] == "CapabilityStatement" {
                let version = body["fhirVersion"].as_str().unwrap_or("?");
                findings.push(Finding::ok(
                    "cdr",
                    format!("{shown_url} answers metadata (FHIR {version})"),
                ));
            } else {
                findings.push(Finding::fail(
                    "cdr",
                    format!("{shown} answered {status} without a CapabilityStatement"),
                    "ORBITER_CDR_URL must be the FHIR base URL (the one ending before /metadata)",
                ));
            }
            if let Some(theirs) = date {
                let now = SystemTime::now();
                let skew = now
                    .duration_since(theirs)
                    .or_else(|_| theirs.duration_since(now))
                    .unwrap_or_default();
                findings.push(if skew > MAX_CLOCK_SKEW {
                    Finding::warn(
                        "clock",
                        format!("{}s away from the CDR's clock", skew.as_secs()),
                        "sync both clocks (NTP); FHIR timestamps and TLS depend on them",
                    )
                } else {
                    Finding::ok("clock", "within 5 minutes of the CDR's")
                });
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn not_after_is_read_from_the_der() {
        for (year, month, day) in [(2030, 3, 14), (2051, 1, 2)] {
            let der = cert_until(year, month, day);
            let not_after = x509_not_after(&der).unwrap();
            let date = time::OffsetDateTime::from(not_after).date();
            assert_eq!(
                (date.year(), date.month() as u8, date.day()),
                (year, month, day)
            );
        }
        assert!(x509_not_after(b"not a certificate").is_none());
    }

    #[test]
    fn expiry_levels() {
        let der = cert_until(2030, 1, 1);
        let file = Path::new("cert.pem");
        let at = |y: i32, m: u8, d: u8| -> SystemTime {
            time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
                .unwrap()
                .midnight()
                .assume_utc()
                .into()
        };
        assert_eq!(expiry("t", file, &der, at(2029, 1, 1)).level, Level::Ok);
        assert_eq!(expiry("t", file, &der, at(2029, 12, 15)).level, Level::Warn);
        assert_eq!(expiry("t", file, &der, at(2030, 2, 1)).level, Level::Fail);
    }

    #[test]
    fn a_port_held_by_a_stranger_fails_and_a_free_one_is_ok() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut config = Config::default();
        config.admin.addr = held.local_addr().unwrap();
        config.mllp.enabled = false;
        config.http.addr = "127.0.0.1:0".parse().unwrap();
        let findings = ports(&config, false);
        assert_eq!(findings[0].level, Level::Fail, "{:?}", findings[0]);
        assert_eq!(findings[1].level, Level::Ok, "{:?}", findings[1]);
        assert_eq!(ports(&config, true)[0].level, Level::Ok);
    }
}
