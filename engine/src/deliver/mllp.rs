//! The `mllp` destination: sends the channel's HL7 v2 output to a downstream system over MLLP
//! (Mirth's "LLP sender") and reads its ACK.
//!
//! The output must be HL7 v2 text (a transform that ends with the message, edited or not, or a
//! string). One connection per delivery: simple, and a receiver restarting between deliveries
//! costs nothing. Classification:
//! - `AA`/`CA`: delivered, the ACK kept as the response;
//! - `AE`/`CE`: failed (the receiver refuses this content; resending would not help);
//! - `AR`/`CR`, no or unreadable ACK, refused connection, timeout: retried later.
//!
//! In enhanced mode the message's MSH-15 says whether an ACK comes at all: `NE`, delivered once
//! written; `ER`, delivered unless an ACK comes within [`ER_WAIT`]; `SU`, as `AL` (no ACK in
//! time: retried).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Delivery;
use crate::hl7::ack::{Expect, ER_WAIT};
use crate::hl7::Ack;
use crate::mllp::MllpClient;

/// TLS to the receiver (`tls_ca`, `tls_name` in the channel).
pub struct Tls {
    /// The CA certificate(s) to trust, PEM. Read at each delivery, so a rotated CA is picked up.
    pub ca: PathBuf,
    /// The name the receiver's certificate must carry (default: the host of `addr`).
    pub name: Option<String>,
}

pub async fn send(addr: &str, tls: Option<&Tls>, output: &Value, timeout: Duration) -> Delivery {
    let Some(message) = output.as_str() else {
        return Delivery::Failed {
            error: "an mllp destination sends HL7 v2 text: the transform must end with the \
                    message or a string"
                .into(),
            response: None,
        };
    };
    // Scripts and JSON may carry `\n` between segments; the wire wants `\r`.
    let wire = message.replace("\r\n", "\r").replace('\n', "\r");
    let Some(tls) = tls else {
        return match MllpClient::connect(addr, timeout).await {
            Ok(client) => exchange(client, addr, &wire).await,
            Err(e) => Delivery::retry(format!("mllp {addr}: {e}")),
        };
    };
    let config = match crate::tls::client_config(&tls.ca, None) {
        Ok(config) => config,
        // A channel's CA file that is missing or broken: retried, so a fixed mount delivers.
        Err(e) => return Delivery::retry(format!("mllp {addr}: {e}")),
    };
    match MllpClient::connect_tls(addr, config, tls.name.as_deref(), timeout).await {
        Ok(client) => exchange(client, addr, &wire).await,
        // The name in the channel cannot be a certificate's: no retry will change that.
        Err(e @ crate::mllp::client::ClientError::ServerName { .. }) => Delivery::Failed {
            error: format!("mllp {addr}: {e}"),
            response: None,
        },
        Err(e) => Delivery::retry(format!("mllp {addr}: {e}")),
    }
}

/// Sends the message on an open connection and classifies the ACK.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: MllpClient<S>,
    addr: &str,
    wire: &str,
) -> Delivery {
    let expect = Expect::of(wire.as_bytes());
    if let Err(e) = client.write(wire.as_bytes()).await {
        return Delivery::retry(format!("mllp {addr}: {e}"));
    }
    let no_ack = |why: String| Delivery::Delivered {
        response: Some(json!({ "ack": null, "text": why })),
    };
    match expect {
        Expect::Never => no_ack("no ACK requested (MSH-15 NE)".into()),
        Expect::OnError => match tokio::time::timeout(ER_WAIT, client.read_ack()).await {
            Ok(Ok(ack)) => classify_ack(&ack),
            Ok(Err(crate::mllp::ClientError::Timeout(_))) | Err(_) => no_ack(format!(
                "no ACK within {ER_WAIT:?} (MSH-15 ER: none when accepted)"
            )),
            Ok(Err(e)) => Delivery::retry(format!("mllp {addr}: {e}")),
        },
        Expect::Always | Expect::OnSuccess => match client.read_ack().await {
            Ok(ack) => classify_ack(&ack),
            Err(e) => Delivery::retry(format!("mllp {addr}: {e}")),
        },
    }
}

fn classify_ack(ack: &[u8]) -> Delivery {
    let parsed = match Ack::parse(ack) {
        Ok(parsed) => parsed,
        Err(e) => return Delivery::retry(format!("unreadable ACK: {e}")),
    };
    let response = json!({
        "ack": String::from_utf8_lossy(ack),
        "code": parsed.code,
        "text": parsed.text,
    });
    let why = || {
        format!(
            "receiver answered {}{}",
            parsed.code,
            parsed
                .text
                .as_deref()
                .map(|t| format!(": {t}"))
                .unwrap_or_default()
        )
    };
    match parsed.code.as_str() {
        "AA" | "CA" => Delivery::Delivered {
            response: Some(response),
        },
        "AE" | "CE" => Delivery::Failed {
            error: why(),
            response: Some(response),
        },
        _ => Delivery::retry(why()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(code: &str) -> Vec<u8> {
        format!("MSH|^~\\&|R|F|S|F|20261201||ACK^A01^ACK|A1|P|2.5.1\rMSA|{code}|C1|why not")
            .into_bytes()
    }

    #[test]
    fn acks_are_classified_like_a_sender_would() {
        assert!(matches!(
            classify_ack(&ack("AA")),
            Delivery::Delivered { .. }
        ));
        assert!(matches!(
            classify_ack(&ack("CA")),
            Delivery::Delivered { .. }
        ));
        match classify_ack(&ack("AE")) {
            Delivery::Failed { error, .. } => assert!(error.contains("AE: why not"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify_ack(&ack("AR")), Delivery::Retry { .. }));
        assert!(matches!(classify_ack(b"garbage"), Delivery::Retry { .. }));
    }

    /// A receiver on loopback that reads frames and never answers.
    async fn silent_receiver() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
                });
            }
        });
        addr
    }

    fn message(accept_ack: &str) -> Value {
        Value::String(format!(
            "MSH|^~\\&|S|F|R|F|20261201||ADT^A08|C1|P|2.5.1|||{accept_ack}|NE\rPID|1||1"
        ))
    }

    #[tokio::test]
    async fn msh_15_says_whether_to_wait_for_an_ack() {
        let addr = silent_receiver().await;
        let timeout = Duration::from_secs(3);
        // NE: delivered once written; ER: delivered when no ACK comes within ER_WAIT; AL and
        // SU: an ACK is owed, and its absence is retried.
        // (The receiver never answers: waiting for an ACK could only end in a retry.)
        for (accept_ack, delivered) in [("NE", true), ("ER", true), ("AL", false), ("SU", false)] {
            let outcome = send(&addr, None, &message(accept_ack), timeout).await;
            assert_eq!(
                matches!(outcome, Delivery::Delivered { .. }),
                delivered,
                "{accept_ack}: {outcome:?}"
            );
        }
    }
}
