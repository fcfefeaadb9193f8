//! Time as the consent logic sees it: a UTC instant in seconds, FHIR `date`/`dateTime`
//! values read as the interval their precision covers, and periods.
//!
//! Owns comparison; the FHIR forms and the calendar are `assent_fhir::time`'s. Leaves out
//! reading the clock: callers pass `now` in.

use std::fmt;

use assent_fhir::time::{self, FhirDateTime};

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
    /// The FHIR `instant` in UTC to the second (`2024-01-01T00:00:00Z`); the open ends
    /// [`Timestamp::MIN`] and [`Timestamp::MAX`] print as the first and last instants `jiff`
    /// counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = time::Timestamp::from_second(self.0).unwrap_or(if self.0 < 0 {
            time::Timestamp::MIN
        } else {
            time::Timestamp::MAX
        });
        FhirDateTime::instant(at, 0).fmt(f)
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
/// at its precision, in whole seconds (a fraction of a second covers its second). Surrounding
/// white space is ignored; a time without a zone is read as UTC.
pub fn parse_interval(text: &str) -> Option<(Timestamp, Timestamp)> {
    let (start, end) = FhirDateTime::parse_assuming_utc(text.trim())
        .ok()?
        .range()
        .seconds();
    Some((Timestamp(start), Timestamp(end)))
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
