//! Kiln's shared vocabulary. Every other crate speaks these types: the transport turns them into
//! wire formats, the scheduler moves them between threads, the engines produce them.

pub mod classify;
pub mod engine;
pub mod error;
pub mod limits;
pub mod media;
pub mod schema_guard;
pub mod task;
pub mod time;
pub mod tools;
pub mod vad;

pub use classify::{ClassifierHead, ClassifierInput, ClassifierOutput, SequenceClassifier};
pub use engine::{
    ChatMessage, Embedder, EmbeddingOutput, EventSink, FinishReason, GenerationEvent,
    GenerationRequest, OutputConstraint, Pooling, PromptInput, SamplingParams, TextGenerator,
    Usage,
};
pub use error::{ErrorKind, KilnError, KilnResult};
pub use limits::InputLimits;
pub use media::{MediaEngine, MediaOutput, MediaRequest, WorkProgress};
pub use task::Task;
pub use tools::{ParsedOutput, ToolCall, ToolChoice, ToolSpec, ToolSyntax};
