//! Text generation on llama.cpp (through `llama-cpp-2`) behind Kiln's [`BatchGenerator`] trait:
//! GGUF loading, the model's own chat template, continuous batching over sequence slots with
//! chunked prefill and a prefix cache, llama.cpp's sampler chain per sequence, and streaming,
//! UTF-8-safe detokenization with stop strings.
//!
//! [`BatchGenerator`]: kiln_core::engine::BatchGenerator

mod backend;
mod chat_template;
mod constraint;
mod decode;
mod generator;
mod lora;
mod sampling;
mod slots;
mod text_stream;

/// The process-wide llama.cpp backend (llama.cpp allows one), for code that drives
/// `llama-cpp-2` directly beside the engine, such as tests that compare against it.
pub use backend::backend as llama_backend;
pub use chat_template::CHATML_TEMPLATE;
pub use generator::{LlamaGenerator, LlamaOptions, DEFAULT_CONTEXT_CAP};
