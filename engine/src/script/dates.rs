//! HL7 v2 `DTM`/`TS` values → FHIR `dateTime`, `date` and `instant`.
//!
//! HL7 sends `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`; the precision the sender chose is
//! information (a birth year is not January 1st), so it is kept: `2026` → `2026`, `202612` →
//! `2026-12`, a date stays a date. FHIR has no hour or minute precision for times, so those are
//! completed with zeros (`2026120112` → `2026-12-01T12:00:00`), and a date never carries an
//! offset. Values are checked (month 13, February 30th, offset +25:00 are errors) because a
//! silently wrong date in a clinical record is worse than a failed transaction.

use rhai::{Engine, EvalAltResult, ImmutableString};

/// How much of a date/time was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYYMM`
    Month,
    /// `YYYYMMDD`
    Day,
    /// `YYYYMMDDHH`
    Hour,
    /// `YYYYMMDDHHMM`
    Minute,
    /// `YYYYMMDDHHMMSS[.S...]`
    Second,
}

/// A parsed HL7 date/time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtm {
    /// Calendar year.
    pub year: u16,
    /// 1-12 (1 when not sent).
    pub month: u8,
    /// 1-31 (1 when not sent).
    pub day: u8,
    /// 0-23 (0 when not sent).
    pub hour: u8,
    /// 0-59 (0 when not sent).
    pub minute: u8,
    /// 0-60 (0 when not sent; 60 is a leap second).
    pub second: u8,
    /// Fraction-of-second digits as sent (empty when none).
    pub fraction: String,
    /// UTC offset in minutes, when sent.
    pub offset_minutes: Option<i16>,
    /// What was sent.
    pub precision: Precision,
}

const SHAPE: &str = "YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]";

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn num(s: &str) -> u16 {
    s.bytes().fold(0u16, |n, b| {
        n.saturating_mul(10).saturating_add(u16::from(b - b'0'))
    })
}

/// Parses `+hhmm`/`-hhmm` (HL7) or `Z`, `+hh:mm` (FHIR style, for default offsets).
pub fn parse_offset(s: &str) -> Option<i16> {
    if s == "Z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1i16, &s[1..]),
        b'-' => (-1i16, &s[1..]),
        _ => return None,
    };
    if !rest.is_ascii() {
        return None;
    }
    let (h, m) = match rest.len() {
        4 => (&rest[..2], &rest[2..]),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    if !digits(h) || !digits(m) {
        return None;
    }
    let (h, m) = (num(h), num(m));
    if h > 14 || m > 59 || (h == 14 && m != 0) {
        return None;
    }
    Some(sign * (h as i16 * 60 + m as i16))
}

impl Dtm {
    /// Parses an HL7 `DTM` (or the first component of a `TS`). `Ok(None)` for a blank value.
    pub fn parse(raw: &str) -> Result<Option<Dtm>, String> {
        let s = raw.split('^').next().unwrap_or("").trim();
        if s.is_empty() || s == "\"\"" {
            return Ok(None);
        }
        let bad = || format!("{raw:?} is not an HL7 date/time ({SHAPE})");
        let sign_at = s
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == '+' || c == '-')
            .map(|(i, _)| i);
        let (main, offset) = match sign_at {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let offset_minutes = match offset {
            Some(o) if o.len() == 5 => Some(parse_offset(o).ok_or_else(|| {
                format!("{raw:?}: bad UTC offset {o:?} (expected +/-HHMM, at most +/-1400)")
            })?),
            Some(_) => return Err(bad()),
            None => None,
        };
        let (whole, fraction) = match main.split_once('.') {
            Some((w, f)) if w.len() == 14 && digits(f) && f.len() <= 9 => (w, f.to_owned()),
            Some(_) => return Err(bad()),
            None => (main, String::new()),
        };
        if !digits(whole) {
            return Err(bad());
        }
        let precision = match whole.len() {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 => Precision::Second,
            _ => return Err(bad()),
        };
        let part = |from: usize, to: usize, default: u16| whole.get(from..to).map_or(default, num);
        let d = Dtm {
            year: part(0, 4, 0),
            month: part(4, 6, 1) as u8,
            day: part(6, 8, 1) as u8,
            hour: part(8, 10, 0) as u8,
            minute: part(10, 12, 0) as u8,
            second: part(12, 14, 0) as u8,
            fraction,
            offset_minutes,
            precision,
        };
        let month = time::Month::try_from(d.month)
            .map_err(|_| format!("{raw:?}: month {} is out of range", d.month))?;
        if d.year == 0 {
            return Err(format!("{raw:?}: year 0000 is out of range"));
        }
        if d.day < 1 || d.day > month.length(i32::from(d.year)) {
            return Err(format!(
                "{raw:?}: day {} is out of range for {}",
                d.day, month
            ));
        }
        if d.hour > 23 || d.minute > 59 || d.second > 60 {
            return Err(format!("{raw:?}: time of day is out of range"));
        }
        Ok(Some(d))
    }

    fn date_part(&self, upto: Precision) -> String {
        match self.precision.min(upto) {
            Precision::Year => format!("{:04}", self.year),
            Precision::Month => format!("{:04}-{:02}", self.year, self.month),
            _ => format!("{:04}-{:02}-{:02}", self.year, self.month, self.day),
        }
    }

    fn time_part(&self, offset: Option<i16>) -> String {
        let mut s = format!("T{:02}:{:02}:{:02}", self.hour, self.minute, self.second);
        if !self.fraction.is_empty() {
            s.push('.');
            s.push_str(&self.fraction);
        }
        if let Some(o) = offset {
            let sign = if o < 0 { '-' } else { '+' };
            let o = o.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", o / 60, o % 60));
        }
        s
    }

    /// FHIR `dateTime`, keeping the precision; `default_offset` (minutes) applies to a time sent
    /// without one. A time with no offset from either is an error: a FHIR dateTime with a time
    /// must carry its zone, and a CDR refuses one without.
    pub fn to_fhir_datetime(&self, default_offset: Option<i16>) -> Result<String, String> {
        let mut s = self.date_part(Precision::Day);
        if self.precision >= Precision::Hour {
            let Some(offset) = self.offset_minutes.or(default_offset) else {
                return Err(
                    "a time without a UTC offset, and a FHIR dateTime with a time needs one: give the offset the sender means (hl7_datetime(v, \"-05:00\")) or use dt::datetime(v), which applies the site's (site.rhai)"
                        .into(),
                );
            };
            s.push_str(&self.time_part(Some(offset)));
        }
        Ok(s)
    }

    /// FHIR `date`: the date part, at the precision sent (year, month or day).
    pub fn to_fhir_date(&self) -> String {
        self.date_part(Precision::Day)
    }

    /// FHIR `instant`: needs a time and an offset (from the value or `default_offset`).
    pub fn to_fhir_instant(&self, default_offset: Option<i16>) -> Result<String, String> {
        if self.precision < Precision::Hour {
            return Err("an instant needs a time of day, not just a date".into());
        }
        let Some(offset) = self.offset_minutes.or(default_offset) else {
            return Err(
                "an instant needs a UTC offset: the value has none (pass a default, e.g. hl7_instant(v, \"+01:00\"))"
                    .into(),
            );
        };
        Ok(format!(
            "{}{}",
            self.date_part(Precision::Day),
            self.time_part(Some(offset))
        ))
    }
}

fn default_offset(fn_name: &str, s: &str) -> Result<i16, Box<EvalAltResult>> {
    parse_offset(s).ok_or_else(|| {
        format!("{fn_name}: bad default offset {s:?} (expected \"Z\", \"+01:00\" or \"-0500\")")
            .into()
    })
}

fn convert(
    fn_name: &str,
    value: &str,
    f: impl FnOnce(&Dtm) -> Result<String, String>,
) -> Result<ImmutableString, Box<EvalAltResult>> {
    match Dtm::parse(value) {
        Ok(None) => Ok(super::message::empty()),
        Ok(Some(d)) => f(&d)
            .map(Into::into)
            .map_err(|e| format!("{fn_name}({value:?}): {e}").into()),
        Err(e) => Err(format!("{fn_name}: {e}").into()),
    }
}

/// An offset in minutes as FHIR writes it: `+01:00`, `-05:00`.
fn offset_text(minutes: i16) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// Registers `hl7_datetime`, `hl7_date`, `hl7_instant` (blank in → `""` out) and
/// `hl7_message_offset([fallback])` (MSH-7's UTC offset as `-05:00`; `fallback`, or `""`, when
/// it has none or the input is not an HL7 message).
pub fn register(engine: &mut Engine) {
    engine.register_fn("hl7_message_offset", || -> ImmutableString {
        super::state::message_offset().map_or_else(super::message::empty, |m| offset_text(m).into())
    });
    // One call per date conversion in site::utc_offset(): the fallback saves a script branch.
    engine.register_fn(
        "hl7_message_offset",
        |fallback: ImmutableString| -> ImmutableString {
            super::state::message_offset().map_or(fallback, |m| offset_text(m).into())
        },
    );
    engine.register_fn("hl7_datetime", |v: &str| {
        convert("hl7_datetime", v, |d| d.to_fhir_datetime(None))
    });
    engine.register_fn("hl7_datetime", |v: &str, off: &str| {
        let off = default_offset("hl7_datetime", off)?;
        convert("hl7_datetime", v, |d| d.to_fhir_datetime(Some(off)))
    });
    engine.register_fn("hl7_date", |v: &str| {
        convert("hl7_date", v, |d| Ok(d.to_fhir_date()))
    });
    engine.register_fn("hl7_instant", |v: &str| {
        convert("hl7_instant", v, |d| d.to_fhir_instant(None))
    });
    engine.register_fn("hl7_instant", |v: &str, off: &str| {
        let off = default_offset("hl7_instant", off)?;
        convert("hl7_instant", v, |d| d.to_fhir_instant(Some(off)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a default offset of UTC for times sent without one.
    fn dt(s: &str) -> String {
        Dtm::parse(s)
            .unwrap()
            .unwrap()
            .to_fhir_datetime(parse_offset("Z"))
            .unwrap()
    }

    #[test]
    fn offsets_are_written_the_fhir_way() {
        assert_eq!(offset_text(-300), "-05:00");
        assert_eq!(offset_text(330), "+05:30");
        assert_eq!(offset_text(0), "+00:00");
        assert_eq!(offset_text(parse_offset("-0930").unwrap()), "-09:30");
    }

    #[test]
    fn datetime_keeps_precision_and_offset() {
        for (hl7, fhir) in [
            ("2026", "2026"),
            ("202612", "2026-12"),
            ("20261201", "2026-12-01"),
            ("20261201+0100", "2026-12-01"),
            ("2026120112", "2026-12-01T12:00:00+00:00"),
            ("202612011230", "2026-12-01T12:30:00+00:00"),
            ("20261201123000+0100", "2026-12-01T12:30:00+01:00"),
            ("20261201123000-0530", "2026-12-01T12:30:00-05:30"),
            ("20261201123000.1234+0000", "2026-12-01T12:30:00.1234+00:00"),
            ("20261201123000.5", "2026-12-01T12:30:00.5+00:00"),
            ("20240229", "2024-02-29"),
            ("20240315083012^S", "2024-03-15T08:30:12+00:00"),
            (" 20240315 ", "2024-03-15"),
        ] {
            assert_eq!(dt(hl7), fhir, "{hl7}");
        }
    }

    #[test]
    fn date_and_instant() {
        let d = Dtm::parse("20261201123000+0100").unwrap().unwrap();
        assert_eq!(d.to_fhir_date(), "2026-12-01");
        assert_eq!(
            d.to_fhir_instant(None).unwrap(),
            "2026-12-01T12:30:00+01:00"
        );
        let local = Dtm::parse("20261201123000").unwrap().unwrap();
        assert!(local.to_fhir_instant(None).is_err());
        assert_eq!(
            local.to_fhir_instant(parse_offset("Z")).unwrap(),
            "2026-12-01T12:30:00+00:00"
        );
        assert_eq!(
            local.to_fhir_datetime(parse_offset("-05:00")).unwrap(),
            "2026-12-01T12:30:00-05:00"
        );
        // No zone from the value or a default: not a valid dateTime, so an error that says how.
        let err = local.to_fhir_datetime(None).unwrap_err();
        assert!(err.contains("needs one"), "{err}");
        let date_only = Dtm::parse("20261201").unwrap().unwrap();
        assert_eq!(date_only.to_fhir_datetime(None).unwrap(), "2026-12-01");
        assert!(Dtm::parse("20261201")
            .unwrap()
            .unwrap()
            .to_fhir_instant(Some(0))
            .is_err());
        assert_eq!(
            Dtm::parse("202612").unwrap().unwrap().to_fhir_date(),
            "2026-12"
        );
    }

    #[test]
    fn blank_and_bad_values() {
        assert_eq!(Dtm::parse(""), Ok(None));
        assert_eq!(Dtm::parse("\"\""), Ok(None));
        for bad in [
            "2026120",
            "20261301",
            "20230229",
            "20261232",
            "2026120125",
            "202612011260",
            "20261201123000+2500",
            "20261201123000+01",
            "2026-12-01",
            "abcd",
            "20261201.5",
            "20261201123000.",
            "0000",
            "20261201123000.1234567890",
        ] {
            assert!(Dtm::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("+01:00"), Some(60));
        assert_eq!(parse_offset("-0530"), Some(-330));
        assert_eq!(parse_offset("+1400"), Some(840));
        assert_eq!(parse_offset("+1401"), None);
        assert_eq!(parse_offset("+1:00"), None);
        assert_eq!(parse_offset("0100"), None);
    }
}
