//! Receipt time: UTC milliseconds since the epoch, written as a FHIR `instant`
//! (`2026-11-22T01:07:24.123Z`) and read back from that exact form.
//!
//! Owns the receipt's one form; the calendar is `assent_fhir::time`'s. Leaves out reading
//! the clock: the gateway passes the time in.

use assent_fhir::time::{FhirDateTime, Precision, Timestamp, Zone};

/// `time_ms` as `YYYY-MM-DDThh:mm:ss.sssZ` (times beyond the years 0001 to 9999 print as
/// the nearest instant `jiff` counts).
pub fn format_instant(time_ms: i64) -> String {
    let at = Timestamp::from_millisecond(time_ms).unwrap_or(if time_ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    FhirDateTime::instant(at, 3).to_string()
}

/// Reads what [`format_instant`] writes; `None` for any other form.
pub fn parse_instant(text: &str) -> Option<i64> {
    let value = FhirDateTime::parse(text).ok()?;
    (value.precision() == Precision::Fraction(3) && value.zone() == Some(Zone::Utc))
        .then(|| value.start().as_millisecond())
        .filter(|ms| format_instant(*ms) == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_instants() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_568_844_123, "2026-11-25T01:07:24.123Z"),
            (951_782_400_001, "2000-02-29T00:00:00.001Z"),
        ] {
            assert_eq!(format_instant(ms), text);
            assert_eq!(parse_instant(text), Some(ms));
        }
        for bad in [
            "2026-02-30T00:00:00.000Z",
            "2026-11-22T01:07:24Z",
            "2026-11-22 01:07:24.000Z",
            "2016-12-31T23:59:60.000Z",
            "2026-11-22T01:07:24.000+00:00",
            "",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
