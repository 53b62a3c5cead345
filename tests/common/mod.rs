//! Shared by the end-to-end tests: start the real `orbiter` binary on free loopback ports, talk
//! to it over real sockets, stop it (politely or with SIGKILL).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// The engine binary: cargo's, or `ORBITER_TEST_BIN` when set. (With a `CARGO_TARGET_DIR`
/// shared between worktrees, `target/debug/orbiter` is whichever worktree built last; point
/// this at your own `target/debug/deps/orbiter-<hash>`.)
pub fn orbiter_bin() -> PathBuf {
    std::env::var_os("ORBITER_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_orbiter")))
}

/// A free TCP port on 127.0.0.1 (bound then released: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("fixtures/hl7v2").join(name)).unwrap()
}

/// A running engine.
pub struct Engine {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub mllp: String,
    pub admin: String,
    /// The HTTP ingest port.
    pub http: String,
    pub log_path: PathBuf,
    env: Vec<(String, String)>,
    pub token: Option<String>,
}

impl Engine {
    /// Starts an engine with data in `data_dir` and extra `ORBITER_…` variables.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Engine {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut engine = Engine {
            child: None,
            data_dir: data_dir.to_path_buf(),
            mllp: format!("127.0.0.1:{}", free_port()),
            admin: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            log_path: data_dir.with_extension("log"),
            token: Some(TOKEN.to_string()),
            env,
        };
        if engine.env.iter().any(|(k, _)| k == "ORBITER_ADMIN_TOKEN") {
            engine.token = engine
                .env
                .iter()
                .find(|(k, _)| k == "ORBITER_ADMIN_TOKEN")
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty());
        }
        // free_port() releases the port it found, so another test may take it before this
        // engine binds it: on a first start that fails for a port in use, try fresh ports.
        for _ in 0..3 {
            match engine.try_spawn() {
                Ok(()) => return engine,
                Err(log) if log.contains("in use") => {
                    engine.mllp = format!("127.0.0.1:{}", free_port());
                    engine.admin = format!("127.0.0.1:{}", free_port());
                    engine.http = format!("127.0.0.1:{}", free_port());
                }
                Err(log) => panic!("orbiter exited early:\n{log}"),
            }
        }
        panic!(
            "orbiter found no free ports in three tries:\n{}",
            engine.log()
        );
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("orbiter exited early:\n{log}");
        }
    }

    /// Starts the process and waits until it is ready; `Err` with this start's log if it
    /// exited first.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log_from = std::fs::metadata(&self.log_path).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = Command::new(orbiter_bin());
        cmd.arg("run")
            .arg("--data")
            .arg(&self.data_dir)
            // An empty working dir: no stray ./orbiter.toml is picked up.
            .current_dir(self.data_dir.parent().unwrap())
            .env_remove("ORBITER_ADMIN_TOKEN")
            .env("ORBITER_MLLP_ADDR", &self.mllp)
            .env("ORBITER_ADMIN_ADDR", &self.admin)
            .env("ORBITER_HTTP_ADDR", &self.http)
            .env("ORBITER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        if self.token.is_some() && !self.env.iter().any(|(k, _)| k == "ORBITER_ADMIN_TOKEN") {
            cmd.env("ORBITER_ADMIN_TOKEN", TOKEN);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("orbiter binary starts"));
        self.wait_ready(log_from)
    }

    /// Waits until `/ready` answers 200 (20 s at most); `Err` with the log written since
    /// `log_from` if the process exits first.
    fn wait_ready(&mut self, log_from: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let log = self.log();
                let this_start = log.get(log_from..).unwrap_or(&log);
                return Err(format!("({status})\n{this_start}"));
            }
            if http_get_status(&self.admin, "/ready") == Some(200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("orbiter not ready in time:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`HUP`, `TERM`…) and returns at once.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("orbiter did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// POST to the HTTP ingest port, as a sender would (no credentials).
    pub async fn ingest(&self, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("http://{}{}", self.http, path))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// GET on the admin API with the token; returns status and JSON body.
    pub async fn api(&self, path: &str) -> (u16, serde_json::Value) {
        self.with_token(reqwest::Client::new().get(self.url(path)))
            .await
    }

    /// Reruns transaction `id` through the admin API (with the token); status and JSON body.
    pub async fn rerun(&self, id: impl std::fmt::Display) -> (u16, serde_json::Value) {
        let url = self.url(&format!("/api/transactions/{id}/rerun"));
        self.with_token(reqwest::Client::new().post(url)).await
    }

    /// Sends `req` with the admin token, if the engine has one; status and JSON body.
    async fn with_token(&self, mut req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// The Prometheus exposition text of `/metrics` (open, no token).
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal blocking HTTP GET for readiness polling (no runtime needed).
pub fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Polls the API until the transaction with this control id leaves `received`/`processing`
/// (10 s at most) and returns it.
pub async fn settled(engine: &Engine, control_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = engine
            .api(&format!("/api/transactions?control_id={control_id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(tx) = body["items"].as_array().and_then(|items| items.first()) {
            let s = tx["status"].as_str().unwrap_or("");
            if s != "received" && s != "processing" {
                return tx.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{control_id} never settled: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The repository's own channels and scripts, as `orbiter run` uses them by default.
pub fn default_channels() -> Vec<(String, String)> {
    let root = repo_root();
    vec![
        (
            "ORBITER_CHANNELS_DIR".into(),
            root.join("channels").display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR".into(),
            root.join("scripts").display().to_string(),
        ),
    ]
}

/// Builds an HL7 v2 ADT^A01 with the given control id (segments separated by CR).
pub fn adt(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|ORBITER|HOSP|20261201120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r\
         EVN|A01|20261201120000\r\
         PID|1||MRN{control_id}^^^HOSP^MR||DOE^JANE^Q||19800101|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r\
         PV1|1|I|WARD1^101^A"
    )
    .into_bytes()
}

/// MSH fields of an ACK: (MSA-1, MSA-2, the whole ACK as text).
pub fn ack_fields(ack: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(ack).to_string();
    let msa = text
        .split('\r')
        .find(|s| s.starts_with("MSA"))
        .unwrap_or_else(|| panic!("no MSA in ACK: {text:?}"));
    let mut fields = msa.split('|').skip(1);
    let code = fields.next().unwrap_or("").to_string();
    let control = fields.next().unwrap_or("").to_string();
    (code, control, text)
}

/// A channels dir and a scripts dir (with the repo's `scripts/lib`) in a temp folder.
pub struct Workspace {
    pub root: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("channels")).unwrap();
        std::fs::create_dir_all(root.path().join("scripts/lib")).unwrap();
        for entry in std::fs::read_dir(repo_root().join("scripts/lib")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rhai") {
                std::fs::copy(
                    &path,
                    root.path()
                        .join("scripts/lib")
                        .join(path.file_name().unwrap()),
                )
                .unwrap();
            }
        }
        Workspace { root }
    }

    pub fn path(&self, rel: &str) -> std::path::PathBuf {
        self.root.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap();
    }

    /// A channel taking `types`, running `scripts/<name>.rhai`, in `mode`, with `destinations`.
    pub fn channel(&self, name: &str, types: &str, script: &str, mode: &str, destination: &str) {
        self.write(
            &format!("channels/{name}.toml"),
            &format!(
                "name = \"{name}\"\n[source]\nkind = \"mllp\"\n[match]\nmessage_type = [{types}]\n\
                 [transform]\nscript = \"{name}.rhai\"\n{destination}\n[ack]\nmode = \"{mode}\"\n"
            ),
        );
        self.write(&format!("scripts/{name}.rhai"), script);
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "ORBITER_CHANNELS_DIR".into(),
                self.path("channels").display().to_string(),
            ),
            (
                "ORBITER_SCRIPTS_DIR".into(),
                self.path("scripts").display().to_string(),
            ),
        ]
    }

    /// Starts an engine on these channels and scripts, data under the workspace.
    pub fn start(&self, extra: &[(&str, &str)]) -> Engine {
        let channels = self.path("channels").display().to_string();
        let scripts = self.path("scripts").display().to_string();
        let mut env = vec![
            ("ORBITER_CHANNELS_DIR", channels.as_str()),
            ("ORBITER_SCRIPTS_DIR", scripts.as_str()),
        ];
        env.extend_from_slice(extra);
        Engine::start(&self.path("data"), &env)
    }
}

/// A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1 (files written into
/// `dir`), and a client certificate signed by the same CA.
pub struct TestPki {
    pub ca: rcgen::Certificate,
    pub client_cert: rcgen::Certificate,
    pub client_key: rcgen::KeyPair,
    pub ca_path: String,
    pub cert_path: String,
    pub key_path: String,
}

impl TestPki {
    pub fn new(dir: &Path) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_string_lossy().into_owned()
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["sender.example".into()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        TestPki {
            ca_path: write("ca.pem", ca.pem()),
            cert_path: write("server.pem", server.pem()),
            key_path: write("server.key", server_key.serialize_pem()),
            ca,
            client_cert,
            client_key,
        }
    }
}
