//! The response cache in `gateway_cache`, for a cluster without Redis: the SQLite cache's
//! statements, on the shared database.

use kiln_core::KilnResult;
use kiln_postgres::{PgError, Transaction};

use super::PostgresBackend;
use crate::cache::CacheEntry;

/// Entries removed per eviction step, oldest first.
const EVICT_STEP: i64 = 256;

/// The live entry for `key`, if any (expired entries are misses; the writers remove them).
pub(super) fn lookup(
    pg: &PostgresBackend,
    key: &[u8; 32],
    now_ms: i64,
) -> KilnResult<Option<CacheEntry>> {
    let owned = *key;
    pg.run(move |client| {
        let Some(row) = client.query_opt(
            "SELECT account, gateway, status, content_type, streamed, body, created_at,
                    expires_at
             FROM gateway_cache WHERE key = $1 AND expires_at > $2",
            &[&&owned[..], &now_ms],
        )?
        else {
            return Ok(None);
        };
        let status: i64 = row.try_get(2)?;
        Ok(Some(CacheEntry {
            key: owned,
            account: row.try_get(0)?,
            gateway: row.try_get(1)?,
            status: u16::try_from(status).unwrap_or(500),
            content_type: row.try_get(3)?,
            streamed: row.try_get(4)?,
            body: row.try_get(5)?,
            created_at_ms: row.try_get(6)?,
            expires_at_ms: row.try_get(7)?,
        }))
    })
}

/// Stores `entry`, replacing any older one; returns the bytes the table grew by.
pub(super) fn insert(tx: &mut Transaction<'_>, entry: &CacheEntry) -> Result<i64, PgError> {
    let replaced: i64 = tx
        .query_opt(
            "SELECT size FROM gateway_cache WHERE key = $1",
            &[&&entry.key[..]],
        )?
        .map(|row| row.try_get(0))
        .transpose()?
        .unwrap_or(0);
    let size = entry.body.len() as i64;
    tx.execute(
        "INSERT INTO gateway_cache (key, account, gateway, status, content_type, streamed,
             body, size, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (key) DO UPDATE SET account = excluded.account,
             gateway = excluded.gateway, status = excluded.status,
             content_type = excluded.content_type, streamed = excluded.streamed,
             body = excluded.body, size = excluded.size, created_at = excluded.created_at,
             expires_at = excluded.expires_at",
        &[
            &&entry.key[..],
            &entry.account,
            &entry.gateway,
            &i64::from(entry.status),
            &entry.content_type,
            &entry.streamed,
            &entry.body,
            &size,
            &entry.created_at_ms,
            &entry.expires_at_ms,
        ],
    )?;
    Ok(size - replaced)
}

/// Total bytes held, by every node.
pub(super) fn total_size(client: &mut impl kiln_postgres::GenericClient) -> Result<i64, PgError> {
    Ok(client
        .query_one(
            "SELECT COALESCE(SUM(size), 0)::bigint FROM gateway_cache",
            &[],
        )?
        .try_get(0)?)
}

/// Drops expired entries, then the oldest ones until at most `target_bytes` remain; returns
/// the new total.
pub(super) fn evict(
    tx: &mut Transaction<'_>,
    now_ms: i64,
    target_bytes: i64,
) -> Result<i64, PgError> {
    tx.execute(
        "DELETE FROM gateway_cache WHERE expires_at <= $1",
        &[&now_ms],
    )?;
    let mut total = total_size(tx)?;
    while total > target_bytes {
        let freed: i64 = tx
            .query_one(
                "WITH gone AS (
                     DELETE FROM gateway_cache WHERE key IN (
                         SELECT key FROM gateway_cache ORDER BY created_at LIMIT $1)
                     RETURNING size)
                 SELECT COALESCE(SUM(size), 0)::bigint FROM gone",
                &[&EVICT_STEP],
            )?
            .try_get(0)?;
        if freed == 0 {
            break;
        }
        total -= freed;
    }
    Ok(total)
}

/// Forgets every entry of one gateway (`cache_invalidate_on_update`, gateway deletion).
pub(super) fn purge_gateway(pg: &PostgresBackend, account: &str, gateway: &str) -> KilnResult<()> {
    let (account, gateway) = (account.to_owned(), gateway.to_owned());
    pg.run(move |client| {
        client.execute(
            "DELETE FROM gateway_cache WHERE account = $1 AND gateway = $2",
            &[&account, &gateway],
        )?;
        Ok(())
    })
}
