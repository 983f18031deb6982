//! RFC 3339 timestamps ⇄ Unix milliseconds, without a date crate (logs store milliseconds).

use kiln_core::time::civil_from_days;

const MS_PER_DAY: i64 = 86_400_000;

/// `2026-11-27T08:00:00Z`, `…T08:00:00.123+01:00`, `…T08:00Z`, or a bare date (midnight UTC).
/// A missing zone is read as UTC. `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let mut cursor = Cursor {
        bytes: text.trim().as_bytes(),
        at: 0,
    };
    let year = cursor.digits(4)?;
    cursor.expect(b'-')?;
    let month = cursor.digits(2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = 0;
    let mut millis = 0;
    let mut offset = 0;
    if !cursor.done() {
        match cursor.next()? {
            b'T' | b't' | b' ' => {}
            _ => return None,
        }
        let hour = cursor.digits(2)?;
        cursor.expect(b':')?;
        let minute = cursor.digits(2)?;
        // A leap second reads as the last second of its minute.
        let mut second = 0;
        if cursor.peek() == Some(b':') {
            cursor.at += 1;
            second = cursor.digits(2)?;
            if cursor.peek() == Some(b'.') {
                cursor.at += 1;
                millis = cursor.fraction_millis()?;
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        seconds = hour * 3600 + minute * 60 + second.min(59);
        offset = cursor.zone()?;
    }
    if !cursor.done() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + seconds - offset) * 1000 + millis)
}

/// Milliseconds since the epoch → `2026-11-27T08:00:00.000Z`.
pub fn format_timestamp(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    let seconds = rest / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60,
        rest % 1000
    )
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// (year, month, day) → days since 1970-01-01: Howard Hinnant's days-from-civil, the inverse
/// of `kiln_core::time::civil_from_days`.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, wanted: u8) -> Option<()> {
        (self.next()? == wanted).then_some(())
    }

    fn digits(&mut self, count: usize) -> Option<i64> {
        let mut value = 0;
        for _ in 0..count {
            let byte = self.next()?;
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        Some(value)
    }

    /// Any number of fraction digits; only milliseconds are kept.
    fn fraction_millis(&mut self) -> Option<i64> {
        let start = self.at;
        let mut millis = 0;
        while let Some(byte) = self.peek().filter(u8::is_ascii_digit) {
            if self.at - start < 3 {
                millis = millis * 10 + i64::from(byte - b'0');
            }
            self.at += 1;
        }
        let read = self.at - start;
        if read == 0 {
            return None;
        }
        for _ in read..3 {
            millis *= 10;
        }
        Some(millis)
    }

    /// The zone's offset east of UTC in seconds; UTC when absent.
    fn zone(&mut self) -> Option<i64> {
        let sign = match self.peek() {
            None => return Some(0),
            Some(b'Z' | b'z') => {
                self.at += 1;
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.at += 1;
        let hours = self.digits(2)?;
        if self.peek() == Some(b':') {
            self.at += 1;
        }
        let minutes = self.digits(2)?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(sign * (hours * 3600 + minutes * 60))
    }
}
