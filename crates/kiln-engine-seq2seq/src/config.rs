//! Reading an encoder-decoder directory's `config.json` (and `generation_config.json`, whose
//! fields win, as in transformers): which architecture, its hyperparameters, and the ids that
//! steer decoding.

use std::path::Path;

use kiln_core::{KilnError, KilnResult};
use serde::Deserialize;
use serde_json::Value;

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const GENERATION_CONFIG_FILE: &str = "generation_config.json";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";

/// The encoder-decoders Kiln runs. One implementation serves all three; the architecture picks
/// the switches below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `M2M100ForConditionalGeneration` (m2m100-1.2b): pre-LayerNorm, fairseq sinusoidal
    /// positions after the padding id, a final LayerNorm on encoder and decoder, language tokens.
    M2m100,
    /// `MarianMTModel` (opus-mt): post-LayerNorm, sinusoidal positions from 0 (cosines in the
    /// second half), `final_logits_bias`.
    Marian,
    /// `BartForConditionalGeneration` (bart-large-cnn): post-LayerNorm, learned positions with
    /// an offset of 2, `layernorm_embedding`, `final_logits_bias`.
    Bart,
}

impl Architecture {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "M2M100ForConditionalGeneration" => Some(Architecture::M2m100),
            "MarianMTModel" => Some(Architecture::Marian),
            "BartForConditionalGeneration" => Some(Architecture::Bart),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::M2m100 => "M2M100ForConditionalGeneration",
            Architecture::Marian => "MarianMTModel",
            Architecture::Bart => "BartForConditionalGeneration",
        }
    }

    /// LayerNorm before each sublayer (M2M100) or after its residual sum (Marian, BART).
    pub(crate) fn pre_layer_norm(self) -> bool {
        self == Architecture::M2m100
    }

    /// How positions become vectors.
    pub(crate) fn positions(self) -> PositionKind {
        match self {
            Architecture::M2m100 => PositionKind::Fairseq,
            Architecture::Marian => PositionKind::Marian,
            Architecture::Bart => PositionKind::Learned,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PositionKind {
    /// fairseq's table (`sin | cos`, frequencies `exp(-i·ln(10000)/(half-1))`), indexed from
    /// `pad_token_id + 1`; the padding id's row is zero.
    Fairseq,
    /// Marian's table (`sin` of even features, then `cos` of odd ones, `pos / 10000^(2⌊j/2⌋/d)`),
    /// indexed from 0.
    Marian,
    /// `embed_positions.weight`, indexed from 2.
    Learned,
}

/// The hyperparameters every one of these configs shares (transformers' names).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Seq2SeqConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
    pub pad_token_id: u32,
}

fn default_activation() -> String {
    "gelu".to_owned()
}

/// The ids that steer decoding, from `config.json` with `generation_config.json` on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GenerationIds {
    pub decoder_start: u32,
    pub eos: Vec<u32>,
    pub forced_bos: Option<u32>,
    pub forced_eos: Option<u32>,
    /// Single tokens that are never generated (`bad_words_ids` entries of one token).
    pub banned: Vec<u32>,
}

pub(crate) fn file_error(dir: &Path, file: &str, detail: impl std::fmt::Display) -> KilnError {
    KilnError::internal(format!(
        "sequence-to-sequence model {}: {file}: {detail}",
        dir.join(file).display()
    ))
}

fn read_json(dir: &Path, file: &str) -> KilnResult<Value> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|err| file_error(dir, file, err))?;
    serde_json::from_str(&text).map_err(|err| file_error(dir, file, err))
}

/// What `config.json` and `generation_config.json` say.
pub(crate) struct ModelConfig {
    pub architecture: Architecture,
    pub config: Seq2SeqConfig,
    pub generation: GenerationIds,
}

/// Reads the architecture of the directory's `config.json` (cheap: no weights).
pub fn inspect(dir: &Path) -> KilnResult<Architecture> {
    architecture_of(dir, &read_json(dir, CONFIG_FILE)?)
}

fn architecture_of(dir: &Path, config: &Value) -> KilnResult<Architecture> {
    let names: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    names
        .iter()
        .find_map(|name| Architecture::from_name(name))
        .ok_or_else(|| {
            file_error(
                dir,
                CONFIG_FILE,
                format!(
                    "architectures {names:?} name no supported model \
                     (M2M100ForConditionalGeneration, MarianMTModel or BartForConditionalGeneration)"
                ),
            )
        })
}

pub(crate) fn read_config(dir: &Path) -> KilnResult<ModelConfig> {
    let raw = read_json(dir, CONFIG_FILE)?;
    let architecture = architecture_of(dir, &raw)?;
    let config: Seq2SeqConfig =
        serde_json::from_value(raw.clone()).map_err(|err| file_error(dir, CONFIG_FILE, err))?;
    let check = |ok: bool, detail: &str| {
        if ok {
            Ok(())
        } else {
            Err(file_error(dir, CONFIG_FILE, detail))
        }
    };
    check(config.d_model > 0, "d_model is 0")?;
    check(
        config.encoder_attention_heads > 0
            && config.decoder_attention_heads > 0
            && config
                .d_model
                .is_multiple_of(config.encoder_attention_heads)
            && config
                .d_model
                .is_multiple_of(config.decoder_attention_heads),
        "d_model must be a multiple of the attention heads",
    )?;
    check(
        config.max_position_embeddings >= 2,
        "the model has fewer than 2 positions",
    )?;
    if architecture == Architecture::Marian
        && raw.get("share_encoder_decoder_embeddings") == Some(&Value::Bool(false))
    {
        let decoder_vocab = raw.get("decoder_vocab_size").and_then(Value::as_u64);
        check(
            decoder_vocab.is_none_or(|size| size as usize == config.vocab_size),
            "a decoder vocabulary other than the encoder's is not supported",
        )?;
    }
    let mut fields = raw;
    if dir.join(GENERATION_CONFIG_FILE).is_file() {
        if let Value::Object(generation) = read_json(dir, GENERATION_CONFIG_FILE)? {
            if let Value::Object(fields) = &mut fields {
                fields.extend(generation.into_iter().filter(|(_, v)| !v.is_null()));
            }
        }
    }
    let generation =
        generation_ids(&fields).map_err(|detail| file_error(dir, CONFIG_FILE, detail))?;
    Ok(ModelConfig {
        architecture,
        config,
        generation,
    })
}

fn token_id(fields: &Value, key: &str) -> Result<Option<u32>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .map(Some)
            .ok_or_else(|| format!("{key} is not a token id: {value}")),
    }
}

fn generation_ids(fields: &Value) -> Result<GenerationIds, String> {
    let eos = match fields.get("eos_token_id") {
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or("eos_token_id is not a list of token ids")?,
        _ => token_id(fields, "eos_token_id")?.into_iter().collect(),
    };
    if eos.is_empty() {
        return Err("eos_token_id is missing".into());
    }
    let decoder_start =
        token_id(fields, "decoder_start_token_id")?.ok_or("decoder_start_token_id is missing")?;
    let mut banned = Vec::new();
    if let Some(Value::Array(words)) = fields.get("bad_words_ids") {
        for word in words {
            match word.as_array().map(Vec::as_slice) {
                Some([id]) => banned.push(
                    id.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or("bad_words_ids holds something other than token ids")?,
                ),
                _ => return Err("bad_words_ids of more than one token are not supported".into()),
            }
        }
    }
    Ok(GenerationIds {
        decoder_start,
        eos,
        forced_bos: token_id(fields, "forced_bos_token_id")?,
        forced_eos: token_id(fields, "forced_eos_token_id")?,
        banned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids_read_lists_and_single_ids() {
        let fields = serde_json::json!({
            "eos_token_id": [2, 3],
            "decoder_start_token_id": 2,
            "forced_bos_token_id": 0,
            "forced_eos_token_id": null,
            "bad_words_ids": [[58100]],
        });
        let ids = generation_ids(&fields).unwrap();
        assert_eq!(ids.eos, [2, 3]);
        assert_eq!(ids.forced_bos, Some(0));
        assert_eq!(ids.forced_eos, None);
        assert_eq!(ids.banned, [58100]);
        let missing = serde_json::json!({"eos_token_id": 2});
        assert!(generation_ids(&missing).is_err());
        let phrase = serde_json::json!({
            "eos_token_id": 2, "decoder_start_token_id": 2, "bad_words_ids": [[4, 5]]
        });
        assert!(generation_ids(&phrase).is_err());
    }

    #[test]
    fn unsupported_architectures_are_named() {
        let config = serde_json::json!({"architectures": ["T5ForConditionalGeneration"]});
        let error = architecture_of(Path::new("/m"), &config).unwrap_err();
        assert!(
            error.message.contains("T5ForConditionalGeneration"),
            "{}",
            error.message
        );
    }
}
