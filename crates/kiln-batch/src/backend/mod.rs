//! Where the queue is kept: a SQLite file (the default: one node, whose restart runs again
//! what it had not finished) or PostgreSQL shared by a cluster, where items are claimed with
//! leases so that a dead node's items are run by another.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use kiln_core::KilnResult;

use crate::submission::QueuedInput;
use crate::{ItemOutcome, PendingItem};

pub use self::postgres::DEFAULT_LEASE;

/// Which database a [`crate::BatchQueue`] uses.
#[derive(Clone, Debug)]
pub enum BatchDb {
    Sqlite(PathBuf),
    /// Claims last `lease` and are renewed while their node lives; an item whose lease ran
    /// out (its node died) is claimed again by any node. Claims are stored as
    /// `{node}/{random}`: the node's name for operators, and a part that differs per process
    /// so that a restarted node never mistakes its dead predecessor's claims for its own.
    Postgres {
        url: String,
        lease: Duration,
        node: String,
    },
}

impl BatchDb {
    pub fn postgres(url: &str, node: &str) -> BatchDb {
        BatchDb::Postgres {
            url: url.to_owned(),
            lease: DEFAULT_LEASE,
            node: node.to_owned(),
        }
    }

    pub(crate) fn open(&self) -> KilnResult<Box<dyn QueueBackend>> {
        match self {
            BatchDb::Sqlite(path) => Ok(Box::new(sqlite::SqliteQueue::open(path)?)),
            BatchDb::Postgres { url, lease, node } => {
                Ok(Box::new(postgres::PostgresQueue::open(url, *lease, node)?))
            }
        }
    }
}

/// A stored item as a poll of a finished batch reads it.
pub(crate) struct ItemRow {
    pub index: i64,
    pub success: Option<bool>,
    pub result: Option<String>,
    pub errors: Option<String>,
    pub external_reference: Option<String>,
    pub usage: Option<String>,
}

/// The statements the queue needs.
pub(crate) trait QueueBackend: Send {
    /// The batch and all its items, in one transaction.
    fn insert_batch(
        &mut self,
        request_id: &str,
        account_id: &str,
        model: &str,
        inputs: &[QueuedInput],
    ) -> KilnResult<()>;
    /// (model, status) of the account's batch.
    fn batch(&mut self, account_id: &str, request_id: &str)
        -> KilnResult<Option<(String, String)>>;
    fn items(&mut self, request_id: &str) -> KilnResult<Vec<ItemRow>>;
    /// Up to `limit` unfinished items nobody holds whose model `runnable` accepts, oldest
    /// batch first, now held by this queue; their batches become `running`.
    fn claim(
        &mut self,
        limit: usize,
        runnable: &dyn Fn(&str) -> bool,
    ) -> KilnResult<Vec<PendingItem>>;
    /// Saves the outcome of an item this queue holds and marks its batch done when nothing is
    /// left; saved or not, the item is no longer held (one whose outcome could not be saved is
    /// claimed and run again). An item this queue no longer holds (its lease ran out and
    /// another node took it) is left to that node: the outcome is dropped, so each item's
    /// outcome is saved once.
    fn complete(&mut self, item: &PendingItem, outcome: &ItemOutcome) -> KilnResult<()>;
    fn unfinished(&mut self) -> KilnResult<usize>;
}
