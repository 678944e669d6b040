//! Epoch-millisecond helpers: bucket boundaries, UTC date labels and `--since` parsing.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn hour_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

pub fn day_floor(ms: i64) -> i64 {
    ms - ms.rem_euclid(DAY_MS)
}

pub fn day_ceil(ms: i64) -> i64 {
    let f = day_floor(ms);
    if f == ms { f } else { f + DAY_MS }
}

pub fn hour_ceil(ms: i64) -> i64 {
    let f = hour_floor(ms);
    if f == ms { f } else { f + HOUR_MS }
}

/// (year, month, day) of a day number (days since 1970-01-01).
pub fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` (UTC) of an epoch-millisecond time.
pub fn day_label(ms: i64) -> String {
    let (y, m, d) = civil(ms.div_euclid(DAY_MS));
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

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso(ms: i64) -> String {
    let r = ms.rem_euclid(DAY_MS);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        day_label(ms),
        r / HOUR_MS,
        r / 60_000 % 60,
        r / 1000 % 60,
        r % 1000
    )
}

/// A point in time: `7d`, `24h`, `30m` (that long before `now`), `YYYY-MM-DD`, or epoch ms.
pub fn parse_time(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(day) = retort_pricing::parse_day(s) {
        return Some(day * DAY_MS);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let (num, unit) = s.split_at(s.len() - 1);
    let n: i64 = num.parse().ok()?;
    let per = match unit {
        "m" => 60_000,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => return None,
    };
    Some(now - n * per)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_parsing() {
        assert_eq!(day_label(0), "1970-01-01");
        let ms = retort_pricing::parse_day("2025-03-01").unwrap() * DAY_MS + 5 * HOUR_MS + 61_001;
        assert_eq!(day_label(ms), "2025-03-01");
        assert_eq!(hour_label(ms), "2025-03-01 05:00");
        assert_eq!(iso(ms), "2025-03-01T05:01:01.001Z");
        assert_eq!(parse_time("7d", 10 * DAY_MS), Some(3 * DAY_MS));
        assert_eq!(parse_time("2h", 10 * HOUR_MS), Some(8 * HOUR_MS));
        assert_eq!(parse_time("1970-01-02", 0), Some(DAY_MS));
        assert_eq!(parse_time("x", 0), None);
        assert_eq!(hour_ceil(HOUR_MS + 1), 2 * HOUR_MS);
        assert_eq!(hour_floor(HOUR_MS + 1), HOUR_MS);
    }
}
