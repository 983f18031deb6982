//! Analytics in `gateway_analytics`: per-minute sums, added to by every node's writer.

use std::collections::BTreeMap;

use kiln_core::KilnResult;
use kiln_postgres::{PgError, Transaction};
use serde_json::Value;

use super::PostgresBackend;
use crate::analytics::{minute_of, Bucket, Report, Sums};
use crate::LogRecord;

/// (account, gateway, minute, provider, model).
type MinuteKey = (String, String, i64, String, String);

const ADD: &str = "INSERT INTO gateway_analytics AS sums
    (account, gateway, minute, provider, model, requests, errors, cached, tokens_in, tokens_out,
     cost)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (account, gateway, minute, provider, model) DO UPDATE SET
        requests = sums.requests + excluded.requests,
        errors = sums.errors + excluded.errors,
        cached = sums.cached + excluded.cached,
        tokens_in = sums.tokens_in + excluded.tokens_in,
        tokens_out = sums.tokens_out + excluded.tokens_out,
        cost = sums.cost + excluded.cost";

/// Counts `records` in their minutes: summed here first, one upsert per minute row, in key
/// order, so that nodes adding to the same rows lock them in the same order (no deadlock).
pub(super) fn record<'a>(
    tx: &mut Transaction<'_>,
    records: impl Iterator<Item = &'a LogRecord>,
) -> Result<(), PgError> {
    let mut minutes: BTreeMap<MinuteKey, Sums> = BTreeMap::new();
    for record in records {
        let key = (
            record.account.clone(),
            record.gateway.clone(),
            minute_of(record.created_at_ms),
            record.provider.clone(),
            record.model.clone(),
        );
        minutes.entry(key).or_default().add(&Sums::of(record));
    }
    if minutes.is_empty() {
        return Ok(());
    }
    let add = tx.prepare(ADD)?;
    for ((account, gateway, minute, provider, model), sums) in &minutes {
        tx.execute(
            &add,
            &[
                account,
                gateway,
                minute,
                provider,
                model,
                &sums.requests,
                &sums.errors,
                &sums.cached,
                &sums.tokens_in,
                &sums.tokens_out,
                &sums.cost,
            ],
        )?;
    }
    Ok(())
}

/// `GET …/analytics`, answered as the SQLite backend answers it.
pub(super) fn report(
    pg: &PostgresBackend,
    account: &str,
    gateway: &str,
    report: &Report,
) -> KilnResult<Value> {
    let column = |name: &str| {
        if name == "NULL" {
            "NULL::text".to_owned()
        } else {
            name.to_owned()
        }
    };
    let (provider, model) = (column(report.group.0), column(report.group.1));
    // `%` truncates toward zero; adding the interval back floors pre-1970 times too.
    let sql = format!(
        "SELECT minute - ((minute % $1) + $1) % $1 AS bucket, {provider}, {model},
            SUM(requests)::bigint, SUM(errors)::bigint, SUM(cached)::bigint,
            SUM(tokens_in)::bigint, SUM(tokens_out)::bigint, SUM(cost)::float8
         FROM gateway_analytics
         WHERE account = $2 AND gateway = $3 AND minute >= $4 AND minute <= $5
         GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST"
    );
    let (account, gateway) = (account.to_owned(), gateway.to_owned());
    let (interval, first, end) = (report.interval.1, report.first_minute(), report.end);
    let rows = pg.run(move |client| {
        client
            .query(&sql, &[&interval, &account, &gateway, &first, &end])?
            .iter()
            .map(|row| {
                Ok(Bucket {
                    bucket: row.try_get(0)?,
                    provider: row.try_get(1)?,
                    model: row.try_get(2)?,
                    sums: Sums {
                        requests: row.try_get(3)?,
                        errors: row.try_get(4)?,
                        cached: row.try_get(5)?,
                        tokens_in: row.try_get(6)?,
                        tokens_out: row.try_get(7)?,
                        cost: row.try_get(8)?,
                    },
                })
            })
            .collect::<Result<Vec<_>, PgError>>()
    })?;
    Ok(report.answer(&rows))
}
