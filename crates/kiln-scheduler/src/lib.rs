//! Scheduling: admission control, bounded queues, and one OS thread per loaded model.
//!
//! The transport hands a validated request to a worker and gets back a stream of events; engines
//! never see async code and the transport never sees an engine.

mod classification;
mod embedding;
mod generation;
mod media;
mod metrics;
mod registry;

pub use classification::ClassifierWorker;
pub use embedding::{EmbeddingInput, EmbeddingWorker};
pub use generation::{GenerationStream, GenerationWorker, RequestTimings, WorkerEvent};
pub use media::MediaWorker;
pub use registry::{
    LoadedWorker, ModelLoader, ModelRegistry, ResidencyPolicy, Routes, ServedModel, UnloadReason,
    Worker, REFRESH_EVERY,
};

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use kiln_core::{KilnError, KilnResult};

/// Builds a fresh engine (reloads the model) after a panic left the old one untrustworthy.
/// Runs on the worker's own thread; queued requests wait for it and are served once it is back.
pub type Rebuild<E> = Box<dyn Fn() -> KilnResult<E> + Send>;

/// Runs one piece of engine work, turning a panic into an error for the request(s) it served.
/// The worker thread, its queue and every other request carry on.
pub(crate) fn isolated<T>(model: &str, work: impl FnOnce() -> T) -> Result<T, KilnError> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        tracing::error!(model, reason = %reason, "engine panicked; the request that hit it fails");
        crate::metrics::engine_panicked(model);
        KilnError::internal(format!(
            "the model {model} failed while serving this request (an internal error); \
             other requests are not affected"
        ))
    })
}

/// After a panic: a fresh engine from `rebuild`, or the old one when there is no way to rebuild
/// (or rebuilding fails, which is logged: a possibly degraded model beats none).
pub(crate) fn rebuilt<E>(model: &str, old: E, rebuild: Option<&Rebuild<E>>) -> E {
    let Some(rebuild) = rebuild else {
        return old;
    };
    // The old engine's memory is released before the new one is read.
    drop(old);
    loop {
        match isolated(model, rebuild) {
            Ok(Ok(engine)) => {
                tracing::info!(model, "engine rebuilt after a panic");
                return engine;
            }
            Ok(Err(error)) | Err(error) => {
                tracing::error!(model, %error, "rebuilding the engine failed; retrying in 1 s");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

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

    use kiln_core::ErrorKind;

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
