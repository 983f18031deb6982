//! Reading a Hugging Face sequence-classification directory's `config.json`: which architecture,
//! which labels, and each architecture's hyperparameters.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_core::{KilnError, KilnResult};
use serde::Deserialize;

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";

/// The encoders Kiln runs with a sequence-classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `DistilBertForSequenceClassification` (distilbert-sst-2).
    DistilBert,
    /// `XLMRobertaForSequenceClassification` (bge-reranker-base, bge-reranker-v2-m3).
    XlmRoberta,
}

impl Architecture {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "DistilBertForSequenceClassification" => Some(Architecture::DistilBert),
            "XLMRobertaForSequenceClassification" => Some(Architecture::XlmRoberta),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::DistilBert => "DistilBertForSequenceClassification",
            Architecture::XlmRoberta => "XLMRobertaForSequenceClassification",
        }
    }
}

/// The fields every sequence-classification config shares.
#[derive(Debug, Deserialize)]
struct HeadConfig {
    #[serde(default)]
    architectures: Vec<String>,
    /// `{"0": "NEGATIVE", "1": "POSITIVE"}`; transformers writes it even for one label.
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    num_labels: Option<usize>,
}

/// What `config.json` says about the model as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    pub architecture: Architecture,
    /// Label names in logit order.
    pub labels: Vec<String>,
}

pub(crate) fn file_error(dir: &Path, file: &str, detail: impl std::fmt::Display) -> KilnError {
    KilnError::internal(format!(
        "text classification model {}: {file}: {detail}",
        dir.join(file).display()
    ))
}

pub(crate) fn read_config_text(dir: &Path) -> KilnResult<String> {
    std::fs::read_to_string(dir.join(CONFIG_FILE)).map_err(|err| file_error(dir, CONFIG_FILE, err))
}

pub(crate) fn parse_config<T: for<'de> Deserialize<'de>>(dir: &Path, text: &str) -> KilnResult<T> {
    serde_json::from_str(text).map_err(|err| file_error(dir, CONFIG_FILE, err))
}

/// Reads the architecture and labels of the directory's `config.json` (cheap: no weights).
pub fn inspect(dir: &Path) -> KilnResult<ModelSummary> {
    summarize(dir, &read_config_text(dir)?)
}

pub(crate) fn summarize(dir: &Path, text: &str) -> KilnResult<ModelSummary> {
    let head: HeadConfig = parse_config(dir, text)?;
    let architecture = head
        .architectures
        .iter()
        .find_map(|name| Architecture::from_name(name))
        .ok_or_else(|| {
            file_error(
                dir,
                CONFIG_FILE,
                format!(
                    "architectures {:?} name no supported model (DistilBertForSequenceClassification \
                     or XLMRobertaForSequenceClassification)",
                    head.architectures
                ),
            )
        })?;
    let labels = labels_in_order(head.id2label, head.num_labels)
        .map_err(|detail| file_error(dir, CONFIG_FILE, detail))?;
    Ok(ModelSummary {
        architecture,
        labels,
    })
}

/// `id2label` as a list indexed by logit; `LABEL_{i}` names (transformers' defaults) when only
/// `num_labels` is given. transformers' default when neither is given is two labels.
fn labels_in_order(
    id2label: BTreeMap<String, String>,
    num_labels: Option<usize>,
) -> Result<Vec<String>, String> {
    if id2label.is_empty() {
        let count = num_labels.unwrap_or(2);
        return Ok((0..count).map(|i| format!("LABEL_{i}")).collect());
    }
    let mut labels = vec![None; id2label.len()];
    for (key, label) in id2label {
        let index: usize = key
            .parse()
            .map_err(|_| format!("id2label key {key:?} is not a number"))?;
        let slot = labels
            .get_mut(index)
            .ok_or_else(|| format!("id2label ids must be 0..n, found {index}"))?;
        *slot = Some(label);
    }
    let labels: Vec<String> = labels.into_iter().flatten().collect();
    if let Some(declared) = num_labels.filter(|&n| n != labels.len()) {
        return Err(format!(
            "num_labels is {declared} but id2label has {} labels",
            labels.len()
        ));
    }
    Ok(labels)
}

/// DistilBERT's hyperparameters (its config names differ from BERT's).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DistilBertConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    #[serde(default = "default_activation")]
    pub activation: candle_nn::Activation,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub pad_token_id: u32,
}

fn default_activation() -> candle_nn::Activation {
    candle_nn::Activation::Gelu
}

/// XLM-RoBERTa's hyperparameters. Read here rather than with candle's own config type, which
/// requires fields (`position_embedding_type`, dropouts) that newer transformers no longer write.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct XlmRobertaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_activation")]
    pub hidden_act: candle_nn::Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "one_u32")]
    pub pad_token_id: u32,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn one() -> usize {
    1
}

fn one_u32() -> u32 {
    1
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

impl XlmRobertaConfig {
    /// Positions start after the padding id (RoBERTa's convention), so `max_position_embeddings`
    /// of 514 leaves 512 tokens.
    pub fn max_input_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.pad_token_id as usize + 1)
    }

    pub fn to_candle(&self) -> candle_transformers::models::xlm_roberta::Config {
        candle_transformers::models::xlm_roberta::Config {
            hidden_size: self.hidden_size,
            layer_norm_eps: self.layer_norm_eps,
            attention_probs_dropout_prob: 0.0,
            hidden_dropout_prob: 0.0,
            num_attention_heads: self.num_attention_heads,
            position_embedding_type: "absolute".to_owned(),
            intermediate_size: self.intermediate_size,
            hidden_act: self.hidden_act,
            num_hidden_layers: self.num_hidden_layers,
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            pad_token_id: self.pad_token_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_their_ids_and_default_like_transformers() {
        let id2label = BTreeMap::from([
            ("1".to_owned(), "POSITIVE".to_owned()),
            ("0".to_owned(), "NEGATIVE".to_owned()),
        ]);
        assert_eq!(
            labels_in_order(id2label, Some(2)).unwrap(),
            ["NEGATIVE", "POSITIVE"]
        );
        assert_eq!(
            labels_in_order(BTreeMap::new(), Some(1)).unwrap(),
            ["LABEL_0"]
        );
        assert_eq!(labels_in_order(BTreeMap::new(), None).unwrap().len(), 2);
        let gap = BTreeMap::from([("2".to_owned(), "x".to_owned())]);
        assert!(labels_in_order(gap, None).is_err());
    }

    #[test]
    fn unsupported_architectures_are_named() {
        let error = summarize(
            Path::new("/m"),
            r#"{"architectures": ["BertForSequenceClassification"]}"#,
        )
        .unwrap_err();
        assert!(
            error.message.contains("BertForSequenceClassification"),
            "{}",
            error.message
        );
    }
}
