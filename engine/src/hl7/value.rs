//! What a path read returns.
//!
//! HL7 distinguishes "not sent" (absent: the field, repetition or component does not exist),
//! "sent empty" (`||`, meaning no change to the receiver) and `""` (HL7 null: delete the value on
//! the receiver). Mappings to FHIR treat these differently, so a read must keep them apart instead
//! of collapsing them into `Option<String>`.

use std::borrow::Cow;
use std::fmt;

/// A value read at a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value<'a> {
    /// The segment, field, repetition, component or subcomponent does not exist.
    Absent,
    /// It exists and is empty (`||`).
    Empty,
    /// It is the HL7 null `""`.
    Null,
    /// It has text. A leaf value (no lower-level delimiters in it) is decoded: escape sequences
    /// are resolved, formatting escapes such as `\.br\` are kept verbatim. A composite value (a
    /// field read without component, holding `^` or `&`) is returned as encoded text, because
    /// decoding `\S\` into `^` would make its structure ambiguous.
    Text(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// The text, if this is [`Value::Text`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The text, if this is [`Value::Text`] (absent, empty and null give `None`).
    pub fn into_text(self) -> Option<Cow<'a, str>> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// Whether the element exists in the message (empty and null count as present).
    pub fn is_present(&self) -> bool {
        !matches!(self, Value::Absent)
    }

    /// Whether the value is absent or empty (what "not valued" means for a required field).
    pub fn is_blank(&self) -> bool {
        matches!(self, Value::Absent | Value::Empty)
    }

    /// Detaches the value from the message.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Absent => Value::Absent,
            Value::Empty => Value::Empty,
            Value::Null => Value::Null,
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// Text as is, null as `""`, absent and empty as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Absent | Value::Empty => Ok(()),
            Value::Null => f.write_str("\"\""),
            Value::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let t = Value::Text(Cow::Borrowed("x"));
        assert_eq!(t.as_str(), Some("x"));
        assert!(t.is_present() && !t.is_blank());
        assert!(Value::Empty.is_present() && Value::Empty.is_blank());
        assert!(!Value::Absent.is_present() && Value::Absent.is_blank());
        assert!(Value::Null.is_present() && !Value::Null.is_blank());
        assert_eq!(Value::Null.as_str(), None);
        assert_eq!(Value::Null.to_string(), "\"\"");
        assert_eq!(Value::Absent.to_string(), "");
        assert_eq!(t.clone().into_owned(), t);
        assert_eq!(t.into_text().as_deref(), Some("x"));
    }
}
