//! Kiln's Whisper forward pass: the maths of OpenAI's `whisper/model.py` (as candle-transformers
//! implements it, on the same tensors) laid out for greedy decoding on the CPU.
//!
//! - [`Encoder`]: the hidden states stay 2-D (frames, features); query, key and value are one
//!   product.
//! - [`Decoder`]: a self-attention KV cache that grows by one row per step, cross-attention keys
//!   and values computed once per 30 s window, and logits only for the positions asked for.
//!   It can also return the cross-attention scores of chosen heads, for word timestamps.

mod decoder;
mod encoder;
mod matvec;

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use candle_transformers::models::whisper::Config;

pub(crate) use decoder::{Decoder, Rows};
pub(crate) use encoder::Encoder;

use crate::AsrError;

/// LayerNorm over the last dimension (Whisper's epsilon).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(w: &mut Weights, prefix: &str) -> std::result::Result<Self, AsrError> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"))?,
            bias: w.take(&format!("{prefix}.bias"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, 1e-5)
    }
}

/// `x·Wᵀ + b` on 2-D (rows, in) input; the weight is kept (in, out) and contiguous so the
/// product reads it in order.
struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Several projections of the same input stacked along their outputs (one product instead of
    /// several); a part without a bias (Whisper's keys) gets zeros; `scales` multiply each part
    /// (the attention scale folded into the query weights).
    fn fused(
        w: &mut Weights,
        prefixes: &[String],
        scales: &[f64],
    ) -> std::result::Result<Self, AsrError> {
        let mut weights = Vec::with_capacity(prefixes.len());
        let mut biases = Vec::with_capacity(prefixes.len());
        for (i, prefix) in prefixes.iter().enumerate() {
            let scale = scales.get(i).copied().unwrap_or(1.0);
            let weight = w.take(&format!("{prefix}.weight"))?;
            let bias = match w.take_opt(&format!("{prefix}.bias")) {
                Some(b) => b,
                None => Tensor::zeros(weight.dim(0)?, weight.dtype(), weight.device())?,
            };
            weights.push((weight * scale)?);
            biases.push((bias * scale)?);
        }
        Ok(Self {
            weight_t: Tensor::cat(&weights, 0)?.t()?.contiguous()?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    fn load(w: &mut Weights, prefix: &str) -> std::result::Result<Self, AsrError> {
        Self::fused(w, &[prefix.to_string()], &[])
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

/// The weights by their Hugging Face names ([`crate::ct2::Ct2Model::to_hf_tensors`]); each is
/// taken once.
pub(crate) struct Weights(HashMap<String, Tensor>);

impl Weights {
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Self(tensors)
    }

    fn take(&mut self, name: &str) -> std::result::Result<Tensor, AsrError> {
        self.take_opt(name)
            .ok_or_else(|| AsrError::Model(format!("missing weight `{name}`")))
    }

    fn take_opt(&mut self, name: &str) -> Option<Tensor> {
        self.0.remove(name)
    }
}

/// Multi-head attention of queries (H, n, dh) over keys (H, dh, m) and values (H, m, dh), with
/// an optional additive mask (n, m); returns (n, H·dh) and, when `keep_scores`, the pre-softmax
/// scores (H, n, m).
fn attend(
    q: &Tensor,
    k_t: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    keep_scores: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (heads, n, head_dim) = q.dims3()?;
    let mut scores = q.matmul(k_t)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = weights
        .matmul(v)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, heads * head_dim))?;
    Ok((out, keep_scores.then_some(scores)))
}

/// (n, H·dh) → (H, n, dh), contiguous.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, width) = x.dims2()?;
    x.reshape((n, heads, width / heads))?
        .transpose(0, 1)?
        .contiguous()
}

/// The whole model.
pub(crate) struct WhisperModel {
    pub config: Config,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl WhisperModel {
    pub fn load(
        tensors: HashMap<String, Tensor>,
        config: Config,
    ) -> std::result::Result<Self, AsrError> {
        let mut w = Weights::new(tensors);
        let encoder = Encoder::load(&mut w, &config)?;
        let decoder = Decoder::load(&mut w, &config)?;
        Ok(Self {
            config,
            encoder,
            decoder,
        })
    }
}

/// Whisper's GELU as candle-transformers computes it (tanh approximation).
fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}
