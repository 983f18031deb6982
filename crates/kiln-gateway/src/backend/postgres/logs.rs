//! Gateway logs in `gateway_logs` (aliased `logs`, the name the query conditions use). The
//! conditions, the JSON of a log and PATCH's checks are `crate::logs`'.

use kiln_core::KilnResult;
use kiln_postgres::{PgError, Row, Transaction};
use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::{numbered, refs, PostgresBackend};
use crate::logs::{
    detail_item, int, list_item, log_not_found, patch_sets, scoped, BodyPart, Dialect, LogCap,
    LogColumns, LogPage, LogQuery, HEAD_BYTES, LIST_COLUMNS,
};
use crate::LogRecord;

/// Errors are the pool's, so a failed read maps like any other.
impl LogColumns for Row {
    type Error = PgError;
    fn text(&self, index: usize) -> Result<Option<String>, PgError> {
        Ok(self.try_get(index)?)
    }
    fn integer(&self, index: usize) -> Result<Option<i64>, PgError> {
        Ok(self.try_get(index)?)
    }
    fn real(&self, index: usize) -> Result<Option<f64>, PgError> {
        Ok(self.try_get(index)?)
    }
    fn blob(&self, index: usize) -> Result<Option<Vec<u8>>, PgError> {
        Ok(self.try_get(index)?)
    }
}

pub(super) const INSERT: &str = "INSERT INTO gateway_logs (
    id, account, gateway, created_at, provider, model, model_type, path, request_type,
    duration, status_code, success, cached, tokens_in, tokens_out, cost, custom_cost, metadata,
    step, event_id, request_content_type, response_content_type, user_agent, authentication,
    request_body, response_body, request_size, response_size
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22, $23, $24, $25, $26, $27, $28)
ON CONFLICT (id) DO NOTHING";

/// Stores `record` unless the gateway's cap says not to; `Ok(false)` when it was skipped (or
/// its id was already taken). Part of the writer's transaction.
pub(super) fn insert(
    tx: &mut Transaction<'_>,
    record: &LogRecord,
    cap: LogCap,
) -> Result<bool, PgError> {
    let (limit, delete_oldest) = match cap {
        LogCap::Unlimited => (None, false),
        LogCap::StopInserting(limit) => (Some(limit), false),
        LogCap::DeleteOldest(limit) => (Some(limit), true),
    };
    if let Some(limit) = limit {
        let stored: i64 = tx
            .query_opt(
                "SELECT n FROM gateway_log_counts WHERE account = $1 AND gateway = $2",
                &[&record.account, &record.gateway],
            )?
            .map(|row| row.try_get(0))
            .transpose()?
            .unwrap_or(0);
        let stored = u64::try_from(stored).unwrap_or(0);
        if stored >= limit {
            if !delete_oldest || limit == 0 {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM gateway_logs WHERE id IN (
                     SELECT id FROM gateway_logs WHERE account = $1 AND gateway = $2
                     ORDER BY created_at, id LIMIT $3)",
                &[&record.account, &record.gateway, &int(stored - limit + 1)],
            )?;
        }
    }
    let metadata = record
        .metadata
        .as_ref()
        .and_then(|map| serde_json::to_string(map).ok());
    let flag = |set: bool| i64::from(set);
    let changed = tx.execute(
        INSERT,
        &[
            &record.id,
            &record.account,
            &record.gateway,
            &record.created_at_ms,
            &record.provider,
            &record.model,
            &record.model_type,
            &record.path,
            &record.request_type,
            &int(record.duration_ms),
            &i64::from(record.status_code),
            &flag(record.success),
            &flag(record.cached),
            &int(record.tokens_in),
            &int(record.tokens_out),
            &record.cost,
            &flag(record.custom_cost),
            &metadata,
            &record.step.map(i64::from),
            &record.event_id,
            &record.request_content_type,
            &record.response_content_type,
            &record.user_agent,
            &flag(record.authentication),
            &record.request_body,
            &record.response_body,
            &int(record.request_size),
            &int(record.response_size),
        ],
    )?;
    Ok(changed == 1)
}

pub(super) fn list(
    pg: &PostgresBackend,
    account: &str,
    gateway: &str,
    query: &LogQuery,
) -> KilnResult<LogPage> {
    let (tail, mut values) = scoped(account, gateway, query, Dialect::Postgres);
    let (count_sql, count_params) = numbered(
        &format!("SELECT COUNT(*) FROM gateway_logs AS logs WHERE {tail}"),
        values.clone(),
    );
    let offset = query.page.saturating_sub(1).saturating_mul(query.per_page);
    values.push(Sql::Integer(int(query.per_page)));
    values.push(Sql::Integer(int(offset)));
    let (list_sql, list_params) = numbered(
        &format!(
            "SELECT {LIST_COLUMNS} FROM gateway_logs AS logs WHERE {tail} ORDER BY {}
             LIMIT ? OFFSET ?",
            query.order_sql_in(Dialect::Postgres)
        ),
        values,
    );
    let (total, items) = pg.run(move |client| {
        let total: i64 = client
            .query_one(&count_sql, &refs(&count_params))?
            .try_get(0)?;
        let items = client
            .query(&list_sql, &refs(&list_params))?
            .iter()
            .map(|row| list_item(row).map(Value::Object))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((total, items))
    })?;
    Ok(LogPage {
        count: items.len() as u64,
        items,
        page: query.page,
        per_page: query.per_page,
        total_count: u64::try_from(total).unwrap_or(0),
    })
}

/// `GET …/logs/{id}`: the list fields plus sizes and the first `HEAD_BYTES` of each body.
pub(super) fn get(
    pg: &PostgresBackend,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<Value> {
    let sql = format!(
        "SELECT {LIST_COLUMNS},
            request_size, substring(request_body FROM 1 FOR {HEAD_BYTES}),
            length(request_body)::bigint,
            response_size, substring(response_body FROM 1 FOR {HEAD_BYTES}),
            length(response_body)::bigint
         FROM gateway_logs AS logs WHERE account = $1 AND gateway = $2 AND id = $3"
    );
    let (account, gateway, log_id) = (account.to_owned(), gateway.to_owned(), id.to_owned());
    let item = pg.run(move |client| {
        let row = client.query_opt(&sql, &[&account, &gateway, &log_id])?;
        row.as_ref().map(detail_item).transpose()
    })?;
    item.map(Value::Object).ok_or_else(|| log_not_found(id))
}

/// `GET …/logs/{id}/request|response`: the stored body and its content type.
pub(super) fn body(
    pg: &PostgresBackend,
    account: &str,
    gateway: &str,
    id: &str,
    part: BodyPart,
) -> KilnResult<(Option<String>, Vec<u8>)> {
    let sql = match part {
        BodyPart::Request => {
            "SELECT request_content_type, request_body FROM gateway_logs
             WHERE account = $1 AND gateway = $2 AND id = $3"
        }
        BodyPart::Response => {
            "SELECT response_content_type, response_body FROM gateway_logs
             WHERE account = $1 AND gateway = $2 AND id = $3"
        }
    };
    let (account, gateway, log_id) = (account.to_owned(), gateway.to_owned(), id.to_owned());
    let found = pg.run(move |client| {
        client
            .query_opt(sql, &[&account, &gateway, &log_id])?
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    })?;
    found.ok_or_else(|| log_not_found(id))
}

/// `DELETE …/logs`: removes the logs `query` matches — with `limit`, only the first `limit` in
/// its order. Returns how many went.
pub(super) fn delete(
    pg: &PostgresBackend,
    account: &str,
    gateway: &str,
    query: &LogQuery,
    limit: Option<u64>,
) -> KilnResult<u64> {
    let (tail, mut values) = scoped(account, gateway, query, Dialect::Postgres);
    let sql = match limit {
        None => format!("DELETE FROM gateway_logs AS logs WHERE {tail}"),
        Some(limit) => {
            values.push(Sql::Integer(int(limit)));
            format!(
                "DELETE FROM gateway_logs WHERE id IN (
                    SELECT id FROM gateway_logs AS logs WHERE {tail} ORDER BY {} LIMIT ?)",
                query.order_sql_in(Dialect::Postgres)
            )
        }
    };
    let (sql, params) = numbered(&sql, values);
    pg.run(move |client| Ok(client.execute(&sql, &refs(&params))?))
}

/// `PATCH …/logs/{id}`: sets the fields `body` names (feedback, score, metadata) and returns
/// the log as `get` shows it.
pub(super) fn patch(
    pg: &PostgresBackend,
    account: &str,
    gateway: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Value> {
    let (sets, mut values) = patch_sets(body)?;
    if !sets.is_empty() {
        values.extend([account, gateway, id].map(|text| Sql::Text(text.into())));
        let (sql, params) = numbered(
            &format!(
                "UPDATE gateway_logs SET {} WHERE account = ? AND gateway = ? AND id = ?",
                sets.join(", ")
            ),
            values,
        );
        let changed = pg.run(move |client| Ok(client.execute(&sql, &refs(&params))?))?;
        if changed == 0 {
            return Err(log_not_found(id));
        }
    }
    get(pg, account, gateway, id)
}
