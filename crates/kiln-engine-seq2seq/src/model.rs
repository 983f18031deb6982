//! [`Seq2SeqModel`]: a translation or summarization model directory loaded for greedy
//! generation.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use kiln_core::{KilnError, KilnResult};
use tokenizers::Tokenizer;

use crate::config::{
    file_error, read_config, Architecture, GenerationIds, TOKENIZER_FILE, WEIGHTS_FILE,
};
use crate::network::{DecoderCache, Network};

/// M2M100Tokenizer's source language when none is given.
const DEFAULT_SOURCE_LANGUAGE: &str = "__en__";

/// How one generation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// The language token decoding is forced to start with (M2M100: `__fr__`); required by
    /// M2M100, ignored by the others.
    pub target_lang_token: Option<String>,
    /// The language token the source starts with (M2M100; `__en__` when absent, as in
    /// transformers); ignored by the others.
    pub source_lang_token: Option<String>,
    /// New tokens at most (forced and end-of-sequence tokens included); also bounded by the
    /// model's positions.
    pub max_new_tokens: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            target_lang_token: None,
            source_lang_token: None,
            max_new_tokens: 256,
        }
    }
}

/// What one generation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The new tokens decoded, special tokens (language, `</s>`) skipped.
    pub text: String,
    /// The new tokens: a forced first token, the rest, and the end-of-sequence token if reached.
    pub token_ids: Vec<u32>,
    /// Tokens of the source, special tokens included.
    pub input_tokens: usize,
}

/// An M2M100, Marian or BART encoder-decoder on the CPU, decoding greedily with a cache.
pub struct Seq2SeqModel {
    network: Network,
    tokenizer: Tokenizer,
    architecture: Architecture,
    ids: GenerationIds,
    max_tokens: usize,
    vocab_size: usize,
}

impl Seq2SeqModel {
    /// Loads a Hugging Face-layout directory: `config.json` (naming
    /// `M2M100ForConditionalGeneration`, `MarianMTModel` or `BartForConditionalGeneration`),
    /// `generation_config.json` if present, `tokenizer.json` and `model.safetensors`. Errors are
    /// `ErrorKind::Internal` and name the file.
    pub fn load(dir: &Path) -> KilnResult<Self> {
        let model = read_config(dir)?;
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(file_error(dir, WEIGHTS_FILE, "file not found"));
        }
        // SAFETY: the file is memory-mapped read-only; Kiln's store never rewrites an installed
        // model's files in place, so the mapping stays valid for the model's lifetime.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(|err| file_error(dir, WEIGHTS_FILE, err))?;
        let network = Network::load(model.architecture, &model.config, vb)
            .map_err(|err| file_error(dir, WEIGHTS_FILE, err))?;
        let vocab_size = model.config.vocab_size;
        let ids = model.generation;
        let known = |id: u32| (id as usize) < vocab_size;
        let all_known = known(ids.decoder_start)
            && ids.eos.iter().all(|&id| known(id))
            && ids.forced_bos.is_none_or(known)
            && ids.forced_eos.is_none_or(known);
        if !all_known {
            return Err(file_error(
                dir,
                "config.json",
                format!("a generation token id is outside the vocabulary of {vocab_size}"),
            ));
        }
        let tokenizer = read_tokenizer(dir, vocab_size)?;
        let max_tokens = network.max_tokens();
        if max_tokens < 2 {
            return Err(file_error(
                dir,
                "config.json",
                "the model has fewer than 2 positions",
            ));
        }
        tracing::info!(
            dir = %dir.display(),
            architecture = model.architecture.name(),
            max_tokens,
            "loaded sequence-to-sequence model"
        );
        Ok(Self {
            network,
            tokenizer,
            architecture: model.architecture,
            ids,
            max_tokens,
            vocab_size,
        })
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The most source tokens (special tokens included) the model takes; also the most decoder
    /// tokens, the start token included.
    pub fn max_input_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The id of a special token such as `__fr__`, if the tokenizer has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The source's token ids as the model's own tokenizer builds them: M2M100's
    /// `[source language] pieces </s>`, the others' tokenizer.json post-processing. Refuses a
    /// source longer than the model's positions.
    pub fn tokenize(&self, text: &str, options: &GenerateOptions) -> KilnResult<Vec<u32>> {
        let m2m100 = self.architecture == Architecture::M2m100;
        let encoded = self
            .tokenizer
            .encode(text, !m2m100)
            .map_err(|err| KilnError::bad_input(format!("cannot tokenize the text: {err}")))?;
        let mut ids = Vec::with_capacity(encoded.len() + 2);
        if m2m100 {
            let language = options
                .source_lang_token
                .as_deref()
                .unwrap_or(DEFAULT_SOURCE_LANGUAGE);
            ids.push(self.language(language, "source")?);
            ids.extend_from_slice(encoded.get_ids());
            ids.push(self.ids.eos[0]);
        } else {
            ids.extend_from_slice(encoded.get_ids());
        }
        if ids.len() > self.max_tokens {
            return Err(KilnError::bad_input(format!(
                "the text is {} tokens; the model takes at most {} (special tokens included)",
                ids.len(),
                self.max_tokens
            )));
        }
        if ids.is_empty() {
            return Err(KilnError::bad_input("the text has no tokens"));
        }
        Ok(ids)
    }

    fn language(&self, token: &str, which: &str) -> KilnResult<u32> {
        self.token_id(token).ok_or_else(|| {
            KilnError::bad_input(format!("the model has no {which} language token {token:?}"))
        })
    }

    /// The token generation is forced to start with: M2M100's target language, else the
    /// config's `forced_bos_token_id`.
    fn forced_first(&self, options: &GenerateOptions) -> KilnResult<Option<u32>> {
        if self.architecture != Architecture::M2m100 {
            return Ok(self.ids.forced_bos);
        }
        let target = options
            .target_lang_token
            .as_deref()
            .ok_or_else(|| KilnError::bad_input("translation needs a target language"))?;
        self.language(target, "target").map(Some)
    }

    /// Translates or summarizes `source_text` greedily.
    pub fn generate(&self, source_text: &str, options: &GenerateOptions) -> KilnResult<Generated> {
        self.generate_checked(source_text, options, &|| Ok(()))
    }

    /// [`generate`](Self::generate), calling `check` before every decoder step: its error (a
    /// passed deadline, a departed caller) stops the work and is returned.
    pub fn generate_checked(
        &self,
        source_text: &str,
        options: &GenerateOptions,
        check: &dyn Fn() -> KilnResult<()>,
    ) -> KilnResult<Generated> {
        let forced_first = self.forced_first(options)?;
        let source = self.tokenize(source_text, options)?;
        let token_ids = self.generate_ids(&source, forced_first, options.max_new_tokens, check)?;
        let text = self
            .tokenizer
            .decode(&token_ids, true)
            .map_err(|err| KilnError::internal(format!("cannot decode the output: {err}")))?;
        Ok(Generated {
            text,
            token_ids,
            input_tokens: source.len(),
        })
    }

    fn generate_ids(
        &self,
        source: &[u32],
        forced_first: Option<u32>,
        max_new_tokens: usize,
        check: &dyn Fn() -> KilnResult<()>,
    ) -> KilnResult<Vec<u32>> {
        let limit = max_new_tokens.min(self.max_tokens - 1);
        let mut generated = Vec::with_capacity(limit);
        if limit == 0 {
            return Ok(generated);
        }
        check()?;
        let mut cache = self.start(source)?;
        let mut next = self.ids.decoder_start;
        for step in 0..limit {
            check()?;
            let mut logits = self.step(&[next], &mut cache)?;
            for &banned in &self.ids.banned {
                if let Some(logit) = logits.get_mut(banned as usize) {
                    *logit = f32::NEG_INFINITY;
                }
            }
            // As transformers' processors: a forced first token, then a forced end at the
            // last step (which wins when both apply), else the best-scoring token.
            next = match (step, forced_first, self.ids.forced_eos) {
                (_, _, Some(eos)) if step + 1 == limit => eos,
                (0, Some(first), _) => first,
                _ => argmax(&logits),
            };
            generated.push(next);
            if self.ids.eos.contains(&next) {
                break;
            }
        }
        Ok(generated)
    }

    fn start(&self, source: &[u32]) -> KilnResult<DecoderCache> {
        self.network
            .encode(source)
            .and_then(|encoded| self.network.start_decoding(&encoded))
            .map_err(|err| KilnError::internal(format!("encoder forward pass: {err}")))
    }

    fn step(&self, ids: &[u32], cache: &mut DecoderCache) -> KilnResult<Vec<f32>> {
        if cache.len + ids.len() > self.max_tokens {
            return Err(KilnError::bad_input(format!(
                "the output would pass the model's {} positions",
                self.max_tokens
            )));
        }
        if let Some(unknown) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(KilnError::bad_input(format!(
                "token id {unknown} is not in the vocabulary"
            )));
        }
        self.network
            .decode_step(ids, cache)
            .map_err(|err| KilnError::internal(format!("decoder forward pass: {err}")))
    }

    /// The encoder's output for `source` (`len` rows of `d_model` values), for checks.
    pub fn encoder_output(&self, source: &[u32]) -> KilnResult<Vec<Vec<f32>>> {
        self.check_source(source)?;
        self.network
            .encode(source)
            .and_then(|out| out.squeeze(0)?.to_vec2::<f32>())
            .map_err(|err| KilnError::internal(format!("encoder forward pass: {err}")))
    }

    /// The decoder's logits after `decoder_ids` (the start token first), fed one token per
    /// step through the cache as generation does, for checks.
    pub fn decoder_logits(&self, source: &[u32], decoder_ids: &[u32]) -> KilnResult<Vec<f32>> {
        self.check_source(source)?;
        let mut cache = self.start(source)?;
        let mut logits = Vec::new();
        for &id in decoder_ids {
            logits = self.step(&[id], &mut cache)?;
        }
        Ok(logits)
    }

    fn check_source(&self, source: &[u32]) -> KilnResult<()> {
        if source.is_empty() || source.len() > self.max_tokens {
            return Err(KilnError::bad_input(format!(
                "a source of {} tokens; the model takes 1 to {}",
                source.len(),
                self.max_tokens
            )));
        }
        match source.iter().find(|&&id| id as usize >= self.vocab_size) {
            Some(id) => Err(KilnError::bad_input(format!(
                "token id {id} is not in the vocabulary"
            ))),
            None => Ok(()),
        }
    }
}

/// The first index of the largest value (as `torch.argmax`).
fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (index, value) in values.iter().enumerate() {
        if *value > values[best] {
            best = index;
        }
    }
    best as u32
}

/// Kiln checks lengths itself, so a tokenizer's own padding and truncation are switched off.
/// Ids past the embedding table would fail deep in a forward pass, so a tokenizer that can
/// produce them is refused at load.
fn read_tokenizer(dir: &Path, vocab_size: usize) -> KilnResult<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(dir.join(TOKENIZER_FILE))
        .map_err(|err| file_error(dir, TOKENIZER_FILE, err))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|err| file_error(dir, TOKENIZER_FILE, err))?;
    let tokenizer_vocab = tokenizer.get_vocab_size(true);
    if tokenizer_vocab > vocab_size {
        return Err(file_error(
            dir,
            TOKENIZER_FILE,
            format!("{tokenizer_vocab} tokens, more than the model's vocab_size of {vocab_size}"),
        ));
    }
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_equal_values() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, 0.5]), 1);
    }
}
