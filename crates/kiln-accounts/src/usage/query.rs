//! Reading the ledger back from SQLite.

use std::collections::HashMap;

use kiln_core::{KilnError, KilnResult};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::{UsageFilter, UsageRow};
use crate::day::is_day;
use crate::db::{db_error, from_sql_int};

/// Neurons per account on `day`, as stored.
pub(super) fn neurons_by_account(db: &Connection, day: &str) -> KilnResult<HashMap<String, f64>> {
    let mut select = db
        .prepare("SELECT account_id, SUM(neurons) FROM usage_daily WHERE day = ?1 GROUP BY 1")
        .map_err(db_error)?;
    let rows = select
        .query_map([day], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}

pub(super) fn report(db: &Connection, filter: &UsageFilter) -> KilnResult<Vec<UsageRow>> {
    for day in [&filter.since_day, &filter.until_day].into_iter().flatten() {
        if !is_day(day) {
            return Err(KilnError::bad_input(format!(
                "day {day:?} is not in YYYY-MM-DD form"
            )));
        }
    }
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    let mut add = |condition: &str, value: &Option<String>| {
        if let Some(value) = value {
            conditions.push(condition.to_owned());
            values.push(Value::Text(value.clone()));
        }
    };
    add("account_id = ?", &filter.account_id);
    add("model = ?", &filter.model);
    add("day >= ?", &filter.since_day);
    add("day <= ?", &filter.until_day);
    let mut sql = String::from(
        "SELECT day, account_id, model, requests, input_tokens, output_tokens, neurons
         FROM usage_daily",
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY day DESC, account_id, model");
    let mut select = db.prepare(&sql).map_err(db_error)?;
    let rows = select
        .query_map(params_from_iter(values), |row| {
            Ok(UsageRow {
                day: row.get(0)?,
                account_id: row.get(1)?,
                model: row.get(2)?,
                requests: from_sql_int(row.get(3)?),
                input_tokens: from_sql_int(row.get(4)?),
                output_tokens: from_sql_int(row.get(5)?),
                neurons: row.get(6)?,
            })
        })
        .map_err(db_error)?;
    rows.collect::<Result<_, _>>().map_err(db_error)
}
