//! BERT-family text embeddings (all-MiniLM, BGE, …) on candle, behind Kiln's [`Embedder`] trait.
//!
//! A model is a Hugging Face-layout directory: `config.json`, `tokenizer.json`,
//! `model.safetensors` and, when it came from sentence-transformers, `1_Pooling/config.json`.
//!
//! [`Embedder`]: kiln_core::Embedder

mod embedder;
mod model_dir;
mod pooling;

pub use embedder::BertEmbedder;
