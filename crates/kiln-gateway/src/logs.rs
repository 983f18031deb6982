//! Gateway logs (spec §4.6, feedback §4.7) in SQLite. Callers own connections and
//! transactions: the writer thread batches `insert`s in its own transactions, request
//! handlers query through another connection.
//!
//! What does not depend on the database (the JSON of a listed log, PATCH's checks) is shared
//! with the PostgreSQL backend (`backend::postgres::logs`), so both answer alike.

mod query;
mod time;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use crate::{db_error, LogRecord};

pub(crate) use query::Dialect;
pub use query::{LogQuery, OrderBy, DEFAULT_PER_PAGE, MAX_PER_PAGE};
pub(crate) use time::{format_timestamp, now_ms, parse_timestamp};

/// Bytes of a body shown as `request_head` / `response_head`.
pub const HEAD_BYTES: usize = 1024;

/// Metadata entries a log may carry (`cf-aig-metadata`, PATCH).
const MAX_METADATA_ENTRIES: usize = 5;

/// `log_counts` follows `logs` through triggers, so the cap check is one row read and no
/// delete path (including a gateway's deletion) can leave it stale.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs (
    id TEXT PRIMARY KEY NOT NULL,
    account TEXT NOT NULL,
    gateway TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    model_type TEXT,
    path TEXT NOT NULL,
    request_type TEXT NOT NULL,
    duration INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    success INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost REAL,
    custom_cost INTEGER NOT NULL,
    metadata TEXT,
    step INTEGER,
    event_id TEXT,
    request_content_type TEXT,
    response_content_type TEXT,
    user_agent TEXT,
    authentication INTEGER NOT NULL,
    request_body BLOB NOT NULL,
    response_body BLOB NOT NULL,
    request_size INTEGER NOT NULL,
    response_size INTEGER NOT NULL,
    feedback INTEGER,
    score INTEGER
);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (account, gateway, created_at, id);
CREATE TABLE IF NOT EXISTS log_counts (
    account TEXT NOT NULL,
    gateway TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (account, gateway)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS logs_count_insert AFTER INSERT ON logs BEGIN
    INSERT INTO log_counts (account, gateway, n) VALUES (new.account, new.gateway, 1)
        ON CONFLICT (account, gateway) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS logs_count_delete AFTER DELETE ON logs BEGIN
    UPDATE log_counts SET n = n - 1 WHERE account = old.account AND gateway = old.gateway;
END;
";

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(SCHEMA)
}

/// A gateway's `log_management` cap and `log_management_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCap {
    Unlimited,
    StopInserting(u64),
    DeleteOldest(u64),
}

const INSERT: &str = "INSERT OR IGNORE INTO logs (
    id, account, gateway, created_at, provider, model, model_type, path, request_type,
    duration, status_code, success, cached, tokens_in, tokens_out, cost, custom_cost, metadata,
    step, event_id, request_content_type, response_content_type, user_agent, authentication,
    request_body, response_body, request_size, response_size
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)";

const DELETE_OLDEST: &str = "DELETE FROM logs WHERE rowid IN (
    SELECT rowid FROM logs WHERE account = ?1 AND gateway = ?2
    ORDER BY created_at, id LIMIT ?3)";

/// Stores `record` unless the gateway's cap says not to; `Ok(false)` when it was skipped (or
/// its id was already taken).
pub fn insert(db: &Connection, record: &LogRecord, cap: LogCap) -> rusqlite::Result<bool> {
    let (limit, delete_oldest) = match cap {
        LogCap::Unlimited => (None, false),
        LogCap::StopInserting(limit) => (Some(limit), false),
        LogCap::DeleteOldest(limit) => (Some(limit), true),
    };
    if let Some(limit) = limit {
        let stored = count(db, &record.account, &record.gateway)?;
        if stored >= limit {
            if !delete_oldest || limit == 0 {
                return Ok(false);
            }
            let excess = int(stored - limit + 1);
            db.prepare_cached(DELETE_OLDEST)?.execute(params![
                record.account,
                record.gateway,
                excess
            ])?;
        }
    }
    let metadata = record
        .metadata
        .as_ref()
        .and_then(|map| serde_json::to_string(map).ok());
    let changed = db.prepare_cached(INSERT)?.execute(params![
        record.id,
        record.account,
        record.gateway,
        record.created_at_ms,
        record.provider,
        record.model,
        record.model_type,
        record.path,
        record.request_type,
        int(record.duration_ms),
        record.status_code,
        record.success,
        record.cached,
        int(record.tokens_in),
        int(record.tokens_out),
        record.cost,
        record.custom_cost,
        metadata,
        record.step,
        record.event_id,
        record.request_content_type,
        record.response_content_type,
        record.user_agent,
        record.authentication,
        record.request_body,
        record.response_body,
        int(record.request_size),
        int(record.response_size),
    ])?;
    Ok(changed == 1)
}

/// Logs stored for one gateway, from `log_counts`.
pub fn count(db: &Connection, account: &str, gateway: &str) -> rusqlite::Result<u64> {
    let n: Option<i64> = db
        .prepare_cached("SELECT n FROM log_counts WHERE account = ?1 AND gateway = ?2")?
        .query_row(params![account, gateway], |row| row.get(0))
        .optional()?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

pub(crate) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub items: Vec<Value>,
    pub page: u64,
    pub per_page: u64,
    /// Items on this page.
    pub count: u64,
    /// Matching logs on all pages.
    pub total_count: u64,
}

pub(crate) const LIST_COLUMNS: &str =
    "id, provider, model, model_type, path, duration, request_type,
    request_content_type, response_content_type, status_code, success, cached, tokens_in,
    tokens_out, cost, custom_cost, metadata, step, created_at, event_id, feedback, score";

/// Columns of `LIST_COLUMNS`, in order.
pub(crate) const LIST_FIELDS: usize = 22;

pub fn list(
    db: &Connection,
    account: &str,
    gateway: &str,
    query: &LogQuery,
) -> KilnResult<LogPage> {
    let (tail, mut values) = scoped(account, gateway, query, Dialect::Sqlite);
    let total: i64 = db
        .prepare(&format!("SELECT COUNT(*) FROM logs WHERE {tail}"))
        .and_then(|mut statement| {
            statement.query_row(params_from_iter(values.iter()), |row| row.get(0))
        })
        .map_err(db_error)?;
    let offset = query.page.saturating_sub(1).saturating_mul(query.per_page);
    values.push(Sql::Integer(int(query.per_page)));
    values.push(Sql::Integer(int(offset)));
    let sql = format!(
        "SELECT {LIST_COLUMNS} FROM logs WHERE {tail} ORDER BY {} LIMIT ? OFFSET ?",
        query.order_sql()
    );
    let mut statement = db.prepare(&sql).map_err(db_error)?;
    let items = statement
        .query_map(params_from_iter(values.iter()), |row| {
            list_item(row).map(Value::Object)
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(db_error)?;
    Ok(LogPage {
        count: items.len() as u64,
        items,
        page: query.page,
        per_page: query.per_page,
        total_count: u64::try_from(total).unwrap_or(0),
    })
}

/// `account = ? AND gateway = ? AND (…)…` and its values.
pub(crate) fn scoped(
    account: &str,
    gateway: &str,
    query: &LogQuery,
    dialect: Dialect,
) -> (String, Vec<Sql>) {
    let (tail, conditions) = query.where_tail_in(dialect);
    let mut values = vec![Sql::Text(account.into()), Sql::Text(gateway.into())];
    values.extend(conditions);
    (format!("account = ? AND gateway = ?{tail}"), values)
}

/// One row of a log query, whatever the database: the columns the JSON is built from.
pub(crate) trait LogColumns {
    type Error;
    fn text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    fn integer(&self, index: usize) -> Result<Option<i64>, Self::Error>;
    fn real(&self, index: usize) -> Result<Option<f64>, Self::Error>;
    fn blob(&self, index: usize) -> Result<Option<Vec<u8>>, Self::Error>;
}

impl LogColumns for Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.get(index)
    }
    fn integer(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }
    fn real(&self, index: usize) -> rusqlite::Result<Option<f64>> {
        self.get(index)
    }
    fn blob(&self, index: usize) -> rusqlite::Result<Option<Vec<u8>>> {
        self.get(index)
    }
}

/// A row of `LIST_COLUMNS` as a §4.6 list item.
pub(crate) fn list_item<R: LogColumns>(row: &R) -> Result<Map<String, Value>, R::Error> {
    let mut item = Map::new();
    let text = |index: usize| -> Result<Value, R::Error> {
        Ok(row.text(index)?.map_or(Value::Null, Value::String))
    };
    let integer = |index: usize| -> Result<Value, R::Error> {
        Ok(row.integer(index)?.map_or(Value::Null, Value::from))
    };
    let flag = |index: usize| -> Result<Value, R::Error> {
        Ok(Value::Bool(row.integer(index)? != Some(0)))
    };
    item.insert("id".into(), text(0)?);
    item.insert("provider".into(), text(1)?);
    item.insert("model".into(), text(2)?);
    item.insert("model_type".into(), text(3)?);
    item.insert("path".into(), text(4)?);
    item.insert("duration".into(), integer(5)?);
    item.insert("request_type".into(), text(6)?);
    item.insert("request_content_type".into(), text(7)?);
    item.insert("response_content_type".into(), text(8)?);
    item.insert("status_code".into(), integer(9)?);
    item.insert("success".into(), flag(10)?);
    item.insert("cached".into(), flag(11)?);
    item.insert("tokens_in".into(), integer(12)?);
    item.insert("tokens_out".into(), integer(13)?);
    let cost = row.real(14)?;
    item.insert("cost".into(), cost.map_or(Value::Null, Value::from));
    item.insert("custom_cost".into(), flag(15)?);
    // Cloudflare's REST API returns metadata as the JSON text, not an object.
    item.insert("metadata".into(), text(16)?);
    item.insert("step".into(), integer(17)?);
    let created_at = row.integer(18)?.unwrap_or_default();
    item.insert(
        "created_at".into(),
        Value::String(format_timestamp(created_at)),
    );
    item.insert("event_id".into(), text(19)?);
    item.insert("feedback".into(), integer(20)?);
    item.insert("score".into(), integer(21)?);
    Ok(item)
}

/// `GET …/logs/{id}`: the list fields plus sizes and the first `HEAD_BYTES` of each body.
pub fn get(db: &Connection, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
    let sql = format!(
        "SELECT {LIST_COLUMNS},
            request_size, substr(request_body, 1, {HEAD_BYTES}), length(request_body),
            response_size, substr(response_body, 1, {HEAD_BYTES}), length(response_body)
         FROM logs WHERE account = ?1 AND gateway = ?2 AND id = ?3"
    );
    let item = db
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![account, gateway, id], |row| detail_item(row))
                .optional()
        })
        .map_err(db_error)?;
    item.map(Value::Object).ok_or_else(|| log_not_found(id))
}

/// A row of `LIST_COLUMNS` followed by (size, head, stored length) of the request's body,
/// then of the response's, as `GET …/logs/{id}` shows it.
pub(crate) fn detail_item<R: LogColumns>(row: &R) -> Result<Map<String, Value>, R::Error> {
    let mut item = list_item(row)?;
    for (name, first) in [("request", LIST_FIELDS), ("response", LIST_FIELDS + 3)] {
        let size = row.integer(first)?.unwrap_or_default();
        // substr() of an empty blob is NULL.
        let head = row.blob(first + 1)?.unwrap_or_default();
        let stored = row.integer(first + 2)?.unwrap_or_default();
        // An empty stored body of a non-empty request was too large to keep.
        let complete = stored <= HEAD_BYTES as i64 && !(stored == 0 && size > 0);
        item.insert(format!("{name}_size"), Value::from(size));
        item.insert(format!("{name}_head"), Value::String(head_text(&head)));
        item.insert(format!("{name}_head_complete"), Value::Bool(complete));
    }
    Ok(item)
}

/// Lossy UTF-8, without the replacement character a cut multi-byte sequence would leave at
/// the end of a head.
fn head_text(head: &[u8]) -> String {
    let whole = match std::str::from_utf8(head) {
        Err(error) if error.error_len().is_none() && head.len() >= HEAD_BYTES => {
            &head[..error.valid_up_to()]
        }
        _ => head,
    };
    String::from_utf8_lossy(whole).into_owned()
}

pub(crate) fn log_not_found(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no log with id {id:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPart {
    Request,
    Response,
}

/// `GET …/logs/{id}/request|response`: the stored body and its content type.
pub fn body(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    part: BodyPart,
) -> KilnResult<(Option<String>, Vec<u8>)> {
    let sql = match part {
        BodyPart::Request => {
            "SELECT request_content_type, request_body FROM logs
             WHERE account = ?1 AND gateway = ?2 AND id = ?3"
        }
        BodyPart::Response => {
            "SELECT response_content_type, response_body FROM logs
             WHERE account = ?1 AND gateway = ?2 AND id = ?3"
        }
    };
    db.prepare_cached(sql)
        .and_then(|mut statement| {
            statement
                .query_row(params![account, gateway, id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(db_error)?
        .ok_or_else(|| log_not_found(id))
}

/// `DELETE …/logs`: removes the logs `query` matches — with `limit`, only the first `limit` in
/// its order. Returns how many went.
pub fn delete(
    db: &Connection,
    account: &str,
    gateway: &str,
    query: &LogQuery,
    limit: Option<u64>,
) -> KilnResult<u64> {
    let (tail, mut values) = scoped(account, gateway, query, Dialect::Sqlite);
    let sql = match limit {
        None => format!("DELETE FROM logs WHERE {tail}"),
        Some(limit) => {
            values.push(Sql::Integer(int(limit)));
            format!(
                "DELETE FROM logs WHERE rowid IN (
                    SELECT rowid FROM logs WHERE {tail} ORDER BY {} LIMIT ?)",
                query.order_sql()
            )
        }
    };
    let deleted = db
        .execute(&sql, params_from_iter(values.iter()))
        .map_err(db_error)?;
    Ok(deleted as u64)
}

/// `PATCH …/logs/{id}`: sets the fields `body` names (feedback, score, metadata) and returns
/// the log as `get` shows it.
pub fn patch(
    db: &Connection,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Value> {
    let (sets, mut values) = patch_sets(body)?;
    if !sets.is_empty() {
        values.extend([account, gateway, id].map(|text| Sql::Text(text.into())));
        let sql = format!(
            "UPDATE logs SET {} WHERE account = ? AND gateway = ? AND id = ?",
            sets.join(", ")
        );
        let changed = db
            .execute(&sql, params_from_iter(values.iter()))
            .map_err(db_error)?;
        if changed == 0 {
            return Err(log_not_found(id));
        }
    }
    get(db, account, gateway, id)
}

/// PATCH's `column = ?` assignments and their values, checked.
pub(crate) fn patch_sets(body: &Value) -> KilnResult<(Vec<&'static str>, Vec<Sql>)> {
    let Value::Object(fields) = body else {
        return Err(KilnError::bad_input("the body must be a JSON object"));
    };
    let mut sets = Vec::new();
    let mut values = Vec::new();
    if let Some(feedback) = fields.get("feedback") {
        sets.push("feedback = ?");
        values.push(match feedback.as_i64() {
            _ if feedback.is_null() => Sql::Null,
            // 0 means "not evaluated", which is also how a fresh log reads.
            Some(0) => Sql::Null,
            Some(thumb @ (-1 | 1)) => Sql::Integer(thumb),
            _ => {
                return Err(KilnError::bad_input(format!(
                    "feedback: expected -1, 1, 0 or null, got {feedback}"
                )))
            }
        });
    }
    if let Some(score) = fields.get("score") {
        sets.push("score = ?");
        values.push(if score.is_null() {
            Sql::Null
        } else {
            let whole = score
                .as_f64()
                .filter(|n| n.fract() == 0.0 && (0.0..=100.0).contains(n));
            match whole {
                Some(n) => Sql::Integer(n as i64),
                None => {
                    return Err(KilnError::bad_input(format!(
                        "score: expected a whole number from 0 to 100 or null, got {score}"
                    )))
                }
            }
        });
    }
    if let Some(metadata) = fields.get("metadata") {
        sets.push("metadata = ?");
        values.push(match metadata {
            Value::Null => Sql::Null,
            Value::Object(map) => Sql::Text(checked_metadata(map)?),
            other => {
                return Err(KilnError::bad_input(format!(
                    "metadata: expected an object or null, got {other}"
                )))
            }
        });
    }
    Ok((sets, values))
}

fn checked_metadata(map: &Map<String, Value>) -> KilnResult<String> {
    if map.len() > MAX_METADATA_ENTRIES {
        return Err(KilnError::bad_input(format!(
            "metadata: at most {MAX_METADATA_ENTRIES} entries, got {}",
            map.len()
        )));
    }
    if let Some((key, _)) = map
        .iter()
        .find(|(_, value)| !(value.is_string() || value.is_number() || value.is_boolean()))
    {
        return Err(KilnError::bad_input(format!(
            "metadata.{key}: values must be strings, numbers or booleans"
        )));
    }
    serde_json::to_string(map).map_err(|e| KilnError::bad_input(format!("metadata: {e}")))
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
