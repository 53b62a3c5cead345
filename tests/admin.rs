//! End-to-end: the admin port, the token, the `orbiter send` CLI, clean shutdown.

mod common;

use std::process::Command;

use common::{ack_fields, adt, repo_root, Engine, TOKEN};
use orbiter::mllp::MllpClient;

#[tokio::test]
async fn probes_and_metrics_are_open_and_the_api_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    for path in ["/health", "/ready", "/metrics"] {
        let status = client.get(engine.url(path)).send().await.unwrap().status();
        assert_eq!(status, 200, "{path}");
        // HEAD: the GET's status and headers, no body.
        let head = client.head(engine.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}");
        // Another method: 405 naming the ones it takes.
        let post = client.post(engine.url(path)).send().await.unwrap();
        assert_eq!(post.status(), 405, "POST {path}");
        assert_eq!(post.headers()["allow"], "GET, HEAD", "POST {path}");
    }
    let head = client
        .head(engine.url("/api/transactions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty());
    let metrics = engine.metrics().await;
    for name in [
        "orbiter_journal_flush_seconds",
        "orbiter_transactions_by_status",
        "orbiter_mllp_connections",
        "orbiter_journal_size_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }

    let api = engine.url("/api/transactions");
    assert_eq!(client.get(&api).send().await.unwrap().status(), 401);
    let wrong = client
        .get(&api)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body = wrong.text().await.unwrap();
    assert!(!body.contains(TOKEN));
    let ok = client.get(&api).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    // Bad query values are 400s that say which parameter.
    let (status, body) = engine.api("/api/transactions?status=lost").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("lost"));
    let (status, body) = engine.api("/api/transactions?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("since"));
    let (status, _) = engine.api("/api/transactions/123456789").await;
    assert_eq!(status, 404);

    // Time filters.
    let mut c = MllpClient::connect(&engine.mllp, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ack_fields(&c.send(&adt("TIME-1")).await.unwrap()).0, "AA");
    let (_, body) = engine
        .api("/api/transactions?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let (_, body) = engine
        .api("/api/transactions?until=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn without_a_configured_token_one_is_generated_privately() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut engine = Engine::start(&data, &[("ORBITER_ADMIN_TOKEN", "")]);
    let path = data.join("admin.token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The data dir the engine created (journal, CDR: patient data) is private too, and
        // nothing in its stores is open to other users, whatever the umask.
        assert_eq!(
            std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut open = Vec::new();
        let mut dirs = vec![data.join("journal"), data.join("cdr")];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                let meta = entry.metadata().unwrap();
                if meta.permissions().mode() & 0o007 != 0 {
                    open.push(entry.path());
                }
                if meta.is_dir() {
                    dirs.push(entry.path());
                }
            }
        }
        assert!(open.is_empty(), "open to others: {open:?}");
    }
    engine.token = Some(token.clone());
    let (status, _) = engine.api("/api/transactions").await;
    assert_eq!(status, 200);
    let log = engine.log();
    assert!(
        log.contains("admin.token"),
        "the log says where the token is"
    );
    assert!(!log.contains(&token), "the log never holds the token");

    // Same token after a restart.
    assert!(engine.stop().success(), "clean exit on SIGTERM");
    engine.restart();
    let (status, _) = engine.api("/api/transactions").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn orbiter_send_speaks_tls_to_a_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::TestPki::new(dir.path());
    let engine = Engine::start(
        &dir.path().join("data"),
        &[
            ("ORBITER_MLLP_TLS_CERT", &pki.cert_path),
            ("ORBITER_MLLP_TLS_KEY", &pki.key_path),
        ],
    );
    let orbiter = env!("CARGO_BIN_EXE_orbiter");
    let message = repo_root().join("fixtures/hl7v2/adt_a01.hl7");
    let out = Command::new(orbiter)
        .args(["send", "--to", &engine.mllp, "--tls-ca", &pki.ca_path])
        .arg(&message)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("MSA|AA|"), "{stdout}");
    // Plain text to the TLS port gets no ACK: a clear failure, not a hang.
    let out = Command::new(orbiter)
        .args(["send", "--timeout", "3", "--to", &engine.mllp])
        .arg(&message)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Both ends say why: the sender that the port wants TLS, the engine's log that the client
    // spoke plain MLLP.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("do not start with TLS"), "{stderr}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !engine.log().contains("plain MLLP, not TLS") {
        assert!(
            std::time::Instant::now() < deadline,
            "the engine names the plain-text client: {}",
            engine.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // TLS to a plain port: the handshake never comes back, and the error asks whether the
    // port is a TLS listener instead of reporting a missing ACK.
    let plain = Engine::start(&dir.path().join("plain"), &[]);
    let out = Command::new(orbiter)
        .args([
            "send",
            "--timeout",
            "2",
            "--to",
            &plain.mllp,
            "--tls-ca",
            &pki.ca_path,
        ])
        .arg(&message)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is it a TLS listener?"), "{stderr}");
    // A certificate for another name is refused.
    let out = Command::new(orbiter)
        .args([
            "send",
            "--to",
            &engine.mllp,
            "--tls-ca",
            &pki.ca_path,
            "--tls-name",
            "elsewhere.example",
        ])
        .arg(&message)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS handshake"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn orbiter_send_prints_acks_and_sets_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let orbiter = env!("CARGO_BIN_EXE_orbiter");
    let fixtures = repo_root().join("fixtures/hl7v2");

    let out = Command::new(orbiter)
        .args(["send", "--to", &engine.mllp])
        .arg(fixtures.join("adt_a01.hl7"))
        .arg(fixtures.join("oru_r01.hl7"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("MSA|AA|").count(), 2, "{stdout}");

    // A batch file: every message in it is sent.
    let out = Command::new(orbiter)
        .args(["send", "--to", &engine.mllp])
        .arg(fixtures.join("batch.hl7"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.matches("MSA|AA|").count() >= 2, "{stdout}");

    // A refused message: exit code 1, the AR printed.
    let out = Command::new(orbiter)
        .args(["send", "--to", &engine.mllp])
        .arg(fixtures.join("malformed_no_msh.hl7"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MSA|AR|"));

    // Nobody listening: a clear error, exit code 2.
    let out = Command::new(orbiter)
        .args([
            "send",
            "--to",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .arg(fixtures.join("adt_a01.hl7"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// A message whose MSH-15 asks for no accept ACK (NE, or ER when it is accepted) gets none:
/// `orbiter send` says so and goes on with the next file instead of waiting for its timeout.
#[tokio::test]
async fn orbiter_send_does_not_wait_for_an_ack_nobody_sends() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let orbiter = env!("CARGO_BIN_EXE_orbiter");
    let file = |name: &str, id: &str, msh15: &str| {
        let text = String::from_utf8(common::adt(id)).unwrap().replacen(
            "|P|2.5.1",
            &format!("|P|2.5.1|||{msh15}"),
            1,
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ne = file("ne.hl7", "S-NE", "NE");
    let er = file("er.hl7", "S-ER", "ER");
    let plain = file("plain.hl7", "S-AA", "");
    let started = std::time::Instant::now();
    let out = Command::new(orbiter)
        .args(["send", "--timeout", "3", "--to", &engine.mllp])
        .args([&ne, &er, &plain])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "no wait for the timeout"
    );
    assert!(
        stdout.contains("no ACK requested (MSH-15 NE) for S-NE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no ACK (MSH-15 ER: none when accepted) for S-ER"),
        "{stdout}"
    );
    assert!(stdout.contains("MSA|AA|S-AA"), "{stdout}");
    for id in ["S-NE", "S-ER", "S-AA"] {
        let (_, body) = engine
            .api(&format!("/api/transactions?control_id={id}"))
            .await;
        assert_eq!(body["items"].as_array().unwrap().len(), 1, "{id}: {body}");
    }
    // ER and refused (no MSH-9): the error ACK is shown, and the exit code says so.
    let refused = std::fs::read_to_string(&er)
        .unwrap()
        .replace("|ADT^A01^ADT_A01|S-ER|", "||S-ER2|");
    std::fs::write(&er, refused).unwrap();
    let out = Command::new(orbiter)
        .args(["send", "--timeout", "3", "--to", &engine.mllp])
        .args([&er, &plain])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MSA|CE|S-ER2"), "{stdout}");
    assert!(stdout.contains("MSA|AA|S-AA"), "{stdout}");
}
