//! The `mllp` destination: sends the channel's HL7 v2 output to a downstream system over MLLP
//! (Mirth's "LLP sender") and reads its ACK.
//!
//! The output must be HL7 v2 text (a transform that ends with the message, edited or not, or a
//! string). One connection per delivery: simple, and a receiver restarting between deliveries
//! costs nothing. Classification:
//! - `AA`/`CA`: delivered, the ACK kept as the response;
//! - `AE`/`CE`: failed (the receiver refuses this content; resending would not help);
//! - `AR`/`CR`, no or unreadable ACK, refused connection, timeout: retried later.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Delivery;
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
    match client.send(wire.as_bytes()).await {
        Ok(ack) => classify_ack(&ack),
        Err(e) => Delivery::retry(format!("mllp {addr}: {e}")),
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
}
