//! Escape sequences: decoded on read, produced on write.
//!
//! Decoded: `\F\ \S\ \T\ \R\ \E\` (the field, component, subcomponent, repetition and escape
//! characters), `\P\` (the truncation character, only when MSH-2 declares one) and `\Xhh..\` (hex
//! bytes, read in the message's charset). Every other well-formed sequence, i.e. the formatting
//! commands `\H\ \N\ \.br\ \.sp\ \.in\ \.ti\ \.sk\ \.ce\ \.fi\ \.nf\`, the charset switches
//! `\C..\ \M..\`, vendor `\Z..\` and anything unknown, is kept verbatim with its escape characters,
//! so FT text and local extensions survive a read-modify-write.
//!
//! A "sequence" is the text between an escape character and the next one; it is well formed when
//! non-empty and free of delimiters and line breaks. An escape character that starts no
//! well-formed sequence is taken literally (lenient with senders that do not escape `\`).
//!
//! [`escape`] is the inverse of [`decode`]: delimiters become `\F\`-style sequences, CR and LF
//! become `\X0D\`/`\X0A\`, an escape character that begins a sequence [`decode`] keeps verbatim is
//! left alone (so formatting commands stay commands), and any other escape character becomes
//! `\E\`. For every string `s`, `decode(escape(s)) == s`.

use std::borrow::Cow;

use super::charset::Charset;
use super::delimiters::Delimiters;

/// What the text between two escape characters means.
enum Seq {
    /// A standard sequence decoding to this text.
    Decoded(Cow<'static, str>),
    /// A well-formed sequence kept as is (formatting, charset switch, vendor, unknown).
    Verbatim,
    /// Not a sequence: the escape character is literal.
    NotASequence,
}

fn classify(content: &[u8], d: &Delimiters, charset: Charset) -> Seq {
    if content.is_empty()
        || content
            .iter()
            .any(|&b| d.is_delimiter(b) || b == b'\r' || b == b'\n')
    {
        return Seq::NotASequence;
    }
    let one = |b: u8| Seq::Decoded(Cow::Owned(char::from(b).to_string()));
    match content {
        b"F" => one(d.field),
        b"S" => one(d.component),
        b"T" => one(d.subcomponent),
        b"R" => one(d.repetition),
        b"E" => one(d.escape),
        b"P" => match d.truncation {
            Some(t) => one(t),
            None => Seq::Verbatim,
        },
        [b'X', hex @ ..] => match hex_text(hex, charset) {
            Some(t) => Seq::Decoded(Cow::Owned(t)),
            None => Seq::Verbatim,
        },
        _ => Seq::Verbatim,
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `\X..\` hex: an even, non-zero number of hex digits whose bytes are valid text in the
/// charset (any byte in ISO-8859-1, valid UTF-8 otherwise).
fn hex_text(hex: &[u8], charset: Charset) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = hex
        .chunks_exact(2)
        .map(|p| Some(hex_digit(p[0])? * 16 + hex_digit(p[1])?))
        .collect::<Option<Vec<u8>>>()?;
    match charset {
        Charset::Latin1 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Charset::Utf8 | Charset::Ascii => String::from_utf8(bytes).ok(),
    }
}

/// Position of the next escape character after `i`, if any.
fn next_escape(b: &[u8], i: usize, esc: u8) -> Option<usize> {
    b.get(i + 1..)?
        .iter()
        .position(|&c| c == esc)
        .map(|p| i + 1 + p)
}

/// Decodes the escape sequences of one leaf value (see the module doc). Borrows when there is
/// nothing to decode.
pub fn decode<'a>(text: &'a str, d: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let b = text.as_bytes();
    let Some(first) = b.iter().position(|&c| c == d.escape) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..first]);
    let mut i = first;
    let mut plain = first; // start of pending plain text
    while i < b.len() {
        if b[i] != d.escape {
            i += 1;
            continue;
        }
        out.push_str(&text[plain..i]);
        match next_escape(b, i, d.escape) {
            Some(j) => match classify(&b[i + 1..j], d, charset) {
                Seq::Decoded(t) => {
                    out.push_str(&t);
                    i = j + 1;
                }
                Seq::Verbatim => {
                    out.push_str(&text[i..=j]);
                    i = j + 1;
                }
                Seq::NotASequence => {
                    out.push(char::from(d.escape));
                    i += 1;
                }
            },
            None => {
                out.push(char::from(d.escape));
                i += 1;
            }
        }
        plain = i;
    }
    out.push_str(&text[plain..]);
    Cow::Owned(out)
}

/// Escapes text for use as one leaf value (see the module doc). Borrows when nothing needs
/// escaping.
pub fn escape<'a>(text: &'a str, d: &Delimiters, charset: Charset) -> Cow<'a, str> {
    let needs = |c: u8| d.is_delimiter(c) || c == b'\r' || c == b'\n';
    let b = text.as_bytes();
    let Some(first) = b.iter().position(|&c| needs(c)) else {
        return Cow::Borrowed(text);
    };
    let esc = char::from(d.escape);
    let mut out = String::with_capacity(text.len() + 8);
    out.push_str(&text[..first]);
    let mut i = first;
    let mut plain = first;
    let seq = |out: &mut String, letters: &str| {
        out.push(esc);
        out.push_str(letters);
        out.push(esc);
    };
    while i < b.len() {
        let c = b[i];
        if !needs(c) {
            i += 1;
            continue;
        }
        out.push_str(&text[plain..i]);
        i += 1;
        if c == d.escape {
            match next_escape(b, i - 1, d.escape) {
                Some(j) if matches!(classify(&b[i..j], d, charset), Seq::Verbatim) => {
                    out.push_str(&text[i - 1..=j]);
                    i = j + 1;
                }
                _ => seq(&mut out, "E"),
            }
        } else if c == d.field {
            seq(&mut out, "F");
        } else if c == d.component {
            seq(&mut out, "S");
        } else if c == d.subcomponent {
            seq(&mut out, "T");
        } else if c == d.repetition {
            seq(&mut out, "R");
        } else if c == b'\r' {
            seq(&mut out, "X0D");
        } else if c == b'\n' {
            seq(&mut out, "X0A");
        } else {
            // The truncation character, the only delimiter left.
            seq(&mut out, "P");
        }
        plain = i;
    }
    out.push_str(&text[plain..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const U: Charset = Charset::Utf8;

    fn dec(s: &str) -> String {
        decode(s, &Delimiters::default(), U).into_owned()
    }
    fn esc(s: &str) -> String {
        escape(s, &Delimiters::default(), U).into_owned()
    }

    #[test]
    fn standard_sequences() {
        assert_eq!(dec(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
        assert_eq!(dec(r"\X41\"), "A");
        assert_eq!(dec(r"\X414243\"), "ABC");
        assert_eq!(dec(r"\X0D0A\"), "\r\n");
        assert_eq!(dec(r"\XC3A9\"), "é");
        // \P\ only with a truncation character.
        assert_eq!(dec(r"a\P\b"), r"a\P\b");
        let d = Delimiters {
            truncation: Some(b'#'),
            ..Delimiters::default()
        };
        assert_eq!(decode(r"a\P\b", &d, U), "a#b");
        assert_eq!(escape("a#b", &d, U), r"a\P\b");
        assert_eq!(escape("a#b", &Delimiters::default(), U), "a#b");
    }

    #[test]
    fn hex_in_charsets() {
        let d = Delimiters::default();
        assert_eq!(decode(r"\XE9\", &d, Charset::Latin1), "é");
        // Not UTF-8: kept verbatim.
        assert_eq!(decode(r"\XE9\", &d, U), r"\XE9\");
        // Odd length, non-hex, empty: kept verbatim.
        assert_eq!(dec(r"\X4\"), r"\X4\");
        assert_eq!(dec(r"\XZZ\"), r"\XZZ\");
        assert_eq!(dec(r"\X\"), r"\X\");
    }

    #[test]
    fn formatting_preserved() {
        for s in [
            r"Line\.br\two",
            r"\H\bold\N\",
            r"\.sp2\",
            r"\.in+4\",
            r"\.ti-2\",
            r"\.sk3\",
            r"\.ce\",
            r"\.fi\\.nf\",
            r"\Zvendor\",
            r"\C2842\",
            r"\M2442\",
            r"C:\path\file",
        ] {
            assert_eq!(dec(s), s);
            assert_eq!(esc(s), s, "escape keeps formatting {s}");
        }
    }

    #[test]
    fn lenient_literals() {
        assert_eq!(dec(r"a\"), r"a\");
        assert_eq!(dec(r"a\\b"), r"a\\b");
        assert_eq!(dec(r"\\F\"), r"\|");
        assert_eq!(dec("plain"), "plain");
        assert!(matches!(
            decode("plain", &Delimiters::default(), U),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a|b^c&d~e"), r"a\F\b\S\c\T\d\R\e");
        assert_eq!(esc(r"back\slash"), r"back\E\slash");
        assert_eq!(esc(r"\F\"), r"\E\F\E\");
        assert_eq!(dec(&esc(r"\F\")), r"\F\");
        assert_eq!(esc("l1\r\nl2"), r"l1\X0D\\X0A\l2");
        assert!(matches!(
            escape("plain", &Delimiters::default(), U),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn custom_delimiters() {
        let d = Delimiters::from_header(b"MSH#$*@%#").unwrap();
        assert_eq!(
            decode("10@F@20 5@S@6 A@T@B @R@ @E@", &d, U),
            "10#20 5$6 A%B * @"
        );
        assert_eq!(
            escape("10#20 5$6 A%B * @", &d, U),
            "10@F@20 5@S@6 A@T@B @R@ @E@"
        );
        // A backslash is an ordinary character there.
        assert_eq!(escape(r"a\F\b", &d, U), r"a\F\b");
    }

    fn delimiter_sets() -> impl Strategy<Value = Delimiters> {
        let pool: Vec<u8> = br##"|^~\&#!$%*@+/:;?_-"##.to_vec();
        (Just(pool), any::<bool>())
            .prop_flat_map(|(pool, trunc)| (Just(pool.clone()).prop_shuffle(), Just(trunc)))
            .prop_map(|(p, trunc)| Delimiters {
                field: p[0],
                component: p[1],
                repetition: p[2],
                escape: p[3],
                subcomponent: p[4],
                truncation: trunc.then_some(p[5]),
            })
    }

    /// Canonical encoded tokens: their decoding re-escapes to themselves.
    fn canonical(d: &Delimiters) -> impl Strategy<Value = String> {
        let e = char::from(d.escape);
        let mut tokens = vec![
            format!("{e}F{e}"),
            format!("{e}S{e}"),
            format!("{e}T{e}"),
            format!("{e}R{e}"),
            format!("{e}X0D{e}"),
            format!("{e}X0A{e}"),
            format!("{e}.br{e}"),
            format!("{e}H{e}"),
            format!("{e}N{e}"),
            format!("{e}.sp2{e}"),
            format!("{e}Zvendor{e}"),
        ];
        if d.truncation.is_some() {
            tokens.push(format!("{e}P{e}"));
        }
        let dd = *d;
        let plain = "[a-zA-Z0-9 .,éü€]{1,6}".prop_map(move |s: String| {
            s.chars()
                .filter(|c| !c.is_ascii() || !dd.is_delimiter(*c as u8))
                .collect::<String>()
        });
        prop::collection::vec(prop_oneof![prop::sample::select(tokens), plain], 0..12)
            .prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn decode_inverts_escape(d in delimiter_sets(), s in "(?s).{0,40}", raw in r#"[\\|^~&#!$%*@.XFSTREHN0-9a-f\r\n]{0,30}"#) {
            for text in [s.as_str(), raw.as_str()] {
                for cs in [Charset::Utf8, Charset::Latin1] {
                    let e = escape(text, &d, cs);
                    prop_assert_eq!(decode(&e, &d, cs), text);
                    prop_assert!(!e.contains(['\r', '\n']));
                    prop_assert!(!e.bytes().any(|b| b == d.field || b == d.component
                        || b == d.repetition || b == d.subcomponent || Some(b) == d.truncation));
                }
            }
        }

        #[test]
        fn escape_of_decode_is_canonical((d, x) in delimiter_sets().prop_flat_map(|d| (Just(d), canonical(&d)))) {
            let decoded = decode(&x, &d, U);
            prop_assert_eq!(escape(&decoded, &d, U), x.as_str());
        }

        #[test]
        fn decode_never_panics_and_is_stable(d in delimiter_sets(), x in "(?s).{0,60}") {
            let once = decode(&x, &d, U).into_owned();
            let again = decode(&escape(&once, &d, U), &d, U).into_owned();
            prop_assert_eq!(once, again);
        }
    }
}
