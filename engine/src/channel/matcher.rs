//! Match rules, compiled once per channel revision: does this message belong to the channel?

use super::def::MatchDef;
use crate::journal::MessageMeta;

/// A `*` wildcard pattern, case-insensitive (HL7 codes are upper case, senders are not
/// always consistent).
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Vec<u8>);

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        Pattern(text.to_ascii_uppercase().into_bytes())
    }

    /// Greedy glob matching with backtracking to the last `*`: linear for these short inputs.
    pub fn matches(&self, value: &str) -> bool {
        let (p, v) = (&self.0, value.as_bytes());
        let (mut pi, mut vi) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while vi < v.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, vi));
                pi += 1;
            } else if pi < p.len() && p[pi] == v[vi].to_ascii_uppercase() {
                pi += 1;
                vi += 1;
            } else if let Some((star_at, matched_to)) = star {
                // Let the last `*` swallow one more byte and retry.
                pi = star_at + 1;
                vi = matched_to + 1;
                star = Some((star_at, matched_to + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|b| *b == b'*')
    }
}

/// The compiled rules of one channel.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    message_type: Vec<Pattern>,
    sending_application: Vec<Pattern>,
    sending_facility: Vec<Pattern>,
    receiving_application: Vec<Pattern>,
    receiving_facility: Vec<Pattern>,
    version: Vec<Pattern>,
}

fn compile(patterns: &[String]) -> Vec<Pattern> {
    patterns.iter().map(|p| Pattern::new(p)).collect()
}

/// An empty rule list matches anything; otherwise one pattern must match a present value.
fn any(patterns: &[Pattern], value: Option<&str>) -> bool {
    patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

impl Matcher {
    pub fn new(def: &MatchDef) -> Matcher {
        Matcher {
            message_type: compile(&def.message_type),
            sending_application: compile(&def.sending_application),
            sending_facility: compile(&def.sending_facility),
            receiving_application: compile(&def.receiving_application),
            receiving_facility: compile(&def.receiving_facility),
            version: compile(&def.version),
        }
    }

    pub fn matches(&self, meta: &MessageMeta) -> bool {
        any(&self.message_type, meta.message_type.as_deref())
            && any(
                &self.sending_application,
                meta.sending_application.as_deref(),
            )
            && any(&self.sending_facility, meta.sending_facility.as_deref())
            && any(
                &self.receiving_application,
                meta.receiving_application.as_deref(),
            )
            && any(&self.receiving_facility, meta.receiving_facility.as_deref())
            && any(&self.version, meta.version.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("ADT^A01", "ADT^A01", true),
            ("ADT^A01", "adt^a01", true),
            ("ADT^A01", "ADT^A011", false),
            ("ADT^A01", "XADT^A01", false),
            ("ADT^*", "ADT^A08", true),
            ("ADT^*", "ORU^R01", false),
            ("*", "anything", true),
            ("*^R01", "ORU^R01", true),
            ("*^R01", "ORU^R011", false),
            ("LAB*SYS", "LAB_MAIN_SYS", true),
            ("LAB*SYS", "LAB_MAIN_SYSX", false),
            ("*MAIN*", "LAB_MAIN_SYS", true),
            ("*MAIN*", "LAB_SYS", false),
            ("A*B*C", "AxxBxxC", true),
            ("A*B*C", "AxxCxxB", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(value),
                expected,
                "{pattern} vs {value}"
            );
        }
    }

    #[test]
    fn rules_and_across_keys_or_within() {
        let matcher = Matcher::new(&MatchDef {
            message_type: vec!["ADT^A01".into(), "ADT^A08".into()],
            sending_facility: vec!["NORTH*".into()],
            ..MatchDef::default()
        });
        let meta = |t: &str, f: Option<&str>| MessageMeta {
            message_type: Some(t.into()),
            sending_facility: f.map(str::to_string),
            ..MessageMeta::default()
        };
        assert!(matcher.matches(&meta("ADT^A08", Some("NORTHSIDE"))));
        assert!(!matcher.matches(&meta("ADT^A08", Some("SOUTHSIDE"))));
        assert!(
            !matcher.matches(&meta("ADT^A08", None)),
            "a rule on an absent value fails"
        );
        assert!(!matcher.matches(&meta("ORU^R01", Some("NORTHSIDE"))));
        assert!(Matcher::new(&MatchDef::default()).matches(&MessageMeta::default()));
    }
}
