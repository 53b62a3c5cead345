//! Message bodies for callers who may not read them: a `viewer` whose API client lacks
//! `read_bodies` sees the shape of a message (segment names, MSH routing fields, how many
//! fields there are) but none of its values.

use super::auth::{Caller, Role};

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// Whether `caller` sees message bodies (and pipeline outputs, which hold the same data) as
/// they are: operators and admins always, viewers only if their client has `read_bodies`.
pub fn may_read_bodies(caller: &Caller) -> bool {
    caller.read_bodies || caller.has(Role::Operator)
}

/// `None` when the caller may read `raw` as it is (and the read should be audited);
/// otherwise the masked text to show instead.
///
/// HL7 v2 keeps every segment's name, the MSH segment (sender, receiver, type, control id:
/// routing data, needed to find and discuss a message, and what the transaction list shows
/// anyway), and each field separator, so that a viewer can still see *where* a message is
/// broken; every other non-empty field becomes `***`. Anything else (FHIR JSON, C-CDA, CSV) is
/// replaced as a whole, with its size.
pub fn mask_body(caller: &Caller, raw: &str) -> Option<String> {
    if may_read_bodies(caller) {
        return None;
    }
    Some(mask(raw))
}

/// An error or a reason as a caller who may not read bodies sees it: every quoted run (`"…"`,
/// `'…'`, `` `…` ``) becomes `***`, as the engine quotes the values it cites (`hl7_date:
/// "19801399": month 13`, `found "SMITH^JOH"`, `'1980-13-45' is not a valid date`). A quote
/// opens only where no letter or digit precedes it and closes only where none follows, so
/// that an apostrophe in a word (`channel's`) is left alone. Unquoted text stays readable: the
/// kind of problem and where it is.
pub fn mask_quoted(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let word = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens = matches!(c, '"' | '\'' | '`') && (i == 0 || !word(i - 1));
        let close = opens
            .then(|| (i + 1..chars.len()).find(|&j| chars[j] == c && !word(j + 1)))
            .flatten();
        match close {
            Some(j) => {
                out.push(c);
                out.push_str(MASK);
                out.push(c);
                i = j + 1;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn mask(raw: &str) -> String {
    let Some(field_sep) = raw
        .strip_prefix("MSH")
        .and_then(|rest| rest.chars().next())
        .filter(|c| !c.is_alphanumeric() && !c.is_whitespace())
    else {
        return format!("{MASK} ({} bytes masked)", raw.len());
    };
    let mut out = String::with_capacity(raw.len());
    // Segments end with CR (LF and CRLF tolerated): keep the terminators as they are.
    for (i, segment) in raw.split_inclusive(['\r', '\n']).enumerate() {
        let body = segment.trim_end_matches(['\r', '\n']);
        let terminator = &segment[body.len()..];
        if i == 0 && body.starts_with("MSH") || body.is_empty() {
            out.push_str(body);
        } else {
            for (n, field) in body.split(field_sep).enumerate() {
                if n > 0 {
                    out.push(field_sep);
                }
                // Field 0 is the segment name; masks every other non-empty field.
                if n == 0 || field.is_empty() {
                    out.push_str(field);
                } else {
                    out.push_str(MASK);
                }
            }
        }
        out.push_str(terminator);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: Vec<Role>, read_bodies: bool) -> Caller {
        Caller {
            name: "c".into(),
            roles,
            read_bodies,
            peer: None,
        }
    }

    #[test]
    fn viewers_without_read_bodies_see_the_shape_only() {
        let raw = "MSH|^~\\&|APP|FAC|||20261201||ADT^A01|C1|P|2.5.1\rPID|1||MRN1^^^H^MR||DOE^JANE\r\rPV1|1|I\r";
        let masked = mask_body(&caller(vec![Role::Viewer], false), raw).unwrap();
        assert_eq!(
            masked,
            "MSH|^~\\&|APP|FAC|||20261201||ADT^A01|C1|P|2.5.1\rPID|***||***||***\r\rPV1|***|***\r"
        );
        assert!(!masked.contains("DOE") && !masked.contains("MRN1"));
    }

    #[test]
    fn other_formats_are_masked_whole() {
        let masked = mask_body(&caller(vec![Role::Viewer], false), "{\"name\":\"Doe\"}").unwrap();
        assert!(!masked.contains("Doe"), "{masked}");
        assert!(masked.contains("14 bytes"));
    }

    #[test]
    fn who_reads_bodies() {
        assert!(mask_body(&caller(vec![Role::Viewer], true), "PID|x").is_none());
        assert!(mask_body(&caller(vec![Role::Operator], false), "PID|x").is_none());
        assert!(mask_body(&Caller::bootstrap(None), "PID|x").is_none());
    }

    #[test]
    fn quoted_values_in_errors_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_quoted("hl7_date: \"ZZTESTPATIENT\" is not an HL7 date/time"),
            "hl7_date: \"***\" is not an HL7 date/time"
        );
        assert_eq!(
            mask_quoted("message does not start with MSH (found \"SMITH^JOH\")"),
            "message does not start with MSH (found \"***\")"
        );
        assert_eq!(
            mask_quoted("Patient.birthDate: '1980-13-45' is not a valid date"),
            "Patient.birthDate: '***' is not a valid date"
        );
        assert_eq!(
            mask_quoted("adt: the channel's script failed at x.rhai:3:1"),
            "adt: the channel's script failed at x.rhai:3:1"
        );
        assert_eq!(mask_quoted("an \"unclosed quote"), "an \"unclosed quote");
    }
}
