//! Message-level checks for the acknowledgement policy.
//!
//! The parser accepts anything it can index, so that a message missing MSH-10 can still be
//! journaled, inspected and answered; whether to accept it is a policy decision. These checks
//! return the [`AckError`] (table 0357 code 101 with its ERR location) the policy sends back.

use super::ack::{AckError, ErrLocation, ErrorCode};
use super::message::Message;
use super::path::Path;
use super::value::Value;

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
                .at(ErrLocation::segment("MSH", 1)));
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
        // A Z-segment or any other later segment is fine.
        let m = Message::parse(b"MSH|^~\\&|A|B|C|D|T||ADT^A01|ONE|P|2.5\rZMS|1\r").unwrap();
        assert_eq!(m.check_required(), Ok(()));
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
