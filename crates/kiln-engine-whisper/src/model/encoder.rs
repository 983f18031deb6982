//! The audio encoder: two convolutions, sinusoidal positions, pre-norm attention blocks.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, Module};
use candle_transformers::models::whisper::Config;

use super::{attend, split_heads, LayerNorm, Linear, Weights};
use crate::AsrError;

struct Block {
    attn_ln: LayerNorm,
    /// query (pre-scaled), key and value: (d, 3d).
    qkv: Linear,
    out: Linear,
    mlp_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn forward(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        let (_, d) = x.dims2()?;
        let qkv = self.qkv.forward(&self.attn_ln.forward(x)?)?;
        let q = split_heads(&qkv.narrow(1, 0, d)?, heads)?;
        let k_t = split_heads(&qkv.narrow(1, d, d)?, heads)?.transpose(1, 2)?;
        let v = split_heads(&qkv.narrow(1, 2 * d, d)?, heads)?;
        let (attended, _) = attend(&q, &k_t, &v, None, false)?;
        let x = (x + self.out.forward(&attended)?)?;
        let h = super::gelu(&self.fc1.forward(&self.mlp_ln.forward(&x)?)?)?;
        x + self.fc2.forward(&h)?
    }
}

pub(crate) struct Encoder {
    conv1: Conv1d,
    conv2: Conv1d,
    positions: Tensor,
    blocks: Vec<Block>,
    ln_post: LayerNorm,
    heads: usize,
}

fn conv(w: &mut Weights, name: &str, stride: usize) -> std::result::Result<Conv1d, AsrError> {
    let weight = w.take(&format!("model.encoder.{name}.weight"))?;
    let bias = w.take(&format!("model.encoder.{name}.bias"))?;
    let config = Conv1dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    Ok(Conv1d::new(weight, Some(bias), config))
}

/// OpenAI's `sinusoids()`, computed as candle-transformers computes it (the stored table is the
/// same function rounded to fp16).
fn sinusoids(length: usize, channels: usize) -> Result<Tensor> {
    let half = channels / 2;
    let increment = 10000f32.ln() / (half - 1) as f32;
    let inv: Vec<f32> = (0..half).map(|i| (i as f32 * -increment).exp()).collect();
    let inv = Tensor::new(inv.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let t = Tensor::arange(0, length as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .unsqueeze(1)?;
    let scaled = t.broadcast_mul(&inv)?;
    Tensor::cat(&[scaled.sin()?, scaled.cos()?], 1)
}

impl Encoder {
    pub fn load(w: &mut Weights, cfg: &Config) -> std::result::Result<Self, AsrError> {
        let heads = cfg.encoder_attention_heads;
        let scale = ((cfg.d_model / heads) as f64).powf(-0.5);
        let blocks = (0..cfg.encoder_layers)
            .map(|i| {
                let p = format!("model.encoder.layers.{i}");
                let a = format!("{p}.self_attn");
                Ok(Block {
                    attn_ln: LayerNorm::load(w, &format!("{p}.self_attn_layer_norm"))?,
                    qkv: Linear::fused(
                        w,
                        &[
                            format!("{a}.q_proj"),
                            format!("{a}.k_proj"),
                            format!("{a}.v_proj"),
                        ],
                        &[scale],
                    )?,
                    out: Linear::load(w, &format!("{a}.out_proj"))?,
                    mlp_ln: LayerNorm::load(w, &format!("{p}.final_layer_norm"))?,
                    fc1: Linear::load(w, &format!("{p}.fc1"))?,
                    fc2: Linear::load(w, &format!("{p}.fc2"))?,
                })
            })
            .collect::<std::result::Result<Vec<_>, AsrError>>()?;
        // Positions are computed, not read (as candle-transformers does); drop the stored table.
        let _ = w.take_opt("model.encoder.embed_positions.weight");
        Ok(Self {
            conv1: conv(w, "conv1", 1)?,
            conv2: conv(w, "conv2", 2)?,
            positions: sinusoids(cfg.max_source_positions, cfg.d_model)?,
            blocks,
            ln_post: LayerNorm::load(w, "model.encoder.layer_norm")?,
            heads,
        })
    }

    /// `mel`: (1, mel bins, 3000) → audio features (1500, d).
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = super::gelu(&self.conv1.forward(mel)?)?;
        let x = super::gelu(&self.conv2.forward(&x)?)?;
        let x = x.squeeze(0)?.t()?;
        let frames = x.dim(0)?;
        let mut x = (x + self.positions.narrow(0, 0, frames)?)?;
        for block in &self.blocks {
            x = block.forward(&x, self.heads)?;
        }
        self.ln_post.forward(&x)
    }
}
