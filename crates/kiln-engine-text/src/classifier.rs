//! [`TextClassifier`]: a sequence-classification model directory loaded for Kiln's
//! [`SequenceClassifier`] contract.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::xlm_roberta::XLMRobertaForSequenceClassification;
use kiln_core::{ClassifierHead, ClassifierInput, KilnError, KilnResult, SequenceClassifier};
use tokenizers::Tokenizer;

use crate::config::{
    file_error, parse_config, read_config_text, summarize, Architecture, DistilBertConfig,
    XlmRobertaConfig, TOKENIZER_FILE, WEIGHTS_FILE,
};
use crate::distilbert::DistilBertClassifier;

enum Encoder {
    DistilBert(DistilBertClassifier),
    XlmRoberta(XLMRobertaForSequenceClassification),
}

/// A DistilBERT or XLM-RoBERTa sequence classifier on the CPU: labels (softmax) when the config
/// has several, a cross-encoder's relevance logit when it has one.
pub struct TextClassifier {
    encoder: Encoder,
    tokenizer: Tokenizer,
    head: ClassifierHead,
    architecture: Architecture,
    max_input_tokens: usize,
    pad_token_id: u32,
}

impl TextClassifier {
    /// Loads a Hugging Face-layout directory: `config.json` (naming
    /// `DistilBertForSequenceClassification` or `XLMRobertaForSequenceClassification`),
    /// `tokenizer.json` and `model.safetensors`. Errors are `ErrorKind::Internal` and name the file.
    pub fn load(dir: &Path) -> KilnResult<Self> {
        let config_text = read_config_text(dir)?;
        let summary = summarize(dir, &config_text)?;
        let num_labels = summary.labels.len();
        if num_labels == 0 {
            return Err(file_error(dir, "config.json", "the model has no labels"));
        }
        let weights = read_weights(dir)?;
        let weights_error = |err: candle_core::Error| file_error(dir, WEIGHTS_FILE, err);
        let (encoder, max_input_tokens, pad_token_id, vocab_size) = match summary.architecture {
            Architecture::DistilBert => {
                let config: DistilBertConfig = parse_config(dir, &config_text)?;
                let model = DistilBertClassifier::load(weights, &config, num_labels)
                    .map_err(weights_error)?;
                let max = config.max_position_embeddings;
                (
                    Encoder::DistilBert(model),
                    max,
                    config.pad_token_id,
                    config.vocab_size,
                )
            }
            Architecture::XlmRoberta => {
                let config: XlmRobertaConfig = parse_config(dir, &config_text)?;
                if config
                    .position_embedding_type
                    .as_deref()
                    .is_some_and(|kind| kind != "absolute")
                {
                    return Err(file_error(
                        dir,
                        "config.json",
                        "only absolute position embeddings are supported",
                    ));
                }
                let model = XLMRobertaForSequenceClassification::new(
                    num_labels,
                    &config.to_candle(),
                    weights,
                )
                .map_err(weights_error)?;
                let max = config.max_input_tokens();
                (
                    Encoder::XlmRoberta(model),
                    max,
                    config.pad_token_id,
                    config.vocab_size,
                )
            }
        };
        if max_input_tokens < 2 {
            return Err(file_error(
                dir,
                "config.json",
                "the model has fewer than 2 positions",
            ));
        }
        let tokenizer = read_tokenizer(dir, vocab_size)?;
        let head = if num_labels == 1 {
            ClassifierHead::Relevance
        } else {
            ClassifierHead::Labels(summary.labels)
        };
        tracing::info!(
            dir = %dir.display(),
            architecture = summary.architecture.name(),
            ?head,
            max_input_tokens,
            "loaded text classification model"
        );
        Ok(Self {
            encoder,
            tokenizer,
            head,
            architecture: summary.architecture,
            max_input_tokens,
            pad_token_id,
        })
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    fn forward_padded(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let padded_len = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut token_ids = Vec::with_capacity(batch.len() * padded_len);
        let mut mask = Vec::with_capacity(batch.len() * padded_len);
        for ids in batch {
            let padding = padded_len - ids.len();
            token_ids.extend_from_slice(ids);
            token_ids.extend(std::iter::repeat_n(self.pad_token_id, padding));
            mask.extend(std::iter::repeat_n(1.0f32, ids.len()));
            mask.extend(std::iter::repeat_n(0.0f32, padding));
        }
        let shape = (batch.len(), padded_len);
        let device = Device::Cpu;
        let token_ids = Tensor::from_vec(token_ids, shape, &device)?;
        let mask = Tensor::from_vec(mask, shape, &device)?;
        let logits = match &self.encoder {
            Encoder::DistilBert(model) => model.forward(&token_ids, &mask)?,
            Encoder::XlmRoberta(model) => {
                // XLM-R has one token type; transformers feeds zeros.
                let token_types = token_ids.zeros_like()?;
                model.forward(&token_ids, &mask, &token_types)?
            }
        };
        logits.to_dtype(DType::F32)?.to_vec2::<f32>()
    }
}

impl SequenceClassifier for TextClassifier {
    fn head(&self) -> &ClassifierHead {
        &self.head
    }

    fn max_input_tokens(&self) -> usize {
        self.max_input_tokens
    }

    fn tokenize(&self, input: &ClassifierInput) -> KilnResult<Vec<u32>> {
        if self.head == ClassifierHead::Relevance && input.pair.is_none() {
            return Err(KilnError::bad_input(
                "this model is a reranker: it scores a query against a passage",
            ));
        }
        let encoded = match &input.pair {
            None => self.tokenizer.encode(input.text.as_str(), true),
            Some(pair) => self
                .tokenizer
                .encode((input.text.as_str(), pair.as_str()), true),
        }
        .map_err(|err| KilnError::bad_input(format!("cannot tokenize the text: {err}")))?;
        let count = encoded.len();
        if count > self.max_input_tokens {
            let what = if input.pair.is_some() {
                "the query and passage together are"
            } else {
                "the text is"
            };
            return Err(KilnError::bad_input(format!(
                "{what} {count} tokens; the model takes at most {} (special tokens included)",
                self.max_input_tokens
            )));
        }
        Ok(encoded.get_ids().to_vec())
    }

    fn forward(&mut self, batch: &[&[u32]]) -> KilnResult<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(too_long) = batch.iter().find(|ids| ids.len() > self.max_input_tokens) {
            return Err(KilnError::bad_input(format!(
                "an input of {} tokens is longer than the model's {}",
                too_long.len(),
                self.max_input_tokens
            )));
        }
        self.forward_padded(batch)
            .map_err(|err| KilnError::internal(format!("text classifier forward pass: {err}")))
    }
}

fn read_weights(dir: &Path) -> KilnResult<VarBuilder<'static>> {
    let path = dir.join(WEIGHTS_FILE);
    if !path.is_file() {
        return Err(file_error(dir, WEIGHTS_FILE, "file not found"));
    }
    // SAFETY: the file is memory-mapped read-only; Kiln's store never rewrites an installed
    // model's files in place, so the mapping stays valid for the model's lifetime.
    unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
        .map_err(|err| file_error(dir, WEIGHTS_FILE, err))
}

/// Kiln checks lengths itself and pads per batch, so a tokenizer's own padding and truncation
/// settings (exports often carry them) are switched off. Ids past the embedding table would
/// fail deep in a forward pass, so a tokenizer that can produce them is refused at load.
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
