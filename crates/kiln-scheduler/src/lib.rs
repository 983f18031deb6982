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
