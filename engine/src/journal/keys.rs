//! Key layouts of the index trees. Big-endian numbers so that byte order is numeric order.

use super::record::{MessageMeta, Status, TxId};

/// `by_control`: control id, a NUL, then id; the value is the sender (see [`sender`]).
pub fn control(control_id: &str, id: TxId) -> Vec<u8> {
    let mut key = control_prefix(control_id);
    key.extend_from_slice(&id.to_key());
    key
}

/// The transaction a [`control`] key names (its last eight bytes).
pub fn control_tx(key: &[u8]) -> Option<TxId> {
    TxId::from_key(&key[key.len().checked_sub(8)?..])
}

pub fn control_prefix(control_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(control_id.len() + 9);
    key.extend(control_id.bytes().filter(|b| *b != 0));
    key.push(0);
    key
}

/// Who sent a message, for duplicate detection: control ids are only unique per sender.
pub fn sender(meta: &MessageMeta) -> String {
    format!(
        "{}|{}",
        meta.sending_application.as_deref().unwrap_or(""),
        meta.sending_facility.as_deref().unwrap_or("")
    )
}

/// `stats`: channel name (`""` for none), a NUL, the status byte; the value is an `i64` count.
pub fn stats(channel: &str, status: Status) -> Vec<u8> {
    let mut key: Vec<u8> = channel.bytes().filter(|b| *b != 0).collect();
    key.push(0);
    key.push(status.code());
    key
}

/// A `stats` key back into its channel and status.
pub fn stats_parts(key: &[u8]) -> Option<(String, Status)> {
    let (&code, rest) = key.split_last()?;
    let (&nul, channel) = rest.split_last()?;
    let status = Status::ALL.into_iter().find(|s| s.code() == code)?;
    (nul == 0).then(|| (String::from_utf8_lossy(channel).into_owned(), status))
}

/// A `stats` value as a count.
pub fn count(value: &[u8]) -> i64 {
    value.try_into().map(i64::from_be_bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_key_gives_back_its_transaction() {
        assert_eq!(control_tx(&control("C\x001", TxId(42))), Some(TxId(42)));
        assert_eq!(control_tx(b"short"), None);
    }
}
