//! The PostgreSQL queue, shared by a cluster's nodes.
//!
//! A claim takes unfinished items whose lease is free or has run out
//! (`FOR UPDATE SKIP LOCKED`, so nodes claiming together never wait for or take the same
//! item) and writes this queue's id and a lease on them. A thread renews the leases of
//! everything this queue holds every third of a lease; a node that dies stops renewing, and
//! its items are claimed by another node once their lease runs out. Saving an outcome checks
//! the item is still this queue's: a node that lost an item (it stalled past its lease) drops
//! its late outcome, so each item's outcome is saved exactly once. Leases are measured on the
//! database's clock, so the nodes' clocks need not agree.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_core::{KilnError, KilnResult};
use kiln_postgres::{Migration, PgError, Pool};
use serde_json::Value;

use super::{ItemRow, QueueBackend};
use crate::submission::QueuedInput;
use crate::{ItemOutcome, PendingItem};

/// How long a claim holds an item without renewal: how soon a dead node's items run again.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
const POOL_THREADS: usize = 2;
/// Unfinished items looked at per free slot: items of models this node does not serve are
/// passed over, so it needs more than one candidate per slot.
const CANDIDATES_PER_SLOT: usize = 8;
/// The database's clock in milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "batches and their items, with leases",
    sql: "
CREATE TABLE batches (
    request_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE batch_items (
    request_id TEXT NOT NULL REFERENCES batches(request_id),
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    external_reference TEXT,
    done BOOLEAN NOT NULL DEFAULT false,
    success BOOLEAN,
    result TEXT,
    errors TEXT,
    usage TEXT,
    claimed_by TEXT,
    lease_until_ms BIGINT,
    claims INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (request_id, idx)
);
CREATE INDEX batch_items_unfinished ON batch_items (request_id, idx) WHERE NOT done;
CREATE INDEX batch_items_claimed_by ON batch_items (claimed_by) WHERE NOT done;
",
}];

pub(crate) struct PostgresQueue {
    pool: Pool,
    /// This queue's claims carry it: `{node}/{random}`, so a restarted node is a new holder.
    holder: String,
    lease_ms: i64,
    stop_renewing: Arc<AtomicBool>,
}

impl Drop for PostgresQueue {
    fn drop(&mut self) {
        self.stop_renewing.store(true, Ordering::SeqCst);
    }
}

impl PostgresQueue {
    pub(crate) fn open(url: &str, lease: Duration, node: &str) -> KilnResult<PostgresQueue> {
        let pool = Pool::open(url, POOL_THREADS).map_err(storage)?;
        pool.migrate("batches", MIGRATIONS).map_err(storage)?;
        let holder = format!("{node}/{}", uuid::Uuid::new_v4().simple());
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1);
        let stop_renewing = Arc::new(AtomicBool::new(false));
        spawn_renewer(
            pool.clone(),
            holder.clone(),
            lease,
            lease_ms,
            stop_renewing.clone(),
        )?;
        Ok(PostgresQueue {
            pool,
            holder,
            lease_ms,
            stop_renewing,
        })
    }

    fn run<T, F>(&self, job: F) -> KilnResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut kiln_postgres::Client) -> Result<T, PgError> + Send + 'static,
    {
        self.pool.run(job).map_err(storage)
    }
}

/// Renews this queue's leases every third of a lease until the queue is dropped.
fn spawn_renewer(
    pool: Pool,
    holder: String,
    lease: Duration,
    lease_ms: i64,
    stop: Arc<AtomicBool>,
) -> KilnResult<()> {
    let renew = format!(
        "UPDATE batch_items SET lease_until_ms = {NOW_MS} + $2
         WHERE claimed_by = $1 AND NOT done"
    );
    std::thread::Builder::new()
        .name("kiln-batch-lease".into())
        .spawn(move || {
            let period = lease / 3;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(period);
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let (holder, renew) = (holder.clone(), renew.clone());
                let renewed =
                    pool.run(move |client| Ok(client.execute(&renew, &[&holder, &lease_ms])?));
                if let Err(error) = renewed {
                    tracing::warn!(%error, "batch queue: could not renew leases");
                }
            }
        })
        .map(drop)
        .map_err(|error| KilnError::internal(format!("starting the lease renewer: {error}")))
}

impl QueueBackend for PostgresQueue {
    fn insert_batch(
        &mut self,
        request_id: &str,
        account_id: &str,
        model: &str,
        inputs: &[QueuedInput],
    ) -> KilnResult<()> {
        let (request_id, account_id, model) = (
            request_id.to_owned(),
            account_id.to_owned(),
            model.to_owned(),
        );
        let rows: Vec<(String, Option<String>)> = inputs
            .iter()
            .map(|item| (item.input.clone(), item.external_reference.clone()))
            .collect();
        self.run(move |client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "INSERT INTO batches (request_id, account_id, model, status, created_ms)
                 VALUES ($1, $2, $3, 'queued', $4)",
                &[
                    &request_id,
                    &account_id,
                    &model,
                    &kiln_core::time::unix_millis(),
                ],
            )?;
            let insert = tx.prepare(
                "INSERT INTO batch_items (request_id, idx, input, external_reference)
                 VALUES ($1, $2, $3, $4)",
            )?;
            for (index, (input, reference)) in rows.iter().enumerate() {
                let index = i32::try_from(index).unwrap_or(i32::MAX);
                tx.execute(&insert, &[&request_id, &index, input, reference])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn batch(
        &mut self,
        account_id: &str,
        request_id: &str,
    ) -> KilnResult<Option<(String, String)>> {
        let (account_id, request_id) = (account_id.to_owned(), request_id.to_owned());
        self.run(move |client| {
            Ok(client
                .query_opt(
                    "SELECT model, status FROM batches WHERE request_id = $1 AND account_id = $2",
                    &[&request_id, &account_id],
                )?
                .map(|row| (row.get(0), row.get(1))))
        })
    }

    fn items(&mut self, request_id: &str) -> KilnResult<Vec<ItemRow>> {
        let request_id = request_id.to_owned();
        self.run(move |client| {
            Ok(client
                .query(
                    "SELECT idx, success, result, errors, external_reference, usage
                     FROM batch_items WHERE request_id = $1 ORDER BY idx",
                    &[&request_id],
                )?
                .iter()
                .map(|row| ItemRow {
                    index: i64::from(row.get::<_, i32>(0)),
                    success: row.get(1),
                    result: row.get(2),
                    errors: row.get(3),
                    external_reference: row.get(4),
                    usage: row.get(5),
                })
                .collect())
        })
    }

    fn claim(
        &mut self,
        limit: usize,
        runnable: &dyn Fn(&str) -> bool,
    ) -> KilnResult<Vec<PendingItem>> {
        // Candidates are read without locks (this runs on every node's idle poll), filtered
        // here by what this node can run, and only the chosen ones leased, each by one
        // statement that takes it only if it is still free and no other claim holds its row;
        // the others are left to the nodes that serve their models.
        let candidates =
            i64::try_from(limit.saturating_mul(CANDIDATES_PER_SLOT)).unwrap_or(i64::MAX);
        let pick = format!(
            "SELECT i.request_id, i.idx, b.model
             FROM batch_items i JOIN batches b ON b.request_id = i.request_id
             WHERE NOT i.done AND (i.lease_until_ms IS NULL OR i.lease_until_ms < {NOW_MS})
             ORDER BY b.created_ms, i.request_id, i.idx
             LIMIT $1"
        );
        let lease = format!(
            "UPDATE batch_items i
             SET claimed_by = $3, lease_until_ms = {NOW_MS} + $4, claims = i.claims + 1
             FROM batches b
             WHERE b.request_id = i.request_id AND (i.request_id, i.idx) IN (
                 SELECT request_id, idx FROM batch_items
                 WHERE request_id = $1 AND idx = $2 AND NOT done
                   AND (lease_until_ms IS NULL OR lease_until_ms < {NOW_MS})
                 FOR UPDATE SKIP LOCKED)
             RETURNING b.account_id, b.model, i.input"
        );
        let holder = self.holder.clone();
        let lease_ms = self.lease_ms;
        // `runnable` borrows the caller's state, so it runs here, between two pool calls.
        let rows = self.run(move |client| {
            let rows = client.query(&pick, &[&candidates])?;
            Ok(rows
                .iter()
                .map(|row| {
                    (
                        row.get::<_, String>(0),
                        row.get::<_, i32>(1),
                        row.get::<_, String>(2),
                    )
                })
                .collect::<Vec<_>>())
        })?;
        let chosen: Vec<(String, i32)> = rows
            .into_iter()
            .filter(|(_, _, model)| runnable(model))
            .take(limit)
            .map(|(request_id, index, _)| (request_id, index))
            .collect();
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        self.run(move |client| {
            let mut tx = client.transaction()?;
            let mut claimed = Vec::new();
            for (request_id, index) in &chosen {
                // None: another node took it since it was read.
                let Some(row) = tx.query_opt(&lease, &[request_id, index, &holder, &lease_ms])?
                else {
                    continue;
                };
                claimed.push(PendingItem {
                    request_id: request_id.clone(),
                    account_id: row.get(0),
                    model: row.get(1),
                    index: usize::try_from(*index).unwrap_or_default(),
                    input: serde_json::from_str(row.get(2)).unwrap_or(Value::Null),
                });
            }
            let mut batch_ids: Vec<&str> = claimed.iter().map(|i| i.request_id.as_str()).collect();
            batch_ids.sort_unstable();
            batch_ids.dedup();
            tx.execute(
                "UPDATE batches SET status = 'running'
                 WHERE request_id = ANY($1) AND status = 'queued'",
                &[&batch_ids],
            )?;
            tx.commit()?;
            Ok(claimed)
        })
    }

    fn complete(&mut self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()> {
        let holder = self.holder.clone();
        let request_id = item.request_id.clone();
        let index = i32::try_from(item.index).unwrap_or(i32::MAX);
        let (success, result, errors) = (
            outcome.success,
            outcome.result.to_string(),
            outcome.errors.to_string(),
        );
        let usage = outcome.usage.as_ref().map(Value::to_string);
        let saved = self.run(move |client| {
            let mut tx = client.transaction()?;
            let saved = tx.execute(
                "UPDATE batch_items SET done = true, success = $3, result = $4, errors = $5,
                     usage = $6, claimed_by = NULL, lease_until_ms = NULL
                 WHERE request_id = $1 AND idx = $2 AND NOT done AND claimed_by = $7",
                &[
                    &request_id,
                    &index,
                    &success,
                    &result,
                    &errors,
                    &usage,
                    &holder,
                ],
            )?;
            // Item, then batch: the order claims lock them in, so the two never deadlock.
            // Completions of one batch queue on its row; each statement after the lock sees
            // the others committed, so the last one marks the batch done.
            tx.execute(
                "SELECT 1 FROM batches WHERE request_id = $1 FOR UPDATE",
                &[&request_id],
            )?;
            tx.execute(
                "UPDATE batches SET status = 'done' WHERE request_id = $1 AND NOT EXISTS
                 (SELECT 1 FROM batch_items WHERE request_id = $1 AND NOT done)",
                &[&request_id],
            )?;
            tx.commit()?;
            Ok(saved)
        });
        match saved {
            Ok(0) => {
                tracing::info!(
                    request_id = %item.request_id,
                    index = item.index,
                    "batch item finished after its lease passed to another node; \
                     that node's outcome is kept"
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(error) => {
                self.release(item);
                Err(error)
            }
        }
    }

    fn unfinished(&mut self) -> KilnResult<usize> {
        self.run(|client| {
            let count: i64 = client
                .query_one("SELECT COUNT(*) FROM batch_items WHERE NOT done", &[])?
                .get(0);
            Ok(usize::try_from(count).unwrap_or_default())
        })
    }
}

impl PostgresQueue {
    /// Best effort: an item whose outcome could not be saved is offered to the next claim
    /// now rather than when its lease runs out.
    fn release(&self, item: &PendingItem) {
        let holder = self.holder.clone();
        let request_id = item.request_id.clone();
        let index = i32::try_from(item.index).unwrap_or(i32::MAX);
        let released = self.pool.run(move |client| {
            Ok(client.execute(
                "UPDATE batch_items SET claimed_by = NULL, lease_until_ms = NULL
                 WHERE request_id = $1 AND idx = $2 AND claimed_by = $3 AND NOT done",
                &[&request_id, &index, &holder],
            )?)
        });
        if let Err(error) = released {
            tracing::warn!(%error, "batch queue: could not release an item; its lease will lapse");
        }
    }
}

fn storage(error: PgError) -> KilnError {
    error.into_kiln("batch queue storage")
}
