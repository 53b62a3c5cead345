//! The message: decoded text plus a one-pass index of segment and field boundaries.
//!
//! Parsing does three things and allocates three buffers: decode the bytes into UTF-8 text (a
//! copy, transcoded when the charset is ISO-8859-1), record where every segment and field starts
//! (one `u32` per field), and check segment names. Repetitions, components and subcomponents are
//! found on access by scanning the one field asked for, and escape sequences are decoded only for
//! the value returned. The text keeps the original segment separators (`\r`, `\n`, `\r\n`, mixed,
//! blank lines), so [`Message::to_bytes`] gives back the input byte for byte until a setter
//! changes something.
//!
//! Numbering follows the standard: in `MSH`, `FHS` and `BHS` the field separator itself is field 1
//! and the encoding characters are field 2, whatever their length.

use std::borrow::Cow;
use std::fmt;

use super::charset::{self, Charset, Wire};
use super::delimiters::Delimiters;
use super::error::{ParseError, PathError, SetError};
use super::escape;
use super::path::{Index, Path};
use super::value::Value;

/// Index entry of one segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Byte offset of the segment's first character in the text.
    start: u32,
    /// Byte offset just past its last character (before the separator).
    end: u32,
    /// Position in `bounds` of its first piece start.
    first: u32,
    /// Number of pieces (name + fields as split by the field separator).
    pieces: u32,
    name: [u8; 3],
    /// MSH, FHS or BHS: field 1 is the separator, field 2 the encoding characters.
    header: bool,
}

/// A parsed HL7 v2 message (or a batch file parsed as a whole, see [`Message::parse`]).
#[derive(Clone)]
pub struct Message {
    text: String,
    wire: Wire,
    declared: Charset,
    fallback: bool,
    delims: Delimiters,
    lead: usize,
    segs: Vec<Seg>,
    /// For each segment, the start offset of each piece, then `end + 1`.
    bounds: Vec<u32>,
}

/// One segment as seen by [`Message::segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// 0-based position among the message's segments.
    pub index: usize,
    /// The segment name, e.g. `PID`.
    pub name: &'a str,
    /// The encoded segment text, without its separator.
    pub raw: &'a str,
}

/// What a path names inside a field.
struct Element<'a> {
    text: &'a str,
    /// Holds lower-level delimiters (returned encoded).
    composite: bool,
    /// MSH-1 or MSH-2 (returned as is).
    atomic: bool,
}

const HEADERS: [&[u8; 3]; 3] = [b"MSH", b"FHS", b"BHS"];

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|&c| c == b' ' || c == b'\t')
}

fn valid_name(n: &[u8]) -> bool {
    matches!(n, [a, b, c] if a.is_ascii_uppercase()
        && (b.is_ascii_uppercase() || b.is_ascii_digit())
        && (c.is_ascii_uppercase() || c.is_ascii_digit()))
}

/// The one pass: segment and field boundaries from `lead` on.
fn index(text: &str, lead: usize, fs: u8) -> Result<(Vec<Seg>, Vec<u32>), ParseError> {
    let b = text.as_bytes();
    // Offsets are u32 (and a sentinel may sit one past the end).
    if b.len() >= u32::MAX as usize - 1 {
        return Err(ParseError::TooLarge { len: b.len() });
    }
    let mut segs: Vec<Seg> = Vec::with_capacity(16);
    let mut bounds: Vec<u32> = Vec::with_capacity(b.len() / 5 + 8);

    let finish = |segs: &mut Vec<Seg>, bounds: &mut Vec<u32>, start: usize, end: usize| {
        let first = segs
            .last()
            .map_or(0, |s: &Seg| (s.first + s.pieces + 1) as usize);
        if is_blank(&b[start..end]) {
            bounds.truncate(first);
            return Ok(());
        }
        bounds.push(end as u32 + 1);
        let name_end = bounds[first + 1] as usize - 1;
        let name = &b[start..name_end];
        if !valid_name(name) {
            return Err(ParseError::BadSegmentName {
                segment_index: segs.len() + 1,
                name: String::from_utf8_lossy(name).chars().take(20).collect(),
            });
        }
        let name = [name[0], name[1], name[2]];
        segs.push(Seg {
            start: start as u32,
            end: end as u32,
            first: first as u32,
            pieces: (bounds.len() - first - 1) as u32,
            header: HEADERS.contains(&&name),
            name,
        });
        Ok(())
    };

    let mut start = lead;
    bounds.push(lead as u32);
    // Eight bytes at a time: a word with no field separator, CR or LF is skipped whole. The
    // zero-byte test can flag a byte next to a real match, so every flagged byte is re-checked.
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let (fs_w, cr_w, lf_w) = (
        LO * u64::from(fs),
        LO * u64::from(b'\r'),
        LO * u64::from(b'\n'),
    );
    let mut i = lead;
    while i < b.len() {
        let (mut mask, width) = match b.get(i..i + 8) {
            Some(w) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                let x = u64::from_le_bytes(a);
                (zero(x ^ fs_w) | zero(x ^ cr_w) | zero(x ^ lf_w), 8)
            }
            None => (0x80, 1),
        };
        while mask != 0 {
            let k = i + (mask.trailing_zeros() / 8) as usize;
            mask &= mask - 1;
            let c = b[k];
            if c == fs {
                bounds.push(k as u32 + 1);
            } else if c == b'\r' || c == b'\n' {
                finish(&mut segs, &mut bounds, start, k)?;
                start = k + 1;
                bounds.push(start as u32);
            }
        }
        i += width;
    }
    finish(&mut segs, &mut bounds, start, b.len())?;
    Ok((segs, bounds))
}

/// The `n`-th (1-based) part of `s` split by `sep`. Delimiters are ASCII (see
/// `delimiters.rs`), so a byte scan finds them and every cut is on a char boundary; it costs
/// a fraction of `str::split` with a `char` pattern, and scripts read fields all the time.
pub(crate) fn nth_part(s: &str, sep: u8, n: usize) -> Option<&str> {
    debug_assert!(sep.is_ascii());
    if n == 0 {
        return None;
    }
    let bytes = s.as_bytes();
    let mut start = 0;
    for _ in 1..n {
        start += bytes[start..].iter().position(|&b| b == sep)? + 1;
    }
    let end = bytes[start..]
        .iter()
        .position(|&b| b == sep)
        .map_or(bytes.len(), |p| start + p);
    Some(&s[start..end])
}

/// Replaces the part at `idx[0]` (1-based, created if missing) of `old` split by `seps[0]`, going
/// down one level per index; the innermost part becomes `new`.
fn splice(old: &str, seps: &[u8], idx: &[usize], new: &str) -> String {
    let (Some(&sep), Some(&i)) = (seps.first(), idx.first()) else {
        return new.to_owned();
    };
    let sep = char::from(sep);
    let mut parts: Vec<&str> = old.split(sep).collect();
    if parts.len() < i {
        parts.resize(i, "");
    }
    let inner = splice(parts[i - 1], &seps[1..], &idx[1..], new);
    let mut out = String::with_capacity(old.len() + new.len() + i);
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            out.push(sep);
        }
        if k == i - 1 {
            out.push_str(&inner);
        } else {
            out.push_str(p);
        }
    }
    out
}

impl Message {
    /// Parses one message (segments separated by `\r`, `\n` or `\r\n`, mixed allowed).
    ///
    /// The input must start with `MSH` (or `FHS`/`BHS`: a batch file then parses as one
    /// document whose header accessors read its first MSH; use [`super::split_batch`] to get the
    /// messages). Leading whitespace and blank lines, and blank or whitespace-only segments, are
    /// skipped but kept for [`Message::to_bytes`]. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        // A UTF-8 byte order mark (files saved on Windows) is not part of the message.
        let bytes = strip_bom(bytes);
        if bytes.len() >= u32::MAX as usize - 1 {
            return Err(ParseError::TooLarge { len: bytes.len() });
        }
        let lead = bytes
            .iter()
            .position(|&c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            .ok_or(ParseError::Empty)?;
        let rest = &bytes[lead..];
        if !HEADERS.iter().any(|h| rest.starts_with(&h[..])) {
            let line = rest
                .split(|&c| c == b'\r' || c == b'\n')
                .next()
                .unwrap_or(rest);
            return Err(ParseError::NoMsh {
                found: String::from_utf8_lossy(line).chars().take(10).collect(),
            });
        }
        let delims = Delimiters::from_header(rest)?;
        let declared = charset::declared_charset(rest, &delims)?;
        let (text, wire, fallback) = charset::decode(bytes, declared);
        let (segs, bounds) = index(&text, lead, delims.field)?;
        Ok(Message {
            text,
            wire,
            declared,
            fallback,
            delims,
            lead,
            segs,
            bounds,
        })
    }

    /// The delimiters read from MSH-1/MSH-2.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delims
    }

    /// The charset declared in MSH-18 (UTF-8 when empty).
    pub fn charset(&self) -> Charset {
        self.declared
    }

    /// The charset the bytes were actually decoded with (and are written back in):
    /// [`Charset::Utf8`] or [`Charset::Latin1`].
    pub fn decoded_as(&self) -> Charset {
        self.wire.charset()
    }

    /// Whether the bytes did not match the declared charset and were decoded by the fallback
    /// rule (see [`super::charset`]).
    pub fn charset_fallback(&self) -> bool {
        self.fallback
    }

    /// The whole message as decoded text (original separators included).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The message as bytes in its wire charset: the input, byte for byte, unless a setter
    /// changed it.
    pub fn to_bytes(&self) -> Vec<u8> {
        charset::encode(&self.text, self.wire)
    }

    /// Number of segments (blank lines not counted).
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// Number of segments with this name.
    pub fn count_segments(&self, name: &str) -> usize {
        self.segs
            .iter()
            .filter(|s| s.name == name.as_bytes())
            .count()
    }

    /// The segments in order.
    pub fn segments(&self) -> impl Iterator<Item = Segment<'_>> + '_ {
        (0..self.segs.len()).filter_map(move |i| self.segment(i))
    }

    /// The segment at a 0-based position.
    pub fn segment(&self, index: usize) -> Option<Segment<'_>> {
        let s = self.segs.get(index)?;
        let raw = self.text.get(s.start as usize..s.end as usize)?;
        Some(Segment {
            index,
            name: raw.get(..3)?,
            raw,
        })
    }

    /// Reads the value at a path (see [`Value`]). `[*]` reads as the first occurrence; use
    /// [`Message::get_all`] for all of them.
    pub fn get(&self, path: &Path) -> Value<'_> {
        let seg = self.find_segment(path.segment_bytes(), path.segment_index());
        self.value_at(seg, path)
    }

    /// Reads the value at a path in the segment at a 0-based position, whatever segment the
    /// path names (for a caller that found the segment already).
    pub fn get_in(&self, position: usize, path: &Path) -> Value<'_> {
        self.value_at(self.segs.get(position), path)
    }

    /// The value a path's field, repetition, component and subcomponent name in `seg`.
    fn value_at(&self, seg: Option<&Seg>, path: &Path) -> Value<'_> {
        let Some(seg) = seg else {
            return Value::Absent;
        };
        self.value_in(
            seg,
            path.field(),
            path.repetition().first_or_nth(),
            path.component(),
            path.subcomponent(),
        )
    }

    /// Reads every value a path with `[*]` names, in message order: one per matching segment
    /// when the segment index is `[*]` (absent ones included, so results line up with segments),
    /// and one per existing repetition when the repetition is `[*]` (none for an absent or empty
    /// field). Without wildcards, the single value of [`Message::get`].
    pub fn get_all(&self, path: &Path) -> Vec<Value<'_>> {
        let segs: Vec<&Seg> = match path.segment_index() {
            Index::All => self
                .segs
                .iter()
                .filter(|s| &s.name == path.segment_bytes())
                .collect(),
            idx => self
                .find_segment(path.segment_bytes(), idx)
                .into_iter()
                .collect(),
        };
        let mut out = Vec::with_capacity(segs.len());
        for seg in segs {
            match path.repetition() {
                Index::Nth(r) => out.push(self.value_in(
                    seg,
                    path.field(),
                    r,
                    path.component(),
                    path.subcomponent(),
                )),
                Index::All => {
                    for r in 1..=self.repetitions_in(seg, path.field()) {
                        out.push(self.value_in(
                            seg,
                            path.field(),
                            r,
                            path.component(),
                            path.subcomponent(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Convenience read by path string: `None` for absent, empty and null (`""`) values; use
    /// [`Message::get`] to tell them apart.
    pub fn get_str(&self, path: &str) -> Result<Option<Cow<'_, str>>, PathError> {
        Ok(self.get(&Path::parse(path)?).into_text())
    }

    /// The encoded text at a path, escapes and delimiters untouched. With `[*]` as repetition,
    /// the whole field including repetition separators.
    pub fn get_raw(&self, path: &Path) -> Option<&str> {
        let seg = self.find_segment(path.segment_bytes(), path.segment_index())?;
        let field = self.field_text(seg, path.field())?;
        if path.repetition() == Index::All {
            return Some(field);
        }
        let e = self.element_in(
            field,
            self.is_atomic(seg, path.field()),
            path.repetition().first_or_nth(),
            path.component(),
            path.subcomponent(),
        )?;
        Some(e.text)
    }

    /// Number of repetitions of the field a path names (0 when absent or empty).
    pub fn count_repetitions(&self, path: &Path) -> usize {
        self.find_segment(path.segment_bytes(), path.segment_index())
            .map_or(0, |seg| self.repetitions_in(seg, path.field()))
    }

    /// Writes a value at a path, escaping it. Missing fields, repetitions, components and
    /// subcomponents are created; a path naming a field (no component) replaces that whole
    /// repetition. Setting `""` (two quotes) writes the HL7 null. The segment must exist.
    pub fn set(&mut self, path: &Path, value: &str) -> Result<(), SetError> {
        self.check_settable(path, value)?;
        let escaped = escape::escape(value, &self.delims, self.wire.charset());
        self.replace(path, &escaped)
    }

    /// [`Message::set`] with a path string.
    pub fn set_str(&mut self, path: &str, value: &str) -> Result<(), SetError> {
        self.set(&Path::parse(path)?, value)
    }

    /// Writes already-encoded text at a path (e.g. a whole composite `DOE^JANE`), without
    /// escaping. It may not hold line breaks, nor delimiters of the target's level or above.
    pub fn set_raw(&mut self, path: &Path, raw: &str) -> Result<(), SetError> {
        self.check_settable(path, raw)?;
        let d = self.delims;
        let mut forbidden = vec![
            (d.field, "a field separator"),
            (d.repetition, "a repetition separator"),
        ];
        if path.component().is_some() {
            forbidden.push((d.component, "a component separator"));
        }
        if path.subcomponent().is_some() {
            forbidden.push((d.subcomponent, "a subcomponent separator"));
        }
        for c in raw.bytes() {
            if c == b'\r' || c == b'\n' {
                return Err(SetError::BadRaw {
                    path: path.to_string(),
                    what: "a line break",
                });
            }
            if let Some((_, what)) = forbidden.iter().find(|(f, _)| *f == c) {
                return Err(SetError::BadRaw {
                    path: path.to_string(),
                    what,
                });
            }
        }
        self.replace(path, raw)
    }

    // ----- internals shared with header.rs / validate.rs / ack.rs -----

    /// The value of a field of the first segment with this name.
    pub(super) fn first_value(
        &self,
        name: &[u8; 3],
        field: usize,
        comp: Option<usize>,
    ) -> Value<'_> {
        match self.find_segment(name, Index::Nth(1)) {
            Some(seg) => self.value_in(seg, field, 1, comp, None),
            None => Value::Absent,
        }
    }

    /// The raw text of a whole field of the first segment with this name.
    pub(super) fn first_raw_field(&self, name: &[u8; 3], field: usize) -> Option<&str> {
        let seg = self.find_segment(name, Index::Nth(1))?;
        self.field_text(seg, field)
    }

    /// Name of the first segment.
    pub(super) fn first_segment_name(&self) -> Option<&[u8; 3]> {
        self.segs.first().map(|s| &s.name)
    }

    pub(super) fn wire(&self) -> Wire {
        self.wire
    }

    fn find_segment(&self, name: &[u8; 3], idx: Index) -> Option<&Seg> {
        let n = idx.first_or_nth();
        self.segs
            .iter()
            .filter(|s| &s.name == name)
            .nth(n.checked_sub(1)?)
    }

    fn piece(&self, seg: &Seg, k: usize) -> Option<&str> {
        if k >= seg.pieces as usize {
            return None;
        }
        let i = seg.first as usize + k;
        let a = *self.bounds.get(i)? as usize;
        let b = *self.bounds.get(i + 1)? as usize - 1;
        self.text.get(a..b)
    }

    fn is_atomic(&self, seg: &Seg, field: usize) -> bool {
        seg.header && (field == 1 || field == 2)
    }

    /// The encoded text of a field (all repetitions).
    fn field_text(&self, seg: &Seg, field: usize) -> Option<&str> {
        if field == 0 {
            return None;
        }
        if seg.header {
            if field == 1 {
                // The byte after the name is the field separator, unless the segment is bare.
                let s = seg.start as usize + 3;
                return (seg.end as usize > s)
                    .then(|| self.text.get(s..s + 1))
                    .flatten();
            }
            self.piece(seg, field - 1)
        } else {
            self.piece(seg, field)
        }
    }

    fn element_in<'a>(
        &self,
        field: &'a str,
        atomic: bool,
        rep: usize,
        comp: Option<usize>,
        sub: Option<usize>,
    ) -> Option<Element<'a>> {
        let d = &self.delims;
        if atomic {
            let first = |x: Option<usize>| x.is_none() || x == Some(1);
            return (rep == 1 && first(comp) && first(sub)).then_some(Element {
                text: field,
                composite: false,
                atomic: true,
            });
        }
        let r = nth_part(field, d.repetition, rep)?;
        let Some(c) = comp else {
            let composite = r.bytes().any(|b| b == d.component || b == d.subcomponent);
            return Some(Element {
                text: r,
                composite,
                atomic: false,
            });
        };
        let c = nth_part(r, d.component, c)?;
        let Some(s) = sub else {
            return Some(Element {
                text: c,
                composite: c.as_bytes().contains(&d.subcomponent),
                atomic: false,
            });
        };
        Some(Element {
            text: nth_part(c, d.subcomponent, s)?,
            composite: false,
            atomic: false,
        })
    }

    fn value_in(
        &self,
        seg: &Seg,
        field: usize,
        rep: usize,
        comp: Option<usize>,
        sub: Option<usize>,
    ) -> Value<'_> {
        let Some(f) = self.field_text(seg, field) else {
            return Value::Absent;
        };
        let Some(e) = self.element_in(f, self.is_atomic(seg, field), rep, comp, sub) else {
            return Value::Absent;
        };
        match e.text {
            "" => Value::Empty,
            "\"\"" => Value::Null,
            t if e.composite || e.atomic => Value::Text(Cow::Borrowed(t)),
            t => Value::Text(escape::decode(t, &self.delims, self.wire.charset())),
        }
    }

    fn repetitions_in(&self, seg: &Seg, field: usize) -> usize {
        match self.field_text(seg, field) {
            None | Some("") => 0,
            Some(_) if self.is_atomic(seg, field) => 1,
            Some(f) => f.split(char::from(self.delims.repetition)).count(),
        }
    }

    fn check_settable(&self, path: &Path, value: &str) -> Result<(), SetError> {
        if path.has_wildcard() {
            return Err(SetError::Wildcard {
                path: path.to_string(),
            });
        }
        if HEADERS.contains(&path.segment_bytes()) && path.field() <= 2 {
            return Err(SetError::ReadOnly {
                path: path.to_string(),
            });
        }
        if let Some(ch) = value
            .chars()
            .find(|&c| !charset::representable(c, self.wire, self.declared))
        {
            return Err(SetError::Unrepresentable {
                path: path.to_string(),
                ch,
                charset: self.declared,
            });
        }
        Ok(())
    }

    /// Puts encoded text at a path (checked by the caller) and re-indexes.
    fn replace(&mut self, path: &Path, encoded: &str) -> Result<(), SetError> {
        let Some(seg) = self
            .find_segment(path.segment_bytes(), path.segment_index())
            .copied()
        else {
            return Err(SetError::SegmentAbsent {
                path: path.to_string(),
            });
        };
        let d = self.delims;
        let piece = if seg.header {
            path.field() - 1
        } else {
            path.field()
        };
        let mut seps = vec![d.field, d.repetition];
        let mut idx = vec![piece + 1, path.repetition().first_or_nth()];
        if let Some(c) = path.component() {
            seps.push(d.component);
            idx.push(c);
            if let Some(s) = path.subcomponent() {
                seps.push(d.subcomponent);
                idx.push(s);
            }
        }
        let old_seg = &self.text[seg.start as usize..seg.end as usize];
        let new_seg = splice(old_seg, &seps, &idx, encoded);
        let mut text = String::with_capacity(self.text.len() + new_seg.len());
        text.push_str(&self.text[..seg.start as usize]);
        text.push_str(&new_seg);
        text.push_str(&self.text[seg.end as usize..]);
        match index(&text, self.lead, d.field) {
            Ok((segs, bounds)) => {
                self.text = text;
                self.segs = segs;
                self.bounds = bounds;
                Ok(())
            }
            // Unreachable: the segment name and separators are unchanged. Keep the message.
            Err(_) => Err(SetError::BadRaw {
                path: path.to_string(),
                what: "a structure the index rejects",
            }),
        }
    }
}

impl fmt::Debug for Message {
    /// A summary only: message text is patient data and must not reach logs by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("segments", &self.segs.len())
            .field("bytes", &self.text.len())
            .field("charset", &self.declared)
            .field("decoded_as", &self.wire.charset())
            .field("delimiters", &self.delims.encoding_characters())
            .finish()
    }
}

/// `bytes` without a leading UTF-8 byte order mark (`EF BB BF`), which some senders and most
/// Windows editors put before `MSH`.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The byte scan gives what `str::split` gives, non-ASCII text included.
        #[test]
        fn nth_part_is_split_nth(s in "[a-zé^&~ü]{0,12}", n in 0usize..6) {
            let want = n.checked_sub(1).and_then(|i| s.split('^').nth(i));
            prop_assert_eq!(nth_part(&s, b'^', n), want);
        }
    }

    const ADT: &[u8] = include_bytes!("../../../fixtures/hl7v2/adt_a01.hl7");
    const ORU: &[u8] = include_bytes!("../../../fixtures/hl7v2/oru_r01.hl7");
    const CUSTOM: &[u8] = include_bytes!("../../../fixtures/hl7v2/custom_delimiters.hl7");
    const ESCAPES: &[u8] = include_bytes!("../../../fixtures/hl7v2/escapes.hl7");
    const LATIN1: &[u8] = include_bytes!("../../../fixtures/hl7v2/latin1.hl7");
    const MIXED: &[u8] = include_bytes!("../../../fixtures/hl7v2/mixed_separators.hl7");
    const V27: &[u8] = include_bytes!("../../../fixtures/hl7v2/v27_truncation.hl7");
    const NO_MSH: &[u8] = include_bytes!("../../../fixtures/hl7v2/malformed_no_msh.hl7");

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }
    fn text(m: &Message, s: &str) -> String {
        match m.get(&p(s)) {
            Value::Text(t) => t.into_owned(),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn fixtures_parse_and_round_trip() {
        for f in [ADT, ORU, CUSTOM, ESCAPES, LATIN1, MIXED, V27] {
            let m = Message::parse(f).unwrap();
            assert_eq!(m.to_bytes(), f);
        }
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.segment_count(), 6);
        let names: Vec<&str> = m.segments().map(|s| s.name).collect();
        assert_eq!(names, ["MSH", "EVN", "PID", "PD1", "NK1", "PV1"]);
        assert_eq!(
            m.segment(1).unwrap().raw,
            "EVN|A01|20240315083000|||JSMITH^Smith^Jane"
        );
        let m = Message::parse(ORU).unwrap();
        assert_eq!(m.count_segments("OBX"), 5);
    }

    #[test]
    fn msh_numbering() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(text(&m, "MSH-1"), "|");
        assert_eq!(text(&m, "MSH-2"), "^~\\&");
        assert_eq!(text(&m, "MSH-3"), "ADMITSYS");
        assert_eq!(text(&m, "MSH-9"), "ADT^A01^ADT_A01");
        assert_eq!(text(&m, "MSH-9.2"), "A01");
        assert_eq!(text(&m, "MSH-10"), "ADT20240315083012001");
        assert_eq!(text(&m, "MSH-12"), "2.5.1");
        assert_eq!(m.get(&p("MSH-15")), Value::Empty);
        assert_eq!(text(&m, "MSH-18"), "UNICODE UTF-8");
        assert_eq!(m.get(&p("MSH-19")), Value::Absent);
        // MSH-1/2 are atomic.
        assert_eq!(text(&m, "MSH-2.1"), "^~\\&");
        assert_eq!(m.get(&p("MSH-2.2")), Value::Absent);
        assert_eq!(m.get(&p("MSH-1[2]")), Value::Absent);
    }

    #[test]
    fn truncation_character_does_not_shift_fields() {
        let m = Message::parse(V27).unwrap();
        assert_eq!(m.delimiters().truncation, Some(b'#'));
        assert_eq!(text(&m, "MSH-2"), "^~\\&#");
        assert_eq!(text(&m, "MSH-3"), "TRUNCSYS");
        assert_eq!(text(&m, "MSH-9.1"), "ADT");
        assert_eq!(text(&m, "MSH-10"), "TR0001");
        assert_eq!(text(&m, "MSH-12"), "2.7");
    }

    #[test]
    fn custom_delimiters() {
        let m = Message::parse(CUSTOM).unwrap();
        assert_eq!(text(&m, "MSH-1"), "#");
        assert_eq!(text(&m, "MSH-2"), "$*@%");
        assert_eq!(text(&m, "MSH-9.2"), "A04");
        assert_eq!(text(&m, "MSH-10"), "CUST0001");
        assert_eq!(text(&m, "PID-3.1"), "C100");
        assert_eq!(text(&m, "PID-3[2].1"), "C200");
        assert_eq!(text(&m, "PID-3[2].5"), "PI");
        assert_eq!(text(&m, "PID-5.2"), "RICHARD");
        assert_eq!(text(&m, "NTE-3"), "Cost 10#20 and 5$6 and A%B");
    }

    #[test]
    fn separators_mixed_blank_and_trailing() {
        let m = Message::parse(MIXED).unwrap();
        assert_eq!(m.segment_count(), 4);
        assert_eq!(text(&m, "PID-5.2"), "MAX");
        assert_eq!(text(&m, "ZPI-2"), "custom");
        assert_eq!(text(&m, "MSH-12"), "2.5.1");
        for input in [
            "MSH|^~\\&|A\rPID|1",
            "MSH|^~\\&|A\nPID|1\n",
            "MSH|^~\\&|A\r\nPID|1\r\n",
            "\r\n  MSH|^~\\&|A\r\r\n\r\nPID|1\r\n \r\n\r\n",
            "MSH|^~\\&|A\n\rPID|1\r\r\r",
        ] {
            let m = Message::parse(input.as_bytes()).unwrap();
            assert_eq!(m.segment_count(), 2, "{input:?}");
            assert_eq!(text(&m, "MSH-3"), "A");
            assert_eq!(text(&m, "PID-1"), "1");
            assert_eq!(m.to_bytes(), input.as_bytes());
        }
    }

    #[test]
    fn absent_empty_null() {
        let m = Message::parse(b"MSH|^~\\&|A\rPID|1||\"\"|X^^\"\"~~Y|a&&b\r").unwrap();
        assert_eq!(m.get(&p("PID-2")), Value::Empty);
        assert_eq!(m.get(&p("PID-3")), Value::Null);
        assert_eq!(m.get(&p("PID-3.1")), Value::Null);
        assert_eq!(m.get(&p("PID-3.2")), Value::Absent);
        assert_eq!(m.get(&p("PID-4.1")), Value::Text("X".into()));
        assert_eq!(m.get(&p("PID-4.2")), Value::Empty);
        assert_eq!(m.get(&p("PID-4.3")), Value::Null);
        assert_eq!(m.get(&p("PID-4.4")), Value::Absent);
        assert_eq!(m.get(&p("PID-4[2]")), Value::Empty);
        assert_eq!(m.get(&p("PID-4[3]")), Value::Text("Y".into()));
        assert_eq!(m.get(&p("PID-4[4]")), Value::Absent);
        assert_eq!(m.get(&p("PID-5.1.2")), Value::Empty);
        assert_eq!(m.get(&p("PID-5.1.4")), Value::Absent);
        assert_eq!(m.get(&p("PID-6")), Value::Absent);
        assert_eq!(m.get(&p("PV1-1")), Value::Absent);
        assert_eq!(m.get(&p("PID[2]-1")), Value::Absent);
        assert_eq!(m.get_str("PID-2").unwrap(), None);
        assert_eq!(m.get_str("PID-3").unwrap(), None);
        assert_eq!(m.get_str("PID-6").unwrap(), None);
        assert_eq!(m.get_str("PID-4[3]").unwrap().as_deref(), Some("Y"));
        assert!(m.get_str("PID-x").is_err());
        assert_eq!(m.count_repetitions(&p("PID-4")), 3);
        assert_eq!(m.count_repetitions(&p("PID-2")), 0);
        assert_eq!(m.count_repetitions(&p("PID-9")), 0);
    }

    #[test]
    fn repetitions_components_segments() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(text(&m, "PID-3"), "MRN100234^^^GENHOSP^MR");
        assert_eq!(text(&m, "PID-3.1"), "MRN100234");
        assert_eq!(text(&m, "PID-3[2].1"), "999887777");
        assert_eq!(text(&m, "PID-3[2].4"), "USSSA");
        assert_eq!(text(&m, "PID-3[2].4.1"), "USSSA");
        assert_eq!(text(&m, "PID-5.1"), "DOE");
        assert_eq!(
            m.get_raw(&p("PID-3[*]")),
            Some("MRN100234^^^GENHOSP^MR~999887777^^^USSSA^SS")
        );
        assert_eq!(m.get_raw(&p("PID-3[2].5")), Some("SS"));
        let all: Vec<String> = m
            .get_all(&p("PID-3[*].1"))
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(all, ["MRN100234", "999887777"]);
        let m = Message::parse(ORU).unwrap();
        assert_eq!(text(&m, "OBX[3]-5"), "141");
        assert_eq!(text(&m, "OBX[4]-3.2"), "Potassium");
        assert_eq!(text(&m, "OBX-1"), "1");
        assert_eq!(m.get(&p("OBX[6]-5")), Value::Absent);
        let values: Vec<String> = m
            .get_all(&p("OBX[*]-5"))
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(values, ["98", "1.1", "141", "5.4", "9.6"]);
        let flags: Vec<Value> = m.get_all(&p("OBX[*]-8"));
        assert_eq!(flags.len(), 5);
        assert_eq!(m.get_all(&p("OBX[*]-30")), vec![Value::Absent; 5]);
        assert_eq!(m.get_all(&p("ZZZ[*]-1")), vec![]);
        assert_eq!(m.get_all(&p("OBX[2]-5")), vec![Value::Text("1.1".into())]);
        // Subcomponents.
        let m = Message::parse(b"MSH|^~\\&\rPID|1||ID^^^AUTH&1.2.3&ISO\r").unwrap();
        assert_eq!(text(&m, "PID-3.4"), "AUTH&1.2.3&ISO");
        assert_eq!(text(&m, "PID-3.4.2"), "1.2.3");
        assert_eq!(text(&m, "PID-3.4.3"), "ISO");
    }

    #[test]
    fn escapes_decoded_on_read() {
        let m = Message::parse(ESCAPES).unwrap();
        assert_eq!(text(&m, "PID-5.1"), "O&BRIEN");
        assert_eq!(text(&m, "PID-5.2"), "MARY^ANN");
        assert_eq!(text(&m, "OBX-5"), "Field|Comp^Sub&Rep~Esc\\HexAend");
        assert_eq!(
            text(&m, "OBX[2]-5"),
            "Line one\\.br\\Line two \\H\\bold\\N\\ \\.sp2\\ \\Zvendor\\"
        );
        assert_eq!(m.get(&p("NTE-3")), Value::Null);
        // Composite reads stay encoded.
        assert_eq!(text(&m, "PID-5"), "O\\T\\BRIEN^MARY\\S\\ANN");
        assert_eq!(m.to_bytes(), ESCAPES);
    }

    #[test]
    fn latin1_decode_and_round_trip() {
        let m = Message::parse(LATIN1).unwrap();
        assert_eq!(m.charset(), Charset::Latin1);
        assert_eq!(m.decoded_as(), Charset::Latin1);
        assert!(!m.charset_fallback());
        assert_eq!(text(&m, "PID-5.1"), "MÜLLER");
        assert_eq!(text(&m, "PID-11.1"), "Königstraße 5");
        assert_eq!(m.to_bytes(), LATIN1);
        // Undeclared, not UTF-8: ISO-8859-1 fallback, still round-trips.
        let raw = b"MSH|^~\\&|A\rPID|1||||M\xfcller\r";
        let m = Message::parse(raw).unwrap();
        assert_eq!(
            (m.charset(), m.decoded_as(), m.charset_fallback()),
            (Charset::Utf8, Charset::Latin1, true)
        );
        assert_eq!(text(&m, "PID-5"), "Müller");
        assert_eq!(m.to_bytes(), raw);
        let m = Message::parse("MSH|^~\\&|A\rPID|1||||Müller\r".as_bytes()).unwrap();
        assert!(!m.charset_fallback());
        assert_eq!(text(&m, "PID-5"), "Müller");
        let koi = format!("MSH|^~\\&{}KOI8\r", "|".repeat(16));
        let e = Message::parse(koi.as_bytes()).unwrap_err();
        assert_eq!(e, ParseError::UnknownCharset("KOI8".into()));
    }

    #[test]
    fn a_byte_order_mark_before_msh_is_not_part_of_the_message() {
        let m =
            Message::parse(b"\xEF\xBB\xBFMSH|^~\\&|A|B|C|D|20260101||ADT^A01|BOM1|P|2.5\rPID|1\r")
                .unwrap();
        assert_eq!(m.control_id().as_deref(), Some("BOM1"));
        assert!(m.as_str().starts_with("MSH|"));
        assert_eq!(m.check_required(), Ok(()));
        let parts = crate::hl7::split_batch(
            b"\xEF\xBB\xBFMSH|^~\\&|||||||ADT^A01|1\rMSH|^~\\&|||||||ADT^A01|2\r",
        )
        .unwrap();
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Message::parse(b"").unwrap_err(), ParseError::Empty);
        assert_eq!(Message::parse(b"\r\n \r").unwrap_err(), ParseError::Empty);
        assert_eq!(
            Message::parse(NO_MSH).unwrap_err(),
            ParseError::NoMsh {
                found: "PID|1||X10".into()
            }
        );
        assert!(matches!(
            Message::parse(b"MSH|^~\\|x").unwrap_err(),
            ParseError::BadEncodingCharacters { .. }
        ));
        assert_eq!(
            Message::parse(b"MSH|^~\\&|A\rPID|1\rpv1|x\r").unwrap_err(),
            ParseError::BadSegmentName {
                segment_index: 3,
                name: "pv1".into()
            }
        );
        assert_eq!(
            Message::parse(b"MSH|^~\\&|A\rPIDX|1\r").unwrap_err(),
            ParseError::BadSegmentName {
                segment_index: 2,
                name: "PIDX".into()
            }
        );
        assert!(matches!(
            Message::parse(b"MSH|^~\\&\r P|1").unwrap_err(),
            ParseError::BadSegmentName {
                segment_index: 2,
                ..
            }
        ));
        // A bare segment name is a valid (empty) segment.
        assert_eq!(
            Message::parse(b"MSH|^~\\&\rZZ1").unwrap().segment_count(),
            2
        );
    }

    #[test]
    fn batch_document_parses_as_a_whole() {
        let m = Message::parse(include_bytes!("../../../fixtures/hl7v2/batch.hl7")).unwrap();
        assert_eq!(text(&m, "FHS-1"), "|");
        assert_eq!(text(&m, "FHS-9"), "daily.hl7");
        assert_eq!(text(&m, "BHS-11"), "BATCH0001");
        assert_eq!(text(&m, "MSH[2]-10"), "B0002");
        assert_eq!(text(&m, "BTS-1"), "3");
    }

    #[test]
    fn setters() {
        let mut m = Message::parse(ADT).unwrap();
        m.set(&p("PID-5.1"), "O'NEIL|SMITH^JR").unwrap();
        assert_eq!(text(&m, "PID-5.1"), "O'NEIL|SMITH^JR");
        assert_eq!(m.get_raw(&p("PID-5.1")), Some("O'NEIL\\F\\SMITH\\S\\JR"));
        assert_eq!(text(&m, "PID-5.2"), "JOHN");
        // Create repetition, component, subcomponent, field.
        m.set(&p("PID-3[3].4.2"), "2.16.840").unwrap();
        assert_eq!(
            m.get_raw(&p("PID-3[*]")).unwrap(),
            "MRN100234^^^GENHOSP^MR~999887777^^^USSSA^SS~^^^&2.16.840"
        );
        m.set_str("EVN-9", "x").unwrap();
        assert_eq!(
            m.segment(1).unwrap().raw,
            "EVN|A01|20240315083000|||JSMITH^Smith^Jane||||x"
        );
        m.set_str("MSH-10", "NEWID").unwrap();
        assert_eq!(text(&m, "MSH-10"), "NEWID");
        m.set_str("PID-8", "\"\"").unwrap();
        assert_eq!(m.get(&p("PID-8")), Value::Null);
        m.set_str("PID-7", "").unwrap();
        assert_eq!(m.get(&p("PID-7")), Value::Empty);
        m.set_str("PV1-44", "line1\r\nline2").unwrap();
        assert_eq!(text(&m, "PV1-44"), "line1\r\nline2");
        // A field-level set replaces the whole repetition.
        m.set_str("PID-5", "ROE^RICHARD").unwrap();
        assert_eq!(m.get_raw(&p("PID-5")), Some("ROE\\S\\RICHARD"));
        m.set_raw(&p("PID-5"), "ROE^RICHARD").unwrap();
        assert_eq!(text(&m, "PID-5.2"), "RICHARD");
        let bytes = m.to_bytes();
        let again = Message::parse(&bytes).unwrap();
        assert_eq!(again.to_bytes(), bytes);
        assert_eq!(again.segment_count(), 6);
        assert!(String::from_utf8(bytes).unwrap().contains("|NEWID|"));
        // Other segments untouched.
        assert_eq!(
            m.segment(3).unwrap().raw,
            "PD1|||GENHOSP CLINIC^^12345|1234567890^WELBY^MARCUS^^^DR^^^NPI"
        );
    }

    #[test]
    fn setter_errors() {
        let mut m = Message::parse(ADT).unwrap();
        let before = m.to_bytes();
        assert!(matches!(
            m.set_str("OBX-5", "x"),
            Err(SetError::SegmentAbsent { .. })
        ));
        assert!(matches!(
            m.set_str("PID[2]-5", "x"),
            Err(SetError::SegmentAbsent { .. })
        ));
        assert!(matches!(
            m.set_str("PID-3[*]", "x"),
            Err(SetError::Wildcard { .. })
        ));
        assert!(matches!(
            m.set_str("MSH-1", "x"),
            Err(SetError::ReadOnly { .. })
        ));
        assert!(matches!(
            m.set_str("MSH-2", "x"),
            Err(SetError::ReadOnly { .. })
        ));
        assert!(matches!(m.set_str("PID-", "x"), Err(SetError::Path(_))));
        assert!(matches!(
            m.set_raw(&p("PID-5"), "a|b"),
            Err(SetError::BadRaw { .. })
        ));
        assert!(matches!(
            m.set_raw(&p("PID-5"), "a~b"),
            Err(SetError::BadRaw { .. })
        ));
        assert!(matches!(
            m.set_raw(&p("PID-5.1"), "a^b"),
            Err(SetError::BadRaw { .. })
        ));
        assert!(matches!(
            m.set_raw(&p("PID-5.1.1"), "a&b"),
            Err(SetError::BadRaw { .. })
        ));
        assert!(matches!(
            m.set_raw(&p("PID-5"), "a\rb"),
            Err(SetError::BadRaw { .. })
        ));
        assert_eq!(m.to_bytes(), before);
        let mut l = Message::parse(LATIN1).unwrap();
        assert!(matches!(
            l.set_str("PID-5.1", "€"),
            Err(SetError::Unrepresentable { ch: '€', .. })
        ));
        l.set_str("PID-5.1", "GRÜN").unwrap();
        let out = l.to_bytes();
        assert!(out.windows(4).any(|w| w == b"GR\xdcN"));
        let ascii = format!("MSH|^~\\&{}ASCII\rPID|1\r", "|".repeat(16));
        let mut a = Message::parse(ascii.as_bytes()).unwrap();
        assert_eq!(a.charset(), Charset::Ascii);
        assert!(matches!(
            a.set_str("PID-5", "é"),
            Err(SetError::Unrepresentable { .. })
        ));
    }

    #[test]
    fn set_with_custom_delimiters_and_truncation() {
        let mut m = Message::parse(CUSTOM).unwrap();
        m.set_str("PID-5.3", "A#B$C").unwrap();
        assert_eq!(m.get_raw(&p("PID-5.3")), Some("A@F@B@S@C"));
        assert_eq!(text(&m, "PID-5.3"), "A#B$C");
        let mut m = Message::parse(V27).unwrap();
        m.set_str("PID-5.2", "T#M").unwrap();
        assert_eq!(m.get_raw(&p("PID-5.2")), Some("T\\P\\M"));
        assert_eq!(text(&m, "PID-5.2"), "T#M");
    }

    #[test]
    fn debug_hides_content() {
        let m = Message::parse(ADT).unwrap();
        let d = format!("{m:?}");
        assert!(!d.contains("DOE") && d.contains("segments: 6"));
    }

    /// A generated valid message: random delimiters, separators and field content.
    fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
        let pool: Vec<u8> = br##"|^~\&#!$%*@+/:;?_-"##.to_vec();
        (
            Just(pool).prop_shuffle(),
            any::<bool>(),
            prop::sample::select(vec!["\r", "\n", "\r\n"]),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["PID", "PV1", "OBX", "ZX1", "NTE", "EVN"]),
                    prop::collection::vec(
                        prop::collection::vec(
                            prop::collection::vec("[a-zA-Z0-9 .,éü€\"]{0,5}", 1..3),
                            1..3,
                        ),
                        0..6,
                    ),
                ),
                0..6,
            ),
            any::<bool>(),
        )
            .prop_map(|(p, trunc, sep, segs, trailing)| {
                let d = Delimiters {
                    field: p[0],
                    component: p[1],
                    repetition: p[2],
                    escape: p[3],
                    subcomponent: p[4],
                    truncation: trunc.then_some(p[5]),
                };
                let ch = |b: u8| char::from(b).to_string();
                let mut out = format!("MSH{}{}", ch(d.field), d.encoding_characters());
                out.push_str(&format!(
                    "{0}SND{0}FAC{0}RCV{0}RFAC{0}20240101{0}{0}ADT{1}A01{0}CID1{0}P{0}2.5.1",
                    ch(d.field),
                    ch(d.component)
                ));
                for (name, fields) in segs {
                    out.push_str(sep);
                    out.push_str(name);
                    for reps in fields {
                        out.push_str(&ch(d.field));
                        let reps: Vec<String> = reps
                            .iter()
                            .map(|comps| {
                                let comps: Vec<String> = comps
                                    .iter()
                                    .map(|c| escape::escape(c, &d, Charset::Utf8).into_owned())
                                    .collect();
                                comps.join(&ch(d.component))
                            })
                            .collect();
                        out.push_str(&reps.join(&ch(d.repetition)));
                    }
                }
                if trailing {
                    out.push_str(sep);
                }
                out.into_bytes()
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = Message::parse(&bytes) {
                prop_assert_eq!(m.to_bytes(), bytes);
                for s in ["MSH-9.2", "PID-3[2].4.1", "OBX[3]-5", "MSH-1", "MSH-2.2", "PID-3[*]"] {
                    let _ = m.get(&p(s));
                    let _ = m.get_all(&p(s));
                    let _ = m.get_raw(&p(s));
                }
            }
        }

        #[test]
        fn arbitrary_prefixed_msh_never_panics(tail in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = b"MSH|^~\\&|".to_vec();
            bytes.extend(tail);
            if let Ok(mut m) = Message::parse(&bytes) {
                prop_assert_eq!(m.to_bytes(), bytes);
                let _ = m.get(&p("PID-3[2].4.1"));
                let _ = m.set(&p("MSH-3.2"), "x|y");
            }
        }

        #[test]
        fn generated_messages_round_trip(bytes in message_strategy()) {
            let m = Message::parse(&bytes).unwrap();
            prop_assert_eq!(m.to_bytes(), bytes.clone());
            prop_assert_eq!(m.get_str("MSH-10").unwrap().map(Cow::into_owned), Some("CID1".to_owned()));
            prop_assert_eq!(m.get_str("MSH-9.2").unwrap().map(Cow::into_owned), Some("A01".to_owned()));
        }

        #[test]
        fn set_then_get(bytes in message_strategy(), v in "(?s).{0,20}", f in 1usize..8, r in 1usize..3, c in 1usize..4) {
            let mut m = Message::parse(&bytes).unwrap();
            let path = Path::parse(&format!("MSH-{}[{r}].{c}", f + 2)).unwrap();
            m.set(&path, &v).unwrap();
            let expect = match v.as_str() { "" => Value::Empty, "\"\"" => Value::Null, t => Value::Text(t.into()) };
            prop_assert_eq!(m.get(&path), expect.clone());
            let again = Message::parse(&m.to_bytes()).unwrap();
            prop_assert_eq!(again.get(&path), expect);
            prop_assert_eq!(again.segment_count(), m.segment_count());
        }
    }
}
