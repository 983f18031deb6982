//! [`BertEmbedder`]: tokenize, run the encoder in length-sorted sub-batches, pool, normalize.

use std::path::Path;

use candle_core::{Device, Tensor};
use kiln_core::{Embedder, EmbeddingOutput, KilnError, KilnResult, Pooling};
use tokenizers::{Encoding, Tokenizer};

use crate::model_dir::{self, decode_token_ids, Backend, Encoder};
use crate::onnx_encoder::PaddedBatch;
use crate::pooling::pool_and_normalize;

/// Sequences per forward pass. Bounds peak memory (attention is batch × heads × len² floats)
/// while keeping matrix multiplies large enough to use the CPU well.
const SUB_BATCH_SIZE: usize = 32;

/// A BERT-family encoder producing L2-normalized sentence embeddings on the CPU.
pub struct BertEmbedder {
    model: Encoder,
    tokenizer: Tokenizer,
    hidden_size: usize,
    max_input_tokens: usize,
    pad_token_id: u32,
    default_pooling: Pooling,
}

impl BertEmbedder {
    /// Loads a Hugging Face-layout directory: `config.json`, `tokenizer.json`,
    /// `model.safetensors` and optionally `1_Pooling/config.json`. Weights may be named with or
    /// without the `bert.` prefix. Errors are [`kiln_core::ErrorKind::Internal`] and name the file.
    pub fn load(dir: &Path) -> KilnResult<Self> {
        Self::load_with(dir, Backend::Candle { threads: 0 })
    }

    /// [`BertEmbedder::load`] running each forward pass on `threads` threads of its own (0: one
    /// per core).
    pub fn load_with_threads(dir: &Path, threads: usize) -> KilnResult<Self> {
        Self::load_with(dir, Backend::Candle { threads })
    }

    /// Loads the same layout with `model.onnx` (an int8-quantized export) in place of the
    /// safetensors weights, run by ONNX Runtime on `threads` threads (0: its default).
    pub fn load_onnx(dir: &Path, threads: usize) -> KilnResult<Self> {
        Self::load_with(dir, Backend::OnnxRuntime { threads })
    }

    fn load_with(dir: &Path, backend: Backend) -> KilnResult<Self> {
        let loaded = model_dir::load(dir, backend)?;
        tracing::info!(
            dir = %dir.display(),
            ?backend,
            dimensions = loaded.hidden_size,
            max_input_tokens = loaded.max_input_tokens,
            "loaded BERT embedding model"
        );
        Ok(Self {
            model: loaded.model,
            tokenizer: loaded.tokenizer,
            hidden_size: loaded.hidden_size,
            max_input_tokens: loaded.max_input_tokens,
            pad_token_id: loaded.pad_token_id,
            default_pooling: loaded.default_pooling,
        })
    }

    /// The pooling the model was trained with, from `1_Pooling/config.json` (mean when absent).
    /// The vectors' width, read from `config.json` without loading the weights (what Kiln
    /// reports for the model before it is loaded).
    pub fn output_dimensions(dir: &Path) -> KilnResult<usize> {
        crate::model_dir::hidden_size(dir)
    }

    pub fn default_pooling(&self) -> Pooling {
        self.default_pooling
    }

    fn tokenize(&self, texts: &[String]) -> KilnResult<Vec<Encoding>> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.tokenizer
            .encode_batch(inputs, true)
            .map_err(|err| KilnError::internal(format!("tokenizing embedding input: {err}")))
    }

    /// Runs one padded forward pass; returns one vector per encoding, in the given order.
    fn embed_sub_batch(
        &mut self,
        encodings: &[&Encoding],
        pooling: Pooling,
    ) -> Result<Vec<Vec<f32>>, String> {
        let candle = |err: candle_core::Error| err.to_string();
        // At least one position, so CLS pooling has something to read even for empty encodings.
        let padded_len = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let batch_size = encodings.len();
        let mut token_ids = Vec::with_capacity(batch_size * padded_len);
        let mut type_ids = Vec::with_capacity(batch_size * padded_len);
        let mut attention_mask = Vec::with_capacity(batch_size * padded_len);
        for encoding in encodings {
            let padding = padded_len - encoding.len();
            token_ids.extend_from_slice(encoding.get_ids());
            token_ids.extend(std::iter::repeat_n(self.pad_token_id, padding));
            type_ids.extend_from_slice(encoding.get_type_ids());
            type_ids.extend(std::iter::repeat_n(0u32, padding));
            attention_mask.extend(std::iter::repeat_n(1.0f32, encoding.len()));
            attention_mask.extend(std::iter::repeat_n(0.0f32, padding));
        }
        let lengths: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
        let shape = (batch_size, padded_len);
        let device = Device::Cpu;
        let hidden = match &mut self.model {
            Encoder::Candle(model) => {
                let token_ids = Tensor::from_vec(token_ids, shape, &device).map_err(candle)?;
                let type_ids = Tensor::from_vec(type_ids, shape, &device).map_err(candle)?;
                model
                    .forward(&token_ids, &type_ids, &lengths)
                    .map_err(candle)?
            }
            Encoder::Onnx(model) => {
                let widen = |values: Vec<u32>| values.into_iter().map(i64::from).collect();
                model.forward(PaddedBatch {
                    batch_size,
                    padded_len,
                    token_ids: widen(token_ids),
                    type_ids: widen(type_ids),
                    attention_mask: attention_mask.iter().map(|&m| m as i64).collect(),
                })?
            }
        };
        let attention_mask = Tensor::from_vec(attention_mask, shape, &device).map_err(candle)?;
        pool_and_normalize(&hidden, &attention_mask, pooling)
            .and_then(|pooled| pooled.to_vec2::<f32>())
            .map_err(candle)
    }
}

impl Embedder for BertEmbedder {
    fn dimensions(&self) -> usize {
        self.hidden_size
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    fn embed(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput> {
        if texts.is_empty() {
            return Ok(EmbeddingOutput {
                vectors: Vec::new(),
                prompt_tokens: 0,
                token_counts: Vec::new(),
            });
        }
        let encodings = self.tokenize(texts)?;

        // Sub-batches of similar lengths waste little compute on padding; the mask keeps the
        // padding out of the results, so grouping never changes a vector beyond rounding.
        let mut by_length: Vec<usize> = (0..encodings.len()).collect();
        by_length.sort_by_key(|&index| encodings[index].len());

        let mut vectors = vec![Vec::new(); texts.len()];
        for indices in by_length.chunks(SUB_BATCH_SIZE) {
            let sub_batch: Vec<&Encoding> = indices.iter().map(|&i| &encodings[i]).collect();
            let pooled = self
                .embed_sub_batch(&sub_batch, pooling)
                .map_err(|err| KilnError::internal(format!("BERT forward pass: {err}")))?;
            for (&index, vector) in indices.iter().zip(pooled) {
                vectors[index] = vector;
            }
        }

        let token_counts: Vec<u32> = encodings
            .iter()
            .map(|e| u32::try_from(e.len()).unwrap_or(u32::MAX))
            .collect();
        let prompt_tokens = token_counts
            .iter()
            .fold(0u32, |sum, &n| sum.saturating_add(n));
        tracing::debug!(inputs = texts.len(), prompt_tokens, ?pooling, "embedded");
        Ok(EmbeddingOutput {
            vectors,
            prompt_tokens,
            token_counts,
        })
    }

    /// Decodes the ids back to text and embeds that, so special tokens, truncation and usage
    /// are exactly those of the equivalent text input.
    fn embed_token_ids(
        &mut self,
        ids: &[Vec<u32>],
        pooling: Pooling,
    ) -> KilnResult<EmbeddingOutput> {
        let texts = decode_token_ids(&self.tokenizer, ids)?;
        self.embed(&texts, pooling)
    }
}
