//! Dates and date-times as text: `2026-01-05`, `2026-01-05T10:30:00Z`,
//! `2026-01-05 10:30:00+02:00`, with optional fractional seconds. Text without
//! an offset is UTC.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(s: &[u8], n: usize) -> Option<i64> {
    if s.len() < n || !s[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s[..n].iter().fold(0, |acc, d| acc * 10 + (d - b'0') as i64))
}

/// Parses a date or date-time into milliseconds since the Unix epoch.
pub fn parse(text: &str) -> Option<i64> {
    let s = text.trim().as_bytes();
    let y = digits(s, 4)?;
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return None;
    }
    let m = digits(&s[5..], 2)?;
    let d = digits(s.get(8..)?, 2)?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let day_ms = days_from_civil(y, m, d) * 86_400_000;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(day_ms);
    }
    if !matches!(rest[0], b'T' | b't' | b' ') {
        return None;
    }
    let t = &rest[1..];
    let h = digits(t, 2)?;
    if t.get(2) != Some(&b':') {
        return None;
    }
    let mi = digits(&t[3..], 2)?;
    let mut i = 5;
    let mut sec = 0;
    let mut ms = 0;
    if t.get(i) == Some(&b':') {
        sec = digits(t.get(i + 1..)?, 2)?;
        i += 3;
        if t.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while t.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let frac = &t[start..i];
            if frac.is_empty() {
                return None;
            }
            // Milliseconds: the first three digits, padded.
            ms = (0..3).fold(0, |acc, k| {
                acc * 10 + frac.get(k).map_or(0, |d| (d - b'0') as i64)
            });
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset_ms = match &t[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), tz @ ..] => {
            let oh = digits(tz, 2)?;
            let om = match &tz[2..] {
                [] => 0,
                [b':', more @ ..] if more.len() == 2 => digits(more, 2)?,
                more if more.len() == 2 => digits(more, 2)?,
                _ => return None,
            };
            let off = (oh * 60 + om) * 60_000;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    Some(day_ms + ((h * 60 + mi) * 60 + sec) * 1000 + ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_dates_and_date_times() {
        assert_eq!(parse("1970-01-01"), Some(0));
        assert_eq!(parse("2026-11-29"), Some(1_795_910_400_000));
        assert_eq!(parse("2026-11-29T00:00:01Z"), Some(1_795_910_401_000));
        assert_eq!(parse("2026-11-29 01:00:00+01:00"), Some(1_795_910_400_000));
        assert_eq!(parse("2026-11-29T00:00:00.25Z"), Some(1_795_910_400_250));
        assert_eq!(parse("2024-02-29"), Some(1_709_164_800_000));
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2023-02-29",
            "2026-11-29T25:00",
            "2026-11-29X",
            "29/11/2026",
            "2026-11-29T10:00+1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
