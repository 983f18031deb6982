//! Evaluations (spec §4.7): the cost, speed and human-feedback evaluators run once, at
//! creation, over the logs of one or more datasets. An evaluation is a snapshot: it keeps the
//! datasets and numbers it was made with and never changes afterwards.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::datasets::{self, checked_name, Dataset, DatasetRows};
use crate::db_error;
// The tests make their gateways with it.
#[cfg(test)]
use crate::gateways;

/// The evaluators Kiln runs: (id, name, description, mandatory).
const TYPES: [(&str, &str, &str, bool); 3] = [
    (
        "cost",
        "Cost",
        "Average cost of the logs that have one, in USD",
        true,
    ),
    (
        "speed",
        "Speed",
        "Average duration of the logs, in milliseconds",
        true,
    ),
    (
        "human-feedback",
        "Human feedback",
        "Percentage of thumbs-up among the logs rated with feedback",
        false,
    ),
];

/// The evaluators are built in, so their timestamps are a fixed date.
const TYPES_CREATED_AT: &str = "2025-01-01T00:00:00.000Z";

/// `GET …/ai-gateway/evaluation-types`.
pub fn types() -> Vec<Value> {
    TYPES
        .iter()
        .map(|(id, name, description, mandatory)| {
            json!({
                "id": id,
                "name": name,
                "description": description,
                "type": id,
                "mandatory": mandatory,
                "enable": true,
                "created_at": TYPES_CREATED_AT,
                "modified_at": TYPES_CREATED_AT,
            })
        })
        .collect()
}

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS evaluations (
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             id TEXT NOT NULL,
             evaluation TEXT NOT NULL,
             PRIMARY KEY (account, gateway, id)
         );",
    )
}

/// A list of distinct ids from `field` of `body`: a non-empty array of strings.
fn ids(body: &Value, field: &str) -> KilnResult<Vec<String>> {
    let bad = || KilnError::bad_input(format!("'{field}' must be a non-empty array of ids"));
    let values = body
        .get(field)
        .and_then(Value::as_array)
        .filter(|values| !values.is_empty())
        .ok_or_else(bad)?;
    let mut ids: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let id = value.as_str().ok_or_else(bad)?;
        if !ids.iter().any(|seen| seen == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

/// `POST …/gateways/{gateway}/evaluations {name, dataset_ids, evaluation_type_ids}`: runs the
/// evaluators now, over logs committed before the call (the caller flushes the log writer).
pub fn create<D: EvaluationRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    body: &Value,
) -> KilnResult<Value> {
    db.check_gateway(account, gateway)?;
    if !body.is_object() {
        return Err(KilnError::bad_input("the body must be a JSON object"));
    }
    let name = checked_name(body.get("name"))?;
    let type_ids = ids(body, "evaluation_type_ids")?;
    if let Some(unknown) = type_ids
        .iter()
        .find(|id| !TYPES.iter().any(|(known, ..)| *known == id.as_str()))
    {
        return Err(KilnError::bad_input(format!(
            "unknown evaluation type {unknown:?} (use cost, speed or human-feedback)"
        )));
    }
    let dataset_ids = ids(body, "dataset_ids")?;
    if dataset_ids.len() > datasets::MAX_DATASETS_PER_GATEWAY {
        return Err(KilnError::bad_input(format!(
            "'dataset_ids': at most {} datasets",
            datasets::MAX_DATASETS_PER_GATEWAY
        )));
    }
    let chosen = dataset_ids
        .iter()
        .map(|id| datasets::get(db, account, gateway, id))
        .collect::<KilnResult<Vec<Dataset>>>()?;
    let totals = db.measure(account, gateway, &chosen)?;

    let id = uuid::Uuid::new_v4().simple().to_string();
    let now = utc_timestamp();
    let results: Vec<Value> = type_ids
        .iter()
        .map(|type_id| {
            let (value, logs) = totals.result(type_id);
            let (status, description) = match value {
                Some(_) => (1, "completed"),
                None => (2, "no logs to evaluate"),
            };
            json!({
                "id": uuid::Uuid::new_v4().simple().to_string(),
                "evaluation_id": id,
                "evaluation_type_id": type_id,
                // Cloudflare's API types `result` as a string.
                "result": value.map(|value| value.to_string()),
                "status": status,
                "status_description": description,
                "total_logs": logs,
                "created_at": now,
                "modified_at": now,
            })
        })
        .collect();
    let evaluation = json!({
        "id": id,
        "name": name,
        "datasets": chosen.iter().map(Dataset::to_json).collect::<Vec<_>>(),
        "processed": true,
        "results": results,
        "total_logs": totals.logs,
        "gateway_id": gateway,
        "account_id": account,
        "account_tag": account,
        "created_at": now,
        "modified_at": now,
    });
    db.insert_evaluation(account, gateway, &id, &evaluation.to_string())?;
    Ok(evaluation)
}

/// What the evaluators need from the logs of the chosen datasets.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Totals {
    pub logs: u64,
    pub costed: u64,
    pub average_cost: Option<f64>,
    pub average_duration: Option<f64>,
    pub rated: u64,
    pub thumbs_up: u64,
}

impl Totals {
    /// The value of evaluator `type_id` and how many logs it was computed over.
    fn result(&self, type_id: &str) -> (Option<f64>, u64) {
        match type_id {
            "cost" => (self.average_cost, self.costed),
            "speed" => (self.average_duration, self.logs),
            _ => {
                let share =
                    (self.rated > 0).then(|| 100.0 * self.thumbs_up as f64 / self.rated as f64);
                (share, self.rated)
            }
        }
    }
}

/// Where evaluations are kept, and the logs they measure: SQLite (below) or PostgreSQL
/// (`backend::postgres::datasets`).
pub(crate) trait EvaluationRows: DatasetRows {
    /// One pass over the logs in any of `chosen` (a log in two datasets counts once).
    fn measure(&self, account: &str, gateway: &str, chosen: &[Dataset]) -> KilnResult<Totals>;
    fn insert_evaluation(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        text: &str,
    ) -> KilnResult<()>;
    /// The gateway's evaluations, oldest first.
    fn evaluation_texts(&self, account: &str, gateway: &str) -> KilnResult<Vec<String>>;
    fn evaluation_text(&self, account: &str, gateway: &str, id: &str)
        -> KilnResult<Option<String>>;
    fn delete_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()>;
}

/// The gateway's evaluations, oldest first.
pub fn list<D: EvaluationRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
) -> KilnResult<Vec<Value>> {
    db.check_gateway(account, gateway)?;
    db.evaluation_texts(account, gateway)?
        .iter()
        .map(|text| parse(text))
        .collect()
}

pub fn get<D: EvaluationRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Value> {
    db.check_gateway(account, gateway)?;
    parse(
        &db.evaluation_text(account, gateway, id)?
            .ok_or_else(|| not_found(id))?,
    )
}

pub fn delete<D: EvaluationRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Value> {
    let evaluation = get(db, account, gateway, id)?;
    db.delete_evaluation(account, gateway, id)?;
    Ok(evaluation)
}

/// Removes every evaluation of a gateway (when the gateway goes).
pub fn purge_gateway(db: &Connection, account: &str, gateway: &str) -> rusqlite::Result<()> {
    db.execute(
        "DELETE FROM evaluations WHERE account = ?1 AND gateway = ?2",
        params![account, gateway],
    )
    .map(drop)
}

impl EvaluationRows for Connection {
    fn measure(&self, account: &str, gateway: &str, chosen: &[Dataset]) -> KilnResult<Totals> {
        let (union, bound) = datasets::union_sql(chosen)?;
        let mut values = vec![Sql::Text(account.into()), Sql::Text(gateway.into())];
        values.extend(bound);
        let sql = format!(
            "SELECT COUNT(*), COUNT(cost), AVG(cost), AVG(duration),
                    COUNT(feedback), COALESCE(SUM(feedback = 1), 0)
             FROM logs WHERE account = ? AND gateway = ? AND ({union})"
        );
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        self.query_row(&sql, params_from_iter(values.iter()), |row| {
            Ok(Totals {
                logs: count(row.get(0)?),
                costed: count(row.get(1)?),
                average_cost: row.get(2)?,
                average_duration: row.get(3)?,
                rated: count(row.get(4)?),
                thumbs_up: count(row.get(5)?),
            })
        })
        .map_err(db_error)
    }

    fn insert_evaluation(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        text: &str,
    ) -> KilnResult<()> {
        self.execute(
            "INSERT INTO evaluations (account, gateway, id, evaluation) VALUES (?1, ?2, ?3, ?4)",
            params![account, gateway, id, text],
        )
        .map_err(db_error)
        .map(drop)
    }

    fn evaluation_texts(&self, account: &str, gateway: &str) -> KilnResult<Vec<String>> {
        let mut statement = self
            .prepare(
                "SELECT evaluation FROM evaluations WHERE account = ?1 AND gateway = ?2
                 ORDER BY rowid",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account, gateway], |row| row.get::<_, String>(0))
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error)).collect()
    }

    fn evaluation_text(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Option<String>> {
        self.query_row(
            "SELECT evaluation FROM evaluations WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_error)
    }

    fn delete_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()> {
        self.execute(
            "DELETE FROM evaluations WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id],
        )
        .map_err(db_error)
        .map(drop)
    }
}

fn parse(text: &str) -> KilnResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| KilnError::internal(format!("gateway storage: a stored evaluation: {e}")))
}

fn not_found(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no evaluation with id {id:?}"))
}

#[cfg(test)]
#[path = "evaluations_tests.rs"]
mod tests;
