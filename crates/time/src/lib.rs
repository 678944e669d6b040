//! Time as every Retort service counts it. Usage events, budgets' calendar windows, price dates and
//! every timestamp a person reads go through these few functions, so all services agree on what a
//! day, an ISO week and a month are (UTC), and nobody writes calendar arithmetic by hand again: the
//! date arithmetic is `jiff`'s. Times are epoch milliseconds (`i64`), days are days since 1970-01-01.
//! This crate never reads a clock other than [`now_ms`] and never does I/O.
use jiff::{
    Timestamp, ToSpan,
    civil::{Date, Weekday},
};

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, now (0 if the clock reads before 1970).
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond().max(0)
}

/// The UTC day (days since 1970-01-01) that `ms` falls in.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

fn date_of_day(day: i64) -> Option<Date> {
    let epoch = Date::constant(1970, 1, 1);
    epoch.checked_add(i32::try_from(day).ok()?.days()).ok()
}

fn day_of_date(d: Date) -> i64 {
    i64::from(
        Date::constant(1970, 1, 1)
            .until(d)
            .map(|s| s.get_days())
            .unwrap_or(0),
    )
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date; `None` unless it is exactly such a date and a real
/// one (`2025-02-31` is refused).
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    let d: Date = s.parse().ok()?;
    Some(day_of_date(d))
}

/// (year, month 1–12, day 1–31) of a day since the epoch.
pub fn civil(day: i64) -> (i64, i64, i64) {
    match date_of_day(day) {
        Some(d) => (
            i64::from(d.year()),
            i64::from(d.month()),
            i64::from(d.day()),
        ),
        None => (1970, 1, 1),
    }
}

/// `YYYY-MM-DD` (UTC) of an epoch-millisecond time.
pub fn day_label(ms: i64) -> String {
    let (y, m, d) = civil(day_of(ms));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:00` (UTC).
pub fn hour_label(ms: i64) -> String {
    format!(
        "{} {:02}:00",
        day_label(ms),
        ms.rem_euclid(DAY_MS) / HOUR_MS
    )
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// RFC 3339 with milliseconds, UTC: `2025-03-01T05:01:01.001Z`.
pub fn iso(ms: i64) -> String {
    timestamp(ms).strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// What a person reads: `2025-03-01 05:01:01 UTC`.
pub fn human(ms: i64) -> String {
    timestamp(ms).strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration a person reads: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`, `3 d 04 h`.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < SECOND_MS {
        format!("{ms} ms")
    } else if ms < MINUTE_MS {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < HOUR_MS {
        format!("{} min {:02} s", ms / MINUTE_MS, ms % MINUTE_MS / SECOND_MS)
    } else if ms < DAY_MS {
        format!("{} h {:02} min", ms / HOUR_MS, ms % HOUR_MS / MINUTE_MS)
    } else {
        format!("{} d {:02} h", ms / DAY_MS, ms % DAY_MS / HOUR_MS)
    }
}

pub fn hour_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

pub fn hour_ceil(ms: i64) -> i64 {
    let f = hour_floor(ms);
    if f == ms { f } else { f + HOUR_MS }
}

pub fn day_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

pub fn day_ceil(ms: i64) -> i64 {
    let f = day_floor(ms);
    if f == ms { f } else { f + DAY_MS }
}

/// The Monday (UTC day number) of the ISO week that `day` falls in.
pub fn iso_week_start(day: i64) -> i64 {
    match date_of_day(day) {
        Some(d) => day - i64::from(d.weekday().since(Weekday::Monday)),
        None => day,
    }
}

/// A point in time a person typed: `7d`, `24h`, `30m`, `2w` (that long before `now`),
/// `YYYY-MM-DD` (its start, UTC), an RFC 3339 timestamp, or epoch milliseconds.
pub fn parse_time(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(day) = parse_day(s) {
        return Some(day * DAY_MS);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t.as_millisecond());
    }
    let (num, unit) = s.split_at(s.len() - 1);
    let n: i64 = num.parse().ok()?;
    let per = match unit {
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => return None,
    };
    Some(now - n.checked_mul(per)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_through_dates_and_labels() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(parse_day("2000-03-01"), Some(11_017));
        assert_eq!(civil(11_017), (2000, 3, 1));
        let ms = parse_day("2025-03-01").unwrap() * DAY_MS + 5 * HOUR_MS + 61_001;
        assert_eq!(day_label(ms), "2025-03-01");
        assert_eq!(hour_label(ms), "2025-03-01 05:00");
        assert_eq!(iso(ms), "2025-03-01T05:01:01.001Z");
        assert_eq!(human(ms), "2025-03-01 05:01:01 UTC");
        assert_eq!(day_label(-1), "1969-12-31");
    }

    #[test]
    fn only_real_dates_in_the_exact_shape_parse() {
        for bad in [
            "2025-02-31",
            "2025-13-01",
            "2025-1-01",
            "25-01-01",
            "2025/01/01",
            "",
            "2025-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert!(parse_day("2024-02-29").is_some());
        assert_eq!(parse_day("2025-02-29"), None);
    }

    #[test]
    fn calendar_windows() {
        let thu = parse_day("2026-01-01").unwrap(); // a Thursday, ISO week 1 of 2026
        assert_eq!(iso_week_start(thu), parse_day("2025-12-29").unwrap());
        assert_eq!(hour_ceil(HOUR_MS + 1), 2 * HOUR_MS);
        assert_eq!(hour_floor(HOUR_MS + 1), HOUR_MS);
        assert_eq!(day_ceil(DAY_MS), DAY_MS);
        assert_eq!(day_floor(DAY_MS + 5), DAY_MS);
    }

    #[test]
    fn times_people_type() {
        assert_eq!(parse_time("7d", 10 * DAY_MS), Some(3 * DAY_MS));
        assert_eq!(parse_time("2h", 10 * HOUR_MS), Some(8 * HOUR_MS));
        assert_eq!(parse_time("1970-01-02", 0), Some(DAY_MS));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0), Some(1000));
        assert_eq!(parse_time("x", 0), None);
        assert_eq!(parse_time("99999999999999999999d", 0), None);
        assert_eq!(human_duration(850), "850 ms");
        assert_eq!(human_duration(65_000), "1 min 05 s");
        assert_eq!(human_duration(2 * DAY_MS + HOUR_MS), "2 d 01 h");
    }
}
