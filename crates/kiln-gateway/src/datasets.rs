//! Datasets (spec §4.7): named, saved log filters of one gateway, the input of evaluations.
//! Their filters are the logs API's `filters` (§4.6) and are checked by the same parser.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::types::Value as Sql;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::logs::Dialect;
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

/// Where datasets are kept: SQLite (below) or PostgreSQL (`backend::postgres::datasets`).
pub(crate) trait DatasetRows: gateways::GatewayCheck {
    fn count_datasets(&self, account: &str, gateway: &str) -> KilnResult<usize>;
    fn insert_dataset(&self, dataset: &Dataset) -> KilnResult<()>;
    /// The gateway's datasets, oldest first.
    fn datasets(&self, account: &str, gateway: &str) -> KilnResult<Vec<Dataset>>;
    fn dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Option<Dataset>>;
    /// Writes `dataset`'s name, enable, filters and modified_at over the stored ones.
    fn update_dataset(&self, dataset: &Dataset) -> KilnResult<()>;
    fn delete_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()>;
}

/// `POST …/gateways/{gateway}/datasets`.
pub fn create<D: DatasetRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    body: &Value,
) -> KilnResult<Dataset> {
    db.check_gateway(account, gateway)?;
    let fields = fields(body)?;
    if db.count_datasets(account, gateway)? >= MAX_DATASETS_PER_GATEWAY {
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
    db.insert_dataset(&dataset)?;
    Ok(dataset)
}

/// The gateway's datasets, oldest first.
pub fn list<D: DatasetRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
) -> KilnResult<Vec<Dataset>> {
    db.check_gateway(account, gateway)?;
    db.datasets(account, gateway)
}

pub fn get<D: DatasetRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Dataset> {
    db.check_gateway(account, gateway)?;
    db.dataset(account, gateway, id)?
        .ok_or_else(|| not_found(id))
}

/// `PUT`: the body's name, enable and filters replace the stored ones.
pub fn update<D: DatasetRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Dataset> {
    let current = get(db, account, gateway, id)?;
    let fields = fields(body)?;
    db.update_dataset(&Dataset {
        name: fields.name,
        enable: fields.enable,
        filters: fields.filters,
        modified_at: utc_timestamp(),
        ..current
    })?;
    get(db, account, gateway, id)
}

pub fn delete<D: DatasetRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Dataset> {
    let dataset = get(db, account, gateway, id)?;
    db.delete_dataset(account, gateway, id)?;
    Ok(dataset)
}

/// A dataset's filters as stored.
pub(crate) fn filters_text(dataset: &Dataset) -> String {
    Value::from(dataset.filters.clone()).to_string()
}

/// Stored filters: a JSON array, or `None`.
pub(crate) fn filters_from_text(text: &str) -> Option<Vec<Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Array(filters)) => Some(filters),
        _ => None,
    }
}

const COLUMNS: &str = "id, account, gateway, name, enable, filters, created_at, modified_at";

impl DatasetRows for Connection {
    fn count_datasets(&self, account: &str, gateway: &str) -> KilnResult<usize> {
        self.query_row(
            "SELECT COUNT(*) FROM datasets WHERE account = ?1 AND gateway = ?2",
            params![account, gateway],
            |row| row.get(0),
        )
        .map_err(db_error)
    }

    fn insert_dataset(&self, dataset: &Dataset) -> KilnResult<()> {
        self.execute(
            "INSERT INTO datasets
                 (account, gateway, id, name, enable, filters, created_at, modified_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                dataset.account,
                dataset.gateway,
                dataset.id,
                dataset.name,
                dataset.enable,
                filters_text(dataset),
                dataset.created_at,
                dataset.modified_at,
            ],
        )
        .map_err(db_error)
        .map(drop)
    }

    fn datasets(&self, account: &str, gateway: &str) -> KilnResult<Vec<Dataset>> {
        let mut statement = self
            .prepare(&format!(
                "SELECT {COLUMNS} FROM datasets WHERE account = ?1 AND gateway = ?2 \
                 ORDER BY rowid"
            ))
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account, gateway], from_row)
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error)).collect()
    }

    fn dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Option<Dataset>> {
        self.query_row(
            &format!(
                "SELECT {COLUMNS} FROM datasets WHERE account = ?1 AND gateway = ?2 AND id = ?3"
            ),
            params![account, gateway, id],
            from_row,
        )
        .optional()
        .map_err(db_error)
    }

    fn update_dataset(&self, dataset: &Dataset) -> KilnResult<()> {
        self.execute(
            "UPDATE datasets SET name = ?4, enable = ?5, filters = ?6, modified_at = ?7
             WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![
                dataset.account,
                dataset.gateway,
                dataset.id,
                dataset.name,
                dataset.enable,
                filters_text(dataset),
                dataset.modified_at,
            ],
        )
        .map_err(db_error)
        .map(drop)
    }

    fn delete_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()> {
        self.execute(
            "DELETE FROM datasets WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id],
        )
        .map_err(db_error)
        .map(drop)
    }
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
    let Some(filters) = filters_from_text(&filters) else {
        return Err(rusqlite::Error::FromSqlConversionFailure(
            5,
            rusqlite::types::Type::Text,
            "stored dataset filters are not a JSON array".into(),
        ));
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
    union_sql_in(datasets, Dialect::Sqlite)
}

pub(crate) fn union_sql_in(
    datasets: &[Dataset],
    dialect: Dialect,
) -> KilnResult<(String, Vec<Sql>)> {
    // PostgreSQL's AND takes booleans only.
    let always = match dialect {
        Dialect::Sqlite => "1",
        Dialect::Postgres => "TRUE",
    };
    let mut alternatives = Vec::with_capacity(datasets.len());
    let mut values = Vec::new();
    for dataset in datasets {
        let (tail, bound) = dataset.query()?.where_tail_in(dialect);
        alternatives.push(format!("({always}{tail})"));
        values.extend(bound);
    }
    Ok((alternatives.join(" OR "), values))
}
