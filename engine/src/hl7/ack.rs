//! Acknowledgements: HL7 table 0357, building ACKs (also for input that did not parse), reading
//! ACKs.
//!
//! The engine must answer every MLLP message, including ones it cannot parse, and the answer must
//! be something the sender's interface engine can read: the sender's own delimiters, its
//! applications swapped into the receiver slots, its control id in MSA-2, and an ERR segment in
//! the v2.5+ layout saying which field and why. Original mode answers `AA/AE/AR`, enhanced mode
//! (MSH-15 or MSH-16 valued) answers `CA/CE/CR` for an accept ACK and `AA/AE/AR` for an
//! application ACK ([`build_ack_as`]). The engine's own text (ERR-8) is written in what the
//! message's MSH-18 declares, ASCII when it declares nothing.
//!
//! Built ACKs end every segment with `\r` (the HL7 segment terminator, also after the last
//! segment) and carry no MLLP frame bytes.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use super::charset::{self, Charset, Wire};
use super::delimiters::Delimiters;
use super::error::ParseError;
use super::escape;
use super::message::Message;
use super::path::{Index, Path};
use super::value::Value;

/// The outcome an ACK reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Accepted (`AA` / `CA`).
    Accept,
    /// Error, the sender may retry or fix (`AE` / `CE`).
    Error,
    /// Rejected, do not resend as is (`AR` / `CR`).
    Reject,
}

/// Original or enhanced acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckMode {
    /// MSH-15 and MSH-16 empty: application ACKs `AA/AE/AR`.
    Original,
    /// MSH-15 or MSH-16 valued: commit ACKs `CA/CE/CR`.
    Enhanced,
}

impl AckCode {
    /// The MSA-1 code in a mode: `AA/AE/AR` or `CA/CE/CR`.
    pub fn as_str(self, mode: AckMode) -> &'static str {
        match (mode, self) {
            (AckMode::Original, AckCode::Accept) => "AA",
            (AckMode::Original, AckCode::Error) => "AE",
            (AckMode::Original, AckCode::Reject) => "AR",
            (AckMode::Enhanced, AckCode::Accept) => "CA",
            (AckMode::Enhanced, AckCode::Error) => "CE",
            (AckMode::Enhanced, AckCode::Reject) => "CR",
        }
    }
}

/// MSH-15/MSH-16 acknowledgment types (HL7 table 0155).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckType {
    /// `AL`: always.
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: only on error or reject.
    Error,
    /// `SU`: only on success.
    Success,
}

impl AckType {
    /// Reads `AL`, `NE`, `ER` or `SU` (surrounding spaces ignored); `None` for anything else.
    pub fn from_code(code: &str) -> Option<AckType> {
        match code.trim() {
            "AL" => Some(AckType::Always),
            "NE" => Some(AckType::Never),
            "ER" => Some(AckType::Error),
            "SU" => Some(AckType::Success),
            _ => None,
        }
    }

    /// The table 0155 code.
    pub fn code(self) -> &'static str {
        match self {
            AckType::Always => "AL",
            AckType::Never => "NE",
            AckType::Error => "ER",
            AckType::Success => "SU",
        }
    }

    /// Whether an ACK with this outcome is wanted under this type.
    pub fn wants(self, code: AckCode) -> bool {
        match self {
            AckType::Always => true,
            AckType::Never => false,
            AckType::Error => code != AckCode::Accept,
            AckType::Success => code == AckCode::Accept,
        }
    }
}

/// HL7 table 0357, message error condition codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: Message accepted.
    MessageAccepted,
    /// 100: Segment sequence error.
    SegmentSequenceError,
    /// 101: Required field missing.
    RequiredFieldMissing,
    /// 102: Data type error.
    DataTypeError,
    /// 103: Table value not found.
    TableValueNotFound,
    /// 200: Unsupported message type.
    UnsupportedMessageType,
    /// 201: Unsupported event code.
    UnsupportedEventCode,
    /// 202: Unsupported processing id.
    UnsupportedProcessingId,
    /// 203: Unsupported version id.
    UnsupportedVersionId,
    /// 204: Unknown key identifier.
    UnknownKeyIdentifier,
    /// 205: Duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: Application record locked.
    ApplicationRecordLocked,
    /// 207: Application internal error.
    ApplicationInternalError,
}

impl ErrorCode {
    /// Every code, in table order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MessageAccepted,
        ErrorCode::SegmentSequenceError,
        ErrorCode::RequiredFieldMissing,
        ErrorCode::DataTypeError,
        ErrorCode::TableValueNotFound,
        ErrorCode::UnsupportedMessageType,
        ErrorCode::UnsupportedEventCode,
        ErrorCode::UnsupportedProcessingId,
        ErrorCode::UnsupportedVersionId,
        ErrorCode::UnknownKeyIdentifier,
        ErrorCode::DuplicateKeyIdentifier,
        ErrorCode::ApplicationRecordLocked,
        ErrorCode::ApplicationInternalError,
    ];

    /// The table number, e.g. 101.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::MessageAccepted => 0,
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table text, e.g. `Required field missing`.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// The code with this number, if it is in the table.
    pub fn from_code(code: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl fmt::Display for ErrorCode {
    /// `101 Required field missing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.text())
    }
}

/// ERR-4 severity (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Severity {
    /// `E`: error.
    #[default]
    Error,
    /// `W`: warning.
    Warning,
    /// `I`: information.
    Information,
}

impl Severity {
    /// `E`, `W` or `I`.
    pub fn code(self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Information => "I",
        }
    }
}

/// Where an error is (ERR-2, data type ERL): segment id, segment sequence (which occurrence,
/// 1-based), field, repetition, component, subcomponent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrLocation {
    /// Segment id, e.g. `PID`.
    pub segment: String,
    /// Which occurrence of the segment, 1-based.
    pub sequence: u32,
    /// Field position.
    pub field: Option<u32>,
    /// Field repetition.
    pub repetition: Option<u32>,
    /// Component number.
    pub component: Option<u32>,
    /// Subcomponent number.
    pub subcomponent: Option<u32>,
}

impl ErrLocation {
    /// A whole segment, e.g. `MSH^1`.
    pub fn segment(segment: &str, sequence: u32) -> ErrLocation {
        ErrLocation {
            segment: segment.to_owned(),
            sequence,
            field: None,
            repetition: None,
            component: None,
            subcomponent: None,
        }
    }

    /// A field, e.g. `MSH^1^10`.
    pub fn field(segment: &str, sequence: u32, field: u32) -> ErrLocation {
        ErrLocation {
            field: Some(field),
            ..ErrLocation::segment(segment, sequence)
        }
    }

    /// The location a path names (`PID-3[2].4` gives `PID^1^3^2^4`; `[*]` reads as 1).
    pub fn from_path(p: &Path) -> ErrLocation {
        let n = |i: Index| u32::try_from(i.first_or_nth()).unwrap_or(u32::MAX);
        let c = |x: Option<usize>| x.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        let rep = n(p.repetition());
        ErrLocation {
            segment: p.segment().to_owned(),
            sequence: n(p.segment_index()),
            field: c(Some(p.field())),
            repetition: (p.component().is_some() || rep != 1).then_some(rep),
            component: c(p.component()),
            subcomponent: c(p.subcomponent()),
        }
    }

    /// The ERL text with this component separator; trailing empty parts are left out.
    pub fn encode(&self, component: char) -> String {
        let parts = [
            Some(self.sequence),
            self.field,
            self.repetition,
            self.component,
            self.subcomponent,
        ];
        let last = parts.iter().rposition(Option::is_some).unwrap_or(0);
        let mut s = self.segment.clone();
        for p in &parts[..=last] {
            s.push(component);
            if let Some(v) = p {
                s.push_str(&v.to_string());
            }
        }
        s
    }
}

impl fmt::Display for ErrLocation {
    /// The ERL text with `^`, e.g. `PID^1^3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode('^'))
    }
}

/// An error to report in an ACK's ERR segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HL7 error {code}: {text}")]
pub struct AckError {
    /// ERR-3, table 0357.
    pub code: ErrorCode,
    /// ERR-2.
    pub location: Option<ErrLocation>,
    /// ERR-8, the readable explanation.
    pub text: String,
    /// ERR-4.
    pub severity: Severity,
}

impl AckError {
    /// An error (severity E) without location.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> AckError {
        AckError {
            code,
            location: None,
            text: text.into(),
            severity: Severity::Error,
        }
    }

    /// With a location.
    pub fn at(self, location: ErrLocation) -> AckError {
        AckError {
            location: Some(location),
            ..self
        }
    }

    /// With a location, if any.
    pub fn at_opt(self, location: Option<ErrLocation>) -> AckError {
        AckError { location, ..self }
    }

    /// With another severity.
    pub fn with_severity(self, severity: Severity) -> AckError {
        AckError { severity, ..self }
    }
}

/// What an ACK echoes from the message it answers, as encoded text in that message's
/// delimiters.
struct Echo<'a> {
    d: Delimiters,
    encoding_characters: Cow<'a, str>,
    wire: Wire,
    mode: AckMode,
    /// MSH-3..=6 raw.
    apps: [&'a str; 4],
    trigger: &'a str,
    control_id: &'a str,
    processing_id: &'a str,
    version: &'a str,
    charset: &'a str,
    /// The charset MSH-18 declares (its first repetition), `None` when it declares none: what
    /// the receiver reads the engine's own text in (ASCII when none).
    declared: Option<Charset>,
}

impl Echo<'_> {
    /// Whether the receiver can read this character in the ACK.
    fn carries(&self, c: char) -> bool {
        match self.declared {
            Some(Charset::Utf8) => true,
            Some(Charset::Latin1) => u32::from(c) <= 0xFF,
            Some(Charset::Ascii) | None => c.is_ascii(),
        }
    }
}

/// The charset a raw MSH-18 value declares; `None` when it is empty or not one this codec
/// knows.
fn declared_charset(raw: &str, repetition: u8) -> Option<Charset> {
    let first = part(raw, repetition, 1);
    if first.trim().is_empty() {
        return None;
    }
    Charset::from_msh18(first).ok()
}

fn write_ack(
    e: &Echo<'_>,
    code: AckCode,
    error: Option<&AckError>,
    ack_control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let d = &e.d;
    let f = char::from(d.field);
    let c = char::from(d.component);
    let esc = |s: &str| escape::escape(s, d, e.wire.charset()).into_owned();
    let or = |s: &str, default: &'static str| {
        if s.is_empty() {
            default.to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut out = String::with_capacity(256);
    out.push_str("MSH");
    out.push(f);
    out.push_str(&e.encoding_characters);
    // Sender and receiver swapped: MSH-3/4 <- 5/6, MSH-5/6 <- 3/4.
    for app in [e.apps[2], e.apps[3], e.apps[0], e.apps[1]] {
        out.push(f);
        out.push_str(app);
    }
    out.push(f);
    out.push_str(&esc(timestamp));
    out.push(f);
    out.push(f);
    out.push_str("ACK");
    if !e.trigger.is_empty() {
        out.push(c);
        out.push_str(e.trigger);
        // MSH-9.3 (message structure) exists from v2.3.1 on; older receivers do not expect it.
        if !before_2_3_1(e.version) {
            out.push(c);
            out.push_str("ACK");
        }
    }
    out.push(f);
    out.push_str(&esc(ack_control_id));
    out.push(f);
    out.push_str(&or(e.processing_id, "P"));
    out.push(f);
    out.push_str(&or(e.version, "2.5.1"));
    if !e.charset.is_empty() {
        for _ in 13..=18 {
            out.push(f);
        }
        out.push_str(e.charset);
    }
    out.push('\r');
    out.push_str("MSA");
    out.push(f);
    out.push_str(code.as_str(e.mode));
    out.push(f);
    out.push_str(e.control_id);
    out.push('\r');
    if let Some(err) = error {
        // ERR-1 (deprecated) empty, ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text.
        out.push_str("ERR");
        out.push(f);
        out.push(f);
        if let Some(loc) = &err.location {
            let loc = ErrLocation {
                segment: esc(&loc.segment),
                ..loc.clone()
            };
            out.push_str(&loc.encode(c));
        }
        out.push(f);
        out.push_str(&format!(
            "{}{c}{}{c}HL70357",
            err.code.code(),
            esc(err.code.text())
        ));
        out.push(f);
        out.push_str(err.severity.code());
        for _ in 5..=8 {
            out.push(f);
        }
        // The engine's own words (and what they quote) in what the receiver can read: ASCII
        // unless MSH-18 declared more.
        out.push_str(&esc(&charset::transliterate(&err.text, |c| e.carries(c))));
        out.push('\r');
    }
    charset::encode(&out, e.wire)
}

/// The `n`-th (1-based) part of `s` split by `sep`, or `""`.
fn part(s: &str, sep: u8, n: usize) -> &str {
    super::message::nth_part(s, sep, n).unwrap_or("")
}

/// Whether an MSH-12 version is older than 2.3.1 (2.1, 2.2, 2.3); an empty or unreadable one
/// is not (the ACK then says 2.5.1).
fn before_2_3_1(version: &str) -> bool {
    let v = version.split(['^', '&']).next().unwrap_or("").trim();
    matches!(v, "2.1" | "2.2" | "2.3" | "2.0")
}

/// Whether a raw MSH-15/16 value puts the message in enhanced mode.
fn valued(raw: &str) -> bool {
    !raw.is_empty() && raw != "\"\""
}

/// Builds the ACK for a parsed message (see the module doc for the layout), in the message's
/// own mode: the accept ACK. `timestamp` goes to MSH-7 as given (`YYYYMMDDHHMMSS`);
/// `ack_control_id` to MSH-10. Both are escaped.
pub fn build_ack(
    original: &Message,
    code: AckCode,
    error: Option<&AckError>,
    ack_control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    build_ack_as(
        original,
        code,
        original.ack_mode(),
        error,
        ack_control_id,
        timestamp,
    )
}

/// [`build_ack`] with MSA-1 in `mode`: an application ACK (the processing outcome) answers
/// `AA/AE/AR` whatever the message's mode, so it is built with [`AckMode::Original`].
pub fn build_ack_as(
    original: &Message,
    code: AckCode,
    mode: AckMode,
    error: Option<&AckError>,
    ack_control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let raw = |n: usize| original.first_raw_field(b"MSH", n).unwrap_or("");
    let d = *original.delimiters();
    let echo = Echo {
        d,
        encoding_characters: match original.first_raw_field(b"MSH", 2) {
            Some(e) => Cow::Borrowed(e),
            None => Cow::Owned(d.encoding_characters()),
        },
        wire: original.wire(),
        mode,
        apps: [raw(3), raw(4), raw(5), raw(6)],
        trigger: part(part(raw(9), d.repetition, 1), d.component, 2),
        control_id: raw(10),
        processing_id: raw(11),
        version: raw(12),
        charset: raw(18),
        declared: declared_charset(raw(18), d.repetition),
    };
    write_ack(&echo, code, error, ack_control_id, timestamp)
}

/// Builds an ACK for input that did not parse, taking what it can from the first `MSH` found
/// anywhere in it with usable delimiters: delimiters, applications, trigger, control id,
/// processing id, version, MSH-18 and the ack mode. Without one: `|^~\&`, version 2.5.1,
/// processing id `P`, empty MSA-2. Never panics.
pub fn build_ack_for_unparsed(
    raw: &[u8],
    code: AckCode,
    error: Option<&AckError>,
    ack_control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let Some((start, d)) = find_msh(raw) else {
        let echo = Echo {
            d: Delimiters::default(),
            encoding_characters: Cow::Borrowed("^~\\&"),
            wire: Wire::Utf8,
            mode: AckMode::Original,
            apps: [""; 4],
            trigger: "",
            control_id: "",
            processing_id: "",
            version: "",
            charset: "",
            declared: None,
        };
        return write_ack(&echo, code, error, ack_control_id, timestamp);
    };
    let line = raw[start..]
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let declared = match std::str::from_utf8(charset::find_msh18(line, &d)) {
        Ok(s) => Charset::from_msh18(s).unwrap_or(Charset::Utf8),
        Err(_) => Charset::Utf8,
    };
    let (text, wire, _) = charset::decode(line, declared);
    let pieces: Vec<&str> = text.split(char::from(d.field)).collect();
    // Piece k is MSH-(k+1).
    let raw_field = |n: usize| pieces.get(n - 1).copied().unwrap_or("");
    let known_charset = if Charset::from_msh18(raw_field(18)).is_ok() {
        raw_field(18)
    } else {
        ""
    };
    let echo = Echo {
        d,
        encoding_characters: Cow::Borrowed(raw_field(2)),
        wire,
        mode: if valued(raw_field(15)) || valued(raw_field(16)) {
            AckMode::Enhanced
        } else {
            AckMode::Original
        },
        apps: [raw_field(3), raw_field(4), raw_field(5), raw_field(6)],
        trigger: part(part(raw_field(9), d.repetition, 1), d.component, 2),
        control_id: raw_field(10),
        processing_id: raw_field(11),
        version: raw_field(12),
        charset: known_charset,
        declared: declared_charset(known_charset, d.repetition),
    };
    write_ack(&echo, code, error, ack_control_id, timestamp)
}

/// The first `MSH` anywhere in `raw` whose delimiters are usable: where it starts, and them.
fn find_msh(raw: &[u8]) -> Option<(usize, Delimiters)> {
    (0..raw.len().saturating_sub(2))
        .filter(|&i| &raw[i..i + 3] == b"MSH")
        .find_map(|i| Delimiters::from_header(&raw[i..]).ok().map(|d| (i, d)))
}

/// What the journal can still say of input that did not parse (a bad segment name further
/// down, say): the fields of its first usable `MSH`, read as [`build_ack_for_unparsed`] reads
/// them for the ACK, so that the refused message can be found by its control id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnparsedHeader {
    pub control_id: Option<String>,
    /// `CODE^TRIGGER`, as channel rules and the journal write it.
    pub message_type: Option<String>,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub version: Option<String>,
}

/// How long a sender (`orbiter send`, the `mllp` destination) waits for the ACK of a message
/// whose MSH-15 is `ER` (one comes only when the receiver does not accept it, and then at once)
/// before it takes the silence as accepted.
pub const ER_WAIT: Duration = Duration::from_secs(1);

/// What MSH-15 (the accept acknowledgment type) of a message lets its sender expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Original mode, `AL`, or no usable MSH-15: an ACK, always.
    Always,
    /// `NE`: none.
    Never,
    /// `ER`: one only when the message is not accepted.
    OnError,
    /// `SU`: one only when it is accepted.
    OnSuccess,
}

impl Expect {
    /// What `message` (as it goes on the wire) lets its sender expect.
    pub fn of(message: &[u8]) -> Expect {
        let Ok(parsed) = Message::parse(message) else {
            // A receiver answers what it cannot parse.
            return Expect::Always;
        };
        if parsed.ack_mode() == super::AckMode::Original {
            return Expect::Always;
        }
        match parsed.accept_ack_type() {
            Some(AckType::Never) => Expect::Never,
            Some(AckType::Error) => Expect::OnError,
            Some(AckType::Success) => Expect::OnSuccess,
            Some(AckType::Always) | None => Expect::Always,
        }
    }
}

/// The first usable `MSH` segment of `raw` as text, with its delimiters.
fn first_msh_line(raw: &[u8]) -> Option<(String, Delimiters)> {
    let (start, d) = find_msh(raw)?;
    let line = raw[start..]
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let (text, _, _) = charset::decode(line, Charset::Utf8);
    Some((text, d))
}

/// See [`UnparsedHeader`]; `None` when `raw` has no usable `MSH`.
pub fn unparsed_header(raw: &[u8]) -> Option<UnparsedHeader> {
    let (text, d) = first_msh_line(raw)?;
    let pieces: Vec<&str> = text.split(char::from(d.field)).collect();
    // Piece k is MSH-(k+1); the first component of each, as the parsed accessors give.
    let field = |n: usize| {
        let v = part(pieces.get(n - 1).copied().unwrap_or(""), d.repetition, 1);
        let v = part(v, d.component, 1);
        valued(v).then(|| v.to_owned())
    };
    let kind = pieces.get(8).copied().unwrap_or("");
    let kind = part(kind, d.repetition, 1);
    let (code, trigger) = (part(kind, d.component, 1), part(kind, d.component, 2));
    Some(UnparsedHeader {
        control_id: field(10),
        message_type: valued(code).then(|| {
            if trigger.is_empty() {
                code.to_owned()
            } else {
                format!("{code}^{trigger}")
            }
        }),
        sending_application: field(3),
        sending_facility: field(4),
        version: field(12),
    })
}

/// Whether the sender of input that did not parse wants an accept ACK with this code, as far
/// as its first usable `MSH` says: as [`Message::ack_wanted`] (MSH-15 in enhanced mode), and
/// always when there is no such `MSH`.
pub fn unparsed_ack_wanted(raw: &[u8], code: AckCode) -> bool {
    let Some((text, d)) = first_msh_line(raw) else {
        return true;
    };
    let pieces: Vec<&str> = text.split(char::from(d.field)).collect();
    let raw_field = |n: usize| pieces.get(n - 1).copied().unwrap_or("");
    if !valued(raw_field(15)) && !valued(raw_field(16)) {
        return true;
    }
    let accept = part(part(raw_field(15), d.repetition, 1), d.component, 1);
    AckType::from_code(accept).is_none_or(|t| t.wants(code))
}

/// An ACK as read by `orbiter send`: what the receiver said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// MSA-1: `AA`, `AE`, `AR`, `CA`, `CE`, `CR` (as sent; may be empty).
    pub code: String,
    /// MSA-2: the control id of the message acknowledged.
    pub control_id: Option<String>,
    /// MSH-10 of the ACK itself.
    pub ack_control_id: Option<String>,
    /// The error code: ERR-3.1 (v2.5+), else ERR-1.4.1 (v2.4), else MSA-6.1.
    pub error_code: Option<String>,
    /// The error text: ERR-8, else ERR-3.2, else ERR-1.4.2, else MSA-3.
    pub text: Option<String>,
    /// ERR-2 as sent, e.g. `PID^1^3`.
    pub location: Option<String>,
}

impl Ack {
    /// Parses an ACK. Errors when the bytes are not a message or have no MSA segment.
    pub fn parse(bytes: &[u8]) -> Result<Ack, ParseError> {
        let m = Message::parse(bytes)?;
        let path = |s: &str| Path::parse(s).ok();
        let get = |s: &str| -> Option<String> {
            let p = path(s)?;
            m.get(&p).into_text().map(Cow::into_owned)
        };
        if m.count_segments("MSA") == 0 {
            return Err(ParseError::MissingSegment { name: "MSA".into() });
        }
        let first = |paths: &[&str]| paths.iter().find_map(|p| get(p));
        Ok(Ack {
            code: get("MSA-1").unwrap_or_default(),
            control_id: get("MSA-2"),
            ack_control_id: get("MSH-10.1"),
            error_code: first(&["ERR-3.1", "ERR-1.4.1", "MSA-6.1"]),
            text: first(&["ERR-8", "ERR-3.2", "ERR-1.4.2", "MSA-3"]),
            location: path("ERR-2").and_then(|p| match m.get(&p) {
                Value::Text(t) => Some(t.into_owned()),
                _ => None,
            }),
        })
    }

    /// Whether the receiver accepted the message (`AA` or `CA`).
    pub fn is_accept(&self) -> bool {
        self.code == "AA" || self.code == "CA"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_3_ack_has_no_message_structure() {
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|20240401||ADT^A02|X1|P|2.3\r").unwrap();
        let ack =
            String::from_utf8(build_ack(&m, AckCode::Accept, None, "ORB1", "20240401")).unwrap();
        assert!(ack.contains("|ACK^A02|ORB1|P|2.3"), "{ack}");
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|20240401||ADT^A02|X1|P|2.3.1\r").unwrap();
        let ack =
            String::from_utf8(build_ack(&m, AckCode::Accept, None, "ORB1", "20240401")).unwrap();
        assert!(ack.contains("|ACK^A02^ACK|ORB1|P|2.3.1"), "{ack}");
    }

    #[test]
    fn the_header_of_input_that_did_not_parse_is_still_read() {
        let raw = b"MSH|^~\\&|LAB|HOSP|ORB|HIE|20261201||ORU^R01^ORU_R01|SEG1|P|2.5.1\rpv1|bad\r";
        assert!(Message::parse(raw).is_err());
        let h = unparsed_header(raw).unwrap();
        assert_eq!(h.control_id.as_deref(), Some("SEG1"));
        assert_eq!(h.message_type.as_deref(), Some("ORU^R01"));
        assert_eq!(h.sending_application.as_deref(), Some("LAB"));
        assert_eq!(h.sending_facility.as_deref(), Some("HOSP"));
        assert_eq!(h.version.as_deref(), Some("2.5.1"));
        assert_eq!(unparsed_header(b"garbage"), None);
        let bare = unparsed_header(b"MSH|^~\\&\r").unwrap();
        assert_eq!(bare, UnparsedHeader::default());
    }
    use proptest::prelude::*;

    const ADT: &[u8] = include_bytes!("../../../fixtures/hl7v2/adt_a01.hl7");
    const ENHANCED: &[u8] = include_bytes!("../../../fixtures/hl7v2/enhanced_ack.hl7");
    const CUSTOM: &[u8] = include_bytes!("../../../fixtures/hl7v2/custom_delimiters.hl7");
    const LATIN1: &[u8] = include_bytes!("../../../fixtures/hl7v2/latin1.hl7");
    const V27: &[u8] = include_bytes!("../../../fixtures/hl7v2/v27_truncation.hl7");
    const TS: &str = "20240401120000";

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn table_0357() {
        assert_eq!(ErrorCode::ALL.len(), 13);
        let codes: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [0, 100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207]
        );
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
            assert!(!c.text().is_empty());
        }
        assert_eq!(ErrorCode::from_code(104), None);
        assert_eq!(
            ErrorCode::RequiredFieldMissing.to_string(),
            "101 Required field missing"
        );
        assert_eq!(
            ErrorCode::ApplicationInternalError.text(),
            "Application internal error"
        );
        assert_eq!(Severity::Warning.code(), "W");
        assert_eq!(Severity::default(), Severity::Error);
    }

    #[test]
    fn codes_and_types() {
        assert_eq!(AckCode::Accept.as_str(AckMode::Original), "AA");
        assert_eq!(AckCode::Error.as_str(AckMode::Original), "AE");
        assert_eq!(AckCode::Reject.as_str(AckMode::Original), "AR");
        assert_eq!(AckCode::Accept.as_str(AckMode::Enhanced), "CA");
        assert_eq!(AckCode::Error.as_str(AckMode::Enhanced), "CE");
        assert_eq!(AckCode::Reject.as_str(AckMode::Enhanced), "CR");
        for t in [
            AckType::Always,
            AckType::Never,
            AckType::Error,
            AckType::Success,
        ] {
            assert_eq!(AckType::from_code(t.code()), Some(t));
        }
        assert_eq!(AckType::from_code("al"), None);
        assert!(AckType::Error.wants(AckCode::Reject) && !AckType::Error.wants(AckCode::Accept));
        assert!(AckType::Success.wants(AckCode::Accept) && !AckType::Success.wants(AckCode::Error));
    }

    #[test]
    fn locations() {
        assert_eq!(ErrLocation::field("PID", 1, 3).to_string(), "PID^1^3");
        assert_eq!(ErrLocation::segment("MSH", 1).encode('$'), "MSH$1");
        let p = Path::parse("OBX[2]-5.1").unwrap();
        assert_eq!(ErrLocation::from_path(&p).to_string(), "OBX^2^5^1^1");
        let p = Path::parse("PID-3[2]").unwrap();
        assert_eq!(ErrLocation::from_path(&p).to_string(), "PID^1^3^2");
        let l = ErrLocation {
            subcomponent: Some(2),
            ..ErrLocation::field("PID", 1, 3)
        };
        assert_eq!(l.to_string(), "PID^1^3^^^2");
    }

    #[test]
    fn original_mode_accept() {
        let m = Message::parse(ADT).unwrap();
        let ack = s(build_ack(&m, AckCode::Accept, None, "ORB1", TS));
        assert_eq!(
            ack,
            "MSH|^~\\&|ORBITER|HIE|ADMITSYS|GENHOSP|20240401120000||ACK^A01^ACK|ORB1|P|2.5.1||||||UNICODE UTF-8\r\
             MSA|AA|ADT20240315083012001\r"
        );
        let parsed = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(parsed.sending_application().as_deref(), Some("ORBITER"));
        assert_eq!(parsed.receiving_facility().as_deref(), Some("GENHOSP"));
        assert_eq!(parsed.message_type().unwrap().to_string(), "ACK^A01");
        let a = Ack::parse(ack.as_bytes()).unwrap();
        assert_eq!(a.code, "AA");
        assert!(a.is_accept());
        assert_eq!(a.control_id.as_deref(), Some("ADT20240315083012001"));
        assert_eq!(a.ack_control_id.as_deref(), Some("ORB1"));
        assert_eq!((a.text, a.error_code, a.location), (None, None, None));
    }

    #[test]
    fn original_mode_error_with_err() {
        let m = Message::parse(ADT).unwrap();
        let err = AckError::new(
            ErrorCode::RequiredFieldMissing,
            "PID-3 missing | check^source",
        )
        .at(ErrLocation::field("PID", 1, 3));
        let ack = s(build_ack(&m, AckCode::Error, Some(&err), "ORB2", TS));
        let segs: Vec<&str> = ack.split('\r').collect();
        assert_eq!(segs[1], "MSA|AE|ADT20240315083012001");
        assert_eq!(
            segs[2],
            "ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 missing \\F\\ check\\S\\source"
        );
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[3], "");
        let a = Ack::parse(ack.as_bytes()).unwrap();
        assert_eq!(a.code, "AE");
        assert!(!a.is_accept());
        assert_eq!(a.error_code.as_deref(), Some("101"));
        assert_eq!(a.text.as_deref(), Some("PID-3 missing | check^source"));
        assert_eq!(a.location.as_deref(), Some("PID^1^3"));
        let warn =
            AckError::new(ErrorCode::MessageAccepted, "note").with_severity(Severity::Warning);
        let ack = s(build_ack(&m, AckCode::Accept, Some(&warn), "ORB3", TS));
        assert!(ack.contains("\rERR|||0^Message accepted^HL70357|W||||note\r"));
    }

    #[test]
    fn enhanced_mode() {
        let m = Message::parse(ENHANCED).unwrap();
        assert_eq!(m.ack_mode(), AckMode::Enhanced);
        for (code, expect) in [
            (AckCode::Accept, "CA"),
            (AckCode::Error, "CE"),
            (AckCode::Reject, "CR"),
        ] {
            let err = AckError::new(ErrorCode::ApplicationInternalError, "journal full");
            let ack = s(build_ack(&m, code, Some(&err), "ORB4", TS));
            assert!(ack.contains(&format!("\rMSA|{expect}|ENH0001\r")), "{ack}");
            assert!(
                ack.contains("\rERR|||207^Application internal error^HL70357|E||||journal full\r")
            );
            assert_eq!(Ack::parse(ack.as_bytes()).unwrap().code, expect);
        }
    }

    #[test]
    fn delimiters_charset_and_truncation_echoed() {
        let m = Message::parse(CUSTOM).unwrap();
        let err = AckError::new(ErrorCode::DataTypeError, "bad#value")
            .at(ErrLocation::field("PID", 1, 7));
        let ack = s(build_ack(&m, AckCode::Error, Some(&err), "ID#1", TS));
        assert!(
            ack.starts_with(
                "MSH#$*@%#ORBITER#HIE#CUSTSYS#CUSTFAC#20240401120000##ACK$A04$ACK#ID@F@1#P#2.5.1\r"
            ),
            "{ack}"
        );
        assert!(ack.contains(
            "\rMSA#AE#CUST0001\rERR##PID$1$7#102$Data type error$HL70357#E####bad@F@value\r"
        ));
        let a = Ack::parse(ack.as_bytes()).unwrap();
        assert_eq!(a.ack_control_id.as_deref(), Some("ID#1"));
        assert_eq!(a.text.as_deref(), Some("bad#value"));

        let m = Message::parse(LATIN1).unwrap();
        let err = AckError::new(ErrorCode::DataTypeError, "Straße ungültig €");
        let ack = build_ack(&m, AckCode::Error, Some(&err), "A1", TS);
        assert!(ack.windows(8).any(|w| w == b"Stra\xdfe u"));
        let parsed = Message::parse(&ack).unwrap();
        assert_eq!(parsed.charset(), Charset::Latin1);
        assert_eq!(
            Ack::parse(&ack).unwrap().text.as_deref(),
            Some("Straße ungültig ?")
        );

        let m = Message::parse(V27).unwrap();
        let ack = s(build_ack(&m, AckCode::Accept, None, "A2", TS));
        assert!(ack.starts_with("MSH|^~\\&#|ORBITER|HIE|TRUNCSYS|GENHOSP|"));
        assert!(ack.contains("|ACK^A01^ACK|A2|P|2.7\rMSA|AA|TR0001\r"));
    }

    #[test]
    fn engine_text_is_ascii_unless_the_message_declared_a_charset_that_carries_it() {
        let text = "adt \u{2192} cdr: 422 \u{201c}bad\u{201d} \u{2014} M\u{fc}ller\u{2026}";
        let err = AckError::new(ErrorCode::ApplicationInternalError, text);
        // No MSH-18: ASCII applies; every byte of the ACK is ASCII.
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|N1|P|2.5.1\r").unwrap();
        let ack = build_ack(&m, AckCode::Error, Some(&err), "A1", TS);
        assert!(ack.is_ascii(), "{}", String::from_utf8_lossy(&ack));
        assert!(
            s(ack).ends_with("||||adt -> cdr: 422 \"bad\" - Muller...\r"),
            "transliterated"
        );
        let ack = build_ack_for_unparsed(
            b"MSH|^~\\&|A|B|C|D|T||ADT^A01|N1|P|2.5.1\rp!d",
            AckCode::Error,
            Some(&err),
            "A1",
            TS,
        );
        assert!(ack.is_ascii(), "{}", String::from_utf8_lossy(&ack));
        // MSH-18 ASCII: the same.
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|N1|P|2.5.1||||||ASCII\r").unwrap();
        assert!(build_ack(&m, AckCode::Error, Some(&err), "A1", TS).is_ascii());
        // UTF-8 declared: as written.
        let m = Message::parse(ADT).unwrap();
        let ack = s(build_ack(&m, AckCode::Error, Some(&err), "A1", TS));
        assert!(ack.contains(text), "{ack}");
        // Latin-1 declared: what Latin-1 holds stays, the rest is transliterated.
        let m = Message::parse(LATIN1).unwrap();
        let ack = build_ack(&m, AckCode::Error, Some(&err), "A1", TS);
        assert!(
            ack.ends_with(b"adt -> cdr: 422 \"bad\" - M\xfcller...\r"),
            "{}",
            String::from_utf8_lossy(&ack)
        );
    }

    #[test]
    fn an_application_ack_has_original_codes_in_enhanced_mode() {
        let m = Message::parse(ENHANCED).unwrap();
        assert_eq!(m.ack_mode(), AckMode::Enhanced);
        let err = AckError::new(ErrorCode::ApplicationInternalError, "rejected");
        let ack = s(build_ack_as(
            &m,
            AckCode::Error,
            AckMode::Original,
            Some(&err),
            "A1",
            TS,
        ));
        assert!(ack.contains("\rMSA|AE|ENH0001\r"), "{ack}");
        let ack = s(build_ack(&m, AckCode::Error, Some(&err), "A1", TS));
        assert!(ack.contains("\rMSA|CE|ENH0001\r"), "{ack}");
    }

    #[test]
    fn unparsed_input_follows_msh_15() {
        let raw =
            |msh15_16: &str| format!("MSH|^~\\&|A|B|C|D|T||ADT^A01|C1|P|2.5|||{msh15_16}\rp!d|x\r");
        assert!(unparsed_ack_wanted(raw("").as_bytes(), AckCode::Reject));
        assert!(unparsed_ack_wanted(
            raw("AL|NE").as_bytes(),
            AckCode::Reject
        ));
        assert!(!unparsed_ack_wanted(
            raw("NE|AL").as_bytes(),
            AckCode::Reject
        ));
        assert!(unparsed_ack_wanted(raw("ER").as_bytes(), AckCode::Reject));
        assert!(!unparsed_ack_wanted(raw("SU").as_bytes(), AckCode::Reject));
        assert!(unparsed_ack_wanted(raw("|AL").as_bytes(), AckCode::Reject));
        assert!(unparsed_ack_wanted(b"garbage", AckCode::Reject));
    }

    #[test]
    fn missing_fields_get_defaults() {
        let m = Message::parse(b"MSH|^~\\&|||||||ADT\r").unwrap();
        let ack = s(build_ack(&m, AckCode::Reject, None, "X", TS));
        assert_eq!(
            ack,
            "MSH|^~\\&|||||20240401120000||ACK|X|P|2.5.1\rMSA|AR|\r"
        );
    }

    #[test]
    fn unparsed() {
        let err = AckError::new(
            ErrorCode::SegmentSequenceError,
            "message does not start with MSH",
        );
        // Nothing usable: defaults.
        let ack = s(build_ack_for_unparsed(
            b"garbage",
            AckCode::Reject,
            Some(&err),
            "U1",
            TS,
        ));
        assert_eq!(
            ack,
            "MSH|^~\\&|||||20240401120000||ACK|U1|P|2.5.1\rMSA|AR|\r\
             ERR|||100^Segment sequence error^HL70357|E||||message does not start with MSH\r"
        );
        // An MSH after junk, with a bad segment later: echo what it has.
        let raw = b"\x0bjunk\rMSH#$*@%#S1#F1#R1#RF1#20240101##ORU$R01#C77#T#2.3####AL\rpid#bad";
        let ack = s(build_ack_for_unparsed(raw, AckCode::Reject, None, "U2", TS));
        assert_eq!(
            ack,
            "MSH#$*@%#R1#RF1#S1#F1#20240401120000##ACK$R01#U2#T#2.3\rMSA#CR#C77\r"
        );
        // Bad delimiters in the first MSH, good ones in a later one.
        let raw = b"MSH|^|x\rMSH|^~\\&|A|B|C|D|T||ADT^A08|C9|P|2.5\r";
        let ack = s(build_ack_for_unparsed(raw, AckCode::Error, None, "U3", TS));
        assert!(ack.contains("|ACK^A08^ACK|U3|P|2.5\rMSA|AE|C9\r"), "{ack}");
        // Latin-1 bytes in the header are echoed as they were.
        let raw = b"MSH|^~\\&|APP\xe9|F|||T||ADT^A01|C1|P|2.5\rPID|\xff";
        let ack = build_ack_for_unparsed(raw, AckCode::Error, None, "U4", TS);
        assert!(ack.starts_with(b"MSH|^~\\&|||APP\xe9|F|"));
        // Parse failures go through to_ack_error.
        let e = Message::parse(b"PID|1").unwrap_err().to_ack_error();
        let ack = s(build_ack_for_unparsed(
            b"PID|1",
            AckCode::Reject,
            Some(&e),
            "U5",
            TS,
        ));
        assert!(ack.contains(
            "\rERR||MSH^1|100^Segment sequence error^HL70357|E||||message does not start with MSH"
        ));
        // A bad segment name: ERR-2 names the segment by its position, as the text does.
        let raw = b"MSH|^~\\&|A|B|C|D|T||ADT^A01|C5|P|2.5\rEVN|A01\rPID|1\rPV1|1\rp!d|x\r";
        let e = Message::parse(raw).unwrap_err().to_ack_error();
        let ack = s(build_ack_for_unparsed(
            raw,
            AckCode::Reject,
            Some(&e),
            "U6",
            TS,
        ));
        assert!(
            ack.contains("\rMSA|AR|C5\rERR||^5|100^Segment sequence error^HL70357|E||||segment 5 has a bad name"),
            "{ack}"
        );
    }

    #[test]
    fn ack_parse_layouts() {
        let v24 = b"MSH|^~\\&|R|RF|S|SF|T||ACK|A9|P|2.4\rMSA|AE|C1|old text\rERR|PID^1^3^101&Required field missing&HL70357\r";
        let a = Ack::parse(v24).unwrap();
        assert_eq!(a.error_code.as_deref(), Some("101"));
        assert_eq!(a.text.as_deref(), Some("Required field missing"));
        let v23 = b"MSH|^~\\&|R|RF|S|SF|T||ACK|A9|P|2.3\rMSA|AR|C1|rejected|||207^internal\r";
        let a = Ack::parse(v23).unwrap();
        assert_eq!(
            (a.code.as_str(), a.text.as_deref(), a.error_code.as_deref()),
            ("AR", Some("rejected"), Some("207"))
        );
        assert_eq!(
            Ack::parse(b"MSH|^~\\&|R\rPID|1\r").unwrap_err(),
            ParseError::MissingSegment { name: "MSA".into() }
        );
        assert!(matches!(
            Ack::parse(b"hello"),
            Err(ParseError::NoMsh { .. })
        ));
    }

    proptest! {
        #[test]
        fn unparsed_and_ack_parse_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), prefix in any::<bool>()) {
            let mut raw = if prefix { b"MSH|^~\\&|".to_vec() } else { Vec::new() };
            raw.extend(bytes);
            let err = AckError::new(ErrorCode::ApplicationInternalError, "x");
            let ack = build_ack_for_unparsed(&raw, AckCode::Error, Some(&err), "ID", TS);
            // What we build always parses back as an ACK.
            let a = Ack::parse(&ack).unwrap();
            prop_assert_eq!(a.code.len(), 2);
            prop_assert_eq!(a.text.as_deref(), Some("x"));
            let _ = Ack::parse(&raw);
            if let Ok(m) = Message::parse(&raw) {
                let ack = build_ack(&m, AckCode::Reject, Some(&err), "ID", TS);
                prop_assert!(Ack::parse(&ack).is_ok());
            }
        }
    }
}
