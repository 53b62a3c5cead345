//! Typed accessors for the MSH fields the engine routes and acknowledges on.
//!
//! The router, the journal and the ACK policy read the same handful of MSH fields for every
//! message; these accessors name them once, decode them, and read the first MSH segment (for a
//! batch parsed as a whole, that of its first message).

use std::borrow::Cow;
use std::fmt;

use super::ack::{AckCode, AckMode, AckType};
use super::message::Message;

const MSH: &[u8; 3] = b"MSH";

/// MSH-9, the message type: code (`ADT`), trigger event (`A01`) and structure (`ADT_A01`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// MSH-9.1, e.g. `ADT`.
    pub code: String,
    /// MSH-9.2, e.g. `A01`; empty when not sent.
    pub trigger: String,
    /// MSH-9.3, e.g. `ADT_A01`; empty when not sent (common before v2.3.1).
    pub structure: String,
}

impl fmt::Display for MessageType {
    /// `ADT^A01` (or `ACK` without trigger), the form channel match rules use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.trigger.is_empty() {
            f.write_str(&self.code)
        } else {
            write!(f, "{}^{}", self.code, self.trigger)
        }
    }
}

impl Message {
    fn msh_text(&self, field: usize, comp: Option<usize>) -> Option<Cow<'_, str>> {
        self.first_value(MSH, field, comp).into_text()
    }

    /// MSH-10, the message control id (decoded); `None` when absent, empty or null.
    pub fn control_id(&self) -> Option<Cow<'_, str>> {
        self.msh_text(10, Some(1))
    }

    /// MSH-9, the message type; `None` when MSH-9.1 is absent, empty or null.
    pub fn message_type(&self) -> Option<MessageType> {
        let code = self.msh_text(9, Some(1))?.into_owned();
        let part = |c| {
            self.msh_text(9, Some(c))
                .map(Cow::into_owned)
                .unwrap_or_default()
        };
        Some(MessageType {
            code,
            trigger: part(2),
            structure: part(3),
        })
    }

    /// MSH-3.1, the sending application.
    pub fn sending_application(&self) -> Option<Cow<'_, str>> {
        self.msh_text(3, Some(1))
    }

    /// MSH-4.1, the sending facility.
    pub fn sending_facility(&self) -> Option<Cow<'_, str>> {
        self.msh_text(4, Some(1))
    }

    /// MSH-5.1, the receiving application.
    pub fn receiving_application(&self) -> Option<Cow<'_, str>> {
        self.msh_text(5, Some(1))
    }

    /// MSH-6.1, the receiving facility.
    pub fn receiving_facility(&self) -> Option<Cow<'_, str>> {
        self.msh_text(6, Some(1))
    }

    /// MSH-7.1, the message date/time as sent (`YYYYMMDDHHMMSS[.S][+ZZZZ]`).
    pub fn timestamp(&self) -> Option<Cow<'_, str>> {
        self.msh_text(7, Some(1))
    }

    /// MSH-11.1, the processing id (`P`, `T`, `D`).
    pub fn processing_id(&self) -> Option<Cow<'_, str>> {
        self.msh_text(11, Some(1))
    }

    /// MSH-12.1, the version id, e.g. `2.5.1`.
    pub fn version(&self) -> Option<Cow<'_, str>> {
        self.msh_text(12, Some(1))
    }

    /// MSH-15, the accept acknowledgment type; `None` when empty or not one of AL/NE/ER/SU.
    pub fn accept_ack_type(&self) -> Option<AckType> {
        AckType::from_code(&self.msh_text(15, Some(1))?)
    }

    /// MSH-16, the application acknowledgment type; `None` when empty or unknown.
    pub fn application_ack_type(&self) -> Option<AckType> {
        AckType::from_code(&self.msh_text(16, Some(1))?)
    }

    /// Enhanced mode when MSH-15 or MSH-16 has a value (null `""` counts as no value), original
    /// mode otherwise.
    pub fn ack_mode(&self) -> AckMode {
        if self.msh_text(15, None).is_some() || self.msh_text(16, None).is_some() {
            AckMode::Enhanced
        } else {
            AckMode::Original
        }
    }

    /// Whether the sender wants an accept ACK with this code: always in original mode; in
    /// enhanced mode as MSH-15 says (AL/NE/ER/SU; empty or unknown means always).
    pub fn ack_wanted(&self, code: AckCode) -> bool {
        match self.ack_mode() {
            AckMode::Original => true,
            AckMode::Enhanced => self.accept_ack_type().is_none_or(|t| t.wants(code)),
        }
    }

    /// Whether the sender wants an application ACK with this code: always in original mode; in
    /// enhanced mode as MSH-16 says (empty or unknown means always).
    pub fn application_ack_wanted(&self, code: AckCode) -> bool {
        match self.ack_mode() {
            AckMode::Original => true,
            AckMode::Enhanced => self.application_ack_type().is_none_or(|t| t.wants(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = include_bytes!("../../../fixtures/hl7v2/adt_a01.hl7");

    fn msg(s: &str) -> Message {
        Message::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn fixture_header() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.control_id().as_deref(), Some("ADT20240315083012001"));
        let t = m.message_type().unwrap();
        assert_eq!(
            (t.code.as_str(), t.trigger.as_str(), t.structure.as_str()),
            ("ADT", "A01", "ADT_A01")
        );
        assert_eq!(t.to_string(), "ADT^A01");
        assert_eq!(m.sending_application().as_deref(), Some("ADMITSYS"));
        assert_eq!(m.sending_facility().as_deref(), Some("GENHOSP"));
        assert_eq!(m.receiving_application().as_deref(), Some("ORBITER"));
        assert_eq!(m.receiving_facility().as_deref(), Some("HIE"));
        assert_eq!(m.timestamp().as_deref(), Some("20240315083012"));
        assert_eq!(m.processing_id().as_deref(), Some("P"));
        assert_eq!(m.version().as_deref(), Some("2.5.1"));
        assert_eq!(m.accept_ack_type(), None);
        assert_eq!(m.application_ack_type(), None);
        assert_eq!(m.ack_mode(), AckMode::Original);
        assert!(m.ack_wanted(AckCode::Accept) && m.ack_wanted(AckCode::Reject));
    }

    #[test]
    fn components_and_escapes() {
        let m = msg("MSH|^~\\&|APP^1.2.3^ISO|FAC\\T\\X|||||ORU^R01|ID\\F\\1|P^T|2.4^DEU\r");
        assert_eq!(m.sending_application().as_deref(), Some("APP"));
        assert_eq!(m.sending_facility().as_deref(), Some("FAC&X"));
        assert_eq!(m.receiving_application(), None);
        assert_eq!(m.control_id().as_deref(), Some("ID|1"));
        assert_eq!(m.processing_id().as_deref(), Some("P"));
        assert_eq!(m.version().as_deref(), Some("2.4"));
        let t = m.message_type().unwrap();
        assert_eq!((t.trigger.as_str(), t.structure.as_str()), ("R01", ""));
        let m = msg("MSH|^~\\&|A\r");
        assert_eq!(m.message_type(), None);
        assert_eq!(m.control_id(), None);
        let m = msg("MSH|^~\\&||||||||\"\"\r");
        assert_eq!(m.control_id(), None);
        assert_eq!(
            MessageType {
                code: "ACK".into(),
                trigger: String::new(),
                structure: String::new()
            }
            .to_string(),
            "ACK"
        );
    }

    #[test]
    fn ack_types_and_wants() {
        let base = "MSH|^~\\&|A|B|C|D|T||ADT^A01|1|P|2.5.1|||";
        let m = msg(&format!("{base}AL|NE\r"));
        assert_eq!(m.ack_mode(), AckMode::Enhanced);
        assert_eq!(m.accept_ack_type(), Some(AckType::Always));
        assert_eq!(m.application_ack_type(), Some(AckType::Never));
        assert!(m.ack_wanted(AckCode::Accept));
        assert!(!m.application_ack_wanted(AckCode::Accept));
        let m = msg(&format!("{base}ER|SU\r"));
        assert!(!m.ack_wanted(AckCode::Accept));
        assert!(m.ack_wanted(AckCode::Error) && m.ack_wanted(AckCode::Reject));
        assert!(m.application_ack_wanted(AckCode::Accept));
        assert!(!m.application_ack_wanted(AckCode::Error));
        let m = msg(&format!("{base}NE\r"));
        assert!(!m.ack_wanted(AckCode::Accept) && !m.ack_wanted(AckCode::Error));
        // Only MSH-16: enhanced, accept ACK type unknown means always.
        let m = msg(&format!("{base}|AL\r"));
        assert_eq!(m.ack_mode(), AckMode::Enhanced);
        assert!(m.ack_wanted(AckCode::Accept));
        let m = msg(&format!("{base}XX\r"));
        assert_eq!(m.accept_ack_type(), None);
        assert_eq!(m.ack_mode(), AckMode::Enhanced);
        let m = msg(&format!("{base}\"\"|\r"));
        assert_eq!(m.ack_mode(), AckMode::Original);
        assert!(m.ack_wanted(AckCode::Error));
    }
}
