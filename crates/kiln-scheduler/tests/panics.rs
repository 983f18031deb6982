//! A panic inside an engine costs the request(s) it was serving and nothing else: each worker
//! kind answers them with an internal error, rebuilds its engine, and serves the next request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_core::engine::{BatchGenerator, SequenceEvent, SequenceId, SequenceOptions, StepReport};
use kiln_core::media::LabelScore;
use kiln_core::{
    Embedder, EmbeddingOutput, FinishReason, GenerationEvent, GenerationRequest, KilnResult,
    MediaEngine, MediaOutput, MediaRequest, Pooling, PromptInput, SamplingParams, Task, Usage,
    WorkProgress,
};
use kiln_scheduler::{
    Admission, AdmissionConfig, EmbeddingWorker, GenerationWorker, MediaWorker, WorkerEvent,
};

const POISON: &str = "poison";

/// Labels an image with its length; panics on an image that contains [`POISON`].
struct Labeller;

impl MediaEngine for Labeller {
    fn task(&self) -> Task {
        Task::ImageClassification
    }
    fn run(&mut self, request: MediaRequest, _: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Classify { image, .. } = request else {
            panic!("only images");
        };
        assert!(
            !image.windows(POISON.len()).any(|w| w == POISON.as_bytes()),
            "poisoned"
        );
        Ok(MediaOutput::Labels(vec![LabelScore {
            label: image.len().to_string(),
            score: 1.0,
        }]))
    }
}

fn counting<T: 'static>(
    rebuilds: &Arc<AtomicUsize>,
    make: fn() -> T,
) -> Box<dyn Fn() -> KilnResult<T> + Send> {
    let rebuilds = rebuilds.clone();
    Box::new(move || {
        rebuilds.fetch_add(1, Ordering::SeqCst);
        Ok(make())
    })
}

#[tokio::test]
async fn a_media_panic_fails_one_request_and_the_next_succeeds() {
    let rebuilds = Arc::new(AtomicUsize::new(0));
    let worker = MediaWorker::spawn_rebuildable(
        "labeller",
        Box::new(Labeller),
        Some(counting(&rebuilds, || {
            Box::new(Labeller) as Box<dyn MediaEngine>
        })),
        AdmissionConfig::default(),
    )
    .expect("spawned");
    let classify = |image: &[u8]| MediaRequest::Classify {
        image: image.to_vec(),
        top_k: 1,
    };
    let failed = worker
        .run(classify(b"a poison pill"), Admission::default())
        .await
        .expect_err("the panicking request fails");
    assert_eq!(failed.code(), kiln_core::ErrorKind::Internal.code());
    assert!(failed.message.contains("labeller"), "{}", failed.message);
    let next = worker
        .run(classify(b"fine"), Admission::default())
        .await
        .expect("the next request is served");
    assert!(matches!(next, MediaOutput::Labels(ref l) if l[0].label == "4"));
    assert_eq!(rebuilds.load(Ordering::SeqCst), 1);
    assert!(!worker.is_busy());
}

/// Embeds each text as `[len]`; panics on a text that contains [`POISON`].
struct Lengths;

impl Embedder for Lengths {
    fn dimensions(&self) -> usize {
        1
    }
    fn max_input_tokens(&self) -> usize {
        512
    }
    fn embed(&mut self, texts: &[String], _: Pooling) -> KilnResult<EmbeddingOutput> {
        assert!(!texts.iter().any(|t| t.contains(POISON)), "poisoned");
        Ok(EmbeddingOutput {
            vectors: texts.iter().map(|t| vec![t.len() as f32]).collect(),
            prompt_tokens: texts.len() as u32,
            token_counts: vec![1; texts.len()],
        })
    }
    fn embed_token_ids(&mut self, ids: &[Vec<u32>], _: Pooling) -> KilnResult<EmbeddingOutput> {
        Ok(EmbeddingOutput {
            vectors: ids.iter().map(|i| vec![i.len() as f32]).collect(),
            prompt_tokens: ids.len() as u32,
            token_counts: vec![1; ids.len()],
        })
    }
}

#[tokio::test]
async fn an_embedding_panic_fails_one_request_and_the_next_succeeds() {
    let rebuilds = Arc::new(AtomicUsize::new(0));
    let worker = EmbeddingWorker::spawn_rebuildable(
        "lengths",
        Box::new(Lengths),
        Some(counting(&rebuilds, || {
            Box::new(Lengths) as Box<dyn Embedder>
        })),
        AdmissionConfig::default(),
    )
    .expect("spawned");
    let failed = worker
        .embed(vec!["poison".into()], Pooling::Mean, Admission::default())
        .await
        .expect_err("the panicking request fails");
    assert_eq!(failed.code(), kiln_core::ErrorKind::Internal.code());
    let next = worker
        .embed(vec!["abc".into()], Pooling::Mean, Admission::default())
        .await
        .expect("the next request is served");
    assert_eq!(next.vectors, vec![vec![3.0]]);
    assert_eq!(rebuilds.load(Ordering::SeqCst), 1);
}

/// Each sequence emits its prompt's words one step at a time, then `Done`. A forward pass
/// panics while any running prompt contains [`POISON`]; `add_sequence` panics on "explode".
#[derive(Default)]
struct Words {
    running: Vec<(SequenceId, Vec<String>)>,
}

fn prompt_text(request: &GenerationRequest) -> String {
    match &request.input {
        PromptInput::Prompt { text, .. } => text.clone(),
        PromptInput::Messages(messages) => messages.iter().map(|m| m.content.clone()).collect(),
    }
}

impl BatchGenerator for Words {
    fn context_window(&self) -> u32 {
        64
    }
    fn max_sequences(&self) -> usize {
        4
    }
    fn running_sequences(&self) -> usize {
        self.running.len()
    }
    fn add_sequence(
        &mut self,
        id: SequenceId,
        request: &GenerationRequest,
        _: &SequenceOptions,
    ) -> KilnResult<()> {
        let text = prompt_text(request);
        assert!(!text.contains("explode"), "exploded while admitting");
        self.running.push((
            id,
            text.split_whitespace().rev().map(str::to_owned).collect(),
        ));
        Ok(())
    }
    fn cancel(&mut self, id: SequenceId) {
        self.running.retain(|(running, _)| *running != id);
    }
    fn step(&mut self) -> StepReport {
        assert!(
            !self
                .running
                .iter()
                .any(|(_, words)| words.iter().any(|w| w == POISON)),
            "poisoned forward pass"
        );
        let mut events = Vec::new();
        let mut done = Vec::new();
        for (id, words) in &mut self.running {
            let event = match words.pop() {
                Some(word) => GenerationEvent::Text(word),
                None => {
                    done.push(*id);
                    GenerationEvent::Done {
                        usage: Usage::new(1, 1),
                        finish_reason: FinishReason::Stop,
                    }
                }
            };
            events.push(SequenceEvent {
                id: *id,
                event: Ok(event),
            });
        }
        self.running.retain(|(id, _)| !done.contains(id));
        StepReport {
            batch_sequences: events.len(),
            batch_tokens: events.len(),
            events,
        }
    }
}

fn request(text: &str) -> GenerationRequest {
    GenerationRequest {
        input: PromptInput::Prompt {
            text: text.into(),
            raw: true,
        },
        max_tokens: 16,
        sampling: SamplingParams::default(),
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora: None,
    }
}

/// The text of a request's stream, or the error that ended it.
async fn generate(worker: &GenerationWorker, text: &str) -> Result<String, kiln_core::KilnError> {
    let mut stream = worker
        .submit(request(text), Admission::default())
        .expect("admitted");
    let mut out = Vec::new();
    while let Some(event) = stream.recv().await {
        match event {
            WorkerEvent::Generation(GenerationEvent::Text(word)) => out.push(word),
            WorkerEvent::Generation(GenerationEvent::Done { .. }) => return Ok(out.join(" ")),
            WorkerEvent::Error(error) => return Err(error),
        }
    }
    panic!("the stream ended without a last event");
}

#[tokio::test]
async fn a_generation_panic_fails_its_pass_reloads_and_the_next_request_succeeds() {
    let rebuilds = Arc::new(AtomicUsize::new(0));
    let worker = GenerationWorker::spawn_rebuildable(
        "words",
        Box::new(Words::default()),
        Some(counting(&rebuilds, || {
            Box::new(Words::default()) as Box<dyn BatchGenerator>
        })),
        AdmissionConfig::default(),
    )
    .expect("spawned");
    let failed = generate(&worker, "one poison two")
        .await
        .expect_err("fails");
    assert_eq!(failed.code(), kiln_core::ErrorKind::Internal.code());
    // The error is sent before the reload starts; the next request is admitted after it.
    assert_eq!(
        generate(&worker, "still here").await.expect("served"),
        "still here"
    );
    assert_eq!(rebuilds.load(Ordering::SeqCst), 1);

    // A panic while admitting costs that request only: no rebuild, and requests run after it.
    let failed = generate(&worker, "explode now").await.expect_err("fails");
    assert_eq!(failed.code(), kiln_core::ErrorKind::Internal.code());
    assert_eq!(rebuilds.load(Ordering::SeqCst), 1);
    assert_eq!(
        generate(&worker, "and again").await.expect("served"),
        "and again"
    );
    // The slot is released just after the last event is sent.
    for _ in 0..100 {
        if !worker.is_busy() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!worker.is_busy());
}

#[tokio::test]
async fn requests_queued_behind_a_panicking_pass_are_served_after_the_reload() {
    let rebuilds = Arc::new(AtomicUsize::new(0));
    let worker = GenerationWorker::spawn_rebuildable(
        "words",
        Box::new(Words::default()),
        Some(counting(&rebuilds, || {
            Box::new(Words::default()) as Box<dyn BatchGenerator>
        })),
        AdmissionConfig::default(),
    )
    .expect("spawned");
    // Ten requests submitted together with one poisoned among them: the poisoned one fails;
    // every request not in its pass is served in full.
    let texts: Vec<String> = (0..10)
        .map(|i| {
            if i == 3 {
                "a poison b".to_owned()
            } else {
                format!("w{i} x y")
            }
        })
        .collect();
    let results = futures_join(&worker, &texts).await;
    assert!(results[3].is_err());
    let served = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        served >= 10 - 4,
        "at most one pass of 4 slots is lost: {results:?}"
    );
    for (text, result) in texts.iter().zip(&results) {
        if let Ok(out) = result {
            assert_eq!(out, text);
        }
    }
    assert_eq!(generate(&worker, "after").await.expect("served"), "after");
}

async fn futures_join(
    worker: &GenerationWorker,
    texts: &[String],
) -> Vec<Result<String, kiln_core::KilnError>> {
    let mut handles = Vec::new();
    for text in texts {
        let worker = worker.clone();
        let text = text.clone();
        handles.push(tokio::spawn(async move { generate(&worker, &text).await }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("joined"));
    }
    results
}
