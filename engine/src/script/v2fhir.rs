//! Small helpers the HL7 v2 → FHIR mapping library (`scripts/lib/`) needs and Rhai lacks:
//! `base64(text)` (FHIR `Attachment.data` is base64, HL7 documents arrive as plain text) and
//! `hl7_add_minutes(dtm, minutes)` (an appointment's end from its start and duration).

use rhai::{Engine, EvalAltResult, ImmutableString, INT};

type Res<T> = Result<T, Box<EvalAltResult>>;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `YYYYMMDDHHMM[SS][+ZZZZ]` plus `minutes` → the same layout (seconds always written), with the
/// offset as sent. Errors on a value without a time of day or with an impossible date.
pub fn add_minutes(dtm: &str, minutes: i64) -> Result<String, String> {
    let split = dtm.find(['+', '-']).unwrap_or(dtm.len());
    let (local, offset) = dtm.split_at(split);
    let local = local.split('.').next().unwrap_or("");
    if local.len() < 12 || !local.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{dtm:?}: needs at least YYYYMMDDHHMM to add minutes"
        ));
    }
    let num = |from: usize, to: usize| local.get(from..to).map_or(0, |s| s.parse().unwrap_or(0));
    let month = time::Month::try_from(num(4, 6) as u8).map_err(|e| format!("{dtm:?}: {e}"))?;
    let date = time::Date::from_calendar_date(num(0, 4), month, num(6, 8) as u8)
        .map_err(|e| format!("{dtm:?}: {e}"))?;
    let clock = time::Time::from_hms(num(8, 10) as u8, num(10, 12) as u8, num(12, 14) as u8)
        .map_err(|e| format!("{dtm:?}: {e}"))?;
    let t = time::PrimitiveDateTime::new(date, clock)
        .checked_add(time::Duration::minutes(minutes))
        .ok_or_else(|| format!("{dtm:?} + {minutes} minutes is out of range"))?;
    Ok(format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}{offset}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Registers `base64(text)` and `hl7_add_minutes(dtm, minutes)`.
pub fn register(engine: &mut Engine) {
    engine.register_fn("base64", |text: &str| -> ImmutableString {
        base64(text.as_bytes()).into()
    });
    engine.register_fn(
        "hl7_add_minutes",
        |dtm: &str, minutes: INT| -> Res<ImmutableString> {
            add_minutes(dtm, minutes)
                .map(Into::into)
                .map_err(|e| format!("hl7_add_minutes: {e}").into())
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (text, expected) in cases {
            assert_eq!(base64(text.as_bytes()), expected, "{text:?}");
        }
        assert_eq!(base64("Müller".as_bytes()), "TcO8bGxlcg==");
    }

    #[test]
    fn add_minutes_rolls_over_hours_days_and_keeps_the_offset() {
        assert_eq!(add_minutes("202403150930", 30).unwrap(), "20240315100000");
        assert_eq!(
            add_minutes("20240229233000-0500", 45).unwrap(),
            "20240301001500-0500"
        );
        assert_eq!(add_minutes("20241231235959", 1).unwrap(), "20250101000059");
        assert!(add_minutes("20240315", 30).is_err(), "no time of day");
        assert!(add_minutes("202402300930", 30).is_err(), "February 30th");
    }
}
