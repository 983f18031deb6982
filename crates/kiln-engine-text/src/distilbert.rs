//! `DistilBertForSequenceClassification`: the DistilBERT encoder, its first token's state, then
//! `pre_classifier` → ReLU → `classifier`, as transformers computes it.
//!
//! Written on candle_nn's layers rather than with candle-transformers' `distilbert` module: that
//! one applies the tanh approximation of GELU where transformers' `"gelu"` is the exact (erf) one,
//! which moves the fixture's logits by about 1e-3, ten times the tolerance they are held to.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{
    embedding, layer_norm, linear, Activation, Embedding, LayerNorm, Linear, VarBuilder,
};

use crate::config::DistilBertConfig;

/// DistilBERT's layer norms use 1e-12 whatever the config says.
const LAYER_NORM_EPS: f64 = 1e-12;

pub(crate) struct DistilBertClassifier {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<TransformerBlock>,
    pre_classifier: Linear,
    classifier: Linear,
}

struct TransformerBlock {
    attention: SelfAttention,
    attention_norm: LayerNorm,
    expand: Linear,
    activation: Activation,
    contract: Linear,
    output_norm: LayerNorm,
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    heads: usize,
}

impl DistilBertClassifier {
    /// `root` holds `distilbert.*`, `pre_classifier.*` and `classifier.*` tensors.
    pub fn load(root: VarBuilder, config: &DistilBertConfig, num_labels: usize) -> Result<Self> {
        if config.n_heads == 0 || !config.dim.is_multiple_of(config.n_heads) {
            candle_core::bail!(
                "dim {} is not a multiple of n_heads {}",
                config.dim,
                config.n_heads
            );
        }
        let encoder = root.pp("distilbert");
        let embeddings = encoder.pp("embeddings");
        let layers = (0..config.n_layers)
            .map(|index| {
                TransformerBlock::load(encoder.pp(format!("transformer.layer.{index}")), config)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(
                config.vocab_size,
                config.dim,
                embeddings.pp("word_embeddings"),
            )?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                config.dim,
                embeddings.pp("position_embeddings"),
            )?,
            embeddings_norm: layer_norm(config.dim, LAYER_NORM_EPS, embeddings.pp("LayerNorm"))?,
            layers,
            pre_classifier: linear(config.dim, config.dim, root.pp("pre_classifier"))?,
            classifier: linear(config.dim, num_labels, root.pp("classifier"))?,
        })
    }

    /// `token_ids` (batch, len) u32; `mask` (batch, len) f32, 1 for tokens and 0 for padding.
    /// Returns the logits, (batch, labels).
    pub fn forward(&self, token_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = token_ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, token_ids.device())?;
        let hidden = self
            .word_embeddings
            .forward(token_ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut hidden = self.embeddings_norm.forward(&hidden)?;
        // Padding keys get the lowest float added to their scores, so softmax gives them 0.
        let key_bias = ((1.0 - mask)? * f64::from(f32::MIN))?.reshape((batch, 1, 1, len))?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &key_bias)?;
        }
        let first_token = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.pre_classifier.forward(&first_token)?.relu()?;
        self.classifier.forward(&pooled)
    }
}

impl TransformerBlock {
    fn load(block: VarBuilder, config: &DistilBertConfig) -> Result<Self> {
        let dim = config.dim;
        let attention = block.pp("attention");
        let ffn = block.pp("ffn");
        Ok(Self {
            attention: SelfAttention {
                query: linear(dim, dim, attention.pp("q_lin"))?,
                key: linear(dim, dim, attention.pp("k_lin"))?,
                value: linear(dim, dim, attention.pp("v_lin"))?,
                output: linear(dim, dim, attention.pp("out_lin"))?,
                heads: config.n_heads,
            },
            attention_norm: layer_norm(dim, LAYER_NORM_EPS, block.pp("sa_layer_norm"))?,
            expand: linear(dim, config.hidden_dim, ffn.pp("lin1"))?,
            activation: config.activation,
            contract: linear(config.hidden_dim, dim, ffn.pp("lin2"))?,
            output_norm: layer_norm(dim, LAYER_NORM_EPS, block.pp("output_layer_norm"))?,
        })
    }

    fn forward(&self, hidden: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let attended = self.attention.forward(hidden, key_bias)?;
        let hidden = self.attention_norm.forward(&(attended + hidden)?)?;
        let expanded = self.activation.forward(&self.expand.forward(&hidden)?)?;
        let fed = self.contract.forward(&expanded)?;
        self.output_norm.forward(&(fed + hidden)?)
    }
}

impl SelfAttention {
    fn forward(&self, hidden: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let (batch, len, dim) = hidden.dims3()?;
        let head_dim = dim / self.heads;
        let by_head = |projection: &Linear| -> Result<Tensor> {
            projection
                .forward(hidden)?
                .reshape((batch, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (query, key, value) = (
            by_head(&self.query)?,
            by_head(&self.key)?,
            by_head(&self.value)?,
        );
        let scale = 1.0 / (head_dim as f64).sqrt();
        let scores = (query.matmul(&key.t()?.contiguous()?)? * scale)?.broadcast_add(key_bias)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = weights
            .matmul(&value)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, len, dim))?;
        self.output.forward(&context)
    }
}
