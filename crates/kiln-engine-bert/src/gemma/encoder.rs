//! The Gemma 3 text model run as an encoder, as EmbeddingGemma uses it: every token attends to
//! tokens before and after it. Full-attention layers see the whole sequence; sliding-window layers
//! see the tokens within [`GemmaConfig::sliding_reach`] positions either way. Padding keys are
//! masked everywhere.
//!
//! Per layer (pre- and post-norms around both blocks, as in Gemma 3):
//! `x += post_attn_norm(attn(input_norm(x)))`, `x += post_ff_norm(mlp(pre_ff_norm(x)))`, with
//! RMSNorm scaling by `1 + weight`, per-head RMSNorm on queries and keys, RoPE with a separate base
//! for sliding and full layers, and embeddings scaled by `sqrt(hidden_size)`.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::GemmaConfig;

/// What a masked attention score becomes: torch's `finfo(float32).min`, finite so that a row with
/// every key masked (a padding query) averages instead of turning into NaN.
const MASKED_SCORE: f32 = f32::MIN;

/// RMSNorm over the last dimension with Gemma's `1 + weight` scale (kept precomputed).
struct GemmaRmsNorm {
    scale: Tensor,
    eps: f32,
}

impl GemmaRmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let scale = (vb.get(size, "weight")? + 1.0)?;
        Ok(Self {
            scale,
            eps: eps as f32,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&xs.contiguous()?, &self.scale, self.eps)
    }
}

/// cos and sin of every position's rotation angles, (positions, head_dim / 2), computed in f32
/// the way transformers does.
struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    fn new(base: f64, head_dim: usize, positions: usize, device: &Device) -> Result<Self> {
        let inverse_frequencies: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|index| 1.0 / (base as f32).powf(index as f32 / head_dim as f32))
            .collect();
        let half = inverse_frequencies.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for position in 0..positions {
            for frequency in &inverse_frequencies {
                let angle = position as f32 * frequency;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
        })
    }

    /// Rotates (batch, heads, len, head_dim) by the angles of positions `0..len`.
    fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        let len = xs.dim(2)?;
        let cos = self.cos.narrow(0, 0, len)?;
        let sin = self.sin.narrow(0, 0, len)?;
        candle_nn::rotary_emb::rope(&xs.contiguous()?, &cos, &sin)
    }
}

/// A linear layer, `x·Wᵀ + b`, applied to (batch, len, features) as one (batch·len, features)
/// product. The weight is kept transposed, (in, out) and contiguous, so the product reads it in
/// order instead of through a transposed view on every call.
struct Projection {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Projection {
    fn load(in_features: usize, out_features: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        Self::fused(&[(out_features, "")], in_features, bias, &vb)
    }

    /// One layer made of several that read the same input (query, key and value; gate and up),
    /// stacked along their outputs, so that one larger product replaces several small ones.
    fn fused(
        parts: &[(usize, &str)],
        in_features: usize,
        bias: bool,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for &(out_features, name) in parts {
            let part = if name.is_empty() {
                vb.clone()
            } else {
                vb.pp(name)
            };
            weights.push(part.get((out_features, in_features), "weight")?);
            if bias {
                biases.push(part.get(out_features, "bias")?);
            }
        }
        let bias = if bias {
            Some(Tensor::cat(&biases, 0)?)
        } else {
            None
        };
        Ok(Self {
            weight_t: Tensor::cat(&weights, 0)?.t()?.contiguous()?,
            bias,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, len, features) = xs.dims3()?;
        let flat = xs
            .reshape((batch * len, features))?
            .matmul(&self.weight_t)?;
        let flat = match &self.bias {
            Some(bias) => flat.broadcast_add(bias)?,
            None => flat,
        };
        let out_features = flat.dim(1)?;
        flat.reshape((batch, len, out_features))
    }
}

struct Attention {
    /// q_proj, k_proj and v_proj stacked.
    qkv_proj: Projection,
    o_proj: Projection,
    q_norm: GemmaRmsNorm,
    k_norm: GemmaRmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    query_scale: f64,
    softcap: Option<f64>,
}

impl Attention {
    fn load(config: &GemmaConfig, vb: VarBuilder) -> Result<Self> {
        let (hidden, head_dim) = (config.hidden_size, config.head_dim);
        let heads = config.num_attention_heads;
        let kv_heads = config.num_key_value_heads;
        let bias = config.attention_bias;
        Ok(Self {
            qkv_proj: Projection::fused(
                &[
                    (heads * head_dim, "q_proj"),
                    (kv_heads * head_dim, "k_proj"),
                    (kv_heads * head_dim, "v_proj"),
                ],
                hidden,
                bias,
                &vb,
            )?,
            o_proj: Projection::load(heads * head_dim, hidden, bias, vb.pp("o_proj"))?,
            q_norm: GemmaRmsNorm::load(head_dim, config.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: GemmaRmsNorm::load(head_dim, config.rms_norm_eps, vb.pp("k_norm"))?,
            heads,
            kv_heads,
            head_dim,
            query_scale: config.query_pre_attn_scalar.powf(-0.5),
            softcap: config.attn_logit_softcapping,
        })
    }

    /// (batch, len, heads·head_dim) → normalized, rotated (batch, heads, len, head_dim).
    fn heads_of(
        &self,
        projected: Tensor,
        heads: usize,
        norm: &GemmaRmsNorm,
        rope: &RopeTables,
    ) -> Result<Tensor> {
        let (batch, len, _) = projected.dims3()?;
        let split = projected.reshape((batch, len, heads, self.head_dim))?;
        rope.apply(&norm.forward(&split)?.transpose(1, 2)?)
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, rope: &RopeTables) -> Result<Tensor> {
        let (batch, len, _) = xs.dims3()?;
        let qkv = self.qkv_proj.forward(xs)?;
        let (query_width, kv_width) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let queries = self.heads_of(
            qkv.narrow(2, 0, query_width)?,
            self.heads,
            &self.q_norm,
            rope,
        )?;
        let keys = self.heads_of(
            qkv.narrow(2, query_width, kv_width)?,
            self.kv_heads,
            &self.k_norm,
            rope,
        )?;
        let values = qkv
            .narrow(2, query_width + kv_width, kv_width)?
            .reshape((batch, len, self.kv_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;

        // The query heads sharing a key/value head are stacked along the length, so one product
        // per key/value head serves them all without copying the keys.
        let groups = self.heads / self.kv_heads;
        let queries = (queries * self.query_scale)?.reshape((
            batch,
            self.kv_heads,
            groups * len,
            self.head_dim,
        ))?;
        let mut scores = queries
            .matmul(&keys.t()?)?
            .reshape((batch, self.heads, len, len))?;
        if let Some(cap) = self.softcap {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.reshape((
            batch,
            self.kv_heads,
            groups * len,
            len,
        ))?;
        let attended = weights
            .matmul(&values)?
            .reshape((batch, self.heads, len, self.head_dim))?
            .transpose(1, 2)?
            .reshape((batch, len, self.heads * self.head_dim))?;
        self.o_proj.forward(&attended)
    }
}

struct FeedForward {
    /// gate_proj and up_proj stacked.
    gate_up_proj: Projection,
    inner: usize,
    down_proj: Projection,
}

impl FeedForward {
    fn load(config: &GemmaConfig, vb: VarBuilder) -> Result<Self> {
        let (hidden, inner) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            gate_up_proj: Projection::fused(
                &[(inner, "gate_proj"), (inner, "up_proj")],
                hidden,
                false,
                &vb,
            )?,
            inner,
            down_proj: Projection::load(inner, hidden, false, vb.pp("down_proj"))?,
        })
    }

    /// `down(gelu_tanh(gate(x)) · up(x))`; candle's `gelu` is the tanh approximation.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up_proj.forward(xs)?;
        let gate = gate_up.narrow(2, 0, self.inner)?.gelu()?;
        let up = gate_up.narrow(2, self.inner, self.inner)?;
        self.down_proj.forward(&(gate * up)?)
    }
}

struct EncoderLayer {
    attention: Attention,
    feed_forward: FeedForward,
    input_norm: GemmaRmsNorm,
    post_attention_norm: GemmaRmsNorm,
    pre_feed_forward_norm: GemmaRmsNorm,
    post_feed_forward_norm: GemmaRmsNorm,
    sliding: bool,
}

impl EncoderLayer {
    fn load(config: &GemmaConfig, sliding: bool, vb: VarBuilder) -> Result<Self> {
        let norm =
            |name: &str| GemmaRmsNorm::load(config.hidden_size, config.rms_norm_eps, vb.pp(name));
        Ok(Self {
            attention: Attention::load(config, vb.pp("self_attn"))?,
            feed_forward: FeedForward::load(config, vb.pp("mlp"))?,
            input_norm: norm("input_layernorm")?,
            post_attention_norm: norm("post_attention_layernorm")?,
            pre_feed_forward_norm: norm("pre_feedforward_layernorm")?,
            post_feed_forward_norm: norm("post_feedforward_layernorm")?,
            sliding,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>, rope: &RopeTables) -> Result<Tensor> {
        let attended = self
            .attention
            .forward(&self.input_norm.forward(xs)?, mask, rope)?;
        let xs = (xs + self.post_attention_norm.forward(&attended)?)?;
        let fed = self
            .feed_forward
            .forward(&self.pre_feed_forward_norm.forward(&xs)?)?;
        xs + self.post_feed_forward_norm.forward(&fed)?
    }
}

/// The encoder: token ids in, one hidden state per token out.
pub(crate) struct GemmaEncoder {
    embed_tokens: Embedding,
    embed_scale: f64,
    layers: Vec<EncoderLayer>,
    final_norm: GemmaRmsNorm,
    sliding_rope: RopeTables,
    full_rope: RopeTables,
    sliding_reach: usize,
    max_positions: usize,
    device: Device,
}

impl GemmaEncoder {
    /// `vb` holds the Gemma 3 text model's tensors (`embed_tokens`, `layers.N.*`, `norm`).
    pub fn load(config: &GemmaConfig, vb: VarBuilder) -> Result<Self> {
        let device = vb.device().clone();
        let sliding = config.sliding_layers().map_err(candle_core::Error::msg)?;
        let embeddings = vb
            .pp("embed_tokens")
            .get((config.vocab_size, config.hidden_size), "weight")?;
        let layers = sliding
            .iter()
            .enumerate()
            .map(|(index, &sliding)| {
                EncoderLayer::load(config, sliding, vb.pp(format!("layers.{index}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let max_positions = config.max_position_embeddings;
        let rope = |base| RopeTables::new(base, config.head_dim, max_positions, &device);
        Ok(Self {
            embed_tokens: Embedding::new(embeddings, config.hidden_size),
            // transformers keeps the scale as an f32 tensor.
            embed_scale: f64::from((config.hidden_size as f32).sqrt()),
            layers,
            final_norm: GemmaRmsNorm::load(config.hidden_size, config.rms_norm_eps, vb.pp("norm"))?,
            sliding_rope: rope(config.rope_local_base_freq)?,
            full_rope: rope(config.rope_theta)?,
            sliding_reach: config.sliding_reach(),
            max_positions,
            device,
        })
    }

    /// `token_ids` is (batch, len), each row `lengths[row]` real tokens then padding. Returns the
    /// final hidden states, (batch, len, hidden).
    pub fn forward(&self, token_ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (_, len) = token_ids.dims2()?;
        if len > self.max_positions {
            candle_core::bail!(
                "{len} tokens exceed the model's {} positions",
                self.max_positions
            );
        }
        let full_mask = attention_mask(lengths, len, None, &self.device)?;
        // Within the reach, the sliding window hides nothing and the full mask serves.
        let sliding_mask = if len > self.sliding_reach + 1 {
            attention_mask(lengths, len, Some(self.sliding_reach), &self.device)?
        } else {
            full_mask.clone()
        };
        let mut hidden = (self.embed_tokens.forward(token_ids)? * self.embed_scale)?;
        for layer in &self.layers {
            let (mask, rope) = if layer.sliding {
                (sliding_mask.as_ref(), &self.sliding_rope)
            } else {
                (full_mask.as_ref(), &self.full_rope)
            };
            hidden = layer.forward(&hidden, mask, rope)?;
        }
        self.final_norm.forward(&hidden)
    }
}

/// The additive mask, (batch, 1, len, len): 0 where query `q` may attend to key `k` (a real token,
/// within `reach` positions of `q` when given), [`MASKED_SCORE`] elsewhere. `None` when nothing is
/// masked.
pub(crate) fn attention_mask(
    lengths: &[usize],
    len: usize,
    reach: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let window_hides = reach.is_some_and(|reach| len > reach + 1);
    if !window_hides && lengths.iter().all(|&length| length >= len) {
        return Ok(None);
    }
    let mut mask = Vec::with_capacity(lengths.len() * len * len);
    for &length in lengths {
        for query in 0..len {
            mask.extend((0..len).map(|key| {
                let in_reach = reach.is_none_or(|reach| query.abs_diff(key) <= reach);
                if key < length && in_reach {
                    0.0
                } else {
                    MASKED_SCORE
                }
            }));
        }
    }
    Tensor::from_vec(mask, (lengths.len(), 1, len, len), device).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(mask: &Tensor) -> Vec<Vec<Vec<bool>>> {
        mask.squeeze(1)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap()
            .into_iter()
            .map(|rows| {
                rows.into_iter()
                    .map(|row| row.into_iter().map(|score| score == 0.0).collect())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn full_mask_hides_padding_keys_only() {
        let mask = attention_mask(&[3, 2], 3, None, &Device::Cpu)
            .unwrap()
            .expect("padding is masked");
        let rows = allowed(&mask);
        assert!(rows[0].iter().all(|row| row == &[true, true, true]));
        assert!(rows[1].iter().all(|row| row == &[true, true, false]));
        assert!(attention_mask(&[3, 3], 3, None, &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn sliding_mask_reaches_both_ways() {
        // Reach 1 over 4 tokens: each token sees its neighbours, before and after.
        let mask = attention_mask(&[4], 4, Some(1), &Device::Cpu)
            .unwrap()
            .expect("the window hides distant tokens");
        assert_eq!(
            allowed(&mask)[0],
            vec![
                vec![true, true, false, false],
                vec![true, true, true, false],
                vec![false, true, true, true],
                vec![false, false, true, true],
            ]
        );
        assert!(attention_mask(&[2], 2, Some(1), &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn rope_tables_start_unrotated() {
        let tables = RopeTables::new(10_000.0, 4, 3, &Device::Cpu).unwrap();
        let cos = tables.cos.to_vec2::<f32>().unwrap();
        let sin = tables.sin.to_vec2::<f32>().unwrap();
        assert_eq!(cos[0], vec![1.0, 1.0]);
        assert_eq!(sin[0], vec![0.0, 0.0]);
        assert!((sin[1][0] - 1f32.sin()).abs() < 1e-7);
        assert!((cos[2][1] - (2.0f32 * 0.01).cos()).abs() < 1e-7);
    }
}
