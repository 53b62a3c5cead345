//! FHIR `date`, `dateTime` and `instant` values as millisecond ranges.
//!
//! FHIR dates have a precision: `2020` means the whole year, `2020-03-01T10:00:00+01:00` one
//! second. Both validation (is this a well-formed `birthDate`?) and search (`birthdate=ge2020`)
//! need the same reading, so one parser turns a value into an inclusive `[low, high]` range of
//! Unix milliseconds, UTC. Values without a zone (dates, and lenient search values) are read as
//! UTC, which is what a server without a configured zone can do consistently.
//!
//! Hand-written rather than through `time`'s parsers because FHIR's partial dates and the
//! search prefixes need the precision, which format-description parsers do not report.

/// An inclusive range of Unix milliseconds (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First millisecond covered.
    pub low: i64,
    /// Last millisecond covered.
    pub high: i64,
}

/// Which FHIR primitive a value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    Date,
    /// A date, or a date with `Thh:mm:ss[.fff]` and a required zone.
    DateTime,
    /// Date and time to the second at least, with a zone.
    Instant,
}

const MS_PER_DAY: i64 = 86_400_000;

/// Smallest and largest values used for open-ended periods.
pub const MIN: i64 = i64::MIN / 4;
/// See [`MIN`].
pub const MAX: i64 = i64::MAX / 4;

/// Parses a FHIR value of `kind` strictly (as R4's regular expressions and the calendar allow).
pub fn parse(s: &str, kind: Kind) -> Option<Range> {
    let p = parse_parts(s, false)?;
    match kind {
        Kind::Date if p.time.is_some() => None,
        Kind::Instant if p.time.is_none() || p.month.is_none() || p.day.is_none() => None,
        _ => Some(p.range()),
    }
}

/// Parses a search value leniently: any precision, `hh:mm` allowed, zone optional (UTC).
pub fn parse_search(s: &str) -> Option<Range> {
    parse_parts(s, true).map(|p| p.range())
}

/// Formats milliseconds as an instant, `2024-05-01T12:34:56.789Z`.
pub fn format_instant(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, rem) = (rem / 3_600_000, rem % 3_600_000);
    let (mi, rem) = (rem / 60_000, rem % 60_000);
    let (s, milli) = (rem / 1000, rem % 1000);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z");
    }
    // Written digit by digit: every write stamps meta.lastUpdated, and `format!` cost
    // ~2,800 instructions a call.
    let mut out = [0u8; 24];
    let fields: [(i64, usize, usize); 7] = [
        (y, 0, 4),
        (i64::from(m), 5, 2),
        (i64::from(d), 8, 2),
        (h, 11, 2),
        (mi, 14, 2),
        (s, 17, 2),
        (milli, 20, 3),
    ];
    for (value, at, width) in fields {
        let mut v = value;
        for slot in out[at..at + width].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = sep;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(MAX),
        Err(_) => 0,
    }
}

struct Parts {
    year: i64,
    month: Option<u32>,
    day: Option<u32>,
    /// hour, minute, second (None: minutes precision), millis and their precision (digits).
    time: Option<Time>,
    /// Zone offset in minutes east of UTC.
    offset_min: i64,
}

struct Time {
    hour: u32,
    minute: u32,
    second: Option<u32>,
    fraction_ms: u32,
    fraction_digits: usize,
}

impl Parts {
    fn range(&self) -> Range {
        let month = self.month.unwrap_or(1);
        let day = self.day.unwrap_or(1);
        let start_day = days_from_civil(self.year, month, day);
        let offset = self.offset_min * 60_000;
        match &self.time {
            None => {
                let end_day = match (self.month, self.day) {
                    (None, _) => days_from_civil(self.year + 1, 1, 1),
                    (Some(12), None) => days_from_civil(self.year + 1, 1, 1),
                    (Some(m), None) => days_from_civil(self.year, m + 1, 1),
                    (Some(_), Some(_)) => start_day + 1,
                };
                Range {
                    low: start_day * MS_PER_DAY - offset,
                    high: end_day * MS_PER_DAY - 1 - offset,
                }
            }
            Some(t) => {
                let base = start_day * MS_PER_DAY
                    + i64::from(t.hour) * 3_600_000
                    + i64::from(t.minute) * 60_000
                    - offset;
                let (low, span) = match t.second {
                    None => (base, 60_000),
                    Some(s) => {
                        let low = base + i64::from(s) * 1000 + i64::from(t.fraction_ms);
                        let span = match t.fraction_digits {
                            0 => 1000,
                            1 => 100,
                            2 => 10,
                            _ => 1,
                        };
                        (low, span)
                    }
                };
                Range {
                    low,
                    high: low + span - 1,
                }
            }
        }
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let slice = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn parse_parts(s: &str, lenient: bool) -> Option<Parts> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    if year == 0 {
        return None;
    }
    let mut p = Parts {
        year: i64::from(year),
        month: None,
        day: None,
        time: None,
        offset_min: 0,
    };
    let mut i = 4;
    if b.get(i) == Some(&b'-') {
        let m = digits(b, i + 1, 2)?;
        if !(1..=12).contains(&m) {
            return None;
        }
        p.month = Some(m);
        i += 3;
        if b.get(i) == Some(&b'-') {
            let d = digits(b, i + 1, 2)?;
            if d < 1 || d > days_in_month(p.year, m) {
                return None;
            }
            p.day = Some(d);
            i += 3;
        }
    }
    if i == b.len() {
        return Some(p);
    }
    // A time needs a full date.
    if b[i] != b'T' || p.day.is_none() {
        return None;
    }
    i += 1;
    let hour = digits(b, i, 2)?;
    if b.get(i + 2) != Some(&b':') {
        return None;
    }
    let minute = digits(b, i + 3, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    i += 5;
    let mut t = Time {
        hour,
        minute,
        second: None,
        fraction_ms: 0,
        fraction_digits: 0,
    };
    if b.get(i) == Some(&b':') {
        let sec = digits(b, i + 1, 2)?;
        if sec > 60 {
            return None;
        }
        // A leap second is read as the last millisecond of the minute.
        t.second = Some(sec.min(59));
        i += 3;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return None;
            }
            let mut ms = 0u32;
            for k in 0..3 {
                ms = ms * 10
                    + b.get(start + k)
                        .filter(|_| k < n)
                        .map_or(0, |c| u32::from(c - b'0'));
            }
            t.fraction_ms = ms;
            t.fraction_digits = n;
        }
    } else if !lenient {
        return None;
    }
    p.time = Some(t);
    match b.get(i) {
        None if lenient => {}
        None => return None,
        Some(b'Z') => {
            i += 1;
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)?;
            if b.get(i + 3) != Some(&b':') {
                return None;
            }
            let om = digits(b, i + 4, 2)?;
            if oh > 14 || om > 59 || (oh == 14 && om != 0) {
                return None;
            }
            let off = i64::from(oh * 60 + om);
            p.offset_min = if sign == b'-' { -off } else { off };
            i += 6;
        }
        Some(_) => return None,
    }
    if i != b.len() {
        return None;
    }
    Some(p)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn partial_dates_are_ranges() {
        let y = parse("2020", Kind::Date).unwrap();
        assert_eq!(format_instant(y.low), "2020-01-01T00:00:00.000Z");
        assert_eq!(format_instant(y.high), "2020-12-31T23:59:59.999Z");
        let m = parse("2020-02", Kind::Date).unwrap();
        assert_eq!(format_instant(m.high), "2020-02-29T23:59:59.999Z");
        let d = parse("1969-12-31", Kind::Date).unwrap();
        assert_eq!(d.low, -MS_PER_DAY);
        let t = parse("2020-03-01T10:00:00+01:00", Kind::DateTime).unwrap();
        assert_eq!(format_instant(t.low), "2020-03-01T09:00:00.000Z");
        assert_eq!(t.high - t.low, 999);
        let f = parse("2020-03-01T10:00:00.12Z", Kind::Instant).unwrap();
        assert_eq!(format_instant(f.low), "2020-03-01T10:00:00.120Z");
        assert_eq!(f.high - f.low, 9);
    }

    #[test]
    fn strict_formats_are_enforced() {
        for bad in [
            "",
            "20",
            "2020-13",
            "2020-02-30",
            "2021-02-29",
            "0000",
            "2020-1-1",
            "2020-01-01T10:00Z",
            "2020-01-01T10:00:00",
            "2020-01-01T24:00:00Z",
            "2020-01-01 10:00:00Z",
            "2020-01-01T10:00:00+1:00",
            "2020-01-01T10:00:00.Z",
            "2020-01T10:00:00Z",
            "2020-01-01Z",
        ] {
            assert!(parse(bad, Kind::DateTime).is_none(), "{bad}");
        }
        assert!(parse("2020-01-01T10:00:00Z", Kind::Date).is_none());
        assert!(parse("2020-01-01", Kind::Instant).is_none());
        assert!(parse("2024-02-29", Kind::Date).is_some());
        assert!(parse("2020-01-01T10:00:60-14:00", Kind::Instant).is_some());
        assert!(parse_search("2020-01-01T10:00").is_some());
        assert!(parse_search("2020-01-01T10:00:00").is_some());
    }

    #[test]
    fn format_round_trips() {
        for ms in [
            0,
            1,
            -1,
            951_782_400_000,
            1_700_000_000_123,
            253_402_300_799_999,
        ] {
            let s = format_instant(ms);
            assert_eq!(parse(&s, Kind::Instant).unwrap().low, ms, "{s}");
        }
    }

    #[test]
    fn instants_written_by_hand_match_format() {
        let reference = |ms: i64| {
            let days = ms.div_euclid(MS_PER_DAY);
            let rem = ms.rem_euclid(MS_PER_DAY);
            let (y, m, d) = civil_from_days(days);
            let (h, mi, s, milli) = (
                rem / 3_600_000,
                rem / 60_000 % 60,
                rem / 1000 % 60,
                rem % 1000,
            );
            format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
        };
        // A step that is prime in ms walks every field through its digits, from before
        // 0000-01-01 to after 9999-12-31 (years outside 0-9999 take `format!` still).
        let mut ms = -62_230_000_000_000;
        while ms < 253_470_000_000_000 {
            assert_eq!(format_instant(ms), reference(ms), "{ms}");
            ms += 9_999_991_013;
        }
    }
}
