//! Gateway objects in the `gateways` table; checks and JSON are `crate::gateways`'.

use kiln_core::time::utc_timestamp;
use kiln_core::KilnResult;
use kiln_postgres::{PgError, Row};
use serde_json::Value;

use super::PostgresBackend;
use crate::gateways::{self, checked_new, exists, gateway_from_row, not_found, too_many};
use crate::{Gateway, GatewayConfig, MAX_GATEWAYS_PER_ACCOUNT};

const COLUMNS: &str = "id, config, created_at, modified_at";

fn row_of(row: &Row) -> Result<gateways::Row, PgError> {
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ))
}

/// `Ok(None)`: the id is taken. Counting and inserting under a per-account lock, so nodes
/// creating gateways together never pass the account's limit.
pub(super) fn create(pg: &PostgresBackend, account: &str, body: &Value) -> KilnResult<Gateway> {
    let (id, config) = checked_new(body)?;
    let now = utc_timestamp();
    let (account, row_id, text, at) = (
        account.to_owned(),
        id.clone(),
        config.to_text(),
        now.clone(),
    );
    let limit = MAX_GATEWAYS_PER_ACCOUNT as i64;
    let outcome = pg.run(move |client| {
        let mut tx = client.transaction()?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('kiln_gateways:' || $1::text))",
            &[&account],
        )?;
        let count: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM gateways WHERE account = $1",
                &[&account],
            )?
            .try_get(0)?;
        if count >= limit {
            return Ok(Created::TooMany);
        }
        let inserted = tx.execute(
            "INSERT INTO gateways (account, id, config, created_at, modified_at)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (account, id) DO NOTHING",
            &[&account, &row_id, &text, &at],
        )?;
        tx.commit()?;
        Ok(if inserted == 0 {
            Created::Exists
        } else {
            Created::Done
        })
    })?;
    match outcome {
        Created::TooMany => Err(too_many()),
        Created::Exists => Err(exists(&id)),
        Created::Done => Ok(Gateway {
            id,
            config,
            created_at: now.clone(),
            modified_at: now,
        }),
    }
}

enum Created {
    Done,
    Exists,
    TooMany,
}

/// The account's gateways, oldest first.
pub(super) fn list(pg: &PostgresBackend, account: &str) -> KilnResult<Vec<Gateway>> {
    let account = account.to_owned();
    let rows = pg.run(move |client| {
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM gateways WHERE account = $1 ORDER BY created_at, id"
                ),
                &[&account],
            )?
            .iter()
            .map(row_of)
            .collect::<Result<Vec<_>, PgError>>()
    })?;
    rows.into_iter().map(gateway_from_row).collect()
}

pub(super) fn get(pg: &PostgresBackend, account: &str, id: &str) -> KilnResult<Gateway> {
    let (account, row_id) = (account.to_owned(), id.to_owned());
    let row = pg.run(move |client| {
        client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM gateways WHERE account = $1 AND id = $2"),
                &[&account, &row_id],
            )?
            .as_ref()
            .map(row_of)
            .transpose()
    })?;
    row.map_or_else(|| Err(not_found(id)), gateway_from_row)
}

/// `PUT`: the settings in `body` replace the stored ones (unset fields take defaults).
pub(super) fn update(
    pg: &PostgresBackend,
    account: &str,
    id: &str,
    body: &Value,
) -> KilnResult<Gateway> {
    let config = GatewayConfig::from_json(body)?;
    let (account, row_id, text, now) = (
        account.to_owned(),
        id.to_owned(),
        config.to_text(),
        utc_timestamp(),
    );
    let row = pg.run(move |client| {
        client
            .query_opt(
                &format!(
                    "UPDATE gateways SET config = $3, modified_at = $4
                     WHERE account = $1 AND id = $2 RETURNING {COLUMNS}"
                ),
                &[&account, &row_id, &text, &now],
            )?
            .as_ref()
            .map(row_of)
            .transpose()
    })?;
    row.map_or_else(|| Err(not_found(id)), gateway_from_row)
}

/// Deletes the gateway and its logs in one transaction.
pub(super) fn delete(pg: &PostgresBackend, account: &str, id: &str) -> KilnResult<Gateway> {
    let (account, row_id) = (account.to_owned(), id.to_owned());
    let row = pg.run(move |client| {
        let mut tx = client.transaction()?;
        let row = tx
            .query_opt(
                &format!("DELETE FROM gateways WHERE account = $1 AND id = $2 RETURNING {COLUMNS}"),
                &[&account, &row_id],
            )?
            .as_ref()
            .map(row_of)
            .transpose()?;
        if row.is_some() {
            tx.execute(
                "DELETE FROM gateway_logs WHERE account = $1 AND gateway = $2",
                &[&account, &row_id],
            )?;
        }
        tx.commit()?;
        Ok(row)
    })?;
    row.map_or_else(|| Err(not_found(id)), gateway_from_row)
}
