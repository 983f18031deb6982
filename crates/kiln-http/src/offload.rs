//! Blocking work (SQLite writes with fsync, file I/O, index search) moved off the async threads.

use kiln_core::{KilnError, KilnResult};

/// Runs `work` on the blocking pool; `what` names it in the error should the task panic.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> KilnResult<T> + Send + 'static,
) -> KilnResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KilnError::internal(format!("{what} failed: {e}")))?
}
