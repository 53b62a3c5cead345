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
}
