//! End-to-end: the real `orbiter` binary, real TCP sockets, real MLLP frames.

mod common;

use std::time::Duration;

use common::{ack_fields, adt, default_channels, fixture, settled, Engine};
use orbiter::mllp::codec::frame;
use orbiter::mllp::MllpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(10);

async fn client(engine: &Engine) -> MllpClient<TcpStream> {
    MllpClient::connect(&engine.mllp, T).await.unwrap()
}

/// Reads until EOF (or 5 s); returns what came.
async fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

async fn transaction_by_control_id(engine: &Engine, control_id: &str) -> serde_json::Value {
    let (status, body) = engine
        .api(&format!("/api/transactions?control_id={control_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one transaction for {control_id}: {body}");
    items[0].clone()
}

#[tokio::test]
async fn good_messages_get_aa_and_are_journaled_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let env = default_channels();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let engine = Engine::start(&dir.path().join("data"), &env);
    let mut c = client(&engine).await;

    // ADT and ORU go through their default channels into the embedded CDR; a query (QBP) has
    // no channel.
    for (name, outcome, channel) in [
        ("adt_a01.hl7", "delivered", "adt-to-fhir"),
        ("oru_r01.hl7", "delivered", "oru-to-fhir"),
        ("qbp_q22_no_channel.hl7", "failed", ""),
    ] {
        let message = fixture(name);
        let ack = c.send(&message).await.unwrap();
        let (code, control, text) = ack_fields(&ack);
        assert_eq!(code, "AA", "{name}: {text}");
        let parsed = orbiter::hl7::Message::parse(&message).unwrap();
        let control_id = parsed.control_id().unwrap().to_string();
        assert_eq!(control, control_id);
        // ACK header: sender and receiver swapped, ACK^<trigger>^ACK, version echoed.
        let ack_msg = orbiter::hl7::Message::parse(&ack).unwrap();
        assert_eq!(
            ack_msg.sending_application().map(|s| s.to_string()),
            parsed.receiving_application().map(|s| s.to_string())
        );
        assert_eq!(
            ack_msg.receiving_application().map(|s| s.to_string()),
            parsed.sending_application().map(|s| s.to_string())
        );
        let ack_type = ack_msg.message_type().unwrap();
        assert_eq!(ack_type.code, "ACK");
        assert_eq!(ack_type.trigger, parsed.message_type().unwrap().trigger);
        assert_eq!(ack_type.structure, "ACK");
        assert_eq!(
            ack_msg.version().map(|s| s.to_string()),
            parsed.version().map(|s| s.to_string())
        );
        assert_ne!(
            ack_msg.control_id(),
            parsed.control_id(),
            "ACK has its own MSH-10"
        );

        let tx = settled(&engine, &control_id).await;
        assert_eq!(tx["status"], outcome, "{tx}");
        if outcome == "failed" {
            assert!(
                tx["error"].as_str().unwrap().starts_with("no channel"),
                "{tx}"
            );
        } else {
            assert_eq!(tx["channels"][0]["name"], channel);
        }
        assert_eq!(tx["listener"], "mllp");
        let (status, detail) = engine.api(&format!("/api/transactions/{}", tx["id"])).await;
        assert_eq!(status, 200);
        assert_eq!(detail["raw"].as_str().unwrap().as_bytes(), &message[..]);
    }
}

#[tokio::test]
async fn bad_input_gets_ar_or_ae_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let mut c = client(&engine).await;

    // Not HL7 at all: AR, with an ERR segment saying why.
    let ack = c.send(b"this is not an HL7 message").await.unwrap();
    let (code, _, text) = ack_fields(&ack);
    assert_eq!(code, "AR", "{text}");
    assert!(text.contains("\rERR|"), "ERR segment: {text:?}");
    assert!(text.contains("HL70357"), "table 0357 code: {text:?}");

    // Parseable, but no control id (MSH-10): AE naming the field.
    let no_id = fixture("no_control_id.hl7");
    let ack = c.send(&no_id).await.unwrap();
    let (code, _, text) = ack_fields(&ack);
    assert_eq!(code, "AE", "{text}");
    assert!(
        text.contains("MSH^1^10"),
        "ERR location names MSH-10: {text:?}"
    );
    assert!(
        text.contains("101"),
        "code 101 required field missing: {text:?}"
    );

    // The connection still works afterwards.
    let ack = c.send(&adt("AFTER-BAD")).await.unwrap();
    assert_eq!(ack_fields(&ack).0, "AA");

    // Both refused messages are in the journal as failed, with the reason and the raw bytes.
    let (status, body) = engine.api("/api/transactions?status=failed").await;
    assert_eq!(status, 200);
    let refused: Vec<&serde_json::Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|tx| !tx["error"].as_str().unwrap_or("").starts_with("no channel"))
        .collect();
    assert_eq!(refused.len(), 2, "{body}");
    assert!(refused
        .iter()
        .any(|tx| tx["error"].as_str().unwrap().starts_with("not HL7")));
    assert!(refused
        .iter()
        .any(|tx| tx["error"].as_str().unwrap().starts_with("refused")));
    for tx in refused {
        assert!(tx["error"].as_str().unwrap().len() > 5, "reason kept: {tx}");
        let (_, detail) = engine.api(&format!("/api/transactions/{}", tx["id"])).await;
        assert!(!detail["raw"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn fragmented_pipelined_and_garbage_prefixed_input() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);

    // One frame dribbled in 7-byte writes with pauses.
    let mut stream = TcpStream::connect(&engine.mllp).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for chunk in frame(&adt("FRAG-1")).chunks(7) {
        stream.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut c = MllpClient::new(stream, T);
    let (code, control, _) = ack_fields(&c.read_ack().await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("AA", "FRAG-1"));

    // 100 frames in one write: 100 ACKs, in order.
    let mut stream = TcpStream::connect(&engine.mllp).await.unwrap();
    let mut burst = Vec::new();
    for n in 0..100 {
        burst.extend_from_slice(&frame(&adt(&format!("PIPE-{n}"))));
    }
    stream.write_all(&burst).await.unwrap();
    let mut c = MllpClient::new(stream, T);
    for n in 0..100 {
        let (code, control, _) = ack_fields(&c.read_ack().await.unwrap());
        assert_eq!(code, "AA");
        assert_eq!(control, format!("PIPE-{n}"), "ACKs come back in order");
    }

    // Bytes before the start block (line noise, a stray newline) are skipped.
    let mut stream = TcpStream::connect(&engine.mllp).await.unwrap();
    let mut noisy = b"\r\n\x00garbage before the frame".to_vec();
    noisy.extend_from_slice(&frame(&adt("NOISY-1")));
    stream.write_all(&noisy).await.unwrap();
    let mut c = MllpClient::new(stream, T);
    let (code, control, _) = ack_fields(&c.read_ack().await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("AA", "NOISY-1"));

    let metrics = engine.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("orbiter_mllp_bytes_skipped_total") && !l.ends_with(" 0")),
        "skipped bytes counted"
    );
}

#[tokio::test]
async fn oversize_frame_gets_ar_and_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[("ORBITER_MLLP_MAX_MESSAGE_BYTES", "2048")],
    );
    let mut big = adt("BIG-1");
    big.extend_from_slice(b"\rNTE|1||");
    big.extend(std::iter::repeat_n(b'x', 10_000));
    let mut stream = TcpStream::connect(&engine.mllp).await.unwrap();
    stream.write_all(&frame(&big)).await.unwrap();
    let rest = read_to_eof(&mut stream).await;
    assert!(!rest.is_empty(), "an ACK before the close");
    let ack = &rest[1..rest.len() - 2];
    let (code, control, text) = ack_fields(ack);
    assert_eq!(code, "AR", "{text}");
    assert_eq!(control, "BIG-1", "the ACK still names the message");
    assert!(text.contains("maximum size"), "{text}");

    // Kept in the journal, marked truncated.
    let tx = transaction_by_control_id(&engine, "BIG-1").await;
    assert_eq!(tx["status"], "failed");
    assert_eq!(tx["truncated"], true);

    // The listener goes on.
    let mut c = client(&engine).await;
    assert_eq!(ack_fields(&c.send(&adt("SMALL-1")).await.unwrap()).0, "AA");
}

#[tokio::test]
async fn idle_connections_are_closed_and_truncated_frames_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[("ORBITER_MLLP_IDLE_TIMEOUT_SECS", "1")],
    );
    let mut idle = TcpStream::connect(&engine.mllp).await.unwrap();
    let started = std::time::Instant::now();
    let got = read_to_eof(&mut idle).await;
    assert!(got.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed by the server"
    );

    // Half a frame, then the sender goes away: journaled as failed and truncated.
    let mut half = TcpStream::connect(&engine.mllp).await.unwrap();
    let framed = frame(&adt("HALF-1"));
    half.write_all(&framed[..framed.len() / 2]).await.unwrap();
    half.shutdown().await.unwrap();
    let _ = read_to_eof(&mut half).await;
    let mut found = false;
    for _ in 0..50 {
        let (_, body) = engine.api("/api/transactions?control_id=HALF-1").await;
        if let Some(tx) = body["items"].as_array().unwrap().first() {
            assert_eq!(tx["truncated"], true);
            assert_eq!(tx["control_id"], "HALF-1");
            assert!(tx["error"].as_str().unwrap().contains("closed"));
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "truncated frame journaled");

    // Half a frame, then a reset (no FIN), or nothing more until the idle timeout: journaled
    // the same way, with why.
    let reset = TcpStream::connect(&engine.mllp).await.unwrap();
    let framed = frame(&adt("RESET-1"));
    let mut reset = reset;
    reset.write_all(&framed[..framed.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset.set_zero_linger().unwrap();
    drop(reset);
    let mut stalled = TcpStream::connect(&engine.mllp).await.unwrap();
    let framed = frame(&adt("IDLE-1"));
    stalled
        .write_all(&framed[..framed.len() / 2])
        .await
        .unwrap();
    let _ = read_to_eof(&mut stalled).await;
    for (control_id, why) in [("RESET-1", "broke off"), ("IDLE-1", "went idle")] {
        let mut tx = serde_json::Value::Null;
        for _ in 0..50 {
            let (_, body) = engine
                .api(&format!("/api/transactions?control_id={control_id}"))
                .await;
            if let Some(found) = body["items"].as_array().unwrap().first() {
                tx = found.clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(tx["truncated"], true, "{control_id}: {tx}");
        assert_eq!(tx["status"], "failed", "{tx}");
        assert!(tx["error"].as_str().unwrap().contains(why), "{tx}");
    }
}

#[tokio::test]
async fn a_slow_sender_is_not_cut_while_its_bytes_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[("ORBITER_MLLP_IDLE_TIMEOUT_SECS", "1")],
    );
    // A frame trickled over ~3 s, a piece every 0.25 s: three idle timeouts in all, but the
    // link is never quiet for one.
    let mut slow = TcpStream::connect(&engine.mllp).await.unwrap();
    let framed = frame(&adt("SLOW-1"));
    for piece in framed.chunks(framed.len() / 12 + 1) {
        slow.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut ack = vec![0u8; 4096];
    let n = tokio::time::timeout(T, slow.read(&mut ack))
        .await
        .unwrap()
        .unwrap();
    let (code, control, text) = ack_fields(&ack[..n]);
    assert_eq!(
        (code.as_str(), control.as_str()),
        ("AA", "SLOW-1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_sender_that_never_reads_its_acks_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[("ORBITER_MLLP_IDLE_TIMEOUT_SECS", "1")],
    );
    // A small receive buffer and ACKs of ~8 KB (MSH-3 and MSH-4 are echoed): the engine's
    // writes stall once a few MB are unread, while the sender keeps sending.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(engine.mllp.parse().unwrap()).await.unwrap();
    let long = "A".repeat(4000);
    let sender = tokio::spawn(async move {
        for n in 0..2000 {
            let msg = format!(
                "MSH|^~\\&|{long}|{long}|ORBITER|HOSP|20261201120000||ZZZ^Z99|STALL-{n}|P|2.5.1\r"
            );
            if stream.write_all(&frame(msg.as_bytes())).await.is_err() {
                return n;
            }
        }
        // Every frame went out: hold the connection open, never reading.
        tokio::time::sleep(Duration::from_secs(60)).await;
        2000
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = engine.metrics().await;
        let stalled = metrics
            .lines()
            .any(|l| l.starts_with("orbiter_mllp_frame_errors_total{reason=\"stalled\"} 1"));
        let open = metrics
            .lines()
            .find(|l| l.starts_with("orbiter_mllp_connections "))
            .map(|l| l.ends_with(" 0"));
        if stalled && open == Some(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled connection was never closed:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sender.abort();
    // The engine still serves everyone else.
    let mut c = client(&engine).await;
    assert_eq!(
        ack_fields(&c.send(&adt("AFTER-STALL")).await.unwrap()).0,
        "AA"
    );
}

#[tokio::test]
async fn messages_whose_acks_were_never_read_still_reach_their_channels() {
    let dir = tempfile::tempdir().unwrap();
    let env = default_channels();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let engine = Engine::start(&dir.path().join("data"), &env);
    // A sender pipelines a batch of messages and resets the connection without reading a
    // single ACK: the ACK writer fails on its first write, with most replies still owed.
    const N: usize = 300;
    let mut stream = TcpStream::connect(&engine.mllp).await.unwrap();
    let mut batch = Vec::new();
    for n in 0..N {
        batch.extend_from_slice(&frame(&adt(&format!("GONE-{n}"))));
    }
    stream.write_all(&batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.set_zero_linger().unwrap();
    drop(stream);

    // Every message the journal took goes on to its channel; none stays `received`.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = engine.api("/api/stats").await;
        let totals = &stats["totals"];
        let count = |status: &str| totals[status].as_u64().unwrap_or(0);
        if count("received") == 0 && count("processing") == 0 {
            assert!(count("delivered") > 0, "some messages were read: {stats}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "transactions left in `received` after the sender went away: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answers_every_message_the_journal_took() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::start(&dir.path().join("data"), &[]);
    // Four senders pipeline 500 messages each and read their ACKs until the engine closes.
    let mut senders = Vec::new();
    for c in 0..4 {
        let stream = TcpStream::connect(&engine.mllp).await.unwrap();
        senders.push(tokio::spawn(async move {
            let (mut read, mut write) = stream.into_split();
            let writing = tokio::spawn(async move {
                for n in 0..500 {
                    let framed = frame(&adt(&format!("TERM-{c}-{n}")));
                    if write.write_all(&framed).await.is_err() {
                        break;
                    }
                }
                write
            });
            let mut acks = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut acks)).await;
            drop(writing.await);
            let text = String::from_utf8_lossy(&acks).to_string();
            text.split('\r')
                .filter(|s| s.starts_with("MSA|"))
                .map(|s| s.split('|').nth(1).unwrap_or("").to_string())
                .collect::<Vec<_>>()
        }));
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let status = tokio::task::block_in_place(|| engine.stop());
    assert!(status.success(), "{status}: {}", engine.log());
    let mut acked = 0;
    for sender in senders {
        let codes = sender.await.unwrap();
        assert!(codes.iter().all(|c| c == "AA"), "{codes:?}");
        acked += codes.len();
    }

    // What the journal holds is what was acknowledged: no message taken and left unanswered.
    engine.restart();
    let (_, stats) = engine.api("/api/stats").await;
    let journaled: u64 = stats["totals"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(acked > 0, "some messages were answered before the stop");
    assert_eq!(journaled, acked as u64, "{stats}\n{}", engine.log());
}

#[tokio::test]
async fn many_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let mut tasks = Vec::new();
    for conn in 0..24 {
        let addr = engine.mllp.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = MllpClient::connect(&addr, T).await.unwrap();
            for n in 0..25 {
                let id = format!("C{conn}-{n}");
                let (code, control, _) = ack_fields(&c.send(&adt(&id)).await.unwrap());
                assert_eq!(code, "AA");
                assert_eq!(control, id);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let metrics = engine.metrics().await;
    assert!(
        metrics.contains("orbiter_messages_total{listener=\"mllp\",outcome=\"accepted\"} 600"),
        "{metrics}"
    );
}

#[tokio::test]
async fn enhanced_mode_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let mut c = client(&engine).await;

    // MSH-15 AL: a commit ACK, CA.
    let al = String::from_utf8(adt("ENH-1"))
        .unwrap()
        .replacen("|P|2.5.1", "|P|2.5.1|||AL|NE", 1);
    let (code, control, text) = ack_fields(&c.send(al.as_bytes()).await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("CA", "ENH-1"), "{text}");

    // MSH-15 NE: the sender wants no accept ACK; the next message's ACK comes next.
    let ne = String::from_utf8(adt("ENH-2"))
        .unwrap()
        .replacen("|P|2.5.1", "|P|2.5.1|||NE|AL", 1);
    c.write(ne.as_bytes()).await.unwrap();
    let (code, control, _) = ack_fields(
        &c.send(al.replace("ENH-1", "ENH-3").as_bytes())
            .await
            .unwrap(),
    );
    assert_eq!((code.as_str(), control.as_str()), ("CA", "ENH-3"));
    transaction_by_control_id(&engine, "ENH-2").await;

    // The same message twice: both accepted, the second flagged as a duplicate of the first.
    let message = adt("DUP-1");
    assert_eq!(ack_fields(&c.send(&message).await.unwrap()).0, "AA");
    assert_eq!(ack_fields(&c.send(&message).await.unwrap()).0, "AA");
    let (_, body) = engine.api("/api/transactions?control_id=DUP-1").await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["duplicate_of"], items[1]["id"],
        "newest first, pointing at the first"
    );
    assert!(items[1]["duplicate_of"].is_null());
}

#[tokio::test]
async fn tls_with_client_certificates() {
    use std::sync::Arc;

    orbiter::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let common::TestPki {
        ca,
        client_cert,
        client_key,
        ca_path,
        cert_path,
        key_path,
    } = common::TestPki::new(dir.path());

    let engine = Engine::start(
        &dir.path().join("data"),
        &[
            ("ORBITER_MLLP_TLS_CERT", &cert_path),
            ("ORBITER_MLLP_TLS_KEY", &key_path),
            ("ORBITER_MLLP_TLS_CLIENT_CA", &ca_path),
        ],
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let connect = |with_cert: bool| {
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots.clone());
        let config = if with_cert {
            builder
                .with_client_auth_cert(
                    vec![client_cert.der().clone()],
                    rustls_pki_types::PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
                )
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = engine.mllp.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            connector.connect(name, tcp).await
        }
    };

    // With a client certificate: a normal AA over TLS.
    let tls = connect(true).await.unwrap();
    let mut c = MllpClient::new(tls, T);
    let (code, control, _) = ack_fields(&c.send(&adt("TLS-1")).await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("AA", "TLS-1"));

    // Without one: no message gets through.
    let refused = match connect(false).await {
        Err(_) => true,
        Ok(tls) => {
            let mut c = MllpClient::new(tls, T);
            c.send(&adt("TLS-2")).await.is_err()
        }
    };
    assert!(refused, "a client without a certificate is refused");

    // Plain TCP to a TLS port: nothing is accepted.
    let mut plain = MllpClient::connect(&engine.mllp, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(plain.send(&adt("PLAIN-1")).await.is_err());
    let (_, body) = engine.api("/api/transactions").await;
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        1,
        "only TLS-1: {body}"
    );
}

#[tokio::test]
async fn message_contents_stay_out_of_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[("ORBITER_LOG", "debug")]);
    let mut c = client(&engine).await;
    let secret_name = "ZEBRAFINCH";
    let message = String::from_utf8(adt("PHI-1"))
        .unwrap()
        .replace("DOE^JANE", &format!("{secret_name}^JANE"));
    assert_eq!(
        ack_fields(&c.send(message.as_bytes()).await.unwrap()).0,
        "AA"
    );
    let ack = c.send(b"garbage ZEBRAFINCH garbage").await.unwrap();
    assert_eq!(ack_fields(&ack).0, "AR");
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = engine.log();
    assert!(
        log.contains("MLLP listening"),
        "the log is being captured: {log}"
    );
    assert!(!log.contains(secret_name), "PHI in the debug log:\n{log}");
}

/// `orbiter-load`'s figures count accepted messages only: an engine that answers every message
/// AR at full speed has taken none, and must not show as throughput.
#[test]
fn the_load_generator_counts_only_accepted_messages() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    // MSH-9 empty: the engine answers AR (no message type) to every one of them.
    let refused = dir.path().join("refused.hl7");
    std::fs::write(
        &refused,
        "MSH|^~\\&|LOADGEN|SITE|ORBITER|HOSP|20261201120000|||{ID}|P|2.5.1\rPID|1||X{ID}\r",
    )
    .unwrap();
    let run = |message: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orbiter-load"));
        cmd.args(["--to", &engine.mllp, "-c", "2", "-d", "1", "--rate", "200"]);
        if let Some(m) = message {
            cmd.arg("--message").arg(m);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| -> u64 {
            let line = text.lines().last().unwrap();
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .parse::<f64>()
                .unwrap() as u64
        };
        (field("acked"), field("msgs_per_s"), field("not_accepted"))
    };
    let (acked, rate, not_accepted) = run(Some(&refused));
    assert_eq!((acked, rate), (0, 0), "refusals counted as throughput");
    assert!(not_accepted > 100, "{not_accepted} refusals seen");
    let (acked, rate, not_accepted) = run(None);
    assert!(acked > 100 && rate > 100, "{acked} accepted, {rate}/s");
    assert_eq!(not_accepted, 0);
}

/// An ADT^A01 with this control id and MSH-11, MSH-12 as given.
fn with_header(control_id: &str, processing_id: &str, version: &str) -> Vec<u8> {
    String::from_utf8(adt(control_id))
        .unwrap()
        .replacen("|P|2.5.1", &format!("|{processing_id}|{version}"), 1)
        .into_bytes()
}

/// MSH-11 (table 0103, and what `hl7.processing_ids` allows) and MSH-12 (an HL7 v2 version)
/// are checked on MLLP and on HTTP `/hl7v2` alike: AR with code 202 or 203 at the field,
/// journaled `failed`.
#[tokio::test]
async fn processing_id_and_version_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let mut c = client(&engine).await;
    let version_err = "\rERR||MSH^1^12|203^Unsupported version id^HL70357|E|";
    let processing_err = "\rERR||MSH^1^11|202^Unsupported processing id^HL70357|E|";
    for (id, processing_id, version, refused) in [
        ("V-99", "P", "9.9", Some(version_err)),
        ("V-BANANA", "P", "banana", Some(version_err)),
        ("V-3", "P", "3.0", Some(version_err)),
        ("V-2X", "P", "2.5.9", Some(version_err)),
        ("V-21", "P", "2.1", None),
        ("V-231", "P", "2.3.1", None),
        ("V-251", "P", "2.5.1^DEU^2.5", None),
        ("V-271", "P", "2.7.1", None),
        ("V-282", "P", "2.8.2", None),
        ("P-Z", "Z", "2.5.1", Some(processing_err)),
        ("P-LOWER", "p", "2.5.1", Some(processing_err)),
        ("P-T", "T", "2.5.1", None),
        ("P-D", "D^A", "2.5.1", None),
    ] {
        let ack = c
            .send(&with_header(id, processing_id, version))
            .await
            .unwrap();
        let (code, control, text) = ack_fields(&ack);
        assert_eq!(control, id, "{text}");
        let tx = transaction_by_control_id(&engine, id).await;
        assert_eq!(tx["status"], "failed", "{tx}");
        let reason = tx["error"].as_str().unwrap();
        match refused {
            Some(err) => {
                assert_eq!(code, "AR", "{id}: {text}");
                assert!(text.contains(err), "{id}: {text:?}");
                assert!(reason.starts_with("refused"), "{tx}");
            }
            None => {
                assert_eq!(code, "AA", "{id}: {text}");
                // No channel here: accepted, then failed for want of one.
                assert!(reason.starts_with("no channel"), "{tx}");
            }
        }
    }
    // HTTP /hl7v2 takes the same path: 400 with the AR.
    let response = engine
        .ingest(
            "/hl7v2",
            "application/hl7-v2",
            with_header("H-99", "P", "9.9"),
        )
        .await;
    assert_eq!(response.status().as_u16(), 400);
    let (code, control, text) = ack_fields(&response.bytes().await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("AR", "H-99"), "{text}");
    assert!(text.contains(version_err), "{text:?}");

    // An operator's production engine takes production messages only.
    let production = Engine::start(
        &dir.path().join("production"),
        &[("ORBITER_HL7_PROCESSING_IDS", "P")],
    );
    let mut c = client(&production).await;
    let (code, _, text) = ack_fields(&c.send(&with_header("PR-T", "T", "2.5.1")).await.unwrap());
    assert_eq!(code, "AR", "{text}");
    assert!(text.contains(processing_err), "{text:?}");
    let (code, _, text) = ack_fields(&c.send(&with_header("PR-P", "P", "2.5.1")).await.unwrap());
    assert_eq!(code, "AA", "{text}");
    let response = production
        .ingest(
            "/hl7v2",
            "application/hl7-v2",
            with_header("PR-HT", "T", "2.5"),
        )
        .await;
    assert_eq!(response.status().as_u16(), 400);
    let (code, _, text) = ack_fields(&response.bytes().await.unwrap());
    assert_eq!(code, "AR", "{text}");
}

/// A frame cut off where its text no longer parses (mid segment name) is still journaled
/// under the control id, type and sender its header gives, and answered AR with code 100.
#[tokio::test]
async fn a_cut_off_frame_keeps_what_its_header_says() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[("ORBITER_MLLP_IDLE_TIMEOUT_SECS", "1")],
    );
    for (id, half_close) in [("O003", true), ("O004", false)] {
        let mut stream = TcpStream::connect(&engine.mllp).await.unwrap();
        let message = adt(id);
        // Up to the middle of the name of the PID segment.
        let cut = message.windows(4).position(|w| w == b"\rPID").unwrap() + 3;
        let mut bytes = vec![0x0b];
        bytes.extend_from_slice(&message[..cut]);
        assert!(orbiter::hl7::Message::parse(&message[..cut]).is_err());
        stream.write_all(&bytes).await.unwrap();
        if half_close {
            stream.shutdown().await.unwrap();
        }
        // Half-closed, or quiet until the idle timeout: the AR comes back, then the close.
        let rest = read_to_eof(&mut stream).await;
        assert!(rest.len() > 3, "{id}: an ACK before the close");
        let (code, control, text) = ack_fields(&rest[1..rest.len() - 2]);
        assert_eq!((code.as_str(), control.as_str()), ("AR", id), "{text}");
        assert!(
            text.contains("|100^Segment sequence error^HL70357|E|"),
            "{id}: {text:?}"
        );
        assert!(text.contains("in the middle of a message"), "{text:?}");
        let tx = transaction_by_control_id(&engine, id).await;
        assert_eq!(tx["status"], "failed", "{tx}");
        assert_eq!(tx["truncated"], true, "{tx}");
        assert_eq!(tx["message_type"], "ADT^A01", "{tx}");
        assert_eq!(tx["sending_application"], "SENDAPP", "{tx}");
    }
}

/// ACK MSH-10s are unique across engines and data dirs: a per-journal prefix, kept across
/// restarts, then the transaction id; within the 20 characters v2.3 allows.
#[tokio::test]
async fn ack_control_ids_differ_between_data_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Engine::start(&dir.path().join("one"), &[]);
    let second = Engine::start(&dir.path().join("two"), &[]);
    let ack_id = |ack: &[u8]| {
        orbiter::hl7::Message::parse(ack)
            .unwrap()
            .control_id()
            .unwrap()
            .to_string()
    };
    let mut ids = Vec::new();
    for engine in [&first, &second] {
        let mut c = client(engine).await;
        ids.push(ack_id(&c.send(&adt("SAME-1")).await.unwrap()));
    }
    assert_ne!(ids[0], ids[1], "two fresh data dirs, two ACK ids");
    for id in &ids {
        assert!(id.len() <= 20, "{id}");
        assert!(
            id.is_ascii() && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{id}"
        );
    }
    first.stop();
    first.restart();
    let mut c = client(&first).await;
    let again = ack_id(&c.send(&adt("SAME-2")).await.unwrap());
    assert_ne!(again, ids[0]);
    assert_eq!(
        again[..6],
        ids[0][..6],
        "the prefix is kept: {again} {}",
        ids[0]
    );
}

/// In ACK mode `on-delivery` the one ACK reports the processing outcome: an application ACK,
/// AA/AE/AR even in enhanced mode, sent as MSH-16 says. In `on-commit` it is the accept ACK:
/// CA/CE/CR as MSH-15 says; and so is a refusal before the commit.
#[tokio::test]
async fn on_delivery_answers_with_an_application_ack() {
    let ws = common::Workspace::new();
    let file_dest = "[[destination]]\nkind = \"file\"\npath = \"out\"";
    let patient = "#{resourceType: \"Patient\", id: \"p1\"}";
    ws.channel(
        "refuses",
        "\"ADT^A06\"",
        "reject(\"no ward\");",
        "on-delivery",
        file_dest,
    );
    ws.channel("takes", "\"ADT^A01\"", patient, "on-delivery", file_dest);
    ws.channel("commits", "\"ADT^A08\"", patient, "on-commit", file_dest);
    let engine = ws.start(&[]);
    let mut c = client(&engine).await;
    let message = |trigger: &str, id: &str, msh15_16: &str| {
        String::from_utf8(adt(id))
            .unwrap()
            .replace("ADT^A01^ADT_A01", &format!("ADT^{trigger}"))
            .replacen("|P|2.5.1", &format!("|P|2.5.1|||{msh15_16}"), 1)
            .into_bytes()
    };
    let expect = |ack: bytes::Bytes, code: &str, id: &str| {
        let (got, control, text) = ack_fields(&ack);
        assert_eq!((got.as_str(), control.as_str()), (code, id), "{text}");
        text
    };
    // The committed message a script rejected: AE, not CE.
    let text = expect(
        c.send(&message("A06", "OD-1", "AL|AL")).await.unwrap(),
        "AE",
        "OD-1",
    );
    assert!(text.contains("no ward"), "{text}");
    // MSH-15 SU says nothing of it: MSH-16 AL wants it.
    expect(
        c.send(&message("A06", "OD-2", "SU|AL")).await.unwrap(),
        "AE",
        "OD-2",
    );
    // MSH-16 NE: none; MSH-16 ER: none on success. The next ACK is the next message's.
    c.write(&message("A06", "OD-3", "AL|NE")).await.unwrap();
    c.write(&message("A01", "OD-4", "AL|ER")).await.unwrap();
    expect(
        c.send(&message("A01", "OD-5", "NE|AL")).await.unwrap(),
        "AA",
        "OD-5",
    );
    expect(
        c.send(&message("A06", "OD-6", "NE|ER")).await.unwrap(),
        "AE",
        "OD-6",
    );
    // on-commit: the accept ACK.
    expect(
        c.send(&message("A08", "OC-1", "AL|NE")).await.unwrap(),
        "CA",
        "OC-1",
    );
    // Refused before the commit (no MSH-9): accept level, CE, even for an on-delivery type.
    let refused = String::from_utf8(message("A06", "OD-7", "AL|NE"))
        .unwrap()
        .replace("|ADT^A06|", "||");
    expect(c.send(refused.as_bytes()).await.unwrap(), "CE", "OD-7");
    for id in ["OD-3", "OD-4"] {
        transaction_by_control_id(&engine, id).await;
    }
}

/// `/ready`: status and JSON body.
async fn ready(engine: &Engine) -> (u16, serde_json::Value) {
    let resp = reqwest::get(engine.url("/ready")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The journal cannot write (the data dir's filesystem is full; here the debug build's test
/// hook, `ORBITER_TEST_JOURNAL_FAULTS`, makes sled fail as it does on a full disk): the sender
/// hears AR "not stored", `/ready` says why (so Kubernetes sends the traffic elsewhere), the
/// engine writes again on its own, without a restart, and the refused copies never come back,
/// not even after a crash: each resend is the one copy.
#[tokio::test]
async fn a_journal_that_cannot_write_refuses_says_why_and_writes_again_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("journal-faults");
    let mut env = default_channels();
    env.push((
        "ORBITER_TEST_JOURNAL_FAULTS".into(),
        trigger.display().to_string(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut engine = Engine::start(&dir.path().join("data"), &env);
    let mut c = client(&engine).await;
    let (code, _, text) = ack_fields(&c.send(&adt("FULL1")).await.unwrap());
    assert_eq!(code, "AA", "{text}");
    assert_eq!(settled(&engine, "FULL1").await["status"], "delivered");

    // sled fails on the next write and stays failed (as after a write on a full disk); the
    // next three attempts to reopen it fail too.
    std::fs::write(&trigger, "sled 4").unwrap();
    let (code, control, text) = ack_fields(&c.send(&adt("FULL2")).await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("AR", "FULL2"), "{text}");
    assert!(text.contains("filesystem is full"), "{text}");
    let (status, body) = ready(&engine).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["journal_unwritable"], true, "{body}");
    let reason = body["checks"]["journal_error"].as_str().unwrap();
    assert!(
        reason.starts_with("the journal cannot store messages: the data dir's filesystem is full"),
        "{body}"
    );
    // Refused at once meanwhile.
    let (code, _, text) = ack_fields(&c.send(&adt("FULL3")).await.unwrap());
    assert_eq!(code, "AR", "{text}");

    // Back on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = ready(&engine).await;
        if status == 200 {
            assert_eq!(body["checks"]["journal_unwritable"], false, "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The senders resend.
    for id in ["FULL2", "FULL3", "FULL4"] {
        let (code, _, text) = ack_fields(&c.send(&adt(id)).await.unwrap());
        assert_eq!(code, "AA", "{text}");
        assert_eq!(settled(&engine, id).await["status"], "delivered");
    }

    // A crash (no last checkpoint): what a restart replays holds no refused copy.
    drop(c);
    engine.kill();
    engine.restart();
    for id in ["FULL1", "FULL2", "FULL3", "FULL4"] {
        let tx = transaction_by_control_id(&engine, id).await;
        assert_eq!(tx["status"], "delivered", "{tx}");
        assert_eq!(tx["duplicate_of"], serde_json::Value::Null, "{tx}");
    }
}
