//! Gateway analytics (spec §4.8): per-minute sums by provider and model. Every request counts,
//! whether or not its log was collected, so these live apart from `logs`.
//!
//! The SQL here is SQLite's; the request's parsing and the answer's shape are shared with the
//! PostgreSQL backend (`backend::postgres::analytics`).

use kiln_core::{KilnError, KilnResult};
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};

use crate::logs::{format_timestamp, now_ms, parse_timestamp};
use crate::{db_error, LogRecord};

pub(crate) const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateway_analytics (
    account TEXT NOT NULL,
    gateway TEXT NOT NULL,
    minute INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (account, gateway, minute, provider, model)
) WITHOUT ROWID;
";

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(SCHEMA)
}

const RECORD: &str = "INSERT INTO gateway_analytics
    (account, gateway, minute, provider, model, requests, errors, cached, tokens_in, tokens_out,
     cost)
    VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (account, gateway, minute, provider, model) DO UPDATE SET
        requests = requests + 1,
        errors = errors + excluded.errors,
        cached = cached + excluded.cached,
        tokens_in = tokens_in + excluded.tokens_in,
        tokens_out = tokens_out + excluded.tokens_out,
        cost = cost + excluded.cost";

/// Counts one request in its minute.
pub fn record(db: &Connection, record: &LogRecord) -> rusqlite::Result<()> {
    let minute = minute_of(record.created_at_ms);
    db.prepare_cached(RECORD)?.execute(params![
        record.account,
        record.gateway,
        minute,
        record.provider,
        record.model,
        !record.success,
        record.cached,
        i64::try_from(record.tokens_in).unwrap_or(i64::MAX),
        i64::try_from(record.tokens_out).unwrap_or(i64::MAX),
        record.cost.unwrap_or(0.0),
    ])?;
    Ok(())
}

/// The start of the minute `at_ms` falls in.
pub(crate) fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Sums of one group (a series entry, or the totals).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Sums {
    pub requests: i64,
    pub errors: i64,
    pub cached: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost: f64,
}

impl Sums {
    /// One request's contribution.
    pub(crate) fn of(record: &LogRecord) -> Sums {
        Sums {
            requests: 1,
            errors: i64::from(!record.success),
            cached: i64::from(record.cached),
            tokens_in: i64::try_from(record.tokens_in).unwrap_or(i64::MAX),
            tokens_out: i64::try_from(record.tokens_out).unwrap_or(i64::MAX),
            cost: record.cost.unwrap_or(0.0),
        }
    }

    pub(crate) fn add(&mut self, other: &Sums) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.cached = self.cached.saturating_add(other.cached);
        self.tokens_in = self.tokens_in.saturating_add(other.tokens_in);
        self.tokens_out = self.tokens_out.saturating_add(other.tokens_out);
        self.cost += other.cost;
    }

    fn write(&self, object: &mut Map<String, Value>) {
        let ratio = if self.requests > 0 {
            self.cached as f64 / self.requests as f64
        } else {
            0.0
        };
        object.insert("requests".into(), self.requests.into());
        object.insert("errors".into(), self.errors.into());
        object.insert("cached".into(), self.cached.into());
        object.insert("cache_hit_ratio".into(), ratio.into());
        object.insert("tokens_in".into(), self.tokens_in.into());
        object.insert("tokens_out".into(), self.tokens_out.into());
        object.insert("cost".into(), self.cost.into());
    }
}

/// What `GET …/analytics` asks for, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Report {
    pub start: i64,
    pub end: i64,
    /// Its name and length in ms.
    pub interval: (&'static str, i64),
    /// The provider and model columns to group by, or `NULL`: from a fixed list, never from
    /// the request's text.
    pub group: (&'static str, &'static str),
}

impl Report {
    /// `start`, `end` (RFC 3339; the last 24 hours by default), `interval` (minute|hour|day,
    /// default hour) and `group_by` (model|provider|none, default model). Other parameters are
    /// ignored.
    pub(crate) fn parse(pairs: &[(String, String)]) -> KilnResult<Report> {
        let mut start = None;
        let mut end = None;
        let mut interval = ("hour", HOUR_MS);
        let mut group = ("provider", "model");
        for (name, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
            match name.as_str() {
                "start" | "end" => {
                    let at = parse_timestamp(value).ok_or_else(|| {
                        KilnError::bad_input(format!(
                            "{name}: expected an RFC 3339 date-time, got {value:?}"
                        ))
                    })?;
                    if name == "start" {
                        start = Some(at);
                    } else {
                        end = Some(at);
                    }
                }
                "interval" => {
                    interval = match value.as_str() {
                        "minute" => ("minute", MINUTE_MS),
                        "hour" => ("hour", HOUR_MS),
                        "day" => ("day", DAY_MS),
                        _ => {
                            return Err(KilnError::bad_input(format!(
                                "interval: expected minute, hour or day, got {value:?}"
                            )))
                        }
                    };
                }
                "group_by" => {
                    group = match value.as_str() {
                        "model" => ("provider", "model"),
                        "provider" => ("provider", "NULL"),
                        "none" => ("NULL", "NULL"),
                        _ => {
                            return Err(KilnError::bad_input(format!(
                                "group_by: expected model, provider or none, got {value:?}"
                            )))
                        }
                    };
                }
                _ => {}
            }
        }
        let end = end.unwrap_or_else(now_ms);
        let start = start.unwrap_or(end.saturating_sub(DAY_MS));
        if start > end {
            return Err(KilnError::bad_input("start: must not be after end"));
        }
        Ok(Report {
            start,
            end,
            interval,
            group,
        })
    }

    /// The first minute row to read: minute rows cannot be split, so the one holding `start`
    /// counts whole.
    pub(crate) fn first_minute(&self) -> i64 {
        minute_of(self.start)
    }

    /// The answer, from rows of (bucket, provider, model, sums) ordered by bucket, provider,
    /// model.
    pub(crate) fn answer(&self, rows: &[Bucket]) -> Value {
        let mut totals = Sums::default();
        let series: Vec<Value> = rows
            .iter()
            .map(|row| {
                totals.add(&row.sums);
                let mut entry = Map::new();
                entry.insert("bucket".into(), format_timestamp(row.bucket).into());
                entry.insert("provider".into(), row.provider.clone().into());
                entry.insert("model".into(), row.model.clone().into());
                row.sums.write(&mut entry);
                Value::Object(entry)
            })
            .collect();
        let mut total = Map::new();
        totals.write(&mut total);
        json!({
            "interval": self.interval.0,
            "start": format_timestamp(self.start),
            "end": format_timestamp(self.end),
            "totals": total,
            "series": series,
        })
    }
}

/// One entry of the series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    pub bucket: i64,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub sums: Sums,
}

/// `GET …/analytics` (see `Report::parse`): totals and a series ordered by bucket, provider,
/// model.
pub fn query(
    db: &Connection,
    account: &str,
    gateway: &str,
    pairs: &[(String, String)],
) -> KilnResult<Value> {
    report(db, account, gateway, &Report::parse(pairs)?)
}

pub(crate) fn report(
    db: &Connection,
    account: &str,
    gateway: &str,
    report: &Report,
) -> KilnResult<Value> {
    let (provider, model) = report.group;
    // SQLite's `%` truncates toward zero; adding the interval back floors pre-1970 times too.
    let sql = format!(
        "SELECT minute - ((minute % ?1) + ?1) % ?1 AS bucket, {provider}, {model},
            SUM(requests), SUM(errors), SUM(cached), SUM(tokens_in), SUM(tokens_out), SUM(cost)
         FROM gateway_analytics
         WHERE account = ?2 AND gateway = ?3 AND minute >= ?4 AND minute <= ?5
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let mut statement = db.prepare(&sql).map_err(db_error)?;
    let rows = statement
        .query_map(
            params![
                report.interval.1,
                account,
                gateway,
                report.first_minute(),
                report.end
            ],
            |row| {
                Ok(Bucket {
                    bucket: row.get(0)?,
                    provider: row.get(1)?,
                    model: row.get(2)?,
                    sums: Sums {
                        requests: row.get(3)?,
                        errors: row.get(4)?,
                        cached: row.get(5)?,
                        tokens_in: row.get(6)?,
                        tokens_out: row.get(7)?,
                        cost: row.get(8)?,
                    },
                })
            },
        )
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(db_error)?;
    Ok(report.answer(&rows))
}

#[cfg(test)]
#[path = "analytics_tests.rs"]
mod tests;
