//! Receipt time: UTC milliseconds since the epoch, written as a FHIR `instant`
//! (`2026-11-22T01:07:24.123Z`) and read back from that exact form.
//!
//! Owns the conversion only. Leaves out reading the clock: the gateway passes the time in.

/// `time_ms` as `YYYY-MM-DDThh:mm:ss.sssZ`.
pub fn format_instant(time_ms: i64) -> String {
    let seconds = time_ms.div_euclid(1000);
    let millis = time_ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Reads what [`format_instant`] writes; `None` for any other form.
pub fn parse_instant(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let out = ((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + ms;
    (format_instant(out) == text).then_some(out)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
            "",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
