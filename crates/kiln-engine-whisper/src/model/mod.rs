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
mod step;

use std::collections::HashMap;

use candle_core::Tensor;
use candle_transformers::models::whisper::Config;

pub(crate) use decoder::{Decoder, Rows};
pub(crate) use encoder::Encoder;

use kiln_kernels::int8::Int8Linear;

use crate::AsrError;

/// A linear layer's weights as loaded, before [`Projection`] or the decoder's `StepLinear`
/// takes them: `weight_t` (in, out).
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
}

/// LayerNorm on plain (rows, d) slices, in place.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Norm {
    fn load(w: &mut Weights, prefix: &str) -> std::result::Result<Self, AsrError> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"))?.to_vec1()?,
            bias: w.take(&format!("{prefix}.bias"))?.to_vec1()?,
        })
    }

    fn apply(&self, xs: &mut [f32]) {
        kiln_kernels::layer_norm_rows(xs, &self.weight, &self.bias, 1e-5);
    }
}

/// A linear layer on plain slices: int8 weights where the CPU has AVX-512 VNNI (CTranslate2's
/// int8 scheme, what faster-whisper runs by default on such CPUs), f32 elsewhere.
enum Projection {
    Int8(Int8Linear),
    Dense(kiln_kernels::Linear),
}

impl Projection {
    /// As [`Linear::fused`]: several projections of one input stacked along their outputs.
    fn load(
        w: &mut Weights,
        prefixes: &[String],
        scales: &[f64],
    ) -> std::result::Result<Self, AsrError> {
        let linear = Linear::fused(w, prefixes, scales)?;
        let (in_features, out_features) = linear.weight_t.dims2()?;
        let weight: Vec<f32> = linear
            .weight_t
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        let bias: Vec<f32> = linear.bias.to_vec1()?;
        Ok(match w.int8(&weight, &bias, in_features, out_features) {
            Some(int8) => Projection::Int8(int8),
            None => Projection::Dense(kiln_kernels::Linear {
                weight_t: linear.weight_t.flatten_all()?.to_vec1()?,
                bias,
                in_features,
                out_features,
            }),
        })
    }

    fn out_features(&self) -> usize {
        match self {
            Projection::Int8(l) => l.out_features(),
            Projection::Dense(l) => l.out_features,
        }
    }

    /// `out = start + xs·W + b` (`start`: `out` on entry when `add_to_output`, else zero).
    fn forward_into(&self, xs: &[f32], out: &mut [f32], add_to_output: bool) {
        match self {
            Projection::Int8(l) => l.forward_into(xs, out, add_to_output),
            Projection::Dense(l) => l.forward_into(xs, out, add_to_output),
        }
    }
}

/// The weights by their Hugging Face names ([`crate::ct2::Ct2Model::to_hf_tensors`]); each is
/// taken once.
pub(crate) struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Whether linear layers are to be int8 (where the CPU can run them).
    int8: bool,
}

impl Weights {
    pub fn new(tensors: HashMap<String, Tensor>, precision: Precision) -> Self {
        Self {
            tensors,
            int8: precision == Precision::Auto,
        }
    }

    /// `x·Wᵀ + b` in int8, if this load wants int8 and the CPU runs it: `weight` is (out, in).
    fn int8(
        &self,
        weight: &[f32],
        bias: &[f32],
        inputs: usize,
        outputs: usize,
    ) -> Option<Int8Linear> {
        if self.int8 {
            Int8Linear::new(weight, bias, inputs, outputs)
        } else {
            None
        }
    }

    fn take(&mut self, name: &str) -> std::result::Result<Tensor, AsrError> {
        self.take_opt(name)
            .ok_or_else(|| AsrError::Model(format!("missing weight `{name}`")))
    }

    fn take_opt(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }
}

/// How the linear layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// int8 where the CPU has AVX-512 VNNI, else f32 (f16 weights in one-token steps).
    #[default]
    Auto,
    /// f32 everywhere (f16 weights in one-token steps): the path of CPUs without VNNI.
    Float,
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
        precision: Precision,
    ) -> std::result::Result<Self, AsrError> {
        let mut w = Weights::new(tensors, precision);
        let encoder = Encoder::load(&mut w, &config)?;
        let decoder = Decoder::load(&mut w, &config)?;
        Ok(Self {
            config,
            encoder,
            decoder,
        })
    }
}
