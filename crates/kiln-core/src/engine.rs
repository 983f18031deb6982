//! The engine contract. Engines are synchronous and run on their own OS thread; the scheduler
//! feeds them validated requests and forwards their events to the transport.

use serde::{Deserialize, Serialize};

use crate::error::KilnResult;

/// One chat turn, after validation. `content` is already flattened to text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// A bare prompt. Unless `raw`, it is wrapped as one user turn in the model's chat template.
    Prompt { text: String, raw: bool },
    /// A conversation rendered through the model's chat template.
    Messages(Vec<ChatMessage>),
}

/// Sampling parameters after bounds checks. `None` means "the sampler's neutral value".
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    /// Same seed, same input, same model → same text.
    pub seed: Option<u64>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.6,
            top_p: None,
            top_k: None,
            seed: None,
            repetition_penalty: None,
            frequency_penalty: None,
            presence_penalty: None,
        }
    }
}

/// A validated text-generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub input: PromptInput,
    pub max_tokens: u32,
    pub sampling: SamplingParams,
    /// Generation stops before any of these strings; they are not emitted.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// What an engine emits while generating.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// Newly decoded text. Always whole UTF-8 characters; may be empty never.
    Text(String),
    /// The last event of a successful generation.
    Done {
        usage: Usage,
        finish_reason: FinishReason,
    },
}

/// Where an engine sends events. `send` returns `false` when the receiver is gone (the client
/// disconnected); the engine then stops before computing another token.
pub trait EventSink {
    fn send(&mut self, event: GenerationEvent) -> bool;
}

impl<F: FnMut(GenerationEvent) -> bool> EventSink for F {
    fn send(&mut self, event: GenerationEvent) -> bool {
        self(event)
    }
}

/// A loaded text-generation model. Runs on one thread; not shared.
pub trait TextGenerator: Send {
    /// Context window in tokens: prompt plus completion must fit.
    fn context_window(&self) -> u32;

    /// Generates, sending events to `sink`. Returns `Err` for failures that happen before the
    /// first event (prompt too long, template error); after that, errors end the stream.
    fn generate(&mut self, request: &GenerationRequest, sink: &mut dyn EventSink)
        -> KilnResult<()>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Mean,
    Cls,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingOutput {
    /// One L2-normalized vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens consumed, for usage reporting.
    pub prompt_tokens: u32,
}

/// A loaded embedding model. Runs on one thread; not shared.
pub trait Embedder: Send {
    fn dimensions(&self) -> usize;

    /// Longest input in tokens; longer inputs are truncated as the model was trained.
    fn max_input_tokens(&self) -> usize;

    fn embed(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput>;
}
