//! The embedding worker: one thread owning one [`Embedder`], batching queued requests together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use kiln_core::{Embedder, EmbeddingOutput, ErrorKind, KilnError, KilnResult, Pooling};
use tokio::sync::oneshot;

use crate::{Admission, AdmissionConfig};

/// Requests waiting together are embedded in one forward pass up to this many texts.
const MAX_BATCH_TEXTS: usize = 256;

struct EmbeddingJob {
    texts: Vec<String>,
    pooling: Pooling,
    deadline: Instant,
    reply: oneshot::Sender<KilnResult<EmbeddingOutput>>,
}

#[derive(Clone)]
pub struct EmbeddingWorker {
    jobs: mpsc::SyncSender<EmbeddingJob>,
    in_flight: Arc<AtomicUsize>,
    config: AdmissionConfig,
    dimensions: usize,
}

impl EmbeddingWorker {
    pub fn spawn(
        name: &str,
        mut embedder: Box<dyn Embedder>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        let (jobs, queue) = mpsc::sync_channel::<EmbeddingJob>(config.queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let dimensions = embedder.dimensions();
        let counter = in_flight.clone();
        thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let batch = gather_batch(first, &queue);
                    let finished = batch.len();
                    run_batch(embedder.as_mut(), batch);
                    counter.fetch_sub(finished, Ordering::SeqCst);
                }
            })
            .map_err(|e| KilnError::internal(format!("cannot start worker thread: {e}")))?;
        Ok(Self {
            jobs,
            in_flight,
            config,
            dimensions,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub async fn embed(
        &self,
        texts: Vec<String>,
        pooling: Pooling,
        admission: Admission,
    ) -> KilnResult<EmbeddingOutput> {
        let previously = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if admission.reject_if_busy && previously > 0 {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(KilnError::capacity());
        }
        let deadline = admission
            .deadline
            .unwrap_or_else(|| Instant::now() + self.config.request_timeout);
        let (reply, answer) = oneshot::channel();
        let job = EmbeddingJob {
            texts,
            pooling,
            deadline,
            reply,
        };
        if let Err(error) = self.jobs.try_send(job) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(match error {
                mpsc::TrySendError::Full(_) => KilnError::capacity(),
                mpsc::TrySendError::Disconnected(_) => {
                    KilnError::internal("the model's worker thread has stopped")
                }
            });
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(KilnError::internal("the model's worker thread has stopped")),
            Err(_) => Err(KilnError::new(
                ErrorKind::Timeout,
                ErrorKind::Timeout.default_message(),
            )),
        }
    }
}

/// Takes whatever else is already waiting, so concurrent callers share one forward pass.
fn gather_batch(first: EmbeddingJob, queue: &mpsc::Receiver<EmbeddingJob>) -> Vec<EmbeddingJob> {
    let mut texts = first.texts.len();
    let mut batch = vec![first];
    while texts < MAX_BATCH_TEXTS {
        match queue.try_recv() {
            Ok(job) => {
                texts += job.texts.len();
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    batch
}

fn run_batch(embedder: &mut dyn Embedder, batch: Vec<EmbeddingJob>) {
    let now = Instant::now();
    let (live, expired): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .partition(|job| job.deadline > now);
    for job in expired {
        let error = KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message());
        let _ = job.reply.send(Err(error));
    }
    // Group by pooling: each group is one call into the engine.
    let (mean, cls): (Vec<_>, Vec<_>) = live.into_iter().partition(|j| j.pooling == Pooling::Mean);
    for group in [mean, cls] {
        if !group.is_empty() {
            embed_group(embedder, group);
        }
    }
}

fn embed_group(embedder: &mut dyn Embedder, group: Vec<EmbeddingJob>) {
    let pooling = group[0].pooling;
    let texts: Vec<String> = group
        .iter()
        .flat_map(|job| job.texts.iter().cloned())
        .collect();
    match embedder.embed(&texts, pooling) {
        Ok(output) => split_output(output, group),
        Err(error) => {
            for job in group {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Hands each job its own vectors back; token usage is apportioned by text count.
fn split_output(output: EmbeddingOutput, group: Vec<EmbeddingJob>) {
    let total_texts = output.vectors.len().max(1);
    let mut vectors = output.vectors.into_iter();
    for job in group {
        let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.texts.len()).collect();
        let share = output.prompt_tokens as usize * mine.len() / total_texts;
        let _ = job.reply.send(Ok(EmbeddingOutput {
            vectors: mine,
            prompt_tokens: share as u32,
        }));
    }
}
