//! The asynchronous batch queue of Workers AI (spec §1.6): `?queueRequest=true` with
//! `{"requests":[…]}` queues the inputs and answers with a `request_id` at once; polling with
//! `{"request_id"}` answers `queued`, `running`, or every response.
//!
//! The queue lives in SQLite with `synchronous = FULL`: a batch is on disk before its
//! `request_id` is returned, and every finished item is on disk before the next one is taken,
//! so a restarted server runs exactly the items that had not finished. Which items are being
//! run right now is kept in memory only: after a restart nothing is in flight and every
//! unfinished item is claimed again.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kiln_core::limits::BatchLimits;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

mod submission;

pub use submission::{read_submission, QueuedInput, Submission};

/// Spec §1.6: the whole batch payload must stay under 10 MB.
pub const MAX_BATCH_BYTES: usize = 10 * 1024 * 1024;

/// What `submit` answers: `{"status":"queued","request_id":…,"model":…}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub request_id: String,
    pub model: String,
}

/// One queued input, handed to whoever runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingItem {
    pub request_id: String,
    pub account_id: String,
    pub model: String,
    pub index: usize,
    /// The input as submitted, without `external_reference`.
    pub input: Value,
}

/// How one item ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemOutcome {
    pub success: bool,
    /// The model's output (`null` when it failed).
    pub result: Value,
    /// Workers AI error objects when it failed.
    pub errors: Value,
    /// Token counts of an output that carries none itself (embeddings); an output's own
    /// `usage` is used otherwise.
    pub usage: Option<Value>,
}

/// What a poll sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    Queued {
        model: String,
    },
    Running {
        model: String,
    },
    /// `{"responses":[…],"usage":{…}}`.
    Done(Value),
}

pub struct BatchQueue {
    db: Mutex<Connection>,
    /// (request_id, index) of the items being run by this process.
    in_flight: Mutex<HashSet<(String, usize)>>,
    limits: BatchLimits,
}

impl BatchQueue {
    pub fn open(path: &Path) -> KilnResult<Self> {
        Self::open_with_limits(path, BatchLimits::default())
    }

    /// A queue that refuses batches over the operator's `[limits.batch]`.
    pub fn open_with_limits(path: &Path, limits: BatchLimits) -> KilnResult<Self> {
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
        Ok(Self {
            db: Mutex::new(db),
            in_flight: Mutex::new(HashSet::new()),
            limits,
        })
    }

    pub fn limits(&self) -> &BatchLimits {
        &self.limits
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_flight(&self) -> MutexGuard<'_, HashSet<(String, usize)>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `requests` (each a model input, optionally with `external_reference`) in one
    /// transaction; the batch is durable when this returns.
    pub fn submit(
        &self,
        account_id: &str,
        model: &str,
        requests: &[Value],
    ) -> KilnResult<Submitted> {
        // Counted before anything is copied.
        submission::check_count(requests.len(), &self.limits)?;
        let inputs = requests
            .iter()
            .enumerate()
            .map(|(index, request)| QueuedInput::from_value(index, request))
            .collect::<KilnResult<Vec<_>>>()?;
        self.submit_inputs(account_id, model, &inputs)
    }

    /// Queues inputs already split from their `external_reference` ([`read_submission`]),
    /// after checking them against the limits: nothing is written for a batch over them.
    pub fn submit_inputs(
        &self,
        account_id: &str,
        model: &str,
        inputs: &[QueuedInput],
    ) -> KilnResult<Submitted> {
        if inputs.is_empty() {
            return Err(KilnError::bad_input(
                "'/requests' must hold at least one input",
            ));
        }
        submission::check_count(inputs.len(), &self.limits)?;
        let stored = inputs.iter().map(QueuedInput::stored_bytes).sum::<usize>();
        submission::check_stored_bytes(stored, &self.limits)?;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut db = self.db();
        let transaction = db.transaction().map_err(storage)?;
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
        transaction.commit().map_err(storage)?;
        Ok(Submitted {
            request_id,
            model: model.to_owned(),
        })
    }

    /// The state of `request_id` as `account_id` may see it: another account's batch is `None`,
    /// exactly like one that does not exist.
    pub fn poll(&self, account_id: &str, request_id: &str) -> KilnResult<Option<Poll>> {
        let db = self.db();
        let batch: Option<(String, String)> = db
            .query_row(
                "SELECT model, status FROM batches WHERE request_id = ?1 AND account_id = ?2",
                params![request_id, account_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(storage)?;
        let Some((model, status)) = batch else {
            return Ok(None);
        };
        match status.as_str() {
            "queued" => Ok(Some(Poll::Queued { model })),
            "running" => Ok(Some(Poll::Running { model })),
            _ => responses(&db, request_id).map(|done| Some(Poll::Done(done))),
        }
    }

    /// Up to `limit` unfinished items that nobody in this process is running, oldest batch
    /// first; they count as in flight until [`complete`](Self::complete) has saved them.
    pub fn claim(&self, limit: usize) -> KilnResult<Vec<PendingItem>> {
        let db = self.db();
        let mut in_flight = self.in_flight();
        let mut query = db
            .prepare(
                "SELECT i.request_id, b.account_id, b.model, i.idx, i.input
                 FROM batch_items i JOIN batches b ON b.request_id = i.request_id
                 WHERE i.done = 0
                 ORDER BY b.created_ms, i.request_id, i.idx
                 LIMIT ?1",
            )
            .map_err(storage)?;
        let candidates = query
            .query_map(params![(limit + in_flight.len()) as i64], |row| {
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
        let mut claimed = Vec::new();
        for (request_id, account_id, model, index, input) in candidates {
            let index = usize::try_from(index).unwrap_or_default();
            if claimed.len() == limit || !in_flight.insert((request_id.clone(), index)) {
                continue;
            }
            let input = serde_json::from_str(&input).unwrap_or(Value::Null);
            claimed.push(PendingItem {
                request_id,
                account_id,
                model,
                index,
                input,
            });
        }
        // Claimed items come in batch order, so each batch's id is one run.
        let mut batch_ids: Vec<&str> = claimed
            .iter()
            .map(|item| item.request_id.as_str())
            .collect();
        batch_ids.dedup();
        for request_id in batch_ids {
            db.execute(
                "UPDATE batches SET status = 'running' WHERE request_id = ?1 AND status = 'queued'",
                params![request_id],
            )
            .map_err(storage)?;
        }
        Ok(claimed)
    }

    /// Records how `item` ended (durably) and marks its batch done once nothing is left. If
    /// that fails (a full disk) the item is released anyway: it is claimed and run again later,
    /// rather than staying in flight, unsaved, until a restart.
    pub fn complete(&self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()> {
        let saved = self.save_outcome(item, outcome);
        self.release(item);
        saved
    }

    fn save_outcome(&self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()> {
        let mut db = self.db();
        let transaction = db.transaction().map_err(storage)?;
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

    fn release(&self, item: &PendingItem) {
        self.in_flight()
            .remove(&(item.request_id.clone(), item.index));
    }

    /// Items not finished yet, in flight or not.
    pub fn unfinished(&self) -> KilnResult<usize> {
        self.db()
            .query_row(
                "SELECT COUNT(*) FROM batch_items WHERE done = 0",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|count| usize::try_from(count).unwrap_or_default())
            .map_err(storage)
    }
}

/// The finished batch: every item's response by index, and the summed token usage.
fn responses(db: &Connection, request_id: &str) -> KilnResult<Value> {
    let mut query = db
        .prepare(
            "SELECT idx, success, result, errors, external_reference, usage FROM batch_items
             WHERE request_id = ?1 ORDER BY idx",
        )
        .map_err(storage)?;
    let rows = query
        .query_map(params![request_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Option<bool>>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(storage)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage)?;
    let parse = |text: Option<String>| {
        text.and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .unwrap_or(Value::Null)
    };
    let mut totals = Map::new();
    let mut responses = Vec::with_capacity(rows.len());
    for (index, success, result, errors, reference, reported) in rows {
        let result = parse(result);
        let usage = Some(parse(reported))
            .filter(Value::is_object)
            .or_else(|| result.get("usage").filter(|u| u.is_object()).cloned());
        for (name, count) in usage.iter().flat_map(|u| u.as_object()).flatten() {
            if let Some(count) = count.as_u64() {
                let total = totals.get(name).and_then(Value::as_u64).unwrap_or(0);
                totals.insert(name.clone(), json!(total + count));
            }
        }
        let mut response = json!({
            "id": index,
            "result": result,
            "success": success.unwrap_or(false),
            "external_reference": reference,
            "usage": usage,
        });
        if success != Some(true) {
            response["errors"] = parse(errors);
        }
        responses.push(response);
    }
    Ok(json!({"responses": responses, "usage": Value::Object(totals)}))
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

#[cfg(test)]
mod tests;
