//! MSH-18 character sets and the decoding of wire bytes into text.
//!
//! The message is decoded once, at parse time, into UTF-8 text; the wire encoding is remembered so
//! that [`super::Message::to_bytes`] can write the same bytes back.
//!
//! Policy (HL7 table 0211, first repetition of MSH-18, case-insensitive):
//! - empty, `UNICODE UTF-8` (or `UTF-8`): UTF-8;
//! - `8859/1` (or `ISO-8859-1`): ISO-8859-1, every byte is one character;
//! - `ASCII`: ASCII;
//! - anything else: [`ParseError::UnknownCharset`], because guessing would corrupt names.
//!
//! Bytes that do not match the declaration are not an error, since senders often mislabel: a
//! message declared UTF-8 (or undeclared) that is not valid UTF-8 is decoded as ISO-8859-1 (every
//! byte sequence is valid there, so nothing is lost and the bytes round-trip), and a message
//! declared ASCII that holds bytes above 0x7F is decoded as UTF-8 if valid, else ISO-8859-1. In both
//! cases [`super::Message::charset_fallback`] reports `true`.

use std::borrow::Cow;

use super::delimiters::Delimiters;
use super::error::ParseError;

/// A character set declared in MSH-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// `UNICODE UTF-8`, also the default when MSH-18 is empty.
    Utf8,
    /// `8859/1`, ISO-8859-1 (Latin-1).
    Latin1,
    /// `ASCII`, 7-bit.
    Ascii,
}

impl Charset {
    /// Reads an MSH-18 value (one repetition). Empty means UTF-8.
    pub fn from_msh18(value: &str) -> Result<Charset, ParseError> {
        let v = value.trim();
        if v.is_empty()
            || v.eq_ignore_ascii_case("UNICODE UTF-8")
            || v.eq_ignore_ascii_case("UTF-8")
        {
            Ok(Charset::Utf8)
        } else if v.eq_ignore_ascii_case("8859/1") || v.eq_ignore_ascii_case("ISO-8859-1") {
            Ok(Charset::Latin1)
        } else if v.eq_ignore_ascii_case("ASCII") {
            Ok(Charset::Ascii)
        } else {
            Err(ParseError::UnknownCharset(v.chars().take(40).collect()))
        }
    }

    /// The HL7 table 0211 name: `UNICODE UTF-8`, `8859/1` or `ASCII`.
    pub fn hl7_name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UNICODE UTF-8",
            Charset::Latin1 => "8859/1",
            Charset::Ascii => "ASCII",
        }
    }
}

/// How the text is encoded on the wire (what `to_bytes` writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Utf8,
    Latin1,
}

impl Wire {
    /// The character set this wire encoding corresponds to.
    pub(super) fn charset(self) -> Charset {
        match self {
            Wire::Utf8 => Charset::Utf8,
            Wire::Latin1 => Charset::Latin1,
        }
    }
}

/// Decodes ISO-8859-1 bytes: byte `b` is `U+00bb`.
pub(super) fn latin1_to_string(bytes: &[u8]) -> String {
    let high = bytes.iter().filter(|&&b| b >= 0x80).count();
    let mut s = String::with_capacity(bytes.len() + high);
    s.extend(bytes.iter().map(|&b| char::from(b)));
    s
}

/// Decodes wire bytes following the declared charset and the fallback policy of this module.
/// Returns the text, the wire encoding used, and whether a fallback happened.
pub(super) fn decode(bytes: &[u8], declared: Charset) -> (String, Wire, bool) {
    match declared {
        Charset::Latin1 => (latin1_to_string(bytes), Wire::Latin1, false),
        Charset::Utf8 | Charset::Ascii => match String::from_utf8(bytes.to_vec()) {
            Ok(s) => {
                let fallback = declared == Charset::Ascii && !s.is_ascii();
                (s, Wire::Utf8, fallback)
            }
            Err(_) => (latin1_to_string(bytes), Wire::Latin1, true),
        },
    }
}

/// Encodes text back to wire bytes. Characters a Latin-1 wire cannot hold become `?` (setters
/// refuse them, so this only matters for text built elsewhere, such as ACKs).
pub(super) fn encode(text: &str, wire: Wire) -> Vec<u8> {
    match wire {
        Wire::Utf8 => text.as_bytes().to_vec(),
        Wire::Latin1 => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
    }
}

/// `text` with every character `keep` refuses replaced by an ASCII stand-in: typographic
/// punctuation by its plain form (an arrow by `->`, dashes by `-`, curly quotes by straight
/// ones, an ellipsis by `...`), Latin letters with diacritics by their base letter (`ü` by `u`,
/// `ß` by `ss`), anything else by `?`. For text the engine writes into an ACK, which its
/// receiver reads in the message's declared character set (ASCII when none is declared).
pub fn transliterate(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if text.chars().all(&keep) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if keep(c) {
            out.push(c);
        } else {
            out.push_str(ascii_stand_in(c));
        }
    }
    Cow::Owned(out)
}

/// See [`transliterate`].
fn ascii_stand_in(c: char) -> &'static str {
    match c {
        '\u{2192}' | '\u{27f6}' | '\u{21d2}' => "->",
        '\u{2190}' | '\u{27f5}' | '\u{21d0}' => "<-",
        '\u{2194}' => "<->",
        '\u{2010}'..='\u{2015}' | '\u{2212}' => "-",
        '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}' | '\u{2032}' => "'",
        '\u{201c}'..='\u{201f}' | '\u{ab}' | '\u{bb}' | '\u{2033}' => "\"",
        '\u{2026}' => "...",
        '\u{2022}' | '\u{b7}' => "*",
        '\u{a0}' | '\u{2000}'..='\u{200a}' | '\u{202f}' => " ",
        '\u{d7}' => "x",
        '\u{2264}' => "<=",
        '\u{2265}' => ">=",
        '\u{2260}' => "!=",
        '\u{df}' => "ss",
        '\u{c6}' => "AE",
        '\u{e6}' => "ae",
        '\u{152}' => "OE",
        '\u{153}' => "oe",
        '\u{c0}'..='\u{c5}' => "A",
        '\u{e0}'..='\u{e5}' => "a",
        '\u{c7}' => "C",
        '\u{e7}' => "c",
        '\u{c8}'..='\u{cb}' => "E",
        '\u{e8}'..='\u{eb}' => "e",
        '\u{cc}'..='\u{cf}' => "I",
        '\u{ec}'..='\u{ef}' => "i",
        '\u{d1}' => "N",
        '\u{f1}' => "n",
        '\u{d2}'..='\u{d6}' | '\u{d8}' => "O",
        '\u{f2}'..='\u{f6}' | '\u{f8}' => "o",
        '\u{d9}'..='\u{dc}' => "U",
        '\u{f9}'..='\u{fc}' => "u",
        '\u{dd}' => "Y",
        '\u{fd}' | '\u{ff}' => "y",
        _ => "?",
    }
}

/// Whether the character can be written in a message with this wire encoding and declaration.
pub(super) fn representable(c: char, wire: Wire, declared: Charset) -> bool {
    match (declared, wire) {
        (Charset::Ascii, _) => c.is_ascii(),
        (_, Wire::Latin1) => u32::from(c) <= 0xFF,
        (_, Wire::Utf8) => true,
    }
}

/// Finds the raw MSH-18 value (first repetition) of the first MSH segment, as bytes. Returns an
/// empty slice when there is none.
pub(super) fn find_msh18<'a>(raw: &'a [u8], d: &Delimiters) -> &'a [u8] {
    for seg in raw.split(|&b| b == b'\r' || b == b'\n') {
        if seg.len() >= 3 && &seg[..3] == b"MSH" && (seg.len() == 3 || seg[3] == d.field) {
            // Pieces: 0 = "MSH", 1 = MSH-2, n = MSH-(n+1); MSH-18 is piece 17.
            let field = seg.split(|&b| b == d.field).nth(17).unwrap_or(&[]);
            return field.split(|&b| b == d.repetition).next().unwrap_or(&[]);
        }
    }
    &[]
}

/// Reads the declared charset from raw bytes (first MSH segment's MSH-18).
pub(super) fn declared_charset(raw: &[u8], d: &Delimiters) -> Result<Charset, ParseError> {
    let v = find_msh18(raw, d);
    match std::str::from_utf8(v) {
        Ok(s) => Charset::from_msh18(s),
        Err(_) => Err(ParseError::UnknownCharset(
            String::from_utf8_lossy(v).chars().take(40).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Charset::from_msh18("").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_msh18("UNICODE UTF-8").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_msh18("unicode utf-8").unwrap(), Charset::Utf8);
        assert_eq!(Charset::from_msh18("8859/1").unwrap(), Charset::Latin1);
        assert_eq!(Charset::from_msh18("ASCII").unwrap(), Charset::Ascii);
        assert_eq!(
            Charset::from_msh18("8859/15").unwrap_err(),
            ParseError::UnknownCharset("8859/15".into())
        );
        assert_eq!(Charset::Latin1.hl7_name(), "8859/1");
    }

    #[test]
    fn decoding_policy() {
        let (s, w, f) = decode("Müller".as_bytes(), Charset::Utf8);
        assert_eq!((s.as_str(), w, f), ("Müller", Wire::Utf8, false));
        let (s, w, f) = decode(b"M\xfcller", Charset::Utf8);
        assert_eq!((s.as_str(), w, f), ("Müller", Wire::Latin1, true));
        let (s, w, f) = decode(b"M\xfcller", Charset::Latin1);
        assert_eq!((s.as_str(), w, f), ("Müller", Wire::Latin1, false));
        let (s, w, f) = decode("Müller".as_bytes(), Charset::Ascii);
        assert_eq!((s.as_str(), w, f), ("Müller", Wire::Utf8, true));
        let (_, w, f) = decode(b"Muller", Charset::Ascii);
        assert_eq!((w, f), (Wire::Utf8, false));
        assert_eq!(encode("Müller", Wire::Latin1), b"M\xfcller");
        assert_eq!(encode("a€", Wire::Latin1), b"a?");
    }

    #[test]
    fn transliteration() {
        let ascii = |c: char| c.is_ascii();
        assert!(matches!(
            transliterate("plain", ascii),
            Cow::Borrowed("plain")
        ));
        assert_eq!(
            transliterate(
                "a \u{2192} b \u{2014} \u{201c}M\u{fc}ller\u{201d}\u{2026} \u{20ac}",
                ascii
            ),
            "a -> b - \"Muller\"... ?"
        );
        let latin1 = |c: char| u32::from(c) <= 0xff;
        assert_eq!(transliterate("\u{fc} \u{2192}", latin1), "\u{fc} ->");
    }

    #[test]
    fn msh18_lookup() {
        let d = Delimiters::default();
        let m = b"MSH|^~\\&|a|b|c|d|t||ADT^A01|1|P|2.5|||||DEU|8859/1~UNICODE UTF-8|x\rPID|1";
        assert_eq!(find_msh18(m, &d), b"8859/1");
        assert_eq!(declared_charset(m, &d).unwrap(), Charset::Latin1);
        assert_eq!(find_msh18(b"MSH|^~\\&|a\r", &d), b"");
        // In a batch the first MSH counts.
        let b = format!("FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&{}ASCII\r", "|".repeat(16));
        assert_eq!(declared_charset(b.as_bytes(), &d).unwrap(), Charset::Ascii);
        let mut bad = format!("MSH|^~\\&{}", "|".repeat(16)).into_bytes();
        bad.push(0xff);
        assert!(matches!(
            declared_charset(&bad, &d),
            Err(ParseError::UnknownCharset(_))
        ));
    }
}
