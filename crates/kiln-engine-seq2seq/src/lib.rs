//! Translation and summarization on candle: one encoder-decoder implementation for three
//! Hugging Face architectures, decoding greedily with a decoder cache.
//!
//! A model is a Hugging Face-layout directory (`config.json`, optionally
//! `generation_config.json`, `tokenizer.json`, `model.safetensors`) of one of:
//!
//! - `M2M100ForConditionalGeneration` (m2m100-1.2b): pre-LayerNorm, fairseq sinusoidal
//!   positions, `scale_embedding`; the source is `[__en__] pieces </s>` and decoding is forced to
//!   start with the target language token (`__fr__`), as transformers' M2M100Tokenizer and
//!   `forced_bos_token_id` do,
//! - `MarianMTModel` (opus-mt): post-LayerNorm, Marian's sinusoidal positions,
//!   `scale_embedding`, `final_logits_bias`, `bad_words_ids` (its padding token),
//! - `BartForConditionalGeneration` (bart-large-cnn): post-LayerNorm, learned positions offset
//!   by 2, `layernorm_embedding`, `final_logits_bias`, `forced_bos_token_id`.
//!
//! The architecture picks the structural switches; sizes, `scale_embedding`, the activation and
//! the ids that steer decoding (`decoder_start_token_id`, `eos_token_id`, `forced_bos_token_id`,
//! `forced_eos_token_id`, single-token `bad_words_ids`) come from the config files.
//!
//! Decoding is greedy only: real checkpoints' beam search, length penalty, `min_length` and
//! `no_repeat_ngram_size` settings are not applied.
//!
//! These architectures have been checked only against `transformers` on small random models
//! (`scripts/reference/seq2seq_models.py`, `tests/reference.rs`), never with real weights.
//! Real m2m100 and opus-mt repositories ship a SentencePiece model, not a `tokenizer.json`;
//! one has to be converted first.

mod config;
mod model;
mod network;

pub use config::{inspect, Architecture};
pub use model::{GenerateOptions, Generated, Seq2SeqModel};
