//! Encoding characters, read from the header segment rather than assumed.
//!
//! Senders may use any delimiters, not only `|^~\&`. MSH-1 is the byte right after `MSH` (the field
//! separator itself) and MSH-2 is everything up to the next field separator: four characters
//! (component, repetition, escape, subcomponent) plus, from v2.7, an optional fifth truncation
//! character (`#`). MSH-2 is always one field however long it is, so the fifth character never
//! shifts the numbering of MSH-3 and later. FHS and BHS carry their delimiters the same way.

use super::error::ParseError;

/// The six delimiter characters of a message. All are distinct printable non-alphanumeric ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator, usually `^`.
    pub component: u8,
    /// Repetition separator, usually `~`.
    pub repetition: u8,
    /// Escape character, usually `\`.
    pub escape: u8,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: u8,
    /// Truncation character (v2.7+, usually `#`), when MSH-2 has a fifth character.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// `|^~\&`, without truncation character.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

/// Whether `b` may serve as a delimiter: printable ASCII, not a letter or digit.
fn allowed(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

impl Delimiters {
    /// Reads the delimiters from the start of a header segment (`MSH`, `FHS` or `BHS`): byte 3 is
    /// the field separator, then MSH-2 runs to the next field separator or end of segment.
    ///
    /// Errors with [`ParseError::BadEncodingCharacters`] when MSH-2 is not 4 or 5 characters, or
    /// when a character is repeated, alphanumeric, non-printable or non-ASCII.
    pub fn from_header(segment: &[u8]) -> Result<Delimiters, ParseError> {
        let bad = |reason: &'static str| ParseError::BadEncodingCharacters {
            found: String::from_utf8_lossy(segment.get(3..).unwrap_or(&[]))
                .chars()
                .take(8)
                .collect(),
            reason,
        };
        let field = *segment.get(3).ok_or_else(|| bad("no field separator"))?;
        if !allowed(field) {
            return Err(bad(
                "field separator is not a printable non-alphanumeric ASCII character",
            ));
        }
        let rest = segment.get(4..).unwrap_or(&[]);
        let len = rest
            .iter()
            .position(|&b| b == field || b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let enc = &rest[..len];
        if enc.len() != 4 && enc.len() != 5 {
            return Err(bad(
                "MSH-2 must hold 4 encoding characters (5 with truncation)",
            ));
        }
        if !enc.iter().all(|&b| allowed(b)) {
            return Err(bad(
                "encoding characters must be printable non-alphanumeric ASCII",
            ));
        }
        let mut all = [field, 0, 0, 0, 0, 0];
        all[1..=enc.len()].copy_from_slice(enc);
        let used = &all[..=enc.len()];
        for (i, a) in used.iter().enumerate() {
            if used[i + 1..].contains(a) {
                return Err(bad("encoding characters must all differ"));
            }
        }
        Ok(Delimiters {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc[2],
            subcomponent: enc[3],
            truncation: enc.get(4).copied(),
        })
    }

    /// The MSH-2 text for these delimiters, e.g. `^~\&` or `^~\&#`.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        for b in [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ] {
            s.push(char::from(b));
        }
        if let Some(t) = self.truncation {
            s.push(char::from(t));
        }
        s
    }

    /// Whether `b` is one of the delimiters (the truncation character included).
    pub fn is_delimiter(&self, b: u8) -> bool {
        b == self.field
            || b == self.component
            || b == self.repetition
            || b == self.escape
            || b == self.subcomponent
            || Some(b) == self.truncation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard() {
        let d = Delimiters::from_header(b"MSH|^~\\&|A|B").unwrap();
        assert_eq!(d, Delimiters::default());
        assert_eq!(d.encoding_characters(), "^~\\&");
    }

    #[test]
    fn custom_and_truncation() {
        let d = Delimiters::from_header(b"MSH#$*@%#A").unwrap();
        assert_eq!(
            (d.field, d.component, d.repetition, d.escape, d.subcomponent),
            (b'#', b'$', b'*', b'@', b'%')
        );
        assert_eq!(d.truncation, None);
        let d = Delimiters::from_header(b"MSH|^~\\&#|A").unwrap();
        assert_eq!(d.truncation, Some(b'#'));
        assert_eq!(d.encoding_characters(), "^~\\&#");
        // MSH-2 ending the segment is fine too.
        assert!(Delimiters::from_header(b"BHS|^~\\&\r").is_ok());
    }

    #[test]
    fn rejected() {
        for bad in [
            &b"MSH"[..],
            b"MSH|",
            b"MSH|^~\\|",
            b"MSH|^~\\&#!|",
            b"MSH|^~\\^|",
            b"MSH|^~\\||",
            b"MSHA^~\\&",
            b"MSH|^~a&|",
            b"MSH| ~\\&|",
            b"MSH|^~\\\xe9|",
        ] {
            let e = Delimiters::from_header(bad).unwrap_err();
            assert!(
                matches!(e, ParseError::BadEncodingCharacters { .. }),
                "{bad:?}"
            );
        }
    }
}
