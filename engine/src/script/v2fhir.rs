//! Small helpers the HL7 v2 → FHIR mapping library (`scripts/lib/`) needs and Rhai lacks:
//! `base64(text)` (FHIR `Attachment.data` is base64, HL7 documents arrive as plain text),
//! `hl7_add_minutes(dtm, minutes)` (an appointment's end from its start and duration) and
//! `hl7_plain_text(text)` (FT/TX formatting commands, which message reads keep verbatim, as
//! the line breaks and spaces they stand for: FHIR strings and notes are plain text).

use std::borrow::Cow;

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

/// FT/TX text → plain text: `\.br\` and `\.ce\` end the line, `\.sp\` (`\.spN\`) ends it and
/// skips N-1 more, `\.skN\` is N spaces; the highlight, indent and fill commands (`\H\ \N\
/// \.in\ \.ti\ \.fi\ \.nf\`) have no plain-text form and are dropped. Anything else between
/// escape characters (vendor `\Z..\`, charset switches) is kept as sent. `esc` is the message's
/// escape character (MSH-2.3).
pub fn plain_text(text: &str, esc: char) -> Cow<'_, str> {
    if !text.contains(esc) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(esc) {
        out.push_str(&rest[..start]);
        let after = &rest[start + esc.len_utf8()..];
        let Some(end) = after.find(esc) else {
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let command = &after[..end];
        let count = |arg: &str| {
            arg.trim_start_matches('+')
                .parse::<usize>()
                .unwrap_or(1)
                .clamp(1, 100)
        };
        match command {
            ".br" | ".ce" => out.push('\n'),
            "H" | "N" | ".fi" | ".nf" => {}
            c if c.starts_with(".sp")
                && c[3..].bytes().all(|b| b.is_ascii_digit() || b == b'+') =>
            {
                out.extend(std::iter::repeat_n('\n', count(&c[3..])));
            }
            c if c.starts_with(".sk")
                && c[3..].bytes().all(|b| b.is_ascii_digit() || b == b'+') =>
            {
                out.extend(std::iter::repeat_n(' ', count(&c[3..])));
            }
            c if (c.starts_with(".in") || c.starts_with(".ti"))
                && c[3..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'+' || b == b'-') => {}
            _ => {
                // Not a formatting command: keep the escape character and read on from the
                // next character, so a literal escape character cannot swallow the opening
                // one of a command after it.
                out.push(esc);
                rest = after;
                continue;
            }
        }
        rest = &after[end + esc.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Registers `base64(text)`, `hl7_add_minutes(dtm, minutes)` and `hl7_plain_text(text[, esc])`.
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
    engine.register_fn(
        "hl7_plain_text",
        |text: ImmutableString| -> ImmutableString {
            match plain_text(&text, '\\') {
                Cow::Borrowed(_) => text,
                Cow::Owned(s) => s.into(),
            }
        },
    );
    engine.register_fn(
        "hl7_plain_text",
        |text: ImmutableString, esc: &str| -> ImmutableString {
            let Some(esc) = esc.chars().next() else {
                return text;
            };
            match plain_text(&text, esc) {
                Cow::Borrowed(_) => text,
                Cow::Owned(s) => s.into(),
            }
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
    fn plain_text_turns_formatting_commands_into_line_breaks_and_spaces() {
        assert!(matches!(plain_text("no escapes", '\\'), Cow::Borrowed(_)));
        assert_eq!(
            plain_text(r"Gram positive cocci.\.br\Called to RN 13:45.", '\\'),
            "Gram positive cocci.\nCalled to RN 13:45."
        );
        assert_eq!(plain_text(r"a\.sp\b\.sp2\c", '\\'), "a\nb\n\nc");
        assert_eq!(
            plain_text(r"\.in+4\\H\IMPRESSION:\N\\.sk2\ok\.ce\", '\\'),
            "IMPRESSION:  ok\n"
        );
        // Vendor escapes, charset switches and a lone escape character stay as sent.
        assert_eq!(
            plain_text(r"x\Zabc\y \C2842\ 5\ back", '\\'),
            r"x\Zabc\y \C2842\ 5\ back"
        );
        assert_eq!(plain_text(r"5\ mg\.br\next", '\\'), "5\\ mg\nnext");
        assert_eq!(plain_text("l1#.br#l2", '#'), "l1\nl2");
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
