//! The writer's sink on PostgreSQL: a node's journaled writes into the shared tables.
//!
//! Writes are committed in groups of bounded size, each in one transaction that also records
//! how far this node's journal is applied (`gateway_journal_applied`, one row per journal,
//! locked first). A group retried after its answer was lost (a timeout while the server
//! committed) finds its writes at or before the recorded position and skips them, so nothing
//! is counted twice; logs are also keyed by their id.

use std::sync::Arc;

use kiln_core::KilnResult;
use kiln_postgres::Pool;

use super::{analytics, cache, logs, storage_error};
use crate::writer::{CacheBudget, Journaled, Position, Sink};

/// Most writes in one transaction, and most bytes of bodies: each group must commit well
/// within the pool's call timeout.
const GROUP_WRITES: usize = 1024;
const GROUP_BYTES: usize = 32 * 1024 * 1024;

pub(crate) struct PostgresSink {
    /// One connection of its own: a batch never waits behind the REST API, nor two of its own
    /// transactions overlap.
    pool: Pool,
    journal: Arc<str>,
    cache_in_table: bool,
}

impl PostgresSink {
    pub(super) fn open(url: &str, journal: &str, cache_in_table: bool) -> KilnResult<Self> {
        let pool = Pool::open(url, 1).map_err(storage_error)?;
        let name = journal.to_owned();
        // The row exists before any commit, so every commit can lock it.
        pool.run(move |client| {
            client.execute(
                "INSERT INTO gateway_journal_applied (journal, segment, byte_offset)
                 VALUES ($1, 0, 0) ON CONFLICT (journal) DO NOTHING",
                &[&name],
            )?;
            Ok(())
        })
        .map_err(storage_error)?;
        Ok(PostgresSink {
            pool,
            journal: journal.into(),
            cache_in_table,
        })
    }

    /// One transaction: the writes of `group` past the recorded position, and the new
    /// position. Returns the cache table's size after.
    fn commit_group(&self, group: Vec<Arc<Journaled>>, cache: CacheBudget) -> KilnResult<i64> {
        let journal = self.journal.clone();
        let cache_in_table = self.cache_in_table;
        self.pool
            .run(move |client| {
                let mut tx = client.transaction()?;
                let row = tx.query_one(
                    "SELECT segment, byte_offset FROM gateway_journal_applied
                     WHERE journal = $1 FOR UPDATE",
                    &[&&*journal],
                )?;
                let applied = position_of(row.try_get(0)?, row.try_get(1)?);
                let mut fresh: Vec<&Journaled> = group
                    .iter()
                    .map(Arc::as_ref)
                    .filter(|journaled| journaled.end > applied)
                    .collect();
                // Gateway by gateway (in journal order within each): nodes writing to the
                // same gateways lock their log counts in the same order.
                fresh.sort_by(|a, b| {
                    (&a.write.record.account, &a.write.record.gateway)
                        .cmp(&(&b.write.record.account, &b.write.record.gateway))
                });
                let Some(end) = fresh.iter().map(|journaled| journaled.end).max() else {
                    return Ok(cache.size);
                };
                analytics::record(
                    &mut tx,
                    fresh.iter().map(|journaled| &journaled.write.record),
                )?;
                let mut capped = 0;
                let mut grown = 0;
                for journaled in &fresh {
                    let write = &journaled.write;
                    if let Some(cap) = write.log {
                        if !logs::insert(&mut tx, &write.record, cap)? {
                            capped += 1;
                        }
                    }
                    if let (true, Some(entry)) = (cache_in_table, &write.cache) {
                        grown += cache::insert(&mut tx, entry)?;
                    }
                }
                let (segment, offset) = end;
                tx.execute(
                    "UPDATE gateway_journal_applied
                     SET segment = $2, byte_offset = $3, updated_at = now() WHERE journal = $1",
                    &[&&*journal, &sql_int(segment), &sql_int(offset)],
                )?;
                let mut size = cache.size + grown;
                if size > cache.limit {
                    // Trim to 90% so eviction runs once per many inserts, not on each.
                    size = cache::evict(
                        &mut tx,
                        kiln_core::time::unix_millis(),
                        cache.limit / 10 * 9,
                    )?;
                }
                tx.commit()?;
                if capped > 0 {
                    metrics::counter!("kiln_gateway_logs_capped_total").increment(capped);
                }
                Ok(size)
            })
            .map_err(storage_error)
    }
}

impl Sink for PostgresSink {
    fn applied_position(&mut self) -> KilnResult<Position> {
        let journal = self.journal.clone();
        self.pool
            .run(move |client| {
                let row = client.query_one(
                    "SELECT segment, byte_offset FROM gateway_journal_applied WHERE journal = $1",
                    &[&&*journal],
                )?;
                Ok(position_of(row.try_get(0)?, row.try_get(1)?))
            })
            .map_err(storage_error)
    }

    fn commit(&mut self, writes: &[Arc<Journaled>], mut cache: CacheBudget) -> KilnResult<i64> {
        let mut group = Vec::new();
        let mut bytes = 0;
        for journaled in writes {
            if !group.is_empty() && (group.len() >= GROUP_WRITES || bytes >= GROUP_BYTES) {
                cache.size = self.commit_group(std::mem::take(&mut group), cache)?;
                bytes = 0;
            }
            bytes += journaled.write.record.request_body.len()
                + journaled.write.record.response_body.len()
                + journaled
                    .write
                    .cache
                    .as_ref()
                    .map_or(0, |entry| entry.body.len());
            group.push(journaled.clone());
        }
        if !group.is_empty() {
            cache.size = self.commit_group(group, cache)?;
        }
        Ok(cache.size)
    }

    fn cache_size(&mut self) -> KilnResult<i64> {
        if !self.cache_in_table {
            return Ok(0);
        }
        self.pool.run(cache::total_size).map_err(storage_error)
    }
}

fn position_of(segment: i64, offset: i64) -> Position {
    (
        u64::try_from(segment).unwrap_or(0),
        u64::try_from(offset).unwrap_or(0),
    )
}

fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
