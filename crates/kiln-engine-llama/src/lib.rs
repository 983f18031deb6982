//! Text generation on llama.cpp (through `llama-cpp-2`) behind Kiln's [`TextGenerator`] trait:
//! GGUF loading, the model's own chat template, llama.cpp's sampler chain, and streaming,
//! UTF-8-safe detokenization with stop strings.
//!
//! [`TextGenerator`]: kiln_core::TextGenerator

mod backend;
mod chat_template;
mod decode;
mod generator;
mod sampling;
mod text_stream;

pub use chat_template::CHATML_TEMPLATE;
pub use generator::{LlamaGenerator, LlamaOptions, DEFAULT_CONTEXT_CAP};
