//! Errors of the codec: parse, path and set.
//!
//! Parse errors say what a person needs to fix the sender (which segment, which name, which
//! characters) and map onto HL7 table 0357 with a location, so that the ACK policy can turn any
//! of them into an `ERR` segment without knowing the variants.

use super::ack::{AckError, ErrLocation, ErrorCode};
use super::charset::Charset;

/// Why bytes could not be parsed as an HL7 v2 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but whitespace and segment separators.
    #[error("empty message")]
    Empty,
    /// Larger than the 4 GiB the index can address.
    #[error("message of {len} bytes is too large")]
    TooLarge {
        /// Input length in bytes.
        len: usize,
    },
    /// The first segment is not `MSH` (nor a batch header `FHS`/`BHS`).
    #[error("message does not start with MSH (found {})", Quoted(.found))]
    NoMsh {
        /// The first few characters of the input.
        found: String,
    },
    /// MSH-1/MSH-2 do not define a usable set of delimiters.
    #[error("bad encoding characters {} in MSH-1/MSH-2: {reason}", Quoted(.found))]
    BadEncodingCharacters {
        /// The characters after the segment name.
        found: String,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// MSH-18 names a character set this codec does not decode.
    #[error("unknown character set {} in MSH-18", Quoted(.0))]
    UnknownCharset(String),
    /// A segment name is not three characters `[A-Z][A-Z0-9][A-Z0-9]`.
    #[error("segment {segment_index} has a bad name {}", Quoted(.name))]
    BadSegmentName {
        /// 1-based position of the segment in the message.
        segment_index: usize,
        /// The offending name (up to 20 characters).
        name: String,
    },
    /// A segment the message kind needs is missing (e.g. MSA in an ACK).
    #[error("required segment {name} is missing")]
    MissingSegment {
        /// The missing segment's name.
        name: String,
    },
    /// In a batch file, a segment that belongs to no message (before the first MSH, or after a
    /// trailer).
    #[error("segment {segment_index} ({name}) is outside any message of the batch")]
    SegmentOutsideMessage {
        /// 1-based position of the segment in the file.
        segment_index: usize,
        /// Its name.
        name: String,
    },
}

/// Input text as an error quotes it: in double quotes, control characters shown as `?`. These
/// errors go back to the sender in ERR-8, where Rust's debug escapes (`\u{1}`) would read as
/// HL7 escape sequences.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            f.write_char(if c.is_control() { '?' } else { c })?;
        }
        f.write_char('"')
    }
}

impl ParseError {
    /// The HL7 table 0357 code for this error.
    pub fn hl7_error_code(&self) -> ErrorCode {
        match self {
            ParseError::Empty
            | ParseError::NoMsh { .. }
            | ParseError::BadSegmentName { .. }
            | ParseError::MissingSegment { .. }
            | ParseError::SegmentOutsideMessage { .. } => ErrorCode::SegmentSequenceError,
            ParseError::BadEncodingCharacters { .. } => ErrorCode::DataTypeError,
            ParseError::UnknownCharset(_) => ErrorCode::TableValueNotFound,
            ParseError::TooLarge { .. } => ErrorCode::ApplicationInternalError,
        }
    }

    /// Where the error is, when it can be named by segment, sequence and field. A segment
    /// whose name is bad has no segment id to give: ERR-2 is `^5` (ERL.1 empty, ERL.2 its
    /// position in the message), as the error text says `segment 5`.
    pub fn location(&self) -> Option<ErrLocation> {
        match self {
            ParseError::NoMsh { .. } => Some(ErrLocation::segment("MSH", 1)),
            ParseError::BadSegmentName { segment_index, .. } => Some(ErrLocation::segment(
                "",
                u32::try_from(*segment_index).unwrap_or(u32::MAX),
            )),
            ParseError::BadEncodingCharacters { .. } => Some(ErrLocation::field("MSH", 1, 2)),
            ParseError::UnknownCharset(_) => Some(ErrLocation::field("MSH", 1, 18)),
            ParseError::MissingSegment { name } => Some(ErrLocation::segment(name, 1)),
            _ => None,
        }
    }

    /// This error as an ACK error (severity E, code, location and this error's text).
    pub fn to_ack_error(&self) -> AckError {
        AckError::new(self.hl7_error_code(), self.to_string()).at_opt(self.location())
    }
}

/// Why a path string such as `PID-3[2].4.1` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("empty HL7 path")]
    Empty,
    /// The path does not fit `SEG[n]-F[r].C.S`.
    #[error("bad HL7 path {path:?}: at character {position}, expected {expected}")]
    Syntax {
        /// The path as given.
        path: String,
        /// 1-based character position of the problem.
        position: usize,
        /// What was expected there.
        expected: &'static str,
    },
}

/// Why [`super::Message::set`] could not write a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The path string did not parse.
    #[error(transparent)]
    Path(#[from] PathError),
    /// `[*]` names several places; a setter needs exactly one.
    #[error("cannot set {path}: a wildcard [*] names more than one place")]
    Wildcard {
        /// The path, canonical form.
        path: String,
    },
    /// MSH-1 and MSH-2 (and FHS/BHS-1/2) define the delimiters and cannot be rewritten.
    #[error("cannot set {path}: it holds the delimiters")]
    ReadOnly {
        /// The path, canonical form.
        path: String,
    },
    /// Setters create fields, repetitions and components, not segments.
    #[error("cannot set {path}: the segment is absent")]
    SegmentAbsent {
        /// The path, canonical form.
        path: String,
    },
    /// The value has a character the message's charset cannot hold.
    #[error("cannot set {path}: {ch:?} cannot be written in {}", charset.hl7_name())]
    Unrepresentable {
        /// The path, canonical form.
        path: String,
        /// The first offending character.
        ch: char,
        /// The message's charset.
        charset: Charset,
    },
    /// A raw (already encoded) value holds a segment separator or a delimiter of the target's
    /// level or above.
    #[error("cannot set {path}: raw value holds {what}")]
    BadRaw {
        /// The path, canonical form.
        path: String,
        /// What it holds.
        what: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_locations() {
        let e = ParseError::UnknownCharset("X".into());
        assert_eq!(e.hl7_error_code(), ErrorCode::TableValueNotFound);
        assert_eq!(e.location().unwrap().to_string(), "MSH^1^18");
        let e = ParseError::NoMsh {
            found: "PID".into(),
        };
        assert_eq!(e.hl7_error_code().code(), 100);
        assert_eq!(e.location().unwrap().to_string(), "MSH^1");
        let e = ParseError::BadEncodingCharacters {
            found: "x".into(),
            reason: "r",
        };
        assert_eq!(e.hl7_error_code().code(), 102);
        assert_eq!(e.location().unwrap().to_string(), "MSH^1^2");
        let a = e.to_ack_error();
        assert_eq!(a.code, ErrorCode::DataTypeError);
        assert!(a.text.contains("bad encoding characters"));
        assert_eq!(ParseError::Empty.location(), None);
        // A bad segment name: no id to name, its position in the message.
        let e = ParseError::BadSegmentName {
            segment_index: 5,
            name: "pid".into(),
        };
        assert_eq!(e.location().unwrap().to_string(), "^5");
        assert_eq!(
            ParseError::TooLarge { len: 1 }.hl7_error_code(),
            ErrorCode::ApplicationInternalError
        );
    }

    #[test]
    fn messages_name_the_problem() {
        // Control characters from the input are not echoed (nor Rust-escaped) into ERR-8.
        let e = ParseError::NoMsh {
            found: "\u{1}\u{2}ab\tc".into(),
        };
        assert_eq!(
            e.to_string(),
            "message does not start with MSH (found \"??ab?c\")"
        );
        let e = ParseError::BadSegmentName {
            segment_index: 3,
            name: "pid".into(),
        };
        assert_eq!(e.to_string(), "segment 3 has a bad name \"pid\"");
        let e = PathError::Syntax {
            path: "PID-x".into(),
            position: 5,
            expected: "a field number",
        };
        assert_eq!(
            e.to_string(),
            "bad HL7 path \"PID-x\": at character 5, expected a field number"
        );
    }
}
