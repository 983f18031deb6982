//! Reading a Hugging Face-layout model directory into a ready model and tokenizer.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use kiln_core::{KilnError, KilnResult, Pooling};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bert_encoder::BertEncoder;
use crate::onnx_encoder::OnnxBertEncoder;

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";
pub(crate) const ONNX_FILE: &str = "model.onnx";
pub(crate) const POOLING_CONFIG_FILE: &str = "1_Pooling/config.json";

/// BERT-family encoders are trained on at most 512 tokens; positions past that are untrained even
/// where a config declares a larger table.
const MAX_SUPPORTED_POSITIONS: usize = 512;

/// Which engine runs the encoder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    /// Kiln's own encoder, from `model.safetensors`, on this many threads (0: one per core).
    Candle { threads: usize },
    /// ONNX Runtime on `model.onnx` (int8 exports), on this many threads (0: its default).
    OnnxRuntime { threads: usize },
}

/// The loaded encoder, on whichever engine runs it.
pub(crate) enum Encoder {
    Candle(BertEncoder),
    Onnx(OnnxBertEncoder),
}

/// Everything [`crate::BertEmbedder`] needs, loaded and cross-checked.
pub(crate) struct LoadedModel {
    pub model: Encoder,
    pub tokenizer: Tokenizer,
    pub hidden_size: usize,
    pub max_input_tokens: usize,
    pub pad_token_id: u32,
    pub default_pooling: Pooling,
}

/// The fields of sentence-transformers' `1_Pooling/config.json` that matter here.
#[derive(Debug, Deserialize)]
struct SentenceTransformersPooling {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
}

pub(crate) fn load(dir: &Path, backend: Backend) -> KilnResult<LoadedModel> {
    let config = read_config(dir)?;
    let max_input_tokens = config.max_position_embeddings.min(MAX_SUPPORTED_POSITIONS);
    if max_input_tokens < 2 {
        return Err(file_error(
            dir,
            CONFIG_FILE,
            "max_position_embeddings is below 2",
        ));
    }
    let default_pooling = read_default_pooling(dir, config.hidden_size)?;
    let tokenizer = read_tokenizer(dir, max_input_tokens)?;
    let pad_token_id = tokenizer
        .token_to_id("[PAD]")
        .unwrap_or(config.pad_token_id as u32);
    let model = match backend {
        Backend::Candle { threads } => Encoder::Candle(read_weights(dir, &config, threads)?),
        Backend::OnnxRuntime { threads } => Encoder::Onnx(read_onnx(dir, &config, threads)?),
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        hidden_size: config.hidden_size,
        max_input_tokens,
        pad_token_id,
        default_pooling,
    })
}

fn file_error(dir: &Path, file: &str, detail: impl std::fmt::Display) -> KilnError {
    KilnError::internal(format!(
        "embedding model {}: {file}: {detail}",
        dir.join(file).display()
    ))
}

/// `hidden_size` of the directory's `config.json`: a BERT embedder's output width.
pub(crate) fn hidden_size(dir: &Path) -> KilnResult<usize> {
    read_config(dir).map(|config| config.hidden_size)
}

fn read_config(dir: &Path) -> KilnResult<Config> {
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE))
        .map_err(|err| file_error(dir, CONFIG_FILE, err))?;
    serde_json::from_str(&text).map_err(|err| file_error(dir, CONFIG_FILE, err))
}

/// The pooling the model was trained with. Absent a sentence-transformers pooling file, mean
/// pooling is the common choice for BERT sentence embedders.
fn read_default_pooling(dir: &Path, hidden_size: usize) -> KilnResult<Pooling> {
    let path = dir.join(POOLING_CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Pooling::Mean),
        Err(err) => return Err(file_error(dir, POOLING_CONFIG_FILE, err)),
    };
    let pooling: SentenceTransformersPooling =
        serde_json::from_str(&text).map_err(|err| file_error(dir, POOLING_CONFIG_FILE, err))?;
    if let Some(dimension) = pooling.word_embedding_dimension {
        if dimension != hidden_size {
            return Err(file_error(
                dir,
                POOLING_CONFIG_FILE,
                format!("word_embedding_dimension {dimension} does not match hidden_size {hidden_size} in {CONFIG_FILE}"),
            ));
        }
    }
    Ok(if pooling.pooling_mode_cls_token {
        Pooling::Cls
    } else {
        Pooling::Mean
    })
}

/// Exported tokenizers often carry fixed padding and a short truncation for training; we pad
/// ourselves per sub-batch and truncate (right, special tokens included) to what the position
/// table allows, as sentence-transformers does. Shared by the BERT and Gemma embedders.
pub(crate) fn read_tokenizer(dir: &Path, max_input_tokens: usize) -> KilnResult<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(dir.join(TOKENIZER_FILE))
        .map_err(|err| file_error(dir, TOKENIZER_FILE, err))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: max_input_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|err| file_error(dir, TOKENIZER_FILE, err))?;
    Ok(tokenizer)
}

/// Token-id inputs decoded back to text, so that embedding them applies exactly the special
/// tokens, prompt, truncation and usage of the equivalent text input.
pub(crate) fn decode_token_ids(tokenizer: &Tokenizer, ids: &[Vec<u32>]) -> KilnResult<Vec<String>> {
    let vocab_size = tokenizer.get_vocab_size(true);
    let mut texts = Vec::with_capacity(ids.len());
    for (index, input) in ids.iter().enumerate() {
        if let Some(bad) = input.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(KilnError::bad_input(format!(
                "token id {bad} in input {index} is outside the model's vocabulary of \
                 {vocab_size} tokens"
            )));
        }
        let text = tokenizer.decode(input, true).map_err(|err| {
            KilnError::bad_input(format!(
                "cannot decode the token ids of input {index}: {err}"
            ))
        })?;
        texts.push(text);
    }
    Ok(texts)
}

fn read_onnx(dir: &Path, config: &Config, threads: usize) -> KilnResult<OnnxBertEncoder> {
    let path = dir.join(ONNX_FILE);
    if !path.is_file() {
        return Err(file_error(dir, ONNX_FILE, "file not found"));
    }
    OnnxBertEncoder::load(&path, threads, config.hidden_size)
        .map_err(|err| file_error(dir, ONNX_FILE, err))
}

fn read_weights(dir: &Path, config: &Config, threads: usize) -> KilnResult<BertEncoder> {
    let path = dir.join(WEIGHTS_FILE);
    if !path.is_file() {
        return Err(file_error(dir, WEIGHTS_FILE, "file not found"));
    }
    // SAFETY: the file is memory-mapped read-only; Kiln's store never rewrites an installed
    // model's files in place, so the mapping stays valid for the model's lifetime.
    let root = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
        .map_err(|err| file_error(dir, WEIGHTS_FILE, err))?;
    // sentence-transformers exports name tensors `embeddings.*`; transformers' BertFor* exports
    // nest them under `bert.`.
    let weights = if root.contains_tensor("embeddings.word_embeddings.weight") {
        root
    } else if root.contains_tensor("bert.embeddings.word_embeddings.weight") {
        root.pp("bert")
    } else {
        return Err(file_error(
            dir,
            WEIGHTS_FILE,
            "no BERT word embeddings (expected `embeddings.word_embeddings.weight` or `bert.embeddings.word_embeddings.weight`)",
        ));
    };
    BertEncoder::load(weights, config, threads).map_err(|err| file_error(dir, WEIGHTS_FILE, err))
}
