//! Event times are milliseconds since the Unix epoch (UTC), as `i64`. This module renders
//! them for humans without pulling a date library into the bottom crate.

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2023-10-01 00:15:00Z`; milliseconds are shown only when not zero.
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if millis == 0 {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{millis:03}Z")
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (the ISO form BitMEX and most venues use) to ms.
pub fn parse_iso_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let rest = &text[19..];
    let (frac, z) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            let first3: String = r[..digits].chars().chain("000".chars()).take(3).collect();
            (first3.parse::<i64>().ok()?, &r[digits..])
        }
        None => (0, rest),
    };
    if z != "Z" {
        return None;
    }
    // days_from_civil, the inverse of civil_from_days.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(1_696_118_400_000), "2023-10-01 00:00:00Z");
        assert_eq!(format_utc(1_709_208_000_123), "2024-02-29 12:00:00.123Z");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59.999Z");
    }

    #[test]
    fn parses_iso_and_round_trips() {
        assert_eq!(parse_iso_utc("2021-04-15T00:01:00.000Z"), Some(1_618_444_860_000));
        assert_eq!(parse_iso_utc("2023-10-01T00:00:00Z"), Some(1_696_118_400_000));
        assert_eq!(parse_iso_utc("2024-02-29T12:00:00.123Z"), Some(1_709_208_000_123));
        for bad in ["", "2021-04-15", "2021-13-01T00:00:00Z", "2021-04-15T00:00:00", "2021-04-15T00:00:00.Z"] {
            assert_eq!(parse_iso_utc(bad), None, "{bad:?}");
        }
    }
}
