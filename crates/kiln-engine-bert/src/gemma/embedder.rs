//! [`GemmaEmbedder`]: sentence-transformers' EmbeddingGemma pipeline on candle. A prompt is
//! prepended to each text, the Gemma 3 encoder runs bidirectionally, its hidden states are
//! mean-pooled over every token (prompt and `<bos>`/`<eos>` included), projected by the Dense
//! layers and L2-normalized.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear_b, Linear, VarBuilder};
use kiln_core::{Embedder, EmbeddingOutput, KilnError, KilnResult, Pooling};
use tokenizers::{Encoding, Tokenizer};

use super::config::{
    file_error, read_gemma_config, read_pipeline, DenseConfig, CONFIG_FILE, DOCUMENT_PROMPT_NAME,
    QUERY_PROMPT_NAME, WEIGHTS_FILE,
};
use super::encoder::GemmaEncoder;
use crate::model_dir::{decode_token_ids, read_tokenizer};
use crate::pooling::{l2_normalize, masked_mean};

/// Kiln's bound on one input, in tokens (EmbeddingGemma was trained on up to 2048).
pub(crate) const MAX_INPUT_TOKENS: usize = 2048;

/// Sequences per forward pass, at most.
const MAX_SUB_BATCH: usize = 32;
/// Attention scores per head in one forward pass (sequences × padded length²), at most: bounds
/// the score matrices to about 200 MB at 3 heads while short inputs still batch 32 at a time.
const ATTENTION_BUDGET: usize = 1 << 24;

/// One sentence-transformers Dense module: a linear map, then tanh or nothing.
struct DenseLayer {
    linear: Linear,
    tanh: bool,
}

impl DenseLayer {
    fn load(dir: &Path, config: &DenseConfig) -> KilnResult<Self> {
        let file = format!("{}/{WEIGHTS_FILE}", config.path);
        let weights = mmap_weights(dir, &file)?;
        let linear = linear_b(
            config.in_features,
            config.out_features,
            config.bias,
            weights.pp("linear"),
        )
        .map_err(|err| file_error(dir, &file, err))?;
        Ok(Self {
            linear,
            tanh: config.tanh,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let projected = self.linear.forward(xs)?;
        if self.tanh {
            projected.tanh()
        } else {
            Ok(projected)
        }
    }
}

fn mmap_weights(dir: &Path, file: &str) -> KilnResult<VarBuilder<'static>> {
    let path = dir.join(file);
    if !path.is_file() {
        return Err(file_error(dir, file, "file not found"));
    }
    // SAFETY: the file is memory-mapped read-only; Kiln's store never rewrites an installed
    // model's files in place, so the mapping stays valid for the model's lifetime.
    unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
        .map_err(|err| file_error(dir, file, err))
}

/// EmbeddingGemma on the CPU, in f32: 768-dimensional, L2-normalized sentence embeddings.
pub struct GemmaEmbedder {
    encoder: GemmaEncoder,
    dense_layers: Vec<DenseLayer>,
    tokenizer: Tokenizer,
    prompts: HashMap<String, String>,
    dimensions: usize,
    max_input_tokens: usize,
    pad_token_id: u32,
}

impl GemmaEmbedder {
    /// Loads a sentence-transformers EmbeddingGemma directory: `config.json`, `tokenizer.json`,
    /// `model.safetensors`, `modules.json` with its Pooling and Dense modules, and the prompts in
    /// `config_sentence_transformers.json`. Errors are [`kiln_core::ErrorKind::Internal`] and
    /// name the file.
    /// The vectors' width (the last Dense layer's, else the encoder's), read from the
    /// configuration files without loading the weights.
    pub fn output_dimensions(dir: &Path) -> KilnResult<usize> {
        let config = read_gemma_config(dir)?;
        let pipeline = read_pipeline(dir, config.hidden_size)?;
        Ok(pipeline
            .dense_layers
            .last()
            .map_or(config.hidden_size, |dense| dense.out_features))
    }

    pub fn load(dir: &Path) -> KilnResult<Self> {
        Self::load_with_threads(dir, 0)
    }

    /// [`GemmaEmbedder::load`] running each forward pass on `threads` threads of its own (0: one
    /// per core).
    pub fn load_with_threads(dir: &Path, threads: usize) -> KilnResult<Self> {
        let config = read_gemma_config(dir)?;
        let pipeline = read_pipeline(dir, config.hidden_size)?;
        let max_input_tokens = pipeline
            .max_seq_length
            .unwrap_or(MAX_INPUT_TOKENS)
            .min(config.max_position_embeddings)
            .min(MAX_INPUT_TOKENS);
        if max_input_tokens < 2 {
            return Err(file_error(dir, CONFIG_FILE, "fewer than 2 positions"));
        }
        let tokenizer = read_tokenizer(dir, max_input_tokens)?;
        let pad_token_id = tokenizer
            .token_to_id("<pad>")
            .or(config.pad_token_id)
            .unwrap_or(0);
        let weights = mmap_weights(dir, WEIGHTS_FILE)?;
        let encoder = GemmaEncoder::load(&config, weights, threads)
            .map_err(|err| file_error(dir, WEIGHTS_FILE, err))?;
        let dense_layers = pipeline
            .dense_layers
            .iter()
            .map(|dense| DenseLayer::load(dir, dense))
            .collect::<KilnResult<Vec<_>>>()?;
        let dimensions = pipeline
            .dense_layers
            .last()
            .map_or(config.hidden_size, |dense| dense.out_features);
        tracing::info!(
            dir = %dir.display(),
            dimensions,
            max_input_tokens,
            layers = config.num_hidden_layers,
            "loaded EmbeddingGemma model"
        );
        Ok(Self {
            encoder,
            dense_layers,
            tokenizer,
            prompts: pipeline.prompts,
            dimensions,
            max_input_tokens,
            pad_token_id,
        })
    }

    /// The model's prompt called `name` ("document", "query", "STS", …), if it has one.
    pub fn prompt(&self, name: &str) -> Option<&str> {
        self.prompts.get(name).map(String::as_str)
    }

    /// Embeds `texts` with the model's prompt `prompt_name` prepended (the way
    /// sentence-transformers' `encode(..., prompt_name=...)` does). [`Embedder::embed`] uses the
    /// "document" prompt.
    pub fn embed_with_prompt(
        &mut self,
        texts: &[String],
        prompt_name: &str,
    ) -> KilnResult<EmbeddingOutput> {
        let prompt = self.prompt(prompt_name).ok_or_else(|| {
            let mut known: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
            known.sort_unstable();
            KilnError::bad_input(format!(
                "this model has no prompt {prompt_name:?}; it has: {}",
                known.join(", ")
            ))
        })?;
        let prompted: Vec<String> = texts.iter().map(|text| format!("{prompt}{text}")).collect();
        self.embed_prompted(&prompted)
    }

    fn embed_prompted(&self, texts: &[String]) -> KilnResult<EmbeddingOutput> {
        if texts.is_empty() {
            return Ok(EmbeddingOutput {
                vectors: Vec::new(),
                prompt_tokens: 0,
                token_counts: Vec::new(),
            });
        }
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|err| KilnError::internal(format!("tokenizing embedding input: {err}")))?;

        // Similar lengths share a forward pass, so little compute goes to padding; the masks keep
        // padding out of every result.
        let mut by_length: Vec<usize> = (0..encodings.len()).collect();
        by_length.sort_by_key(|&index| encodings[index].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for indices in sub_batches(&by_length, |index| encodings[index].len()) {
            let sub_batch: Vec<&Encoding> = indices.iter().map(|&i| &encodings[i]).collect();
            let pooled = self.embed_sub_batch(&sub_batch).map_err(|err| {
                KilnError::internal(format!("EmbeddingGemma forward pass: {err}"))
            })?;
            for (&index, vector) in indices.iter().zip(pooled) {
                vectors[index] = vector;
            }
        }
        let token_counts: Vec<u32> = encodings
            .iter()
            .map(|encoding| u32::try_from(encoding.len()).unwrap_or(u32::MAX))
            .collect();
        let prompt_tokens = token_counts
            .iter()
            .fold(0u32, |sum, &count| sum.saturating_add(count));
        tracing::debug!(inputs = texts.len(), prompt_tokens, "embedded");
        Ok(EmbeddingOutput {
            vectors,
            prompt_tokens,
            token_counts,
        })
    }

    fn embed_sub_batch(&self, encodings: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = encodings.iter().map(|encoding| encoding.len()).collect();
        let padded_len = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut token_ids = Vec::with_capacity(encodings.len() * padded_len);
        let mut attention = Vec::with_capacity(encodings.len() * padded_len);
        for encoding in encodings {
            let padding = padded_len - encoding.len();
            token_ids.extend_from_slice(encoding.get_ids());
            token_ids.extend(std::iter::repeat_n(self.pad_token_id, padding));
            attention.extend(std::iter::repeat_n(1.0f32, encoding.len()));
            attention.extend(std::iter::repeat_n(0.0f32, padding));
        }
        let shape = (encodings.len(), padded_len);
        let token_ids = Tensor::from_vec(token_ids, shape, &Device::Cpu)?;
        let attention = Tensor::from_vec(attention, shape, &Device::Cpu)?;
        let hidden = self.encoder.forward(&token_ids, &lengths)?;
        let mut pooled = masked_mean(&hidden, &attention)?;
        for dense in &self.dense_layers {
            pooled = dense.forward(&pooled)?;
        }
        l2_normalize(&pooled)?.to_vec2::<f32>()
    }
}

/// What one more forward pass costs, in padded tokens' worth of compute.
const PASS_OVERHEAD_TOKENS: usize = 16;

/// Splits indices (sorted by ascending length) into consecutive forward passes of at most
/// [`MAX_SUB_BATCH`] sequences and [`ATTENTION_BUDGET`] scores per head, choosing the split that
/// computes the fewest padded tokens (each pass pads to its longest sequence), so a few long
/// inputs do not make every short one in the request pay for their length.
fn sub_batches(sorted: &[usize], length_of: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = sorted
        .iter()
        .map(|&index| length_of(index).max(1))
        .collect();
    // cheapest[end]: the least cost of embedding sorted[..end]; start[end]: where its last pass
    // begins.
    let mut cheapest = vec![0usize; lengths.len() + 1];
    let mut start = vec![0usize; lengths.len() + 1];
    for end in 1..=lengths.len() {
        let longest = lengths[end - 1];
        let mut best = usize::MAX;
        for first in (0..end).rev() {
            let count = end - first;
            let fits = count == 1
                || (count <= MAX_SUB_BATCH && count * longest * longest <= ATTENTION_BUDGET);
            if !fits {
                break;
            }
            let cost = cheapest[first] + count * longest + PASS_OVERHEAD_TOKENS;
            if cost < best {
                best = cost;
                start[end] = first;
            }
        }
        cheapest[end] = best;
    }
    let mut batches = Vec::new();
    let mut end = lengths.len();
    while end > 0 {
        batches.push(sorted[start[end]..end].to_vec());
        end = start[end];
    }
    batches.reverse();
    batches
}

impl Embedder for GemmaEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    /// Texts are embedded as documents (the model's "document" prompt). The model pools by mean
    /// only; asking for CLS pooling is refused rather than answered with another pooling.
    fn embed(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput> {
        if pooling != Pooling::Mean {
            return Err(KilnError::bad_input(format!(
                "this model (EmbeddingGemma) pools by mean only; pooling {:?} is not available",
                pooling.as_str()
            )));
        }
        if self.prompts.contains_key(DOCUMENT_PROMPT_NAME) {
            self.embed_with_prompt(texts, DOCUMENT_PROMPT_NAME)
        } else {
            self.embed_prompted(texts)
        }
    }

    /// Queries take the model's "query" prompt (`task: search result | query: `), as
    /// sentence-transformers' `encode_query` gives them.
    fn embed_queries(&mut self, texts: &[String], pooling: Pooling) -> KilnResult<EmbeddingOutput> {
        if !self.prompts.contains_key(QUERY_PROMPT_NAME) {
            return self.embed(texts, pooling);
        }
        if pooling != Pooling::Mean {
            return self.embed(texts, pooling);
        }
        self.embed_with_prompt(texts, QUERY_PROMPT_NAME)
    }

    /// Decodes the ids back to text and embeds that, so the prompt, truncation and usage are
    /// exactly those of the equivalent text input.
    fn embed_token_ids(
        &mut self,
        ids: &[Vec<u32>],
        pooling: Pooling,
    ) -> KilnResult<EmbeddingOutput> {
        let texts = decode_token_ids(&self.tokenizer, ids)?;
        self.embed(&texts, pooling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_batches_bound_count_and_attention() {
        let short: Vec<usize> = (0..70).collect();
        let sizes: Vec<usize> = sub_batches(&short, |_| 16).iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 70);
        assert!(sizes.iter().all(|&size| size <= MAX_SUB_BATCH), "{sizes:?}");
        assert_eq!(sizes.len(), 3, "{sizes:?}");

        // 2048² scores per sequence: four fit the budget.
        let long: Vec<usize> = (0..9).collect();
        let sizes: Vec<usize> = sub_batches(&long, |_| 2048).iter().map(Vec::len).collect();
        assert!(sizes.iter().all(|&size| size <= 4), "{sizes:?}");
        assert_eq!(sizes.len(), 3, "{sizes:?}");
        assert!(sub_batches(&[], |_| 1).is_empty());
    }

    #[test]
    fn long_inputs_do_not_pad_short_ones() {
        // Twenty 10-token inputs and two of 500: together they would pad to 22 × 500 tokens.
        let lengths: Vec<usize> = [10; 20].into_iter().chain([500, 500]).collect();
        let sorted: Vec<usize> = (0..lengths.len()).collect();
        let batches = sub_batches(&sorted, |index| lengths[index]);
        assert_eq!(batches, vec![(0..20).collect::<Vec<_>>(), vec![20, 21]]);
    }
}
