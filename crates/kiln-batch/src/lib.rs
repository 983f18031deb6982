//! The asynchronous batch queue of Workers AI (spec §1.6): `?queueRequest=true` with
//! `{"requests":[…]}` queues the inputs and answers with a `request_id` at once; polling with
//! `{"request_id"}` answers `queued`, `running`, or every response.
//!
//! The queue is durable before it answers: a batch is stored before its `request_id` is
//! returned, and every finished item before the next one is taken, so a restarted server runs
//! exactly the items that had not finished. It lives in a SQLite file by default, or in
//! PostgreSQL shared by a cluster's nodes, where claims are leases and a dead node's items are
//! run by another ([`BatchDb`], `src/backend/`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kiln_core::limits::BatchLimits;
use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Map, Value};

mod backend;
mod submission;

pub use backend::{BatchDb, DEFAULT_LEASE};
use backend::{ItemRow, QueueBackend};
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
    db: Mutex<Box<dyn QueueBackend>>,
    limits: BatchLimits,
}

impl BatchQueue {
    pub fn open(path: &Path) -> KilnResult<Self> {
        Self::open_with_limits(path, BatchLimits::default())
    }

    /// A queue that refuses batches over the operator's `[limits.batch]`.
    pub fn open_with_limits(path: &Path, limits: BatchLimits) -> KilnResult<Self> {
        Self::open_db(&BatchDb::Sqlite(path.to_owned()), limits)
    }

    /// The queue on any backend.
    pub fn open_db(db: &BatchDb, limits: BatchLimits) -> KilnResult<Self> {
        Ok(Self {
            db: Mutex::new(db.open()?),
            limits,
        })
    }

    pub fn limits(&self) -> &BatchLimits {
        &self.limits
    }

    fn db(&self) -> MutexGuard<'_, Box<dyn QueueBackend>> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
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
        self.db()
            .insert_batch(&request_id, account_id, model, inputs)?;
        Ok(Submitted {
            request_id,
            model: model.to_owned(),
        })
    }

    /// The state of `request_id` as `account_id` may see it: another account's batch is `None`,
    /// exactly like one that does not exist.
    pub fn poll(&self, account_id: &str, request_id: &str) -> KilnResult<Option<Poll>> {
        let mut db = self.db();
        let Some((model, status)) = db.batch(account_id, request_id)? else {
            return Ok(None);
        };
        match status.as_str() {
            "queued" => Ok(Some(Poll::Queued { model })),
            "running" => Ok(Some(Poll::Running { model })),
            _ => Ok(Some(Poll::Done(responses(db.items(request_id)?)))),
        }
    }

    /// Up to `limit` unfinished items that nobody is running, oldest batch first; they count
    /// as in flight until [`complete`](Self::complete) has saved them.
    pub fn claim(&self, limit: usize) -> KilnResult<Vec<PendingItem>> {
        self.claim_runnable(limit, &|_| true)
    }

    /// [`claim`](Self::claim), passing over items whose model `runnable` refuses: in a
    /// cluster, the items of models that another node serves are left to it.
    pub fn claim_runnable(
        &self,
        limit: usize,
        runnable: &dyn Fn(&str) -> bool,
    ) -> KilnResult<Vec<PendingItem>> {
        self.db().claim(limit, runnable)
    }

    /// Records how `item` ended (durably) and marks its batch done once nothing is left. If
    /// that fails (a full disk, a database outage) the item is released anyway: it is claimed
    /// and run again later, rather than staying in flight, unsaved, until a restart.
    pub fn complete(&self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()> {
        self.db().complete(item, outcome)
    }

    /// Items not finished yet, in flight or not.
    pub fn unfinished(&self) -> KilnResult<usize> {
        self.db().unfinished()
    }
}

/// The finished batch: every item's response by index, and the summed token usage.
fn responses(rows: Vec<ItemRow>) -> Value {
    let parse = |text: Option<String>| {
        text.and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .unwrap_or(Value::Null)
    };
    let mut totals = Map::new();
    let mut responses = Vec::with_capacity(rows.len());
    for row in rows {
        let ItemRow {
            index,
            success,
            result,
            errors,
            external_reference: reference,
            usage: reported,
        } = row;
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
    json!({"responses": responses, "usage": Value::Object(totals)})
}

#[cfg(test)]
mod tests;
