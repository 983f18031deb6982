//! A test hook that makes real engines panic on request, so tests can show through real HTTP
//! that a panic costs one request and nothing else.
//!
//! Off unless `KILN_TEST_PANIC_MARKER` is set when the server starts: then any request whose
//! prompt, text, image or audio contains the marker panics inside its engine (a generation in
//! its forward pass, the others in their engine call), exactly where a bug would.

use std::sync::OnceLock;

use kiln_core::engine::{BatchGenerator, SequenceId, SequenceOptions, StepReport};
use kiln_core::{
    Embedder, EmbeddingOutput, GenerationRequest, KilnResult, MediaEngine, MediaOutput,
    MediaRequest, Pooling, PromptInput, Task, ToolSyntax, WorkProgress,
};

/// The marker, when the hook is on.
fn marker() -> Option<&'static str> {
    static MARKER: OnceLock<Option<String>> = OnceLock::new();
    MARKER
        .get_or_init(|| {
            std::env::var("KILN_TEST_PANIC_MARKER")
                .ok()
                .filter(|marker| !marker.is_empty())
        })
        .as_deref()
}

fn contains(haystack: &[u8], marker: &str) -> bool {
    haystack
        .windows(marker.len())
        .any(|window| window == marker.as_bytes())
}

pub fn generator(inner: Box<dyn BatchGenerator>) -> Box<dyn BatchGenerator> {
    match marker() {
        Some(marker) => Box::new(PanickingGenerator {
            inner,
            marker,
            poisoned: false,
        }),
        None => inner,
    }
}

pub fn embedder(inner: Box<dyn Embedder>) -> Box<dyn Embedder> {
    match marker() {
        Some(marker) => Box::new(PanickingEmbedder { inner, marker }),
        None => inner,
    }
}

pub fn media(inner: Box<dyn MediaEngine>) -> Box<dyn MediaEngine> {
    match marker() {
        Some(marker) => Box::new(PanickingMedia { inner, marker }),
        None => inner,
    }
}

struct PanickingGenerator {
    inner: Box<dyn BatchGenerator>,
    marker: &'static str,
    /// A sequence with the marker was admitted: the next forward pass panics.
    poisoned: bool,
}

impl BatchGenerator for PanickingGenerator {
    fn context_window(&self) -> u32 {
        self.inner.context_window()
    }
    fn max_sequences(&self) -> usize {
        self.inner.max_sequences()
    }
    fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.inner.tool_syntax()
    }
    fn running_sequences(&self) -> usize {
        self.inner.running_sequences()
    }
    fn add_sequence(
        &mut self,
        id: SequenceId,
        request: &GenerationRequest,
        options: &SequenceOptions,
    ) -> KilnResult<()> {
        let text = match &request.input {
            PromptInput::Prompt { text, .. } => text.clone(),
            PromptInput::Messages(messages) => messages
                .iter()
                .map(|message| message.content.as_str())
                .collect(),
        };
        self.poisoned |= text.contains(self.marker);
        self.inner.add_sequence(id, request, options)
    }
    fn cancel(&mut self, id: SequenceId) {
        self.inner.cancel(id)
    }
    fn step(&mut self) -> StepReport {
        if self.poisoned {
            panic!("injected panic (KILN_TEST_PANIC_MARKER) in a forward pass");
        }
        self.inner.step()
    }
}

struct PanickingEmbedder {
    inner: Box<dyn Embedder>,
    marker: &'static str,
}

impl Embedder for PanickingEmbedder {
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn max_input_tokens(&self) -> usize {
        self.inner.max_input_tokens()
    }
    fn embed(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput> {
        if texts.iter().any(|text| text.contains(self.marker)) {
            panic!("injected panic (KILN_TEST_PANIC_MARKER) while embedding");
        }
        self.inner.embed(texts, pooling)
    }
    fn embed_queries(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput> {
        if texts.iter().any(|text| text.contains(self.marker)) {
            panic!("injected panic (KILN_TEST_PANIC_MARKER) while embedding");
        }
        self.inner.embed_queries(texts, pooling)
    }
    fn embed_token_ids(
        &mut self,
        ids: &[Vec<u32>],
        pooling: Pooling,
    ) -> KilnResult<EmbeddingOutput> {
        self.inner.embed_token_ids(ids, pooling)
    }
}

struct PanickingMedia {
    inner: Box<dyn MediaEngine>,
    marker: &'static str,
}

impl MediaEngine for PanickingMedia {
    fn task(&self) -> Task {
        self.inner.task()
    }
    fn run(&mut self, request: MediaRequest, progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let poisoned = match &request {
            MediaRequest::Transcribe { audio, .. } => contains(audio, self.marker),
            MediaRequest::Speak { text, .. }
            | MediaRequest::Translate { text, .. }
            | MediaRequest::Summarize { text, .. } => text.contains(self.marker),
            MediaRequest::Classify { image, .. } => contains(image, self.marker),
        };
        if poisoned {
            panic!("injected panic (KILN_TEST_PANIC_MARKER) in a media engine");
        }
        self.inner.run(request, progress)
    }
}
