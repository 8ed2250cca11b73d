//! Calendar arithmetic for the dates the simulator shows: M3 `RGDT`/`LMDT`
//! dates and Mongoose `RecordDate` timestamps. The project carries no date
//! crate, and proleptic-Gregorian UTC without leap seconds is all the gateway
//! data needs, so the two classic conversions are written out here.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    // Both values are small and positive by construction.
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-03-14T09:26:53.000`: the zone-less timestamp the IDO layer returns.
pub(crate) fn format_timestamp(ms: i64) -> String {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let rem = ms.rem_euclid(MS_PER_DAY);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Parses the timestamp spellings a filter literal may use: `2026-03-14`,
/// `2026-03-14 09:26`, `2026-03-14T09:26:53.5`, `20260314 09:26:53.000`
/// (Mongoose's own), optionally followed by `Z`. Returns epoch milliseconds.
pub(crate) fn parse_timestamp(text: &str) -> Option<i64> {
    let mut cur = Cursor {
        bytes: text.trim().as_bytes(),
        pos: 0,
    };
    let year = cur.digits(4)?;
    let dashed = cur.eat(b'-');
    let month = cur.digits(2)?;
    if dashed && !cur.eat(b'-') {
        return None;
    }
    let day = cur.digits(2)?;
    let (month, day) = (month as u32, day as u32);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms_of_day = 0i64;
    if cur.eat(b'T') || cur.eat(b' ') {
        let hour = cur.digits(2)?;
        if !cur.eat(b':') {
            return None;
        }
        let minute = cur.digits(2)?;
        let mut second = 0;
        let mut millis = 0;
        if cur.eat(b':') {
            second = cur.digits(2)?;
            if cur.eat(b'.') {
                let start = cur.pos;
                let mut scale = 100;
                while let Some(d) = cur.peek_digit() {
                    millis += d * scale;
                    scale /= 10;
                    cur.pos += 1;
                }
                if cur.pos == start {
                    return None;
                }
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        ms_of_day = ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    }
    cur.eat(b'Z');
    if cur.pos != cur.bytes.len() {
        return None;
    }
    Some(days_from_civil(year, month, day) * MS_PER_DAY + ms_of_day)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.bytes.get(self.pos) == Some(&byte);
        self.pos += usize::from(hit);
        hit
    }

    fn peek_digit(&self) -> Option<i64> {
        self.bytes
            .get(self.pos)
            .filter(|b| b.is_ascii_digit())
            .map(|b| i64::from(b - b'0'))
    }

    fn digits(&mut self, count: usize) -> Option<i64> {
        let mut value = 0;
        for _ in 0..count {
            value = value * 10 + self.peek_digit()?;
            self.pos += 1;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        for days in [-1000, 0, 59, 60, 11_016, 20_454, 20_513, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn timestamps_format_and_parse() {
        let ms = days_from_civil(2026, 3, 14) * MS_PER_DAY + 9 * 3_600_000 + 26 * 60_000 + 53_007;
        assert_eq!(format_timestamp(ms), "2026-03-14T09:26:53.007");
        assert_eq!(parse_timestamp("2026-03-14T09:26:53.007"), Some(ms));
        assert_eq!(parse_timestamp("20260314 09:26:53.007"), Some(ms));
        assert_eq!(parse_timestamp("2026-03-14 09:26:53.0071Z"), Some(ms));
        assert_eq!(
            parse_timestamp("2026-03-14"),
            Some(days_from_civil(2026, 3, 14) * MS_PER_DAY)
        );
        assert_eq!(
            parse_timestamp("2026-03-14 09:26").map(|v| v % 1000),
            Some(0)
        );
        for bad in [
            "",
            "2026",
            "2026-02-30",
            "2026-13-01",
            "2026-03-14T25:00",
            "2026-03-14T09",
            "2026-03-14T09:26:53.",
            "2026-0314",
            "2026-03-14 junk",
            "２０２６-03-14",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }
}
