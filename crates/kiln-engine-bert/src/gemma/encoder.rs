//! The Gemma 3 text model run as an encoder, as EmbeddingGemma uses it: every token attends to
//! tokens before and after it. Full-attention layers see the whole sequence; sliding-window layers
//! see the tokens within [`GemmaConfig::sliding_reach`] positions either way.
//!
//! Per layer (pre- and post-norms around both blocks, as in Gemma 3):
//! `x += post_attn_norm(attn(input_norm(x)))`, `x += post_ff_norm(mlp(pre_ff_norm(x)))`, with
//! RMSNorm scaling by `1 + weight`, per-head RMSNorm on queries and keys, RoPE with a separate base
//! for sliding and full layers, and embeddings scaled by `sqrt(hidden_size)`.
//!
//! Laid out like the BERT encoder ([`crate::kernels`]): the hidden states are the packed rows of
//! the real tokens only, every projection is one GEMM over them, and attention runs per sequence
//! and head over that sequence's own tokens, so padding costs nothing and needs no mask. candle
//! only loads the weights.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::config::GemmaConfig;
use crate::kernels::{self, Linear};
use crate::packed::{self, load_linear, Heads, Sequence};

/// RMSNorm with Gemma's `1 + weight` scale (kept precomputed).
struct GemmaRmsNorm {
    scale: Vec<f32>,
    eps: f32,
}

impl GemmaRmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            scale: (vb.get(size, "weight")? + 1.0)?.to_vec1()?,
            eps: eps as f32,
        })
    }

    fn apply(&self, row: &mut [f32]) {
        let mean_square = row.iter().map(|x| x * x).sum::<f32>() / row.len() as f32;
        let inverse = 1.0 / (mean_square + self.eps).sqrt();
        for (x, scale) in row.iter_mut().zip(&self.scale) {
            *x = *x * inverse * scale;
        }
    }

    /// Every `scale.len()`-wide row of `xs`, in place.
    fn apply_rows(&self, xs: &mut [f32]) {
        let width = self.scale.len();
        xs.par_chunks_mut(width * 8).for_each(|block| {
            block
                .chunks_exact_mut(width)
                .for_each(|row| self.apply(row));
        });
    }
}

/// cos and sin of every position's rotation angles, (positions, head_dim / 2), computed in f32
/// the way transformers does.
pub(crate) struct RopeTables {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    half: usize,
}

impl RopeTables {
    pub fn new(base: f64, head_dim: usize, positions: usize) -> Self {
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
        Self { cos, sin, half }
    }

    /// Rotates one head's vector by `position`'s angles (halves rotated, as transformers'
    /// `rotate_half`).
    fn apply(&self, head: &mut [f32], position: usize) {
        let half = self.half;
        let cos = &self.cos[position * half..(position + 1) * half];
        let sin = &self.sin[position * half..(position + 1) * half];
        let (first, second) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (first[i], second[i]);
            first[i] = x1 * cos[i] - x2 * sin[i];
            second[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

struct Attention {
    /// q_proj, k_proj and v_proj stacked.
    qkv_proj: Linear,
    o_proj: Linear,
    q_norm: GemmaRmsNorm,
    k_norm: GemmaRmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    query_scale: f32,
    softcap: Option<f32>,
}

impl Attention {
    fn load(config: &GemmaConfig, vb: VarBuilder) -> Result<Self> {
        let (hidden, head_dim) = (config.hidden_size, config.head_dim);
        let heads = config.num_attention_heads;
        let kv_heads = config.num_key_value_heads;
        let bias = config.attention_bias;
        Ok(Self {
            qkv_proj: load_linear(
                &[
                    (heads * head_dim, "q_proj"),
                    (kv_heads * head_dim, "k_proj"),
                    (kv_heads * head_dim, "v_proj"),
                ],
                hidden,
                bias,
                &vb,
            )?,
            o_proj: load_linear(&[(hidden, "o_proj")], heads * head_dim, bias, &vb)?,
            q_norm: GemmaRmsNorm::load(head_dim, config.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: GemmaRmsNorm::load(head_dim, config.rms_norm_eps, vb.pp("k_norm"))?,
            heads,
            kv_heads,
            head_dim,
            query_scale: config.query_pre_attn_scalar.powf(-0.5) as f32,
            softcap: config.attn_logit_softcapping.map(|cap| cap as f32),
        })
    }

    /// `normed` (tokens, hidden) in; the attention block's output into `out` (tokens, hidden).
    fn forward(
        &self,
        normed: &[f32],
        sequences: &[Sequence],
        positions: &[usize],
        window: Option<usize>,
        rope: &RopeTables,
        out: &mut [f32],
    ) {
        let (heads, kv_heads, head_dim) = (self.heads, self.kv_heads, self.head_dim);
        let stride = self.qkv_proj.out_features;
        let tokens = normed.len() / self.qkv_proj.in_features;
        let mut qkv = vec![0.0; tokens * stride];
        self.qkv_proj.forward_into(normed, &mut qkv, false);
        // Per-head norms and rotations of queries and keys; values stay as projected.
        qkv.par_chunks_mut(stride)
            .zip(positions)
            .for_each(|(row, &position)| {
                let (rotated, _values) = row.split_at_mut((heads + kv_heads) * head_dim);
                for (index, head) in rotated.chunks_exact_mut(head_dim).enumerate() {
                    let norm = if index < heads {
                        &self.q_norm
                    } else {
                        &self.k_norm
                    };
                    norm.apply(head);
                    rope.apply(head, position);
                }
            });

        let shape = Heads {
            heads,
            kv_heads,
            head_dim,
            scale: self.query_scale,
        };
        let adjust_scores = |query: usize, row: &mut [f32]| {
            if let Some(cap) = self.softcap {
                row.iter_mut().for_each(|s| *s = (*s / cap).tanh() * cap);
            }
            if let Some(reach) = window {
                for (key, score) in row.iter_mut().enumerate() {
                    if query.abs_diff(key) > reach {
                        *score = f32::NEG_INFINITY;
                    }
                }
            }
        };
        let mut context = vec![0.0; tokens * heads * head_dim];
        packed::attention(&qkv, sequences, &shape, &adjust_scores, &mut context);
        self.o_proj.forward_into(&context, out, false);
    }
}

struct FeedForward {
    /// gate_proj and up_proj stacked.
    gate_up_proj: Linear,
    inner: usize,
    down_proj: Linear,
}

impl FeedForward {
    fn load(config: &GemmaConfig, vb: VarBuilder) -> Result<Self> {
        let (hidden, inner) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            gate_up_proj: load_linear(
                &[(inner, "gate_proj"), (inner, "up_proj")],
                hidden,
                false,
                &vb,
            )?,
            inner,
            down_proj: load_linear(&[(hidden, "down_proj")], inner, false, &vb)?,
        })
    }

    /// `down(gelu_tanh(gate(x)) · up(x))` into `out`.
    fn forward(&self, normed: &[f32], out: &mut [f32]) {
        let tokens = normed.len() / self.gate_up_proj.in_features;
        let inner = self.inner;
        let mut gate_up = vec![0.0; tokens * 2 * inner];
        self.gate_up_proj.forward_into(normed, &mut gate_up, false);
        let mut activated = vec![0.0; tokens * inner];
        activated
            .par_chunks_mut(inner)
            .zip(gate_up.par_chunks(2 * inner))
            .for_each(|(out, gate_up)| {
                let (gate, up) = gate_up.split_at(inner);
                for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                    *o = kernels::gelu_tanh(*g) * u;
                }
            });
        self.down_proj.forward_into(&activated, out, false);
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

    fn forward(
        &self,
        hidden: &mut [f32],
        sequences: &[Sequence],
        positions: &[usize],
        window: Option<usize>,
        rope: &RopeTables,
    ) {
        let mut normed = hidden.to_vec();
        self.input_norm.apply_rows(&mut normed);
        let mut block = vec![0.0; hidden.len()];
        self.attention
            .forward(&normed, sequences, positions, window, rope, &mut block);
        self.post_attention_norm.apply_rows(&mut block);
        add_into(hidden, &block);

        normed.copy_from_slice(hidden);
        self.pre_feed_forward_norm.apply_rows(&mut normed);
        self.feed_forward.forward(&normed, &mut block);
        self.post_feed_forward_norm.apply_rows(&mut block);
        add_into(hidden, &block);
    }
}

fn add_into(sum: &mut [f32], addend: &[f32]) {
    sum.par_chunks_mut(16 * 1024)
        .zip(addend.par_chunks(16 * 1024))
        .for_each(|(sum, addend)| sum.iter_mut().zip(addend).for_each(|(s, a)| *s += a));
}

/// The encoder: token ids in, one hidden state per token out.
pub(crate) struct GemmaEncoder {
    embed_tokens: Vec<f32>,
    embed_scale: f32,
    hidden_size: usize,
    layers: Vec<EncoderLayer>,
    final_norm: GemmaRmsNorm,
    sliding_rope: RopeTables,
    full_rope: RopeTables,
    sliding_reach: usize,
    max_positions: usize,
    /// The encoder's own threads, sized by `--threads`.
    pool: rayon::ThreadPool,
}

impl GemmaEncoder {
    /// `vb` holds the Gemma 3 text model's tensors (`embed_tokens`, `layers.N.*`, `norm`).
    /// `threads` is the forward pass's thread count (0: one per core).
    pub fn load(config: &GemmaConfig, vb: VarBuilder, threads: usize) -> Result<Self> {
        let sliding = config.sliding_layers().map_err(candle_core::Error::msg)?;
        if config.num_key_value_heads == 0
            || !config
                .num_attention_heads
                .is_multiple_of(config.num_key_value_heads)
        {
            candle_core::bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                config.num_attention_heads,
                config.num_key_value_heads
            );
        }
        let embed_tokens = vb
            .pp("embed_tokens")
            .get((config.vocab_size, config.hidden_size), "weight")?
            .flatten_all()?
            .to_vec1()?;
        let layers = sliding
            .iter()
            .enumerate()
            .map(|(index, &sliding)| {
                EncoderLayer::load(config, sliding, vb.pp(format!("layers.{index}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let max_positions = config.max_position_embeddings;
        let rope = |base| RopeTables::new(base, config.head_dim, max_positions);
        Ok(Self {
            embed_tokens,
            // transformers keeps the scale as an f32 tensor.
            embed_scale: (config.hidden_size as f32).sqrt(),
            hidden_size: config.hidden_size,
            layers,
            final_norm: GemmaRmsNorm::load(config.hidden_size, config.rms_norm_eps, vb.pp("norm"))?,
            sliding_rope: rope(config.rope_local_base_freq),
            full_rope: rope(config.rope_theta),
            sliding_reach: config.sliding_reach(),
            max_positions,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|index| format!("kiln-gemma-{index}"))
                .build()
                .map_err(candle_core::Error::wrap)?,
        })
    }

    /// `token_ids` is (batch, len), each row `lengths[row]` real tokens then padding. Returns the
    /// final hidden states, (batch, len, hidden); padding positions hold zeros.
    pub fn forward(&self, token_ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.pool.install(|| self.forward_here(token_ids, lengths))
    }

    fn forward_here(&self, token_ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (batch, len) = token_ids.dims2()?;
        if len > self.max_positions {
            candle_core::bail!(
                "{len} tokens exceed the model's {} positions",
                self.max_positions
            );
        }
        if lengths.len() != batch || lengths.iter().any(|&l| l > len) {
            candle_core::bail!("sequence lengths {lengths:?} do not fit a ({batch}, {len}) batch");
        }
        let ids = token_ids.flatten_all()?.to_vec1::<u32>()?;
        let hidden_size = self.hidden_size;
        let sequences = packed::pack(lengths);
        let positions = packed::positions(&sequences);
        let mut hidden = Vec::with_capacity(positions.len() * hidden_size);
        for (index, sequence) in sequences.iter().enumerate() {
            let start = index * len;
            for &id in &ids[start..start + sequence.length] {
                let start = id as usize * hidden_size;
                let Some(row) = self.embed_tokens.get(start..start + hidden_size) else {
                    candle_core::bail!("token id {id} is outside the vocabulary");
                };
                hidden.extend(row.iter().map(|x| x * self.embed_scale));
            }
        }
        for layer in &self.layers {
            let (window, rope) = if layer.sliding {
                (Some(self.sliding_reach), &self.sliding_rope)
            } else {
                (None, &self.full_rope)
            };
            layer.forward(&mut hidden, &sequences, &positions, window, rope);
        }
        self.final_norm.apply_rows(&mut hidden);
        let padded = packed::unpack(&hidden, &sequences, len, hidden_size);
        Tensor::from_vec(padded, (batch, len, hidden_size), &Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_tables_start_unrotated() {
        let tables = RopeTables::new(10_000.0, 4, 3);
        assert_eq!(&tables.cos[0..2], &[1.0, 1.0]);
        assert_eq!(&tables.sin[0..2], &[0.0, 0.0]);
        assert!((tables.sin[2] - 1f32.sin()).abs() < 1e-7);
        assert!((tables.cos[5] - (2.0f32 * 0.01).cos()).abs() < 1e-7);
    }

    #[test]
    fn rotation_turns_each_half_pair() {
        let tables = RopeTables::new(10_000.0, 4, 2);
        let mut head = [1.0, 0.0, 0.0, 1.0];
        tables.apply(&mut head, 1);
        // Pair (x[0], x[2]) = (1, 0) turns by 1 rad; pair (x[1], x[3]) = (0, 1) by 0.01 rad.
        assert!((head[0] - 1f32.cos()).abs() < 1e-6 && (head[2] - 1f32.sin()).abs() < 1e-6);
        assert!((head[1] + 0.01f32.sin()).abs() < 1e-6 && (head[3] - 0.01f32.cos()).abs() < 1e-6);
    }
}
