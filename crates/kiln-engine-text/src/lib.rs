//! Text classification and cross-encoder reranking on candle, behind Kiln's
//! [`SequenceClassifier`] trait.
//!
//! A model is a Hugging Face-layout directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`) of one of these architectures:
//!
//! - `DistilBertForSequenceClassification` (distilbert-sst-2: sentiment labels),
//! - `XLMRobertaForSequenceClassification` (bge-reranker-base: one relevance logit per
//!   query/passage pair).
//!
//! A config with one label is a cross-encoder ([`ClassifierHead::Relevance`]); with several, a
//! label classifier ([`ClassifierHead::Labels`], `id2label` order).
//!
//! These architectures have been checked only against `transformers` on small random models
//! (`scripts/reference/text_models.py`, `tests/reference.rs`), not run with real weights.
//!
//! [`SequenceClassifier`]: kiln_core::SequenceClassifier
//! [`ClassifierHead::Relevance`]: kiln_core::ClassifierHead::Relevance
//! [`ClassifierHead::Labels`]: kiln_core::ClassifierHead::Labels

mod classifier;
mod config;
mod distilbert;

pub use classifier::TextClassifier;
pub use config::{inspect, Architecture, ModelSummary};
