//! EmbeddingGemma: the Gemma 3 text model as a bidirectional encoder, then sentence-transformers'
//! mean pooling, Dense projections and normalization, with the model's task prompts.

mod config;
mod embedder;
mod encoder;

pub use embedder::GemmaEmbedder;
