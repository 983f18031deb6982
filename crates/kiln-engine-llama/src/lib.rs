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
mod sampling;
mod slots;
mod text_stream;

pub use chat_template::CHATML_TEMPLATE;
pub use generator::{LlamaGenerator, LlamaOptions, DEFAULT_CONTEXT_CAP};
