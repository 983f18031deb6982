//! The classifier worker: one thread owning one [`SequenceClassifier`] (text classification or
//! cross-encoder reranking). Requests waiting together share forward passes: every input of
//! every gathered request is sorted by length and run in padded passes of similar lengths.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Instant;

use kiln_core::{
    ClassifierHead, ClassifierInput, ClassifierOutput, ErrorKind, KilnError, KilnResult,
    SequenceClassifier,
};
use tokio::sync::oneshot;

use crate::{isolated, rebuilt, Admission, AdmissionConfig, Rebuild};

/// Requests waiting together are gathered up to this many inputs.
const MAX_GATHERED_INPUTS: usize = 1024;
/// Sequences in one forward pass.
const MAX_PASS_SEQUENCES: usize = 32;
/// Padded tokens in one forward pass: bounds activations (attention grows with length²) and
/// how long a pass runs before deadlines and departed callers are looked at again.
const MAX_PASS_TOKENS: usize = 8192;

struct ClassifyJob {
    inputs: Vec<ClassifierInput>,
    deadline: Instant,
    reply: oneshot::Sender<KilnResult<ClassifierOutput>>,
}

#[derive(Clone)]
pub struct ClassifierWorker {
    jobs: mpsc::SyncSender<ClassifyJob>,
    in_flight: Arc<AtomicUsize>,
    config: AdmissionConfig,
    head: ClassifierHead,
    max_input_tokens: usize,
}

impl ClassifierWorker {
    pub fn spawn(
        name: &str,
        classifier: Box<dyn SequenceClassifier>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        Self::spawn_rebuildable(name, classifier, None, config)
    }

    /// [`spawn`](Self::spawn), with a way to reload the model after the engine panicked.
    pub fn spawn_rebuildable(
        name: &str,
        mut classifier: Box<dyn SequenceClassifier>,
        rebuild: Option<Rebuild<Box<dyn SequenceClassifier>>>,
        config: AdmissionConfig,
    ) -> KilnResult<Self> {
        let (jobs, queue) = mpsc::sync_channel::<ClassifyJob>(config.queue_capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let head = classifier.head().clone();
        let max_input_tokens = classifier.max_input_tokens();
        let counter = in_flight.clone();
        let model = name.to_owned();
        thread::Builder::new()
            .name(format!("classify-{name}"))
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let gathered = gather(first, &queue);
                    let outcome = run_gathered(&model, classifier.as_mut(), gathered, &counter);
                    if outcome == Engine::Panicked {
                        classifier = rebuilt(&model, classifier, rebuild.as_ref());
                    }
                }
            })
            .map_err(|e| KilnError::internal(format!("cannot start worker thread: {e}")))?;
        Ok(Self {
            jobs,
            in_flight,
            config,
            head,
            max_input_tokens,
        })
    }

    /// Labels, or a reranker's single relevance logit.
    pub fn head(&self) -> &ClassifierHead {
        &self.head
    }

    pub fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    /// Whether any request is queued or running (an idle model may be unloaded).
    pub fn is_busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// The logits of each input, in order, and each input's token count. An input the model
    /// cannot take fails the request with `BadInput` naming the input.
    pub async fn classify(
        &self,
        inputs: Vec<ClassifierInput>,
        admission: Admission,
    ) -> KilnResult<ClassifierOutput> {
        if inputs.is_empty() {
            return Ok(ClassifierOutput::default());
        }
        crate::submit_and_wait(
            &self.jobs,
            &self.in_flight,
            &self.config,
            admission,
            |deadline, reply| ClassifyJob {
                inputs,
                deadline,
                reply,
            },
        )
        .await
    }
}

/// Takes whatever else is already waiting, so concurrent callers share forward passes.
fn gather(first: ClassifyJob, queue: &mpsc::Receiver<ClassifyJob>) -> Vec<ClassifyJob> {
    let mut inputs = first.inputs.len();
    let mut gathered = vec![first];
    while inputs < MAX_GATHERED_INPUTS {
        match queue.try_recv() {
            Ok(job) => {
                inputs += job.inputs.len();
                gathered.push(job);
            }
            Err(_) => break,
        }
    }
    gathered
}

/// Whether the engine can be trusted after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sound,
    Panicked,
}

/// A job being served: its token ids, then its logits as passes produce them.
struct Pending {
    inputs: Vec<ClassifierInput>,
    deadline: Instant,
    /// `None` once answered (an error, a timeout) or abandoned by its caller.
    reply: Option<oneshot::Sender<KilnResult<ClassifierOutput>>>,
    token_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
    /// The worker's count of requests not yet finished.
    in_flight: Arc<AtomicUsize>,
}

impl Pending {
    fn new(job: ClassifyJob, in_flight: &Arc<AtomicUsize>) -> Self {
        Self {
            logits: vec![Vec::new(); job.inputs.len()],
            token_ids: Vec::new(),
            inputs: job.inputs,
            deadline: job.deadline,
            reply: Some(job.reply),
            in_flight: in_flight.clone(),
        }
    }

    /// Takes the reply channel, ending the job. It stops counting as busy first, so a caller
    /// that has its answer never sees its own request still counted.
    fn finish(&mut self) -> Option<oneshot::Sender<KilnResult<ClassifierOutput>>> {
        let reply = self.reply.take()?;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Some(reply)
    }

    /// Ends the job with `error` (nobody hears it if the caller left).
    fn fail(&mut self, error: KilnError) {
        if let Some(reply) = self.finish() {
            let _ = reply.send(Err(error));
        }
    }

    /// Ends the job if its caller left or its deadline passed; whether it still runs.
    fn still_wanted(&mut self, now: Instant) -> bool {
        match &self.reply {
            None => false,
            Some(reply) if reply.is_closed() => {
                self.finish();
                false
            }
            Some(_) if self.deadline <= now => {
                self.fail(KilnError::new(
                    ErrorKind::Timeout,
                    ErrorKind::Timeout.default_message(),
                ));
                false
            }
            Some(_) => true,
        }
    }
}

/// Serves every gathered job; each is finished (answered, failed or found abandoned), and so no
/// longer counted in `in_flight`, by the time this returns.
fn run_gathered(
    model: &str,
    classifier: &mut dyn SequenceClassifier,
    gathered: Vec<ClassifyJob>,
    in_flight: &Arc<AtomicUsize>,
) -> Engine {
    let mut pending: Vec<Pending> = gathered
        .into_iter()
        .map(|job| Pending::new(job, in_flight))
        .collect();
    let now = Instant::now();
    for entry in &mut pending {
        if !entry.still_wanted(now) {
            continue;
        }
        // A panic while tokenizing is treated like one in a pass: this job fails, the engine is
        // rebuilt.
        let tokenized = isolated(model, || tokenize_job(&*classifier, &entry.inputs));
        match tokenized {
            Ok(Ok(token_ids)) => entry.token_ids = token_ids,
            Ok(Err(error)) => entry.fail(error),
            Err(panicked) => {
                entry.fail(panicked);
                fail_all(
                    &mut pending,
                    "the model failed while serving another request",
                );
                return Engine::Panicked;
            }
        }
    }

    // Every input of every live job, shortest first, so each pass pads little.
    let mut order: Vec<(usize, usize)> = pending
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.reply.is_some())
        .flat_map(|(job, entry)| (0..entry.token_ids.len()).map(move |input| (job, input)))
        .collect();
    order.sort_by_key(|&(job, input)| pending[job].token_ids[input].len());

    let mut start = 0;
    while start < order.len() {
        let end = pass_end(&order, start, |job, input| {
            pending[job].token_ids[input].len()
        });
        let now = Instant::now();
        let pass: Vec<(usize, usize)> = order[start..end]
            .iter()
            .copied()
            .filter(|&(job, _)| pending[job].still_wanted(now))
            .collect();
        start = end;
        if pass.is_empty() {
            continue;
        }
        let batch: Vec<&[u32]> = pass
            .iter()
            .map(|&(job, input)| pending[job].token_ids[input].as_slice())
            .collect();
        match isolated(model, || classifier.forward(&batch)) {
            Ok(Ok(logits)) if logits.len() == pass.len() => {
                for (&(job, input), row) in pass.iter().zip(logits) {
                    pending[job].logits[input] = row;
                }
            }
            Ok(Ok(logits)) => {
                let error = KilnError::internal(format!(
                    "the model answered {} results for {} inputs",
                    logits.len(),
                    pass.len()
                ));
                for &(job, _) in &pass {
                    pending[job].fail(error.clone());
                }
            }
            Ok(Err(error)) => {
                for &(job, _) in &pass {
                    pending[job].fail(error.clone());
                }
            }
            Err(panicked) => {
                for &(job, _) in &pass {
                    pending[job].fail(panicked.clone());
                }
                fail_all(
                    &mut pending,
                    "the model failed while serving another request",
                );
                return Engine::Panicked;
            }
        }
    }

    for mut entry in pending {
        let Some(reply) = entry.finish() else {
            continue;
        };
        let token_counts = entry
            .token_ids
            .iter()
            .map(|ids| u32::try_from(ids.len()).unwrap_or(u32::MAX))
            .collect();
        let _ = reply.send(Ok(ClassifierOutput {
            logits: entry.logits,
            token_counts,
        }));
    }
    Engine::Sound
}

/// Tokenizes every input of one request; the first that fails fails the request, named by its
/// position when there are several.
fn tokenize_job(
    classifier: &dyn SequenceClassifier,
    inputs: &[ClassifierInput],
) -> KilnResult<Vec<Vec<u32>>> {
    inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            classifier.tokenize(input).map_err(|error| {
                if inputs.len() > 1 {
                    naming_input(error, index)
                } else {
                    error
                }
            })
        })
        .collect()
}

/// `error` with the failing input's position in its detail, after Workers AI's prefix.
fn naming_input(error: KilnError, index: usize) -> KilnError {
    const BAD_INPUT: &str = "AiError: Bad input: ";
    let message = match error.message.strip_prefix(BAD_INPUT) {
        Some(detail) => format!("{BAD_INPUT}input {index}: {detail}"),
        None => format!("input {index}: {}", error.message),
    };
    KilnError::new(error.kind, message)
}

/// Where the pass starting at `start` ends: at most [`MAX_PASS_SEQUENCES`] inputs and
/// [`MAX_PASS_TOKENS`] padded tokens (inputs are sorted by length, so the last is the longest),
/// and always at least one input.
fn pass_end(
    order: &[(usize, usize)],
    start: usize,
    length: impl Fn(usize, usize) -> usize,
) -> usize {
    let mut end = start + 1;
    while end < order.len() && end - start < MAX_PASS_SEQUENCES {
        let (job, input) = order[end];
        let padded = length(job, input).max(1) * (end - start + 1);
        if padded > MAX_PASS_TOKENS {
            break;
        }
        end += 1;
    }
    end
}

/// After a panic, the jobs not yet answered fail too: the engine that held their state is gone.
fn fail_all(pending: &mut [Pending], reason: &str) {
    for entry in pending {
        entry.fail(KilnError::internal(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores a text by its length; panics on "panic".
    struct Lengths {
        passes: Arc<AtomicUsize>,
    }

    impl SequenceClassifier for Lengths {
        fn head(&self) -> &ClassifierHead {
            &ClassifierHead::Relevance
        }
        fn max_input_tokens(&self) -> usize {
            8
        }
        fn tokenize(&self, input: &ClassifierInput) -> KilnResult<Vec<u32>> {
            if input.text == "panic" {
                panic!("asked to");
            }
            let ids: Vec<u32> = input.text.bytes().map(u32::from).collect();
            if ids.len() > 8 {
                return Err(KilnError::bad_input("too long"));
            }
            Ok(ids)
        }
        fn forward(&mut self, batch: &[&[u32]]) -> KilnResult<Vec<Vec<f32>>> {
            self.passes.fetch_add(1, Ordering::SeqCst);
            Ok(batch.iter().map(|ids| vec![ids.len() as f32]).collect())
        }
    }

    fn worker() -> (ClassifierWorker, Arc<AtomicUsize>) {
        let passes = Arc::new(AtomicUsize::new(0));
        let engine = Lengths {
            passes: passes.clone(),
        };
        let worker =
            ClassifierWorker::spawn("lengths", Box::new(engine), AdmissionConfig::default())
                .unwrap();
        (worker, passes)
    }

    fn texts(texts: &[&str]) -> Vec<ClassifierInput> {
        texts.iter().map(|t| ClassifierInput::single(*t)).collect()
    }

    #[tokio::test]
    async fn answers_in_input_order_and_fails_only_the_bad_request() {
        let (worker, _) = worker();
        assert_eq!(worker.head(), &ClassifierHead::Relevance);
        let good = worker.classify(texts(&["abc", "a", "abcdef"]), Admission::default());
        let bad = worker.classify(texts(&["ok", "far too long"]), Admission::default());
        let (good, bad) = tokio::join!(good, bad);
        let good = good.unwrap();
        assert_eq!(good.logits, vec![vec![3.0], vec![1.0], vec![6.0]]);
        assert_eq!(good.token_counts, vec![3, 1, 6]);
        let bad = bad.unwrap_err();
        assert_eq!(bad.code(), 5006);
        assert_eq!(bad.message, "AiError: Bad input: input 1: too long");
        assert!(!worker.is_busy());
    }

    #[tokio::test]
    async fn a_panic_fails_its_request_and_the_worker_serves_the_next() {
        let (worker, _) = worker();
        let panicked = worker
            .classify(texts(&["panic"]), Admission::default())
            .await
            .unwrap_err();
        assert_eq!(panicked.status(), 500);
        let next = worker
            .classify(texts(&["fine"]), Admission::default())
            .await
            .unwrap();
        assert_eq!(next.logits, vec![vec![4.0]]);
    }

    #[test]
    fn passes_are_bounded_by_sequences_and_padded_tokens() {
        let order: Vec<(usize, usize)> = (0..100).map(|i| (0, i)).collect();
        assert_eq!(pass_end(&order, 0, |_, _| 10), MAX_PASS_SEQUENCES);
        assert_eq!(pass_end(&order, 0, |_, _| 512), MAX_PASS_TOKENS / 512);
        // A single input longer than the token budget still runs, alone.
        assert_eq!(pass_end(&order, 5, |_, _| MAX_PASS_TOKENS * 2), 6);
    }
}
