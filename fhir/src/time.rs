//! FHIR `date`, `dateTime` and `instant` values as written: the civil date and time at the
//! precision the writer gave (a year, a month, a day, a minute, a second, or a fraction of a
//! second) with the zone as written, read and printed in FHIR's forms, and the span of
//! instants a value covers at its precision (what search prefixes and periods compare).
//!
//! The calendar is `jiff`'s. Owns the FHIR forms only; leaves out reading the clock (callers
//! pass instants in) and what a search prefix does with a range (the callers').

use std::fmt;
use std::str::FromStr;

use jiff::civil::{self, Date, Time};
use jiff::{RoundMode, SignedDuration, TimestampRound, ToSpan, Unit};

/// The `jiff` types this module speaks, so its callers need no `jiff` of their own.
pub use jiff::{Timestamp, tz::Offset};

/// How much of a date-time the writer gave.
///
/// A value with a fraction of a second is an exact instant: it covers one nanosecond
/// whatever its number of digits, so a caller counting in milliseconds or seconds reads it as
/// the one tick that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `2024`
    Year,
    /// `2024-02`
    Month,
    /// `2024-02-29`
    Day,
    /// `2024-02-29T10:30Z` (search values may leave out the seconds)
    Minute,
    /// `2024-02-29T10:30:00Z`
    Second,
    /// `2024-02-29T10:30:00.5Z`, with this many digits (1 to 9)
    Fraction(u8),
}

/// The zone of a value with a time, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    /// `Z`
    Utc,
    /// `+hh:mm` or `-hh:mm` (`-00:00` is read as `+00:00`)
    Offset(Offset),
}

impl Zone {
    pub fn offset(self) -> Offset {
        match self {
            Zone::Utc => Offset::UTC,
            Zone::Offset(o) => o,
        }
    }
}

/// A FHIR `date`, `dateTime` or `instant`, kept at its precision with its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FhirDateTime {
    civil: civil::DateTime,
    precision: Precision,
    zone: Option<Zone>,
}

/// The instants `[start, end)` a value covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Why a text is not a FHIR date, dateTime or instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    text: String,
    reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a FHIR date or dateTime: {}",
            self.text, self.reason
        )
    }
}

impl std::error::Error for ParseError {}

impl FhirDateTime {
    /// Reads `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a date with `Thh:mm[:ss[.f…]]` and a zone
    /// (`Z` or `±hh:mm`, at most 14:00). The date must exist (`2023-02-29` does not); a leap
    /// second (`:60`) is read as `:59`, as `jiff` does.
    pub fn parse(text: &str) -> Result<FhirDateTime, ParseError> {
        parse(text, true)
    }

    /// As [`FhirDateTime::parse`], but a time without a zone is accepted: its
    /// [`FhirDateTime::zone`] is `None` and it is read as UTC.
    pub fn parse_assuming_utc(text: &str) -> Result<FhirDateTime, ParseError> {
        parse(text, false)
    }

    /// The FHIR `instant` of `at` in UTC (`…Z`), with `fraction_digits` (0 to 9) digits of
    /// the second; extra precision in `at` is cut off.
    pub fn instant(at: Timestamp, fraction_digits: u8) -> FhirDateTime {
        let digits = fraction_digits.min(9);
        let precision = if digits == 0 {
            Precision::Second
        } else {
            Precision::Fraction(digits)
        };
        FhirDateTime {
            civil: truncate(Offset::UTC.to_datetime(at), precision),
            precision,
            zone: Some(Zone::Utc),
        }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The zone as written; `None` for a date, and for a time read by
    /// [`FhirDateTime::parse_assuming_utc`] without one.
    pub fn zone(&self) -> Option<Zone> {
        self.zone
    }

    /// The civil date and time as written (missing parts are the first of their kind).
    pub fn civil(&self) -> civil::DateTime {
        self.civil
    }

    /// Whether this is a FHIR `instant`: seconds given, and a zone.
    pub fn is_instant(&self) -> bool {
        self.precision >= Precision::Second && self.zone.is_some()
    }

    /// The first instant covered (dates and zone-less times are read as UTC).
    pub fn start(&self) -> Timestamp {
        self.range().start
    }

    /// The instants this value covers at its precision: all of `2024` is
    /// `[2024-01-01T00:00Z, 2025-01-01T00:00Z)`. Values beyond what `jiff` counts (the last
    /// days of year 9999) are cut at [`Timestamp::MAX`].
    pub fn range(&self) -> Range {
        let offset = self.zone.map_or(Offset::UTC, Zone::offset);
        let at = |dt: civil::DateTime| offset.to_timestamp(dt).unwrap_or(Timestamp::MAX);
        let start = at(self.civil);
        let end = match self.precision {
            Precision::Year => self.civil.checked_add(1.year()).map(at),
            Precision::Month => self.civil.checked_add(1.month()).map(at),
            Precision::Day => self.civil.checked_add(1.day()).map(at),
            Precision::Minute => start.checked_add(SignedDuration::from_secs(60)),
            Precision::Second => start.checked_add(SignedDuration::from_secs(1)),
            Precision::Fraction(_) => start.checked_add(SignedDuration::from_nanos(1)),
        };
        Range {
            start,
            end: end.unwrap_or(Timestamp::MAX),
        }
    }
}

impl Range {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }

    /// The smallest range of whole milliseconds holding this one, as Unix milliseconds.
    pub fn millis(&self) -> (i64, i64) {
        (
            round(self.start, Unit::Millisecond, RoundMode::Floor).as_millisecond(),
            round(self.end, Unit::Millisecond, RoundMode::Ceil).as_millisecond(),
        )
    }

    /// The smallest range of whole seconds holding this one, as Unix seconds.
    pub fn seconds(&self) -> (i64, i64) {
        (
            round(self.start, Unit::Second, RoundMode::Floor).as_second(),
            round(self.end, Unit::Second, RoundMode::Ceil).as_second(),
        )
    }
}

fn round(at: Timestamp, unit: Unit, mode: RoundMode) -> Timestamp {
    at.round(TimestampRound::new().smallest(unit).mode(mode))
        .unwrap_or(at)
}

impl FromStr for FhirDateTime {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FhirDateTime::parse(text)
    }
}

impl fmt::Display for FhirDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.civil;
        write!(f, "{:04}", c.year())?;
        if self.precision >= Precision::Month {
            write!(f, "-{:02}", c.month())?;
        }
        if self.precision >= Precision::Day {
            write!(f, "-{:02}", c.day())?;
        }
        if self.precision >= Precision::Minute {
            write!(f, "T{:02}:{:02}", c.hour(), c.minute())?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", c.second())?;
        }
        if let Precision::Fraction(digits) = self.precision {
            let nanos = format!("{:09}", c.subsec_nanosecond());
            write!(f, ".{}", &nanos[..usize::from(digits)])?;
        }
        match self.zone {
            None => Ok(()),
            Some(Zone::Utc) => f.write_str("Z"),
            Some(Zone::Offset(o)) => {
                let secs = o.seconds();
                let sign = if secs < 0 { '-' } else { '+' };
                let secs = secs.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", secs / 3600, (secs / 60) % 60)
            }
        }
    }
}

/// `dt` without what `precision` leaves out.
fn truncate(dt: civil::DateTime, precision: Precision) -> civil::DateTime {
    let nanos = match precision {
        Precision::Fraction(digits) => {
            let unit = 10_i32.pow(9 - u32::from(digits));
            dt.subsec_nanosecond() / unit * unit
        }
        _ => 0,
    };
    dt.with().subsec_nanosecond(nanos).build().unwrap_or(dt)
}

fn parse(text: &str, zone_required: bool) -> Result<FhirDateTime, ParseError> {
    let fail = |reason| ParseError {
        text: text.to_owned(),
        reason,
    };
    let mut lex = Lexer(text.as_bytes());
    let year = lex.number(4).ok_or(fail("the year is four digits"))?;
    if year == 0 {
        return Err(fail("there is no year 0000"));
    }
    let mut precision = Precision::Year;
    let (mut month, mut day) = (1, 1);
    if lex.eat(b'-') {
        month = lex.number(2).ok_or(fail("the month is two digits"))?;
        precision = Precision::Month;
        if lex.eat(b'-') {
            day = lex.number(2).ok_or(fail("the day is two digits"))?;
            precision = Precision::Day;
        }
    }
    let date = Date::new(year as i16, month as i8, day as i8)
        .map_err(|_| fail("no such day in the calendar"))?;
    if precision < Precision::Day || !lex.eat(b'T') {
        return match lex.0 {
            [] => Ok(FhirDateTime {
                civil: date.to_datetime(Time::midnight()),
                precision,
                zone: None,
            }),
            _ => Err(fail("unexpected text after the date")),
        };
    }
    let hour = lex.number(2).ok_or(fail("the hour is two digits"))?;
    if !lex.eat(b':') {
        return Err(fail("the time is hh:mm[:ss]"));
    }
    let minute = lex.number(2).ok_or(fail("the minute is two digits"))?;
    let (mut second, mut nanos) = (0, 0);
    precision = Precision::Minute;
    if lex.eat(b':') {
        second = lex.number(2).ok_or(fail("the second is two digits"))?;
        precision = Precision::Second;
        if lex.eat(b'.') {
            let digits = lex.digits();
            if digits.is_empty() || digits.len() > 9 {
                return Err(fail("a fraction of a second is 1 to 9 digits"));
            }
            nanos = digits
                .iter()
                .chain(std::iter::repeat(&b'0'))
                .take(9)
                .fold(0, |n, d| n * 10 + i32::from(d - b'0'));
            precision = Precision::Fraction(digits.len() as u8);
        }
    }
    // A leap second is read as the second before it, as jiff reads RFC 3339.
    let second = if second == 60 { 59 } else { second };
    let time = Time::new(hour as i8, minute as i8, second as i8, nanos)
        .map_err(|_| fail("no such time of day"))?;
    let zone = match lex.0 {
        [] if zone_required => return Err(fail("a time has a zone (Z or ±hh:mm)")),
        [] => None,
        [b'Z'] => Some(Zone::Utc),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let mut z = Lexer(rest);
            let (h, colon, m) = (z.number(2), z.eat(b':'), z.number(2));
            let (Some(h), true, Some(m), []) = (h, colon, m, z.0) else {
                return Err(fail("the zone is Z or ±hh:mm"));
            };
            if m > 59 || h * 60 + m > 14 * 60 {
                return Err(fail("a zone's offset is at most 14:00"));
            }
            let secs = (h * 60 + m) * 60;
            let secs = if *sign == b'-' { -secs } else { secs };
            Some(Zone::Offset(
                Offset::from_seconds(secs).map_err(|_| fail("no such offset"))?,
            ))
        }
        _ => return Err(fail("the zone is Z or ±hh:mm")),
    };
    Ok(FhirDateTime {
        civil: date.to_datetime(time),
        precision,
        zone,
    })
}

/// The unread rest of a value.
struct Lexer<'t>(&'t [u8]);

impl Lexer<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        match self.0.split_first() {
            Some((b, rest)) if *b == byte => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Exactly `n` ASCII digits.
    fn number(&mut self, n: usize) -> Option<i32> {
        let digits = self.0.get(..n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[n..];
        Some(digits.iter().fold(0, |v, d| v * 10 + i32::from(d - b'0')))
    }

    /// As many ASCII digits as there are.
    fn digits(&mut self) -> &[u8] {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (digits, rest) = self.0.split_at(n);
        self.0 = rest;
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> (i64, i64) {
        FhirDateTime::parse(text).unwrap().range().millis()
    }

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn every_form_prints_as_written() {
        for text in [
            "2024",
            "2024-02",
            "2024-02-29",
            "2024-02-29T10:30Z",
            "2024-02-29T10:30:05Z",
            "2024-02-29T10:30:05.5Z",
            "2024-02-29T10:30:05.000Z",
            "2024-02-29T10:30:05.123456789+14:00",
            "1999-12-31T23:59:59-05:30",
            "0001-01-01",
            "9999-12-31T23:59:59Z",
        ] {
            let value = FhirDateTime::parse(text).unwrap();
            assert_eq!(value.to_string(), text);
            assert_eq!(text.parse::<FhirDateTime>(), Ok(value));
        }
        assert_eq!(
            FhirDateTime::parse("2024-01-01T00:00:00-00:00")
                .unwrap()
                .to_string(),
            "2024-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn precision_sets_the_range() {
        assert_eq!(
            ms("2024"),
            (at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            ms("2024-02"),
            (at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            ms("2024-12"),
            (at("2024-12-01T00:00:00Z"), at("2025-01-01T00:00:00Z"))
        );
        assert_eq!(
            ms("2024-02-29"),
            (at("2024-02-29T00:00:00Z"), at("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            ms("2024-02-29T10:30Z"),
            (at("2024-02-29T10:30:00Z"), at("2024-02-29T10:31:00Z"))
        );
        assert_eq!(
            ms("2024-12-31T23:30:00+01:00"),
            (at("2024-12-31T22:30:00Z"), at("2024-12-31T22:30:01Z"))
        );
        let s = at("2026-11-22T00:02:03.5Z");
        assert_eq!(ms("2026-11-22T01:02:03.5+01:00"), (s, s + 1));
        let s = at("2026-11-22T01:02:03.123Z");
        assert_eq!(ms("2026-11-22T01:02:03.1239Z"), (s, s + 1));
        let value = FhirDateTime::parse("2024-02-29T10:30:05.5Z").unwrap();
        assert_eq!(
            value.range().seconds(),
            (
                at("2024-02-29T10:30:05Z") / 1000,
                at("2024-02-29T10:30:06Z") / 1000
            )
        );
        assert_eq!(
            FhirDateTime::parse("1970-01-01").unwrap().start(),
            Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn ranges_before_1970_round_outwards() {
        let value = FhirDateTime::parse("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(value.range().millis(), (-500, -499));
        assert_eq!(value.range().seconds(), (-1, 0));
    }

    #[test]
    fn the_last_year_saturates() {
        let range = FhirDateTime::parse("9999").unwrap().range();
        assert_eq!(range.end, Timestamp::MAX);
        assert!(range.start < range.end);
    }

    #[test]
    fn leap_years_follow_the_gregorian_calendar() {
        assert!(FhirDateTime::parse("2000-02-29").is_ok());
        assert!(FhirDateTime::parse("2024-02-29").is_ok());
        assert!(FhirDateTime::parse("1900-02-29").is_err());
        assert!(FhirDateTime::parse("2023-02-29").is_err());
        assert!(FhirDateTime::parse("2024-04-31").is_err());
    }

    #[test]
    fn zones_and_instants() {
        let value = FhirDateTime::parse("2024-06-01T12:00:00-04:00").unwrap();
        assert_eq!(value.zone(), Some(Zone::Offset(Offset::constant(-4))));
        assert!(value.is_instant());
        assert_eq!(value.start(), "2024-06-01T16:00:00Z".parse().unwrap());
        assert!(!FhirDateTime::parse("2024-06-01").unwrap().is_instant());
        assert!(
            !FhirDateTime::parse("2024-06-01T12:00Z")
                .unwrap()
                .is_instant()
        );

        let lenient = FhirDateTime::parse_assuming_utc("2024-06-01T12:00:00").unwrap();
        assert_eq!(lenient.zone(), None);
        assert_eq!(lenient.start(), "2024-06-01T12:00:00Z".parse().unwrap());
        assert_eq!(lenient.to_string(), "2024-06-01T12:00:00");

        let leap = FhirDateTime::parse("2016-12-31T23:59:60Z").unwrap();
        assert_eq!(leap.to_string(), "2016-12-31T23:59:59Z");
    }

    #[test]
    fn instants_print_at_the_asked_precision() {
        let t = Timestamp::from_millisecond(1_795_568_844_123).unwrap();
        assert_eq!(
            FhirDateTime::instant(t, 3).to_string(),
            "2026-11-25T01:07:24.123Z"
        );
        assert_eq!(
            FhirDateTime::instant(t, 0).to_string(),
            "2026-11-25T01:07:24Z"
        );
        assert_eq!(
            FhirDateTime::instant(t, 1).to_string(),
            "2026-11-25T01:07:24.1Z"
        );
        let before = Timestamp::from_millisecond(-1).unwrap();
        assert_eq!(
            FhirDateTime::instant(before, 3).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn invalid_forms_are_refused() {
        for bad in [
            "",
            "24",
            "26-11-22",
            "0000",
            "2024-1",
            "2024-13",
            "2024-00",
            "2024-01-00",
            "2026-02-30",
            "2026-11-22-01",
            "2026-11-22 01:02:03Z",
            "2026-11T01:02:03Z",
            "2026-11-22T01:02:03",
            "2026-11-22T1:02:03Z",
            "2026-11-22T01Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T25:00:00Z",
            "2026-11-22T01:60:00Z",
            "2026-11-22T01:02:61Z",
            "2026-11-22T01:02:03.Z",
            "2026-11-22T01:02:03.x Z",
            "2026-11-22T01:02:03.1234567890Z",
            "2026-11-22T01:02:03+1:00",
            "2026-11-22T01:02:03+0100",
            "2026-11-22T01:02:03+14:01",
            "2026-11-22T01:02:03+15:00",
            "2026-11-22T01:02:03+01:60",
            "2026-11-22T01:02:03Zx",
            " 2026",
            "yesterday",
        ] {
            assert!(FhirDateTime::parse(bad).is_err(), "{bad}");
        }
        assert!(FhirDateTime::parse_assuming_utc("2026-11-22T01:02:03x").is_err());
    }
}
