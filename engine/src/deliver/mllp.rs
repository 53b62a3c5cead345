//! The `mllp` destination: sends the channel's HL7 v2 output to a downstream system over MLLP
//! (Mirth's "LLP sender") and reads its ACK.
//!
//! The output must be HL7 v2 text (a transform that ends with the message, edited or not, or a
//! string). One connection per delivery: simple, and a receiver restarting between deliveries
//! costs nothing. Classification:
//! - `AA`/`CA`: delivered, the ACK kept as the response;
//! - `AE`/`CE`: failed (the receiver refuses this content; resending would not help);
//! - `AR`/`CR`, no or unreadable ACK, refused connection, timeout: retried later.

use std::time::Duration;

use serde_json::{json, Value};

use super::Delivery;
use crate::hl7::Ack;
use crate::mllp::MllpClient;

pub async fn send(addr: &str, output: &Value, timeout: Duration) -> Delivery {
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
    let mut client = match MllpClient::connect(addr, timeout).await {
        Ok(client) => client,
        Err(e) => {
            return Delivery::Retry {
                error: format!("mllp {addr}: {e}"),
            }
        }
    };
    let ack = match client.send(wire.as_bytes()).await {
        Ok(ack) => ack,
        Err(e) => {
            return Delivery::Retry {
                error: format!("mllp {addr}: {e}"),
            }
        }
    };
    classify_ack(&ack)
}

fn classify_ack(ack: &[u8]) -> Delivery {
    let parsed = match Ack::parse(ack) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Delivery::Retry {
                error: format!("unreadable ACK: {e}"),
            }
        }
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
        _ => Delivery::Retry { error: why() },
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
