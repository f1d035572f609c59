//! Wall-clock times operators write (`scheduled_at: 2026-11-21T14:00:00+01:00`), as unix
//! milliseconds.
//!
//! Only scheduling uses the wall clock; the lease and fencing use the monotonic clock
//! ([`crate::Millis`]), which cannot jump. Parsing is hand-written because the core takes no
//! dependencies beyond serde.

/// Parses an RFC 3339 / ISO 8601 date-time with a time zone (`Z` or `±HH:MM`, optional fraction,
/// `T` or a space between date and time). `None` if malformed or without a zone.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_secs = match s.get(i..)? {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(&zone[..1], "+" | "-") && &zone[3..4] == ":" => {
            let h: i64 = zone[1..3].parse().ok()?;
            let m: i64 = zone[4..6].parse().ok()?;
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_patroni_accepts() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_ms("2000-03-01T00:00:00.250+00:00"), Some(951_868_800_250));
        assert_eq!(parse_rfc3339_ms("2026-11-21 14:30:00-02:30"), parse_rfc3339_ms("2026-11-21T17:00:00Z"));
        assert_eq!(parse_rfc3339_ms("2026-11-21T17:00:00Z"), Some(1_795_280_400_000));
    }

    #[test]
    fn a_time_zone_is_required() {
        assert_eq!(parse_rfc3339_ms("2026-11-21T14:30:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-21T14:30:00+0100"), None);
        assert_eq!(parse_rfc3339_ms("tomorrow at noon"), None);
        assert_eq!(parse_rfc3339_ms("2026-13-21T14:30:00Z"), None);
    }
}
