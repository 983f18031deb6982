//! Text embeddings on candle, behind Kiln's [`Embedder`] trait: BERT-family encoders (all-MiniLM,
//! BGE, …) in [`BertEmbedder`], and EmbeddingGemma (the Gemma 3 encoder with sentence-transformers'
//! pooling, Dense layers and prompts) in [`GemmaEmbedder`].
//!
//! A model is a Hugging Face-layout directory: `config.json`, `tokenizer.json`,
//! `model.safetensors` and, when it came from sentence-transformers, `1_Pooling/config.json`
//! (and for EmbeddingGemma `modules.json`, `2_Dense/`, `3_Dense/` and its prompts).
//!
//! [`Embedder`]: kiln_core::Embedder

mod bert_encoder;
mod embedder;
mod gemma;
use kiln_kernels as kernels;
mod model_dir;
mod onnx_encoder;
mod packed;
mod pooling;

pub use embedder::BertEmbedder;
pub use gemma::GemmaEmbedder;
