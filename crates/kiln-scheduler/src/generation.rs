//! The text-generation worker: one thread owning one [`TextGenerator`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use kiln_core::{
    ErrorKind, EventSink, GenerationEvent, GenerationRequest, KilnError, KilnResult, TextGenerator,
};
use tokio::sync::mpsc as async_mpsc;

use crate::{Admission, AdmissionConfig};

/// What the transport receives: engine events, or the error that ended the request.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Generation(GenerationEvent),
    Error(KilnError),
}

/// Events for one request. Dropping it cancels the request before the next token.
pub type GenerationStream = async_mpsc::Receiver<WorkerEvent>;

struct GenerationJob {
    request: GenerationRequest,
    events: async_mpsc::Sender<WorkerEvent>,
    deadline: Instant,
}

/// Handle to a generation thread. Cheap to clone; the thread ends when the last handle drops.
#[derive(Clone)]
pub struct GenerationWorker {
    jobs: mpsc::SyncSender<GenerationJob>,
    /// Queued plus running requests.
    in_flight: Arc<AtomicUsize>,
    config: AdmissionConfig,
    context_window: u32,
}

/// Decrements the in-flight count however a job ends.
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GenerationWorker {
    pub fn spawn(
        name: &str,
        mut generator: Box<dyn TextGenerator>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        let (jobs, queue) = mpsc::sync_channel::<GenerationJob>(config.queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let context_window = generator.context_window();
        let counter = in_flight.clone();
        thread::Builder::new()
            .name(format!("gen-{name}"))
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    let _guard = InFlightGuard(counter.clone());
                    run_job(generator.as_mut(), job);
                }
            })
            .map_err(|e| KilnError::internal(format!("cannot start worker thread: {e}")))?;
        Ok(Self {
            jobs,
            in_flight,
            config,
            context_window,
        })
    }

    pub fn context_window(&self) -> u32 {
        self.context_window
    }

    /// Admits the request or refuses it at once with 429 / 3040.
    pub fn submit(
        &self,
        request: GenerationRequest,
        admission: Admission,
    ) -> KilnResult<GenerationStream> {
        let previously = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if admission.reject_if_busy && previously > 0 {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(KilnError::capacity());
        }
        // Small buffer: the engine waits for a slow reader instead of piling up tokens.
        let (events, stream) = async_mpsc::channel(32);
        let deadline = admission
            .deadline
            .unwrap_or_else(|| Instant::now() + self.config.request_timeout);
        let job = GenerationJob {
            request,
            events,
            deadline,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(stream),
            Err(mpsc::TrySendError::Full(_)) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(KilnError::capacity())
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(KilnError::internal("the model's worker thread has stopped"))
            }
        }
    }
}

fn timeout_error() -> KilnError {
    KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message())
}

fn run_job(generator: &mut dyn TextGenerator, job: GenerationJob) {
    let GenerationJob {
        request,
        events,
        deadline,
    } = job;
    // The client may have left while the request waited in the queue.
    if events.is_closed() {
        return;
    }
    if Instant::now() >= deadline {
        let _ = events.blocking_send(WorkerEvent::Error(timeout_error()));
        return;
    }
    let mut timed_out = false;
    let mut sink = |event: GenerationEvent| {
        if Instant::now() >= deadline {
            timed_out = true;
            return false;
        }
        events.blocking_send(WorkerEvent::Generation(event)).is_ok()
    };
    let result = generator.generate(&request, &mut sink as &mut dyn EventSink);
    let outcome = match result {
        Err(error) => Some(error),
        Ok(()) if timed_out => Some(timeout_error()),
        Ok(()) => None,
    };
    if let Some(error) = outcome {
        let _ = events.blocking_send(WorkerEvent::Error(error));
    }
}
