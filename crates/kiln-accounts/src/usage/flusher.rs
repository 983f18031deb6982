//! The background thread that moves recorded usage from memory to SQLite.

use std::mem;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use kiln_core::{KilnError, KilnResult};
use rusqlite::params;

use super::{Pending, Shared, FLUSH_INTERVAL};
use crate::db::{db_error, to_sql_int};

pub(super) fn spawn(shared: Arc<Shared>) -> KilnResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kiln-usage-flush".into())
        .spawn(move || run(&shared))
        .map_err(|error| KilnError::internal(format!("starting usage flusher: {error}")))
}

/// Sleeps until usage is pending, lets more gather for up to FLUSH_INTERVAL, writes it in one
/// transaction; repeats until the ledger is dropped, then writes what is left.
fn run(shared: &Shared) {
    loop {
        let mut state = shared.state();
        while state.pending.is_empty() && !state.stopping {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let deadline = Instant::now() + FLUSH_INTERVAL;
        while !state.stopping {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = shared
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let stopping = state.stopping;
        drop(state);
        if let Err(error) = write_pending(shared) {
            tracing::warn!(%error, "usage ledger: flush failed; will retry");
        }
        if stopping {
            return;
        }
    }
}

/// Writes all pending usage. On failure the amounts go back to pending, to be retried.
pub(super) fn write_pending(shared: &Shared) -> KilnResult<()> {
    let mut db = shared.db();
    let pending = mem::take(&mut shared.state().pending);
    if pending.is_empty() {
        return Ok(());
    }
    let written = upsert_add(&mut db, &pending);
    if written.is_err() {
        let mut state = shared.state();
        for (key, usage) in pending {
            state.pending.entry(key).or_default().add(&usage);
        }
    }
    written
}

fn upsert_add(db: &mut rusqlite::Connection, pending: &Pending) -> KilnResult<()> {
    let tx = db.transaction().map_err(db_error)?;
    {
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO usage_daily
                     (account_id, day, model, requests, input_tokens, output_tokens, neurons)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (account_id, day, model) DO UPDATE SET
                     requests = requests + excluded.requests,
                     input_tokens = input_tokens + excluded.input_tokens,
                     output_tokens = output_tokens + excluded.output_tokens,
                     neurons = neurons + excluded.neurons",
            )
            .map_err(db_error)?;
        for ((account, day, model), usage) in pending {
            upsert
                .execute(params![
                    account,
                    day,
                    model,
                    to_sql_int(usage.requests),
                    to_sql_int(usage.input_tokens),
                    to_sql_int(usage.output_tokens),
                    usage.neurons,
                ])
                .map_err(db_error)?;
        }
    }
    tx.commit().map_err(db_error)
}
