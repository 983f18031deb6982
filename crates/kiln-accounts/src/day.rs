//! UTC calendar days: the ledger's unit of aggregation and the free allocation's reset point.

use kiln_core::time::civil_from_days;

const DAY_MS: i64 = 86_400_000;

/// The UTC day containing `unix_ms`, as `YYYY-MM-DD`.
pub fn utc_day(unix_ms: i64) -> String {
    let (year, month, day) = civil_from_days(unix_ms.div_euclid(DAY_MS));
    format!("{year:04}-{month:02}-{day:02}")
}

/// The first millisecond of the UTC day after the one containing `unix_ms`.
pub fn next_utc_midnight_ms(unix_ms: i64) -> i64 {
    (unix_ms.div_euclid(DAY_MS) + 1) * DAY_MS
}

/// Whether `day` has the `YYYY-MM-DD` shape (filters compare days as text, so shape matters).
pub(crate) fn is_day(day: &str) -> bool {
    let bytes = day.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}
