//! The background thread that moves recorded usage from memory to the backend.

use std::mem;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use kiln_core::{KilnError, KilnResult};

use super::{pending_neurons_for_day, Shared, FLUSH_INTERVAL, SHARED_REFRESH};
use crate::day::utc_day;

pub(super) fn spawn(shared: Arc<Shared>) -> KilnResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kiln-usage-flush".into())
        .spawn(move || run(&shared))
        .map_err(|error| KilnError::internal(format!("starting usage flusher: {error}")))
}

/// Sleeps until usage is pending or it is time to reread the totals, lets more gather for up
/// to FLUSH_INTERVAL, writes it in one transaction; repeats until the ledger is dropped, then
/// writes what is left.
fn run(shared: &Shared) {
    loop {
        let mut state = shared.state();
        let woke = Instant::now();
        while state.pending.is_empty() && !state.stopping {
            let Some(left) = SHARED_REFRESH.checked_sub(woke.elapsed()) else {
                break;
            };
            state = shared
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let deadline = Instant::now() + FLUSH_INTERVAL;
        while !state.stopping && !state.pending.is_empty() {
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

/// Writes all pending usage, then rereads today's stored totals (which include what other
/// processes wrote). On failure the amounts go back to pending, to be retried.
pub(super) fn write_pending(shared: &Shared) -> KilnResult<()> {
    let mut db = shared.db();
    let pending = mem::take(&mut shared.state().pending);
    if !pending.is_empty() {
        if let Err(error) = db.add_usage(&pending) {
            let mut state = shared.state();
            for (key, usage) in pending {
                state.pending.entry(key).or_default().add(&usage);
            }
            return Err(error);
        }
    }
    let today = utc_day(shared.clock.now_unix_ms());
    let stored = db.neurons_by_account(&today)?;
    let mut state = shared.state();
    if state.day == today {
        // Stored totals now hold everything taken above; what was recorded since is pending.
        let mut totals = stored;
        for (account, neurons) in pending_neurons_for_day(&state.pending, &today) {
            *totals.entry(account).or_insert(0.0) += neurons;
        }
        state.today_neurons = totals;
    }
    Ok(())
}
