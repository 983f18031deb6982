//! The engine contract. Engines are synchronous and run on their own OS thread; the scheduler
//! feeds them validated requests and forwards their events to the transport.

use serde::{Deserialize, Serialize};

use crate::error::{KilnError, KilnResult};
use crate::tools::{ToolCall, ToolSpec, ToolSyntax};

/// One chat turn, after validation. `content` is already flattened to text. Serialized, it is
/// what chat templates read as `message`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant turn's calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` turn: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
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
    /// A grammar every generated token must keep the output inside of.
    pub constraint: Option<OutputConstraint>,
    /// Tools shown to the model through its chat template.
    pub tools: Vec<ToolSpec>,
    /// A LoRA adapter (llama.cpp GGUF) applied for this request only.
    pub lora: Option<std::path::PathBuf>,
}

/// Structured output, enforced while sampling (tokens that would leave the language are masked).
#[derive(Debug, Clone, PartialEq)]
pub enum OutputConstraint {
    /// A JSON value that validates against this JSON Schema.
    JsonSchema(serde_json::Value),
    /// Text in the language of this Lark grammar (llguidance's dialect, which embeds JSON
    /// Schemas with `%json{…}`): how tool calls are constrained to their template's syntax.
    Lark(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    /// Prompt tokens whose KV cache was reused from an earlier request (prefix cache) instead of
    /// being computed. Not part of the Workers AI `usage` object: the transport decides whether
    /// to expose it (e.g. as OpenAI's `prompt_tokens_details.cached_tokens`).
    #[serde(skip)]
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            cached_tokens: 0,
        }
    }

    /// Usage of a request that reused `cached_tokens` of its prompt from the prefix cache.
    pub fn with_cached(prompt_tokens: u32, completion_tokens: u32, cached_tokens: u32) -> Self {
        Self {
            cached_tokens: cached_tokens.min(prompt_tokens),
            ..Self::new(prompt_tokens, completion_tokens)
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

/// Names one sequence inside a [`BatchGenerator`]; chosen by the caller, unique among the
/// sequences that are still running.
pub type SequenceId = u64;

/// Per-sequence options beyond the request itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceOptions {
    /// Conversation key (`x-session-affinity`): the sequence goes to the slot that last served
    /// this session when that slot is idle, so a multi-turn chat finds its KV cache there.
    pub session: Option<String>,
    /// Whose prompt this is (the account). A sequence reuses only KV entries its own tenant's
    /// prompts left behind, so neither a faster answer nor `cached_tokens` can tell one account
    /// what another one asked.
    pub tenant: Option<String>,
}

/// What one [`BatchGenerator::step`] produced for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceEvent {
    pub id: SequenceId,
    /// `Done` and `Err` are the sequence's last event; its slot is free again.
    pub event: KilnResult<GenerationEvent>,
}

/// The outcome of one forward pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    pub events: Vec<SequenceEvent>,
    /// Sequences that had a token in this pass (decoding or prefilling).
    pub batch_sequences: usize,
    /// Tokens evaluated in this pass.
    pub batch_tokens: usize,
}

/// A text-generation model that runs several sequences at once (continuous batching): sequences
/// join and leave between forward passes, each with its own sampling state. Runs on one thread;
/// not shared.
pub trait BatchGenerator: Send {
    /// Context window of one sequence in tokens: prompt plus completion must fit.
    fn context_window(&self) -> u32;

    /// How many sequences can run at once.
    fn max_sequences(&self) -> usize;

    /// How the model writes tool calls, if its chat template teaches it to.
    fn tool_syntax(&self) -> Option<ToolSyntax> {
        None
    }

    /// Sequences admitted and not yet finished or cancelled.
    fn running_sequences(&self) -> usize;

    /// Admits a sequence into a free slot. `Err` (prompt too long, template error, no free slot)
    /// means nothing was admitted. Its events come from later [`step`](Self::step)s.
    fn add_sequence(
        &mut self,
        id: SequenceId,
        request: &GenerationRequest,
        options: &SequenceOptions,
    ) -> KilnResult<()>;

    /// Stops a sequence before any further compute; its slot is free for the next request. No
    /// more events come for it. Unknown ids are ignored.
    fn cancel(&mut self, id: SequenceId);

    /// Runs one forward pass: one token for every decoding sequence plus, within the batch
    /// budget, a chunk of prompts still being prefilled. Returns the events it produced.
    fn step(&mut self) -> StepReport;
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
    /// Tokens consumed, for usage reporting: the sum of `token_counts`.
    pub prompt_tokens: u32,
    /// Tokens consumed by each input, in input order, so batched requests can be billed exactly.
    pub token_counts: Vec<u32>,
}

/// A loaded embedding model. Runs on one thread; not shared.
pub trait Embedder: Send {
    fn dimensions(&self) -> usize;

    /// Longest input in tokens; longer inputs are truncated as the model was trained.
    fn max_input_tokens(&self) -> usize;

    fn embed(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput>;

    /// Embeds search queries the way the model was trained to see them (EmbeddingGemma's
    /// "query" prompt); a model without a query convention embeds them as any text.
    fn embed_queries(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput> {
        self.embed(texts, pooling)
    }

    /// Embeds inputs given as token ids of this model's tokenizer (OpenAI's token-array input).
    /// Models without a tokenizer to check the ids against refuse them.
    fn embed_token_ids(
        &mut self,
        ids: &[Vec<u32>],
        pooling: Pooling,
    ) -> KilnResult<EmbeddingOutput> {
        let _ = (ids, pooling);
        Err(KilnError::bad_input(
            "this embedding model does not accept token-id input; send text instead",
        ))
    }
}
