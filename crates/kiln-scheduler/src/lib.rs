//! Scheduling: admission control, bounded queues, and one OS thread per loaded model.
//!
//! The transport hands a validated request to a worker and gets back a stream of events; engines
//! never see async code and the transport never sees an engine.

mod embedding;
mod generation;
mod media;
mod metrics;
mod registry;

pub use embedding::{EmbeddingInput, EmbeddingWorker};
pub use generation::{GenerationStream, GenerationWorker, RequestTimings, WorkerEvent};
pub use media::MediaWorker;
pub use registry::{
    LoadedWorker, ModelLoader, ModelRegistry, ResidencyPolicy, ServedModel, UnloadReason, Worker,
};

use std::time::{Duration, Instant};

/// Limits shared by every worker.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    /// Requests that may wait for a free slot before new ones get 429 / 3040.
    pub queue_capacity: usize,
    /// A request still queued or running after this long ends with 408 / 3007.
    pub request_timeout: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// Per-request admission options from the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admission {
    /// `options.rejectIfBusy`: fail at once rather than wait for a free slot.
    pub reject_if_busy: bool,
    /// Overrides the configured timeout when set.
    pub deadline: Option<Instant>,
}

/// One request into a one-answer worker (embeddings, media): admission (`rejectIfBusy`, a full
/// queue → 429 / 3040), then the answer or the deadline (408 / 3007). `in_flight` counts the
/// request until the worker thread has finished it.
pub(crate) async fn submit_and_wait<J, T>(
    jobs: &std::sync::mpsc::SyncSender<J>,
    in_flight: &std::sync::atomic::AtomicUsize,
    config: &AdmissionConfig,
    admission: Admission,
    job: impl FnOnce(Instant, tokio::sync::oneshot::Sender<kiln_core::KilnResult<T>>) -> J,
) -> kiln_core::KilnResult<T> {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::TrySendError;

    use kiln_core::{ErrorKind, KilnError};

    let previously = in_flight.fetch_add(1, Ordering::SeqCst);
    if admission.reject_if_busy && previously > 0 {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(KilnError::capacity());
    }
    let deadline = admission
        .deadline
        .unwrap_or_else(|| Instant::now() + config.request_timeout);
    let (reply, answer) = tokio::sync::oneshot::channel();
    if let Err(error) = jobs.try_send(job(deadline, reply)) {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(match error {
            TrySendError::Full(_) => KilnError::capacity(),
            TrySendError::Disconnected(_) => {
                KilnError::internal("the model's worker thread has stopped")
            }
        });
    }
    let wait = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(KilnError::internal("the model's worker thread has stopped")),
        Err(_) => Err(KilnError::new(
            ErrorKind::Timeout,
            ErrorKind::Timeout.default_message(),
        )),
    }
}
