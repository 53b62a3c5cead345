//! Message-level checks for the acknowledgement policy.
//!
//! The parser accepts anything it can index, so that a message missing MSH-10 can still be
//! journaled, inspected and answered; whether to accept it is a policy decision. These checks
//! return the [`AckError`] (table 0357 code and ERR location) the policy sends back: 100 for a
//! frame that is not one message, 101 for a missing MSH-9 or MSH-10, 202 for a processing id
//! (MSH-11) the engine does not take, 203 for a version (MSH-12) that is not HL7 v2.

use super::ack::{AckError, ErrLocation, ErrorCode};
use super::message::Message;
use super::path::Path;
use super::value::Value;

/// The HL7 v2 versions (table 0104) taken in MSH-12: 2.1 to 2.8.2.
pub const VERSIONS: [&str; 13] = [
    "2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1",
    "2.8.2",
];

/// HL7 table 0103, processing id: production, debugging, training.
pub const PROCESSING_IDS: [&str; 3] = ["P", "D", "T"];

/// A sender's value as an error quotes it: at most 20 characters, control characters as `?`.
fn shown(value: &str) -> String {
    value
        .chars()
        .take(20)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl Message {
    /// Checks what every message needs for routing and acknowledgement: it starts with MSH
    /// (code 100 otherwise), holds no second header (one message per frame: code 100), MSH-9.1
    /// message type and MSH-10 control id are valued (code 101 at `MSH^1^9` / `MSH^1^10`
    /// otherwise; empty and `""` count as missing).
    pub fn check_required(&self) -> Result<(), AckError> {
        match self.first_segment_name() {
            Some(b"MSH") => {}
            Some(name @ (b"FHS" | b"BHS")) => {
                return Err(AckError::new(
                    ErrorCode::SegmentSequenceError,
                    format!(
                        "a batch ({}) where one message was expected: send one message per frame or request (batch files are taken by the folder and SFTP sources)",
                        String::from_utf8_lossy(name)
                    ),
                )
                .at(ErrLocation::segment(&String::from_utf8_lossy(name), 1)));
            }
            _ => {
                return Err(AckError::new(
                    ErrorCode::SegmentSequenceError,
                    "message does not start with MSH",
                )
                .at(ErrLocation::segment("MSH", 1)));
            }
        }
        // A second header: the sender put several messages in one frame. Taken as one, the
        // later ones would be read as extra segments of the first and never routed as
        // themselves.
        if let Some(second) = self
            .segments()
            .skip(1)
            .find(|s| matches!(s.name, "MSH" | "FHS" | "BHS" | "BTS" | "FTS"))
        {
            return Err(AckError::new(
                ErrorCode::SegmentSequenceError,
                format!(
                    "segment {} is another {}: one message per frame, please (this one is kept in the journal, not processed)",
                    second.index + 1,
                    second.name
                ),
            )
            .at(ErrLocation::segment(
                second.name,
                self.segments()
                    .take(second.index + 1)
                    .filter(|s| s.name == second.name)
                    .count() as u32,
            )));
        }
        for (field, comp, what) in [
            (9, Some(1), "message type"),
            (10, None, "message control id"),
        ] {
            if !matches!(self.first_value(b"MSH", field, comp), Value::Text(_)) {
                return Err(AckError::new(
                    ErrorCode::RequiredFieldMissing,
                    format!("required field MSH-{field} ({what}) is missing"),
                )
                .at(ErrLocation::field("MSH", 1, field as u32)));
            }
        }
        Ok(())
    }

    /// Checks that MSH-12.1 names an HL7 v2 version this engine takes ([`VERSIONS`]): code 203
    /// at `MSH^1^12` otherwise. An empty MSH-12 is taken (the ACK then says 2.5.1).
    pub fn check_version(&self) -> Result<(), AckError> {
        let Some(version) = self.version() else {
            return Ok(());
        };
        if VERSIONS.contains(&version.trim()) {
            return Ok(());
        }
        Err(AckError::new(
            ErrorCode::UnsupportedVersionId,
            format!(
                "MSH-12 (version id) \"{}\" is not an HL7 v2 version this engine takes ({} to {})",
                shown(&version),
                VERSIONS[0],
                VERSIONS[VERSIONS.len() - 1]
            ),
        )
        .at(ErrLocation::field("MSH", 1, 12)))
    }

    /// Checks that MSH-11.1 is one of `accepted` (HL7 table 0103 values, the engine's
    /// `hl7.processing_ids`): code 202 at `MSH^1^11` otherwise. An empty MSH-11 counts as `P`,
    /// which is what the ACK answers for it.
    pub fn check_processing_id<S: AsRef<str>>(&self, accepted: &[S]) -> Result<(), AckError> {
        let id = self.processing_id();
        let id = id.as_deref().map_or("P", str::trim);
        if accepted.iter().any(|a| a.as_ref() == id) {
            return Ok(());
        }
        let list: Vec<&str> = accepted.iter().map(AsRef::as_ref).collect();
        Err(AckError::new(
            ErrorCode::UnsupportedProcessingId,
            format!(
                "MSH-11 (processing id) \"{}\" is not one this engine takes ({})",
                shown(id),
                list.join(", ")
            ),
        )
        .at(ErrLocation::field("MSH", 1, 11)))
    }

    /// Checks that each path has a value (code 101 at the first one that is absent, empty or
    /// `""`). For channel-specific requirements such as `PID-3`.
    pub fn check_fields(&self, paths: &[Path]) -> Result<(), AckError> {
        for p in paths {
            if !matches!(self.get(p), Value::Text(_)) {
                return Err(AckError::new(
                    ErrorCode::RequiredFieldMissing,
                    format!("required field {p} is missing"),
                )
                .at(ErrLocation::from_path(p)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_msh_fields() {
        let m = Message::parse(include_bytes!("../../../fixtures/hl7v2/adt_a01.hl7")).unwrap();
        assert_eq!(m.check_required(), Ok(()));
        let m =
            Message::parse(include_bytes!("../../../fixtures/hl7v2/no_control_id.hl7")).unwrap();
        let e = m.check_required().unwrap_err();
        assert_eq!(e.code, ErrorCode::RequiredFieldMissing);
        assert_eq!(e.location.as_ref().unwrap().to_string(), "MSH^1^10");
        assert!(e.text.contains("MSH-10"));
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|T||^A01|X1|P|2.5\r").unwrap();
        let e = m.check_required().unwrap_err();
        assert_eq!(e.location.unwrap().to_string(), "MSH^1^9");
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|\"\"|P|2.5\r").unwrap();
        assert_eq!(m.check_required().unwrap_err().code.code(), 101);
        let m = Message::parse(b"BHS|^~\\&\rMSH|^~\\&|||||||ADT^A01|1\r").unwrap();
        assert_eq!(
            m.check_required().unwrap_err().code,
            ErrorCode::SegmentSequenceError
        );
    }

    #[test]
    fn a_second_message_in_the_same_frame_is_refused() {
        let two = b"MSH|^~\\&|A|B|C|D|T||ADT^A01|ONE|P|2.5\rPID|1\rMSH|^~\\&|A|B|C|D|T||ORU^R01|TWO|P|2.5\rOBX|1\r";
        let m = Message::parse(two).unwrap();
        let e = m.check_required().unwrap_err();
        assert_eq!(e.code, ErrorCode::SegmentSequenceError);
        assert!(e.text.contains("segment 3 is another MSH"), "{}", e.text);
        assert_eq!(e.location.unwrap().to_string(), "MSH^2");
        let batch = Message::parse(b"BHS|^~\\&\rMSH|^~\\&|||||||ADT^A01|1\rBTS|1\r").unwrap();
        let e = batch.check_required().unwrap_err();
        assert!(e.text.contains("a batch (BHS)"), "{}", e.text);
        // ERR-2 names the batch header refused, not a message header.
        assert_eq!(e.location.unwrap().to_string(), "BHS^1");
        let file = Message::parse(b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|||||||ADT^A01|1\r").unwrap();
        assert_eq!(
            file.check_required()
                .unwrap_err()
                .location
                .unwrap()
                .to_string(),
            "FHS^1"
        );
        // A Z-segment or any other later segment is fine.
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|ONE|P|2.5\rZMS|1\r").unwrap();
        assert_eq!(m.check_required(), Ok(()));
    }

    #[test]
    fn versions() {
        let m = |v: &str| {
            Message::parse(format!("MSH|^~\\&|A|B|C|D|T||ADT^A01|1|P|{v}\r").as_bytes()).unwrap()
        };
        for v in [
            "2.1",
            "2.3",
            "2.3.1",
            "2.5.1",
            "2.5.1^DEU^2.5",
            "2.7.1",
            "2.8.2",
            "",
        ] {
            assert_eq!(m(v).check_version(), Ok(()), "{v}");
        }
        for v in ["9.9", "banana", "2.0", "2.5.2", "3.0", "2.9.9"] {
            let e = m(v).check_version().unwrap_err();
            assert_eq!(e.code, ErrorCode::UnsupportedVersionId, "{v}");
            assert_eq!(e.location.unwrap().to_string(), "MSH^1^12");
            assert!(e.text.contains(&format!("\"{v}\"")), "{}", e.text);
        }
    }

    #[test]
    fn processing_ids() {
        let m = |p: &str| {
            Message::parse(format!("MSH|^~\\&|A|B|C|D|T||ADT^A01|1|{p}|2.5\r").as_bytes()).unwrap()
        };
        for p in ["P", "D", "T", "T^A", ""] {
            assert_eq!(m(p).check_processing_id(&PROCESSING_IDS), Ok(()), "{p}");
        }
        for p in ["Z", "p", "PT"] {
            let e = m(p).check_processing_id(&PROCESSING_IDS).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnsupportedProcessingId, "{p}");
            assert_eq!(e.location.unwrap().to_string(), "MSH^1^11");
        }
        // Restricted to production: T is refused, an empty MSH-11 counts as P.
        let production = ["P".to_string()];
        let e = m("T").check_processing_id(&production).unwrap_err();
        assert!(
            e.text.contains("\"T\" is not one this engine takes (P)"),
            "{}",
            e.text
        );
        assert_eq!(m("").check_processing_id(&production), Ok(()));
    }

    #[test]
    fn channel_fields() {
        let m = Message::parse(include_bytes!("../../../fixtures/hl7v2/adt_a01.hl7")).unwrap();
        let ok = [
            Path::parse("PID-3.1").unwrap(),
            Path::parse("PID-5").unwrap(),
        ];
        assert_eq!(m.check_fields(&ok), Ok(()));
        let missing = [Path::parse("PID-3").unwrap(), Path::parse("PID-2").unwrap()];
        let e = m.check_fields(&missing).unwrap_err();
        assert_eq!(e.location.unwrap().to_string(), "PID^1^2");
        let e = m
            .check_fields(&[Path::parse("PID-3[2].4.2").unwrap()])
            .unwrap_err();
        assert_eq!(e.location.unwrap().to_string(), "PID^1^3^2^4^2");
    }
}
