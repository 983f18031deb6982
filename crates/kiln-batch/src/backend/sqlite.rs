//! The SQLite queue with `synchronous = FULL`: a batch is on disk before its `request_id` is
//! returned, and every finished item before the next is taken. Which items are being run is
//! kept in memory only: after a restart nothing is in flight and every unfinished item is
//! claimed again.

use std::collections::HashSet;
use std::path::Path;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{ItemRow, QueueBackend};
use crate::submission::QueuedInput;
use crate::{ItemOutcome, PendingItem};

pub(crate) struct SqliteQueue {
    db: Connection,
    /// (request_id, index) of the items being run by this process.
    in_flight: HashSet<(String, usize)>,
}

impl SqliteQueue {
    pub(crate) fn open(path: &Path) -> KilnResult<SqliteQueue> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                KilnError::internal(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let db = kiln_sqlite::open(path, kiln_sqlite::Durability::Full).map_err(storage)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS batches (
                 request_id TEXT PRIMARY KEY,
                 account_id TEXT NOT NULL,
                 model TEXT NOT NULL,
                 status TEXT NOT NULL,
                 created_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS batch_items (
                 request_id TEXT NOT NULL,
                 idx INTEGER NOT NULL,
                 input TEXT NOT NULL,
                 external_reference TEXT,
                 done INTEGER NOT NULL DEFAULT 0,
                 success INTEGER,
                 result TEXT,
                 errors TEXT,
                 usage TEXT,
                 PRIMARY KEY (request_id, idx)
             );
             CREATE INDEX IF NOT EXISTS batch_items_pending ON batch_items (done, request_id);",
        )
        .map_err(storage)?;
        add_usage_column(&db)?;
        Ok(SqliteQueue {
            db,
            in_flight: HashSet::new(),
        })
    }
}

impl QueueBackend for SqliteQueue {
    fn insert_batch(
        &mut self,
        request_id: &str,
        account_id: &str,
        model: &str,
        inputs: &[QueuedInput],
    ) -> KilnResult<()> {
        let transaction = self.db.transaction().map_err(storage)?;
        transaction
            .execute(
                "INSERT INTO batches (request_id, account_id, model, status, created_ms)
                 VALUES (?1, ?2, ?3, 'queued', ?4)",
                params![
                    request_id,
                    account_id,
                    model,
                    kiln_core::time::unix_millis()
                ],
            )
            .map_err(storage)?;
        {
            let mut insert = transaction
                .prepare(
                    "INSERT INTO batch_items (request_id, idx, input, external_reference)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(storage)?;
            for (index, item) in inputs.iter().enumerate() {
                insert
                    .execute(params![
                        request_id,
                        index as i64,
                        item.input,
                        item.external_reference
                    ])
                    .map_err(storage)?;
            }
        }
        transaction.commit().map_err(storage)
    }

    fn batch(
        &mut self,
        account_id: &str,
        request_id: &str,
    ) -> KilnResult<Option<(String, String)>> {
        self.db
            .query_row(
                "SELECT model, status FROM batches WHERE request_id = ?1 AND account_id = ?2",
                params![request_id, account_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(storage)
    }

    fn items(&mut self, request_id: &str) -> KilnResult<Vec<ItemRow>> {
        let mut query = self
            .db
            .prepare(
                "SELECT idx, success, result, errors, external_reference, usage FROM batch_items
                 WHERE request_id = ?1 ORDER BY idx",
            )
            .map_err(storage)?;
        let rows = query
            .query_map(params![request_id], |row| {
                Ok(ItemRow {
                    index: row.get(0)?,
                    success: row.get(1)?,
                    result: row.get(2)?,
                    errors: row.get(3)?,
                    external_reference: row.get(4)?,
                    usage: row.get(5)?,
                })
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage);
        rows
    }

    fn claim(
        &mut self,
        limit: usize,
        runnable: &dyn Fn(&str) -> bool,
    ) -> KilnResult<Vec<PendingItem>> {
        let mut query = self
            .db
            .prepare(
                "SELECT i.request_id, b.account_id, b.model, i.idx, i.input
                 FROM batch_items i JOIN batches b ON b.request_id = i.request_id
                 WHERE i.done = 0
                 ORDER BY b.created_ms, i.request_id, i.idx
                 LIMIT ?1",
            )
            .map_err(storage)?;
        let candidates = query
            .query_map(params![(limit + self.in_flight.len()) as i64], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        drop(query);
        let mut claimed = Vec::new();
        for (request_id, account_id, model, index, input) in candidates {
            let index = usize::try_from(index).unwrap_or_default();
            if claimed.len() == limit
                || !runnable(&model)
                || !self.in_flight.insert((request_id.clone(), index))
            {
                continue;
            }
            claimed.push(PendingItem {
                request_id,
                account_id,
                model,
                index,
                input: serde_json::from_str(&input).unwrap_or(Value::Null),
            });
        }
        // Claimed items come in batch order, so each batch's id is one run.
        let mut batch_ids: Vec<&str> = claimed
            .iter()
            .map(|item| item.request_id.as_str())
            .collect();
        batch_ids.dedup();
        for request_id in batch_ids {
            self.db
                .execute(
                    "UPDATE batches SET status = 'running' WHERE request_id = ?1 AND status = 'queued'",
                    params![request_id],
                )
                .map_err(storage)?;
        }
        Ok(claimed)
    }

    fn complete(&mut self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()> {
        let saved = self.save_outcome(item, outcome);
        self.in_flight
            .remove(&(item.request_id.clone(), item.index));
        saved
    }

    fn unfinished(&mut self) -> KilnResult<usize> {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM batch_items WHERE done = 0",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| usize::try_from(count).unwrap_or_default())
            .map_err(storage)
    }
}

impl SqliteQueue {
    fn save_outcome(&mut self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()> {
        let transaction = self.db.transaction().map_err(storage)?;
        transaction
            .execute(
                "UPDATE batch_items SET done = 1, success = ?3, result = ?4, errors = ?5, usage = ?6
                 WHERE request_id = ?1 AND idx = ?2",
                params![
                    item.request_id,
                    item.index as i64,
                    outcome.success,
                    outcome.result.to_string(),
                    outcome.errors.to_string(),
                    outcome.usage.as_ref().map(Value::to_string)
                ],
            )
            .map_err(storage)?;
        transaction
            .execute(
                "UPDATE batches SET status = 'done' WHERE request_id = ?1 AND NOT EXISTS
                 (SELECT 1 FROM batch_items WHERE request_id = ?1 AND done = 0)",
                params![item.request_id],
            )
            .map_err(storage)?;
        transaction.commit().map_err(storage)
    }
}

/// Queues made before items recorded their usage lack the column; adding it keeps their data.
fn add_usage_column(db: &Connection) -> KilnResult<()> {
    let has_usage = db
        .prepare("SELECT 1 FROM pragma_table_info('batch_items') WHERE name = 'usage'")
        .and_then(|mut query| query.exists([]))
        .map_err(storage)?;
    if !has_usage {
        db.execute_batch("ALTER TABLE batch_items ADD COLUMN usage TEXT")
            .map_err(storage)?;
    }
    Ok(())
}

fn storage(error: rusqlite::Error) -> KilnError {
    KilnError::new(ErrorKind::Internal, format!("batch queue storage: {error}"))
}
