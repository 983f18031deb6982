//! What an EmbeddingGemma directory says about itself: the Gemma 3 encoder's `config.json`, and
//! sentence-transformers' `modules.json`, pooling, Dense and prompt files. Everything Kiln does
//! not implement is refused here, by name, rather than run differently from the reference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_core::{KilnError, KilnResult};
use serde::de::DeserializeOwned;
use serde::Deserialize;

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";
const MODULES_FILE: &str = "modules.json";
const PROMPTS_FILE: &str = "config_sentence_transformers.json";
const SENTENCE_CONFIG_FILE: &str = "sentence_bert_config.json";

/// The prompt applied to texts sent without saying what they are: they are most often the
/// documents being indexed.
pub(crate) const DOCUMENT_PROMPT_NAME: &str = "document";
pub(crate) const QUERY_PROMPT_NAME: &str = "query";

/// The Gemma 3 text model's `config.json`, as far as the encoder needs it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct GemmaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// RoPE base of the full-attention layers.
    pub rope_theta: f64,
    /// RoPE base of the sliding-window layers.
    pub rope_local_base_freq: f64,
    pub sliding_window: usize,
    pub query_pre_attn_scalar: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub layer_types: Vec<String>,
    #[serde(default, alias = "_sliding_window_pattern")]
    pub sliding_window_pattern: Option<usize>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    pub use_bidirectional_attention: bool,
    #[serde(default)]
    pub hidden_activation: Option<String>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

impl GemmaConfig {
    /// Whether each layer attends through the sliding window (else to the whole sequence):
    /// `layer_types` when given, else every `sliding_window_pattern`-th layer is a full one.
    pub fn sliding_layers(&self) -> Result<Vec<bool>, String> {
        if !self.layer_types.is_empty() {
            if self.layer_types.len() != self.num_hidden_layers {
                return Err(format!(
                    "layer_types lists {} layers, num_hidden_layers is {}",
                    self.layer_types.len(),
                    self.num_hidden_layers
                ));
            }
            return self
                .layer_types
                .iter()
                .map(|kind| match kind.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(format!("unknown layer type {other:?}")),
                })
                .collect();
        }
        let pattern = self.sliding_window_pattern.unwrap_or(6).max(1);
        Ok((0..self.num_hidden_layers)
            .map(|index| (index + 1) % pattern != 0)
            .collect())
    }

    /// How far a sliding-window layer looks each way. transformers' bidirectional Gemma 3 turns
    /// `sliding_window` into an exclusive bound of `sliding_window / 2 + 1`, so a token sees the
    /// tokens at most `sliding_window / 2` positions before or after it.
    pub fn sliding_reach(&self) -> usize {
        self.sliding_window / 2
    }

    fn check(&self) -> Result<(), String> {
        if !self.use_bidirectional_attention {
            return Err(
                "use_bidirectional_attention is not true: this is a causal Gemma, not an \
                        EmbeddingGemma encoder"
                    .into(),
            );
        }
        if let Some(activation) = self
            .hidden_activation
            .as_deref()
            .filter(|name| *name != "gelu_pytorch_tanh")
        {
            return Err(format!(
                "hidden_activation {activation:?} is not supported (gelu_pytorch_tanh is)"
            ));
        }
        if self
            .rope_scaling
            .as_ref()
            .is_some_and(|value| !value.is_null())
        {
            return Err("rope_scaling is not supported".into());
        }
        let shapes_fit = self.num_key_value_heads > 0
            && self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
            && self.head_dim.is_multiple_of(2)
            && self.hidden_size > 0
            && self.query_pre_attn_scalar > 0.0;
        if !shapes_fit {
            return Err("inconsistent head counts or sizes".into());
        }
        self.sliding_layers().map(|_| ())
    }
}

/// One stage after the encoder, from `modules.json`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DenseConfig {
    /// The module's directory, relative to the model's.
    pub path: String,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub tanh: bool,
}

/// The sentence-transformers pipeline around the encoder.
#[derive(Debug, Clone)]
pub(crate) struct SentencePipeline {
    pub dense_layers: Vec<DenseConfig>,
    pub prompts: HashMap<String, String>,
    pub max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingFile {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct DenseFile {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    /// sentence-transformers' own default is tanh.
    #[serde(default)]
    activation_function: Option<String>,
}

#[derive(Deserialize)]
struct PromptsFile {
    #[serde(default)]
    prompts: HashMap<String, String>,
}

#[derive(Deserialize)]
struct SentenceConfigFile {
    max_seq_length: Option<usize>,
}

pub(crate) fn file_error(dir: &Path, file: &str, detail: impl std::fmt::Display) -> KilnError {
    KilnError::internal(format!(
        "EmbeddingGemma model {}: {file}: {detail}",
        dir.join(file).display()
    ))
}

fn read_json<T: DeserializeOwned>(dir: &Path, file: &str) -> KilnResult<T> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|err| file_error(dir, file, err))?;
    serde_json::from_str(&text).map_err(|err| file_error(dir, file, err))
}

fn read_optional_json<T: DeserializeOwned>(dir: &Path, file: &str) -> KilnResult<Option<T>> {
    if !dir.join(file).is_file() {
        return Ok(None);
    }
    read_json(dir, file).map(Some)
}

pub(crate) fn read_gemma_config(dir: &Path) -> KilnResult<GemmaConfig> {
    let config: GemmaConfig = read_json(dir, CONFIG_FILE)?;
    config
        .check()
        .map_err(|detail| file_error(dir, CONFIG_FILE, detail))?;
    Ok(config)
}

/// Reads `modules.json` (Transformer, Pooling, Dense…, Normalize), the pooling and Dense
/// configurations it points to, the prompts and the maximum sequence length.
pub(crate) fn read_pipeline(dir: &Path, hidden_size: usize) -> KilnResult<SentencePipeline> {
    let modules: Vec<ModuleEntry> = read_json(dir, MODULES_FILE)?;
    let mut dense_layers = Vec::new();
    let mut width = hidden_size;
    let mut seen_pooling = false;
    for (index, module) in modules.iter().enumerate() {
        let kind = module.kind.rsplit('.').next().unwrap_or_default();
        let misplaced =
            |what: &str| file_error(dir, MODULES_FILE, format!("module {index} ({kind}) {what}"));
        match kind {
            "Transformer" if index == 0 => {}
            "Pooling" if index == 1 => {
                check_pooling(dir, &module.path, width)?;
                seen_pooling = true;
            }
            "Dense" if seen_pooling => {
                let dense = read_dense(dir, &module.path)?;
                if dense.in_features != width {
                    return Err(misplaced(&format!(
                        "takes {} features but receives {width}",
                        dense.in_features
                    )));
                }
                width = dense.out_features;
                dense_layers.push(dense);
            }
            "Normalize" if seen_pooling && index + 1 == modules.len() => {}
            _ => return Err(misplaced("is not supported at this position")),
        }
    }
    if !seen_pooling {
        return Err(file_error(dir, MODULES_FILE, "no Pooling module"));
    }
    let prompts = read_optional_json::<PromptsFile>(dir, PROMPTS_FILE)?
        .map(|file| file.prompts)
        .unwrap_or_default();
    let max_seq_length = read_optional_json::<SentenceConfigFile>(dir, SENTENCE_CONFIG_FILE)?
        .and_then(|file| file.max_seq_length);
    Ok(SentencePipeline {
        dense_layers,
        prompts,
        max_seq_length,
    })
}

fn module_file(module_path: &str, file: &str) -> String {
    if module_path.is_empty() {
        file.to_string()
    } else {
        format!("{module_path}/{file}")
    }
}

fn check_module_path(dir: &Path, module_path: &str) -> KilnResult<()> {
    let plain = module_path
        .split('/')
        .all(|segment| !segment.is_empty() && !segment.starts_with('.'));
    if !plain || PathBuf::from(module_path).is_absolute() {
        return Err(file_error(
            dir,
            MODULES_FILE,
            format!("module path {module_path:?} leaves the model directory"),
        ));
    }
    Ok(())
}

fn check_pooling(dir: &Path, module_path: &str, hidden_size: usize) -> KilnResult<()> {
    check_module_path(dir, module_path)?;
    let file = module_file(module_path, CONFIG_FILE);
    let pooling: PoolingFile = read_json(dir, &file)?;
    let only_mean = pooling.pooling_mode_mean_tokens
        && !pooling.pooling_mode_cls_token
        && !pooling.pooling_mode_max_tokens
        && !pooling.pooling_mode_lasttoken;
    if !only_mean || !pooling.include_prompt {
        return Err(file_error(
            dir,
            &file,
            "only mean pooling over every token, prompt included, is supported",
        ));
    }
    match pooling.word_embedding_dimension {
        Some(dimension) if dimension != hidden_size => Err(file_error(
            dir,
            &file,
            format!("word_embedding_dimension {dimension} is not the encoder's {hidden_size}"),
        )),
        _ => Ok(()),
    }
}

fn read_dense(dir: &Path, module_path: &str) -> KilnResult<DenseConfig> {
    check_module_path(dir, module_path)?;
    let file = module_file(module_path, CONFIG_FILE);
    let dense: DenseFile = read_json(dir, &file)?;
    let activation = dense
        .activation_function
        .as_deref()
        .unwrap_or("torch.nn.modules.activation.Tanh");
    let tanh = match activation.rsplit('.').next().unwrap_or_default() {
        "Identity" => false,
        "Tanh" => true,
        _ => {
            return Err(file_error(
                dir,
                &file,
                format!("activation {activation:?} is not supported (Identity and Tanh are)"),
            ))
        }
    };
    Ok(DenseConfig {
        path: module_path.to_string(),
        in_features: dense.in_features,
        out_features: dense.out_features,
        bias: dense.bias,
        tanh,
    })
}
