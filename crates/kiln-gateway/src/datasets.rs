//! Datasets (spec §4.7): named, saved log filters of one gateway, the input of evaluations.
//! Their filters are the logs API's `filters` (§4.6) and are checked by the same parser.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::{db_error, gateways, LogQuery};

/// Datasets per gateway (spec §4.13).
pub const MAX_DATASETS_PER_GATEWAY: usize = 10;

/// Filters per dataset: each becomes a SQL condition, and SQLite bounds expression depth.
pub const MAX_FILTERS_PER_DATASET: usize = 50;

/// Dataset and evaluation names, in characters.
pub const MAX_NAME_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub id: String,
    pub account: String,
    pub gateway: String,
    pub name: String,
    pub enable: bool,
    /// `[{key, operator, value: [one value]}]`, as accepted.
    pub filters: Vec<Value>,
    pub created_at: String,
    pub modified_at: String,
}

impl Dataset {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "enable": self.enable,
            "filters": self.filters,
            "gateway_id": self.gateway,
            "account_id": self.account,
            "account_tag": self.account,
            "created_at": self.created_at,
            "modified_at": self.modified_at,
        })
    }

    /// The logs this dataset holds, as a logs query (never fails for a stored dataset, whose
    /// filters were checked when it was written).
    pub fn query(&self) -> KilnResult<LogQuery> {
        filters_query(&self.filters)
    }
}

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS datasets (
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             id TEXT NOT NULL,
             name TEXT NOT NULL,
             enable INTEGER NOT NULL,
             filters TEXT NOT NULL,
             created_at TEXT NOT NULL,
             modified_at TEXT NOT NULL,
             PRIMARY KEY (account, gateway, id)
         );",
    )
}

/// The fields of a create or update body.
struct Fields {
    name: String,
    enable: bool,
    filters: Vec<Value>,
}

fn fields(body: &Value) -> KilnResult<Fields> {
    let Value::Object(object) = body else {
        return Err(KilnError::bad_input("the body must be a JSON object"));
    };
    let name = checked_name(object.get("name"))?;
    let enable = match object.get("enable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'enable' must be true or false, got {other}"
            )))
        }
    };
    let filters = match object.get("filters") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(filters)) => checked_filters(filters)?,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'filters' must be an array of {{key, operator, value}}, got {other}"
            )))
        }
    };
    Ok(Fields {
        name,
        enable,
        filters,
    })
}

/// A required name: a non-empty string of at most `MAX_NAME_CHARS` characters.
pub(crate) fn checked_name(name: Option<&Value>) -> KilnResult<String> {
    match name.and_then(Value::as_str).map(str::trim) {
        Some(name) if !name.is_empty() && name.chars().count() <= MAX_NAME_CHARS => {
            Ok(name.to_owned())
        }
        _ => Err(KilnError::bad_input(format!(
            "'name' is required: a string of 1 to {MAX_NAME_CHARS} characters"
        ))),
    }
}

/// Each filter normalized to `{key, operator, value: [v]}` (spec §4.7: one value per filter),
/// then checked by the logs query parser, so a dataset accepts exactly what the logs API does.
fn checked_filters(filters: &[Value]) -> KilnResult<Vec<Value>> {
    if filters.len() > MAX_FILTERS_PER_DATASET {
        return Err(KilnError::bad_input(format!(
            "'filters': at most {MAX_FILTERS_PER_DATASET} filters, got {}",
            filters.len()
        )));
    }
    let mut normalized = Vec::with_capacity(filters.len());
    for (index, filter) in filters.iter().enumerate() {
        let bad = |why: &str| KilnError::bad_input(format!("filters[{index}]: {why}"));
        let Value::Object(object) = filter else {
            return Err(bad("expected an object {key, operator, value}"));
        };
        let value = match object.get("value") {
            Some(Value::Array(values)) if values.len() == 1 => values[0].clone(),
            Some(Value::Array(_)) => return Err(bad("'value' must hold exactly one value")),
            Some(single) if !single.is_object() => single.clone(),
            _ => return Err(bad("'value' must be an array of one value")),
        };
        normalized.push(json!({
            "key": object.get("key").cloned().unwrap_or(Value::Null),
            "operator": object.get("operator").cloned().unwrap_or(Value::Null),
            "value": [value],
        }));
    }
    filters_query(&normalized)?;
    Ok(normalized)
}

fn filters_query(filters: &[Value]) -> KilnResult<LogQuery> {
    LogQuery::from_pairs(&[("filters".to_owned(), Value::from(filters).to_string())])
}

/// `POST …/gateways/{gateway}/datasets`.
pub fn create(db: &Connection, account: &str, gateway: &str, body: &Value) -> KilnResult<Dataset> {
    gateways::get(db, account, gateway)?;
    let fields = fields(body)?;
    let count: usize = db
        .query_row(
            "SELECT COUNT(*) FROM datasets WHERE account = ?1 AND gateway = ?2",
            params![account, gateway],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if count >= MAX_DATASETS_PER_GATEWAY {
        return Err(KilnError::bad_input(format!(
            "the gateway already has {MAX_DATASETS_PER_GATEWAY} datasets, the most allowed"
        )));
    }
    let now = utc_timestamp();
    let dataset = Dataset {
        id: uuid::Uuid::new_v4().simple().to_string(),
        account: account.to_owned(),
        gateway: gateway.to_owned(),
        name: fields.name,
        enable: fields.enable,
        filters: fields.filters,
        created_at: now.clone(),
        modified_at: now,
    };
    db.execute(
        "INSERT INTO datasets
             (account, gateway, id, name, enable, filters, created_at, modified_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            account,
            gateway,
            dataset.id,
            dataset.name,
            dataset.enable,
            Value::from(dataset.filters.clone()).to_string(),
            dataset.created_at,
        ],
    )
    .map_err(db_error)?;
    Ok(dataset)
}

const COLUMNS: &str = "id, account, gateway, name, enable, filters, created_at, modified_at";

/// The gateway's datasets, oldest first.
pub fn list(db: &Connection, account: &str, gateway: &str) -> KilnResult<Vec<Dataset>> {
    gateways::get(db, account, gateway)?;
    let mut statement = db
        .prepare(&format!(
            "SELECT {COLUMNS} FROM datasets WHERE account = ?1 AND gateway = ?2 ORDER BY rowid"
        ))
        .map_err(db_error)?;
    let rows = statement
        .query_map(params![account, gateway], from_row)
        .map_err(db_error)?;
    rows.map(|row| row.map_err(db_error)).collect()
}

pub fn get(db: &Connection, account: &str, gateway: &str, id: &str) -> KilnResult<Dataset> {
    gateways::get(db, account, gateway)?;
    db.query_row(
        &format!("SELECT {COLUMNS} FROM datasets WHERE account = ?1 AND gateway = ?2 AND id = ?3"),
        params![account, gateway, id],
        from_row,
    )
    .optional()
    .map_err(db_error)?
    .ok_or_else(|| not_found(id))
}

/// `PUT`: the body's name, enable and filters replace the stored ones.
pub fn update(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Dataset> {
    get(db, account, gateway, id)?;
    let fields = fields(body)?;
    db.execute(
        "UPDATE datasets SET name = ?4, enable = ?5, filters = ?6, modified_at = ?7
         WHERE account = ?1 AND gateway = ?2 AND id = ?3",
        params![
            account,
            gateway,
            id,
            fields.name,
            fields.enable,
            Value::from(fields.filters).to_string(),
            utc_timestamp(),
        ],
    )
    .map_err(db_error)?;
    get(db, account, gateway, id)
}

pub fn delete(db: &Connection, account: &str, gateway: &str, id: &str) -> KilnResult<Dataset> {
    let dataset = get(db, account, gateway, id)?;
    db.execute(
        "DELETE FROM datasets WHERE account = ?1 AND gateway = ?2 AND id = ?3",
        params![account, gateway, id],
    )
    .map_err(db_error)?;
    Ok(dataset)
}

/// Removes every dataset of a gateway (when the gateway goes).
pub fn purge_gateway(db: &Connection, account: &str, gateway: &str) -> rusqlite::Result<()> {
    db.execute(
        "DELETE FROM datasets WHERE account = ?1 AND gateway = ?2",
        params![account, gateway],
    )
    .map(drop)
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Dataset> {
    let filters: String = row.get(5)?;
    let filters = match serde_json::from_str(&filters) {
        Ok(Value::Array(filters)) => filters,
        _ => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                5,
                rusqlite::types::Type::Text,
                "stored dataset filters are not a JSON array".into(),
            ))
        }
    };
    Ok(Dataset {
        id: row.get(0)?,
        account: row.get(1)?,
        gateway: row.get(2)?,
        name: row.get(3)?,
        enable: row.get(4)?,
        filters,
        created_at: row.get(6)?,
        modified_at: row.get(7)?,
    })
}

pub(crate) fn not_found(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no dataset with id {id:?}"))
}

/// `(1 AND (c1) AND …) OR (…)`: the logs in any of `datasets`, with its values in order.
pub(crate) fn union_sql(datasets: &[Dataset]) -> KilnResult<(String, Vec<Sql>)> {
    let mut alternatives = Vec::with_capacity(datasets.len());
    let mut values = Vec::new();
    for dataset in datasets {
        let (tail, bound) = dataset.query()?.where_tail();
        alternatives.push(format!("(1{tail})"));
        values.extend(bound);
    }
    Ok((alternatives.join(" OR "), values))
}
