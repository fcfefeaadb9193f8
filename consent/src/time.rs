//! Time as the consent logic sees it: a UTC instant in seconds, FHIR `date`/`dateTime`
//! values read as the interval their precision covers, and periods.
//!
//! Owns parsing and comparison. Leaves out reading the clock: callers pass `now` in.

use std::fmt;

/// A UTC instant, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub fn from_unix_seconds(seconds: i64) -> Self {
        Timestamp(seconds)
    }

    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// Parses a FHIR `instant` or `dateTime` to the first second it covers (`2024` is
    /// 2024-01-01T00:00:00Z). Values without a time zone are read as UTC.
    pub fn parse(text: &str) -> Option<Timestamp> {
        parse_interval(text).map(|(start, _)| start)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        )
    }
}

/// A closed-open interval of time `[start, end)`; either side may be open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Period {
    pub const ALWAYS: Period = Period {
        start: Timestamp::MIN,
        end: Timestamp::MAX,
    };

    /// A FHIR `Period` from its `start` and `end` texts. Following FHIR, the end includes
    /// every instant its precision covers: a period ending `2024-03-31` covers all of that day.
    /// Returns `None` when a present bound cannot be read.
    pub fn from_fhir(start: Option<&str>, end: Option<&str>) -> Option<Period> {
        let start = match start {
            Some(s) => parse_interval(s)?.0,
            None => Timestamp::MIN,
        };
        let end = match end {
            Some(e) => parse_interval(e)?.1,
            None => Timestamp::MAX,
        };
        Some(Period { start, end })
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }

    /// Whether the two intervals share any instant.
    pub fn overlaps(&self, other: &Period) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// The interval `[first, after_last)` covered by a FHIR `date`, `dateTime` or `instant`
/// at its precision.
pub fn parse_interval(text: &str) -> Option<(Timestamp, Timestamp)> {
    let b = text.trim().as_bytes();
    let year = digits(b, 0, 4)?;
    if b.len() == 4 {
        let s = days_from_civil(year, 1, 1);
        let e = days_from_civil(year + 1, 1, 1);
        return Some((day_start(s), day_start(e)));
    }
    if b.get(4) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    if !(1..=12).contains(&month) {
        return None;
    }
    if b.len() == 7 {
        let (ny, nm) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        return Some((
            day_start(days_from_civil(year, month, 1)),
            day_start(days_from_civil(ny, nm, 1)),
        ));
    }
    if b.get(7) != Some(&b'-') {
        return None;
    }
    let day = digits(b, 8, 2)?;
    if !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some((day_start(days), day_start(days + 1)));
    }
    if b.get(10) != Some(&b'T') {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(b, 14, 2)?;
    if b.get(16) != Some(&b':') {
        return None;
    }
    let second = digits(b, 17, 2)?;
    if hour > 24 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i) {
        None => 0,
        Some(b'Z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = digits(b, i + 1, 2)?;
            let om = digits(b, i + 4, 2)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let t = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((Timestamp(t), Timestamp(t + 1)))
}

fn day_start(days: i64) -> Timestamp {
    Timestamp(days * 86_400)
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    let mut v = 0i64;
    for c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the usual era-based computation).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_sets_the_interval() {
        let (s, e) = parse_interval("2024-02").unwrap();
        assert_eq!(s.to_string(), "2024-02-01T00:00:00Z");
        assert_eq!(e.to_string(), "2024-03-01T00:00:00Z");
        let (s, e) = parse_interval("2024-12-31T23:30:00+01:00").unwrap();
        assert_eq!(s.to_string(), "2024-12-31T22:30:00Z");
        assert_eq!(e.unix_seconds() - s.unix_seconds(), 1);
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert!(parse_interval("2024-13").is_none());
        assert!(parse_interval("yesterday").is_none());
    }

    #[test]
    fn period_end_includes_its_whole_day() {
        let p = Period::from_fhir(Some("2024-01-01"), Some("2024-03-31")).unwrap();
        assert!(p.contains(Timestamp::parse("2024-03-31T23:59:59Z").unwrap()));
        assert!(!p.contains(Timestamp::parse("2024-04-01T00:00:00Z").unwrap()));
        assert!(!p.contains(Timestamp::parse("2023-12-31T23:59:59Z").unwrap()));
    }
}
