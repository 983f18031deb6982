//! The embedding worker: one thread owning one [`Embedder`], batching queued requests together.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use kiln_core::{Embedder, EmbeddingOutput, ErrorKind, KilnError, KilnResult, Pooling};
use tokio::sync::oneshot;

use crate::{isolated, rebuilt, Admission, AdmissionConfig, Rebuild};

/// Requests waiting together are embedded in one forward pass up to this many texts.
const MAX_BATCH_TEXTS: usize = 256;

/// What a caller asks to embed: text, or token ids of the model's tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbeddingInput {
    Texts(Vec<String>),
    /// Search queries: embedded with the model's query convention, if it has one.
    Queries(Vec<String>),
    TokenIds(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Texts(texts) | EmbeddingInput::Queries(texts) => texts.len(),
            EmbeddingInput::TokenIds(ids) => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct EmbeddingJob {
    input: EmbeddingInput,
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
        embedder: Box<dyn Embedder>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        Self::spawn_rebuildable(name, embedder, None, config)
    }

    /// [`spawn`](Self::spawn), with a way to reload the model after the engine panicked.
    pub fn spawn_rebuildable(
        name: &str,
        mut embedder: Box<dyn Embedder>,
        rebuild: Option<Rebuild<Box<dyn Embedder>>>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        let (jobs, queue) = mpsc::sync_channel::<EmbeddingJob>(config.queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let dimensions = embedder.dimensions();
        let counter = in_flight.clone();
        let model = name.to_owned();
        thread::Builder::new()
            .name(format!("embed-{name}"))
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let batch = gather_batch(first, &queue);
                    let finished = batch.len();
                    if run_batch(&model, embedder.as_mut(), batch) == Engine::Panicked {
                        embedder = rebuilt(&model, embedder, rebuild.as_ref());
                    }
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

    /// Whether any request is queued or running (an idle model may be unloaded).
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
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
        self.embed_input(EmbeddingInput::Texts(texts), pooling, admission)
            .await
    }

    /// Embeds text or token ids; `token_counts` in the answer are this request's own.
    pub async fn embed_input(
        &self,
        input: EmbeddingInput,
        pooling: Pooling,
        admission: Admission,
    ) -> KilnResult<EmbeddingOutput> {
        crate::submit_and_wait(
            &self.jobs,
            &self.in_flight,
            &self.config,
            admission,
            |deadline, reply| EmbeddingJob {
                input,
                pooling,
                deadline,
                reply,
            },
        )
        .await
    }
}

/// Takes whatever else is already waiting, so concurrent callers share one forward pass.
fn gather_batch(first: EmbeddingJob, queue: &mpsc::Receiver<EmbeddingJob>) -> Vec<EmbeddingJob> {
    let mut texts = first.input.len();
    let mut batch = vec![first];
    while texts < MAX_BATCH_TEXTS {
        match queue.try_recv() {
            Ok(job) => {
                texts += job.input.len();
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Whether the engine can be trusted after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sound,
    Panicked,
}

fn run_batch(model: &str, embedder: &mut dyn Embedder, batch: Vec<EmbeddingJob>) -> Engine {
    let now = Instant::now();
    let (live, expired): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .partition(|job| job.deadline > now);
    for job in expired {
        let error = KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message());
        let _ = job.reply.send(Err(error));
    }
    // Group by pooling and kind of input: each group is one call into the engine.
    let mut groups: Vec<Vec<EmbeddingJob>> = Vec::new();
    for job in live {
        match groups.iter_mut().find(|group| same_group(&group[0], &job)) {
            Some(group) => group.push(job),
            None => groups.push(vec![job]),
        }
    }
    let mut state = Engine::Sound;
    for group in groups {
        if embed_group(model, embedder, group) == Engine::Panicked {
            state = Engine::Panicked;
        }
    }
    state
}

fn same_group(a: &EmbeddingJob, b: &EmbeddingJob) -> bool {
    a.pooling == b.pooling && std::mem::discriminant(&a.input) == std::mem::discriminant(&b.input)
}

/// Runs one homogeneous group (same pooling, same kind of input) in one engine call.
fn embed_group(model: &str, embedder: &mut dyn Embedder, group: Vec<EmbeddingJob>) -> Engine {
    let pooling = group[0].pooling;
    // A panic fails this group's requests only; the caller rebuilds the engine.
    let texts = || -> Vec<String> {
        group
            .iter()
            .flat_map(|job| match &job.input {
                EmbeddingInput::Texts(texts) | EmbeddingInput::Queries(texts) => texts.clone(),
                EmbeddingInput::TokenIds(_) => Vec::new(),
            })
            .collect()
    };
    let result = isolated(model, || match &group[0].input {
        EmbeddingInput::Texts(_) => embedder.embed(&texts(), pooling),
        EmbeddingInput::Queries(_) => embedder.embed_queries(&texts(), pooling),
        EmbeddingInput::TokenIds(_) => {
            let ids: Vec<Vec<u32>> = group
                .iter()
                .flat_map(|job| match &job.input {
                    EmbeddingInput::TokenIds(ids) => ids.clone(),
                    _ => Vec::new(),
                })
                .collect();
            embedder.embed_token_ids(&ids, pooling)
        }
    });
    let (result, state) = match result {
        Ok(result) => (result, Engine::Sound),
        Err(panicked) => (Err(panicked), Engine::Panicked),
    };
    match result {
        Ok(output) => split_output(output, group),
        Err(error) => {
            for job in group {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
    state
}

/// Hands each job its own vectors and its own inputs' token counts back.
fn split_output(output: EmbeddingOutput, group: Vec<EmbeddingJob>) {
    let mut vectors = output.vectors.into_iter();
    let mut counts = output.token_counts.into_iter();
    for job in group {
        let count = job.input.len();
        let mine: Vec<Vec<f32>> = vectors.by_ref().take(count).collect();
        let token_counts: Vec<u32> = counts.by_ref().take(count).collect();
        let prompt_tokens = token_counts
            .iter()
            .fold(0u32, |sum, &n| sum.saturating_add(n));
        let _ = job.reply.send(Ok(EmbeddingOutput {
            vectors: mine,
            prompt_tokens,
            token_counts,
        }));
    }
}
