//! Gateway analytics (spec §4.8): per-minute sums by provider and model. Every request counts,
//! whether or not its log was collected, so these live apart from `logs`.

use kiln_core::{KilnError, KilnResult};
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};

use crate::logs::{format_timestamp, now_ms, parse_timestamp};
use crate::{db_error, LogRecord};

const MINUTE_MS: i64 = 60_000;
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
    let minute = record.created_at_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
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

/// Sums of one group (a series entry, or the totals).
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    requests: i64,
    errors: i64,
    cached: i64,
    tokens_in: i64,
    tokens_out: i64,
    cost: f64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.cached += other.cached;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
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

/// `start`, `end` (RFC 3339; the last 24 hours by default), `interval` (minute|hour|day,
/// default hour) and `group_by` (model|provider|none, default model) → totals and a series
/// ordered by bucket, provider, model. Other parameters are ignored.
pub fn query(
    db: &Connection,
    account: &str,
    gateway: &str,
    pairs: &[(String, String)],
) -> KilnResult<Value> {
    let mut start = None;
    let mut end = None;
    let mut interval = ("hour", HOUR_MS);
    // Grouping columns come from this fixed list, never from the request's text.
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
    let (provider, model) = group;
    // SQLite's `%` truncates toward zero; adding the interval back floors pre-1970 times too.
    // Minute rows cannot be split, so the one holding `start` counts whole.
    let sql = format!(
        "SELECT minute - ((minute % ?1) + ?1) % ?1 AS bucket, {provider}, {model},
            SUM(requests), SUM(errors), SUM(cached), SUM(tokens_in), SUM(tokens_out), SUM(cost)
         FROM gateway_analytics
         WHERE account = ?2 AND gateway = ?3 AND minute >= ?4 AND minute <= ?5
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let first_minute = start.div_euclid(MINUTE_MS) * MINUTE_MS;
    let mut statement = db.prepare(&sql).map_err(db_error)?;
    let rows = statement
        .query_map(
            params![interval.1, account, gateway, first_minute, end],
            |row| {
                let sums = Sums {
                    requests: row.get(3)?,
                    errors: row.get(4)?,
                    cached: row.get(5)?,
                    tokens_in: row.get(6)?,
                    tokens_out: row.get(7)?,
                    cost: row.get(8)?,
                };
                let bucket: i64 = row.get(0)?;
                let provider: Option<String> = row.get(1)?;
                let model: Option<String> = row.get(2)?;
                Ok((bucket, provider, model, sums))
            },
        )
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(db_error)?;
    let mut totals = Sums::default();
    let series: Vec<Value> = rows
        .iter()
        .map(|(bucket, provider, model, sums)| {
            totals.add(sums);
            let mut entry = Map::new();
            entry.insert("bucket".into(), format_timestamp(*bucket).into());
            entry.insert("provider".into(), provider.clone().into());
            entry.insert("model".into(), model.clone().into());
            sums.write(&mut entry);
            Value::Object(entry)
        })
        .collect();
    let mut total = Map::new();
    totals.write(&mut total);
    Ok(json!({
        "interval": interval.0,
        "start": format_timestamp(start),
        "end": format_timestamp(end),
        "totals": total,
        "series": series,
    }))
}

#[cfg(test)]
#[path = "analytics_tests.rs"]
mod tests;
