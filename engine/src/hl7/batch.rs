//! Batch files: `FHS` / `BHS` / messages / `BTS` / `FTS`, split into messages.
//!
//! Files dropped by SFTP or in a directory often hold many messages in the HL7 batch envelope,
//! sometimes several batches in one file, sometimes plain messages one after another with no
//! envelope. Splitting needs only segment names (every MSH starts a message; FHS, BHS, BTS and FTS
//! end one), so it works on raw bytes before any charset decision; each message is then parsed on
//! its own with its own MSH-18. Trailer counts (BTS-1) are not enforced: senders get them wrong
//! and a wrong count is no reason to drop patient data.

use super::error::ParseError;

/// The segments of raw bytes: (start, end) of each non-blank line.
fn lines(b: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i <= b.len() {
            let at_end = i == b.len();
            if at_end || b[i] == b'\r' || b[i] == b'\n' {
                let s = start;
                i += 1;
                start = i;
                let seg = &b[s..(i - 1).min(b.len())];
                if !seg.iter().all(|&c| c == b' ' || c == b'\t') {
                    return Some((s, s + seg.len()));
                }
            } else {
                i += 1;
            }
        }
        None
    })
}

/// The segment's name if it is `name` (followed by a non-alphanumeric byte or nothing).
fn is(seg: &[u8], name: &[u8; 3]) -> bool {
    seg.starts_with(name) && seg.get(3).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// Splits a batch file into its messages, each from its MSH to just before the next MSH or
/// batch header/trailer (separators included, so each slice is a message as sent). A plain
/// message yields itself (leading whitespace skipped); an empty batch yields no messages.
///
/// Errors: [`ParseError::Empty`], [`ParseError::NoMsh`] when the input does not start with
/// MSH, FHS or BHS, and [`ParseError::SegmentOutsideMessage`] for a segment before the first MSH
/// or after a trailer.
pub fn split_batch(bytes: &[u8]) -> Result<Vec<&[u8]>, ParseError> {
    let bytes = super::message::strip_bom(bytes);
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    let mut seen = false;
    for (n, (s, e)) in lines(bytes).enumerate() {
        let seg = &bytes[s..e];
        if n == 0 && !(is(seg, b"MSH") || is(seg, b"FHS") || is(seg, b"BHS")) {
            return Err(ParseError::NoMsh {
                found: String::from_utf8_lossy(seg).chars().take(10).collect(),
            });
        }
        let envelope = [b"FHS", b"BHS", b"BTS", b"FTS"].iter().any(|h| is(seg, h));
        if is(seg, b"MSH") || envelope {
            if let Some(start) = current.take() {
                out.push(&bytes[start..s]);
            }
            if !envelope {
                current = Some(s);
            }
        } else if current.is_none() {
            return Err(ParseError::SegmentOutsideMessage {
                segment_index: n + 1,
                name: String::from_utf8_lossy(&seg[..seg.len().min(3)]).into_owned(),
            });
        }
        seen = true;
    }
    if !seen {
        return Err(ParseError::Empty);
    }
    if let Some(start) = current {
        out.push(&bytes[start..]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::message::Message;
    use super::*;
    use proptest::prelude::*;

    const BATCH: &[u8] = include_bytes!("../../../fixtures/hl7v2/batch.hl7");
    const ADT: &[u8] = include_bytes!("../../../fixtures/hl7v2/adt_a01.hl7");

    #[test]
    fn fixture_batch() {
        let msgs = split_batch(BATCH).unwrap();
        assert_eq!(msgs.len(), 3);
        let ids: Vec<String> = msgs
            .iter()
            .map(|m| {
                Message::parse(m)
                    .unwrap()
                    .control_id()
                    .unwrap()
                    .into_owned()
            })
            .collect();
        assert_eq!(ids, ["B0001", "B0002", "B0003"]);
        assert!(msgs[0].starts_with(b"MSH|") && msgs[0].ends_with(b"ALPHA^ANN\r"));
        assert_eq!(Message::parse(msgs[2]).unwrap().segment_count(), 2);
        // The slices tile the file between the envelope segments.
        let joined: Vec<u8> = msgs.concat();
        assert!(BATCH.windows(joined.len()).any(|w| w == joined.as_slice()));
    }

    #[test]
    fn plain_and_concatenated() {
        assert_eq!(split_batch(ADT).unwrap(), vec![ADT]);
        let two = [ADT, ADT].concat();
        let parts = split_batch(&two).unwrap();
        assert_eq!(parts, vec![ADT, ADT]);
        let with_lead = [b"\r\n".as_slice(), ADT].concat();
        assert_eq!(split_batch(&with_lead).unwrap(), vec![ADT]);
        let lf = b"MSH|^~\\&|A\nPID|1\nMSH|^~\\&|B\r\nPID|2";
        assert_eq!(
            split_batch(lf).unwrap(),
            vec![&b"MSH|^~\\&|A\nPID|1\n"[..], &b"MSH|^~\\&|B\r\nPID|2"[..]]
        );
    }

    #[test]
    fn envelopes_and_errors() {
        assert_eq!(
            split_batch(b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r").unwrap(),
            Vec::<&[u8]>::new()
        );
        // Several batches in one file.
        let f = b"BHS|^~\\&\rMSH|^~\\&|1\rBTS|1\rBHS|^~\\&\rMSH|^~\\&|2\rPID|x\rBTS|1\r";
        let m = split_batch(f).unwrap();
        assert_eq!(m, vec![&b"MSH|^~\\&|1\r"[..], &b"MSH|^~\\&|2\rPID|x\r"[..]]);
        assert_eq!(split_batch(b"").unwrap_err(), ParseError::Empty);
        assert_eq!(split_batch(b" \r\n").unwrap_err(), ParseError::Empty);
        assert!(matches!(
            split_batch(b"PID|1\rMSH|^~\\&"),
            Err(ParseError::NoMsh { .. })
        ));
        assert!(matches!(
            split_batch(b"MSHX|1"),
            Err(ParseError::NoMsh { .. })
        ));
        assert_eq!(
            split_batch(b"FHS|^~\\&\rPID|1\rMSH|^~\\&").unwrap_err(),
            ParseError::SegmentOutsideMessage {
                segment_index: 2,
                name: "PID".into()
            }
        );
        assert_eq!(
            split_batch(b"BHS|^~\\&\rMSH|^~\\&\rBTS|1\rNTE|x").unwrap_err(),
            ParseError::SegmentOutsideMessage {
                segment_index: 4,
                name: "NTE".into()
            }
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), head in 0usize..4) {
            let mut raw = [&b""[..], b"MSH|^~\\&|", b"FHS|^~\\&\r", b"BHS|^~\\&\n"][head].to_vec();
            raw.extend(bytes);
            if let Ok(parts) = split_batch(&raw) {
                for p in parts {
                    prop_assert!(p.starts_with(b"MSH"));
                    let _ = Message::parse(p);
                }
            }
        }
    }
}
