//! The text-generation worker: one thread owning one [`BatchGenerator`], running up to its
//! `max_sequences` requests at once. Requests wait in a bounded queue for a free slot and join
//! the running batch between forward passes; finished, cancelled and timed-out ones leave it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use kiln_core::engine::{BatchGenerator, SequenceId, SequenceOptions, StepReport};
use kiln_core::{ErrorKind, GenerationEvent, GenerationRequest, KilnError, KilnResult, ToolSyntax};
use tokio::sync::mpsc as async_mpsc;

use crate::metrics::ModelMetrics;
use crate::{isolated, rebuilt, Admission, AdmissionConfig, Rebuild};

/// What the transport receives: engine events, or the error that ended the request.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Generation(GenerationEvent),
    Error(KilnError),
}

/// Events for one request, and how long its phases took. Dropping it cancels the request
/// before the next forward pass.
pub struct GenerationStream {
    events: async_mpsc::Receiver<WorkerEvent>,
    clock: Arc<PhaseClock>,
}

impl GenerationStream {
    pub async fn recv(&mut self) -> Option<WorkerEvent> {
        self.events.recv().await
    }

    /// The phases measured so far: all three once the last event has been received.
    pub fn timings(&self) -> RequestTimings {
        self.clock.timings()
    }
}

/// Where a request's time went, for the `x-kiln-*-ms` response headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestTimings {
    /// Waiting for a free slot.
    pub queue: Option<Duration>,
    /// From taking a slot to the first token (prompt processing, interleaved with other
    /// requests' decode steps).
    pub prefill: Option<Duration>,
    /// From the first token to the last.
    pub decode: Option<Duration>,
}

/// Instants the worker thread stamps as a request moves through its phases.
struct PhaseClock {
    submitted: Instant,
    stamps: Mutex<PhaseStamps>,
}

#[derive(Default)]
struct PhaseStamps {
    admitted: Option<Instant>,
    first_token: Option<Instant>,
    finished: Option<Instant>,
}

impl PhaseClock {
    fn new(submitted: Instant) -> Self {
        Self {
            submitted,
            stamps: Mutex::new(PhaseStamps::default()),
        }
    }

    fn stamp(&self, update: impl FnOnce(&mut PhaseStamps)) {
        update(&mut self.stamps.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn timings(&self) -> RequestTimings {
        let stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let between = |from: Option<Instant>, to: Option<Instant>| Some(to?.duration_since(from?));
        RequestTimings {
            queue: between(Some(self.submitted), stamps.admitted),
            prefill: between(stamps.admitted, stamps.first_token),
            decode: between(stamps.first_token, stamps.finished),
        }
    }
}

struct GenerationJob {
    request: GenerationRequest,
    options: SequenceOptions,
    events: async_mpsc::Sender<WorkerEvent>,
    deadline: Instant,
    clock: Arc<PhaseClock>,
}

/// Handle to a generation thread. Cheap to clone; the thread ends when the last handle drops.
#[derive(Clone)]
pub struct GenerationWorker {
    jobs: mpsc::SyncSender<GenerationJob>,
    /// Queued plus running requests.
    in_flight: Arc<AtomicUsize>,
    slots: usize,
    config: AdmissionConfig,
    context_window: u32,
    tool_syntax: Option<ToolSyntax>,
}

impl GenerationWorker {
    /// Starts the thread that drives `generator`. Up to `config.queue_capacity` requests wait
    /// for a free slot; more get 429 / 3040.
    pub fn spawn(
        name: &str,
        generator: Box<dyn BatchGenerator>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        Self::spawn_rebuildable(name, generator, None, config)
    }

    /// [`spawn`](Self::spawn), with a way to reload the model after the engine panicked: a
    /// panic in a forward pass fails the requests of that pass, the model is reloaded, and the
    /// queued requests are served by the fresh engine.
    pub fn spawn_rebuildable(
        name: &str,
        generator: Box<dyn BatchGenerator>,
        rebuild: Option<Rebuild<Box<dyn BatchGenerator>>>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        let (jobs, queue) = mpsc::sync_channel::<GenerationJob>(config.queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let context_window = generator.context_window();
        let tool_syntax = generator.tool_syntax();
        let slots = generator.max_sequences().max(1);
        let counter = in_flight.clone();
        let metrics = ModelMetrics::new(name);
        let model = name.to_owned();
        thread::Builder::new()
            .name(format!("gen-{name}"))
            .spawn(move || {
                let mut scheduler = Scheduler {
                    model,
                    generator,
                    rebuild,
                    queue,
                    in_flight: counter,
                    running: HashMap::new(),
                    next_id: 0,
                    metrics,
                };
                scheduler.run();
            })
            .map_err(|e| KilnError::internal(format!("cannot start worker thread: {e}")))?;
        Ok(Self {
            jobs,
            in_flight,
            slots,
            config,
            context_window,
            tool_syntax,
        })
    }

    /// Whether any request is queued or running (an idle model may be unloaded).
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    pub fn context_window(&self) -> u32 {
        self.context_window
    }

    /// How the model writes tool calls; `None` when its chat template has no tool support.
    pub fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.tool_syntax
    }

    /// How many requests run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Admits the request or refuses it at once with 429 / 3040: when the queue is full, or
    /// with `rejectIfBusy` when no slot is free right now.
    pub fn submit(
        &self,
        request: GenerationRequest,
        admission: Admission,
    ) -> KilnResult<GenerationStream> {
        self.submit_with_options(request, admission, SequenceOptions::default())
    }

    /// [`submit`](Self::submit) with the request's tenant and conversation
    /// (`x-session-affinity`): it runs in the slot that last served the session when that slot
    /// is free, reusing the KV cache its tenant left there.
    pub fn submit_with_options(
        &self,
        request: GenerationRequest,
        admission: Admission,
        options: SequenceOptions,
    ) -> KilnResult<GenerationStream> {
        let previously = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if admission.reject_if_busy && previously >= self.slots {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(KilnError::capacity());
        }
        // A request sends at most one text event per token plus a flush and its last event, so
        // this bound is never reached: the engine never waits on one slow reader.
        let buffer = request.max_tokens.min(self.context_window) as usize + 4;
        let (events, receiver) = async_mpsc::channel(buffer);
        let submitted = Instant::now();
        let clock = Arc::new(PhaseClock::new(submitted));
        let stream = GenerationStream {
            events: receiver,
            clock: clock.clone(),
        };
        let deadline = admission
            .deadline
            .unwrap_or_else(|| submitted + self.config.request_timeout);
        let job = GenerationJob {
            request,
            options,
            events,
            deadline,
            clock,
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

/// A request in the running batch.
struct RunningRequest {
    events: async_mpsc::Sender<WorkerEvent>,
    deadline: Instant,
    admitted: Instant,
    last_token: Option<Instant>,
    clock: Arc<PhaseClock>,
}

/// The worker thread's state.
struct Scheduler {
    model: String,
    generator: Box<dyn BatchGenerator>,
    rebuild: Option<Rebuild<Box<dyn BatchGenerator>>>,
    queue: mpsc::Receiver<GenerationJob>,
    in_flight: Arc<AtomicUsize>,
    running: HashMap<SequenceId, RunningRequest>,
    next_id: SequenceId,
    metrics: ModelMetrics,
}

impl Scheduler {
    fn run(&mut self) {
        loop {
            if !self.admit_waiting() {
                return;
            }
            self.drop_departed();
            if self.running.is_empty() {
                continue;
            }
            let generator = &mut self.generator;
            match isolated(&self.model, || generator.step()) {
                Ok(report) => self.dispatch(report),
                // Every sequence of the pass is lost with the engine's state.
                Err(panicked) => self.recover(panicked),
            }
        }
    }

    /// After a panic: the running requests end with `error`, and the engine is rebuilt (the
    /// model reloaded) before queued requests are admitted.
    fn recover(&mut self, error: KilnError) {
        for (_, request) in self.running.drain() {
            let _ = request.events.try_send(WorkerEvent::Error(error.clone()));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let old = std::mem::replace(&mut self.generator, Box::new(Reloading));
        self.generator = rebuilt(&self.model, old, self.rebuild.as_ref());
    }

    /// Cancels a sequence; a panic while doing so means the engine cannot be trusted.
    fn cancel(&mut self, id: SequenceId) {
        let generator = &mut self.generator;
        if let Err(panicked) = isolated(&self.model, || generator.cancel(id)) {
            self.recover(panicked);
        }
    }

    /// Moves queued requests into free slots; blocks for one when nothing runs. Returns `false`
    /// when every handle is gone and nothing is left to do.
    fn admit_waiting(&mut self) -> bool {
        while self.generator.running_sequences() < self.generator.max_sequences() {
            let job = if self.running.is_empty() {
                match self.queue.recv() {
                    Ok(job) => job,
                    Err(_) => return false,
                }
            } else {
                match self.queue.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            self.admit(job);
        }
        self.metrics.queue_depth(
            self.in_flight
                .load(Ordering::SeqCst)
                .saturating_sub(self.running.len()),
        );
        true
    }

    fn admit(&mut self, job: GenerationJob) {
        let now = Instant::now();
        // The client may have left while the request waited in the queue.
        if job.events.is_closed() {
            self.release();
            return;
        }
        if now >= job.deadline {
            let _ = job.events.try_send(WorkerEvent::Error(timeout_error()));
            self.release();
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let generator = &mut self.generator;
        let added = isolated(&self.model, || {
            generator.add_sequence(id, &job.request, &job.options)
        });
        let panicked = added.is_err();
        if let Err(error) = added.and_then(|added| added) {
            let _ = job.events.try_send(WorkerEvent::Error(error));
            self.release();
            if panicked {
                // Whatever the engine half-admitted goes; if even that fails, it is rebuilt.
                self.cancel(id);
            }
            return;
        }
        self.metrics.queue_time(now - job.clock.submitted);
        job.clock.stamp(|stamps| stamps.admitted = Some(now));
        self.running.insert(
            id,
            RunningRequest {
                events: job.events,
                deadline: job.deadline,
                admitted: now,
                last_token: None,
                clock: job.clock,
            },
        );
    }

    /// Cancels requests whose client left or whose deadline passed, before any further compute.
    fn drop_departed(&mut self) {
        let now = Instant::now();
        let departed: Vec<SequenceId> = self
            .running
            .iter()
            .filter(|(_, request)| request.events.is_closed() || now >= request.deadline)
            .map(|(&id, _)| id)
            .collect();
        for id in departed {
            // A panic while cancelling an earlier one may have ended this one already.
            let Some(request) = self.running.remove(&id) else {
                continue;
            };
            if !request.events.is_closed() {
                let _ = request.events.try_send(WorkerEvent::Error(timeout_error()));
            }
            self.release();
            self.cancel(id);
        }
    }

    fn dispatch(&mut self, report: StepReport) {
        if report.batch_sequences > 0 {
            self.metrics.batch_size(report.batch_sequences);
        }
        let now = Instant::now();
        for event in report.events {
            let Some(request) = self.running.get_mut(&event.id) else {
                continue;
            };
            let (message, last) = match event.event {
                Ok(GenerationEvent::Text(text)) => {
                    match request.last_token {
                        None => {
                            self.metrics.time_to_first_token(now - request.admitted);
                            request.clock.stamp(|stamps| stamps.first_token = Some(now));
                        }
                        Some(previous) => self.metrics.inter_token_latency(now - previous),
                    }
                    request.last_token = Some(now);
                    (WorkerEvent::Generation(GenerationEvent::Text(text)), false)
                }
                Ok(GenerationEvent::Done {
                    usage,
                    finish_reason,
                }) => {
                    self.metrics.usage(&usage);
                    request.clock.stamp(|stamps| {
                        stamps.first_token.get_or_insert(now);
                        stamps.finished = Some(now);
                    });
                    let done = GenerationEvent::Done {
                        usage,
                        finish_reason,
                    };
                    (WorkerEvent::Generation(done), true)
                }
                Err(error) => (WorkerEvent::Error(error), true),
            };
            let delivered = request.events.try_send(message).is_ok();
            if last || !delivered {
                self.running.remove(&event.id);
                self.release();
                if !last {
                    // The client left (or, impossibly, fell a whole request behind).
                    self.cancel(event.id);
                }
            }
        }
    }

    /// One queued or running request is gone.
    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stands in for the engine while a panicked one is dropped and its model reloaded.
struct Reloading;

impl BatchGenerator for Reloading {
    fn context_window(&self) -> u32 {
        0
    }
    fn max_sequences(&self) -> usize {
        0
    }
    fn running_sequences(&self) -> usize {
        0
    }
    fn add_sequence(
        &mut self,
        _: SequenceId,
        _: &GenerationRequest,
        _: &SequenceOptions,
    ) -> KilnResult<()> {
        Err(KilnError::internal("the model is being reloaded"))
    }
    fn cancel(&mut self, _: SequenceId) {}
    fn step(&mut self) -> StepReport {
        StepReport::default()
    }
}
