//! The encoder-decoder transformer shared by M2M100, Marian and BART, on candle, one sequence at
//! a time. The decoder keeps a cache: each layer's self-attention keys and values grow by one row
//! per step, and the cross-attention keys and values of the encoder output are computed once.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{layer_norm, linear, LayerNorm, Linear, VarBuilder};

use crate::config::{Architecture, PositionKind, Seq2SeqConfig};

/// transformers builds these models' LayerNorms with PyTorch's default epsilon.
const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Debug, Clone, Copy)]
enum Activation {
    Relu,
    GeluErf,
    GeluTanh,
    Silu,
    Tanh,
}

impl Activation {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "swish" | "silu" => Some(Activation::Silu),
            "tanh" => Some(Activation::Tanh),
            _ => None,
        }
    }

    fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => xs.relu(),
            Activation::GeluErf => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Silu => xs.silu(),
            Activation::Tanh => xs.tanh(),
        }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(d_model: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: linear(d_model, d_model, vb.pp("q_proj"))?,
            k: linear(d_model, d_model, vb.pp("k_proj"))?,
            v: linear(d_model, d_model, vb.pp("v_proj"))?,
            out: linear(d_model, d_model, vb.pp("out_proj"))?,
            heads,
            head_dim: d_model / heads,
        })
    }

    /// `(1, t, d)` → `(1, heads, t, head_dim)`.
    fn split(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, len, _) = xs.dims3()?;
        xs.reshape((batch, len, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn keys_values(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split(&self.k.forward(xs)?)?,
            self.split(&self.v.forward(xs)?)?,
        ))
    }

    /// Attention of `xs` over `keys`/`values` (already split); `mask` is added to the scores.
    fn attend(
        &self,
        xs: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, len, d_model) = xs.dims3()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let query = self.split(&(self.q.forward(xs)? * scale)?)?;
        let mut scores = query.matmul(&keys.t()?.contiguous()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights
            .matmul(values)?
            .transpose(1, 2)?
            .reshape((batch, len, d_model))?;
        self.out.forward(&context)
    }
}

struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl FeedForward {
    fn load(d_model: usize, ffn: usize, activation: Activation, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(d_model, ffn, vb.pp("fc1"))?,
            fc2: linear(ffn, d_model, vb.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&self.activation.forward(&self.fc1.forward(xs)?)?)
    }
}

/// A residual sublayer with its LayerNorm before (pre-LN) or after the sum (post-LN).
fn residual(
    xs: &Tensor,
    norm: &LayerNorm,
    pre_layer_norm: bool,
    sublayer: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    if pre_layer_norm {
        xs + sublayer(&norm.forward(xs)?)?
    } else {
        norm.forward(&(xs + sublayer(xs)?)?)
    }
}

struct EncoderLayer {
    self_attn: Attention,
    self_attn_norm: LayerNorm,
    ffn: FeedForward,
    final_norm: LayerNorm,
}

struct DecoderLayer {
    self_attn: Attention,
    self_attn_norm: LayerNorm,
    cross_attn: Attention,
    cross_attn_norm: LayerNorm,
    ffn: FeedForward,
    final_norm: LayerNorm,
}

/// What one decoding run keeps between steps.
pub(crate) struct DecoderCache {
    /// Per layer: the encoder output's keys and values for cross-attention.
    cross: Vec<(Tensor, Tensor)>,
    /// Per layer: the self-attention keys and values of every decoded position.
    past: Vec<Option<(Tensor, Tensor)>>,
    /// Decoder tokens seen so far.
    pub(crate) len: usize,
}

/// Token and position embeddings of one side (encoder or decoder).
struct Embeddings {
    tokens: Tensor,
    scale: f64,
    positions: Tensor,
    kind: PositionKind,
    pad_token_id: u32,
    layer_norm: Option<LayerNorm>,
}

impl Embeddings {
    /// Rows of the position table for tokens at `start..` of a sequence, as transformers
    /// numbers them. fairseq counts only the non-padding tokens of what it is given (plus
    /// `start`), starts after the padding id, and gives padding the padding id's zero row.
    fn position_rows(&self, ids: &[u32], start: usize) -> Vec<u32> {
        let pad = self.pad_token_id as usize;
        let mut seen = 0;
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                let row = match self.kind {
                    PositionKind::Fairseq if id == self.pad_token_id => pad,
                    PositionKind::Fairseq => {
                        seen += 1;
                        pad + start + seen
                    }
                    PositionKind::Marian => start + i,
                    PositionKind::Learned => start + i + 2,
                };
                row as u32
            })
            .collect()
    }

    fn forward(&self, ids: &[u32], start: usize) -> Result<Tensor> {
        let device = self.tokens.device();
        let index = Tensor::new(ids, device)?;
        let tokens = (self.tokens.index_select(&index, 0)? * self.scale)?;
        let rows = Tensor::new(self.position_rows(ids, start), device)?;
        let positions = self.positions.index_select(&rows, 0)?;
        let xs = (tokens + positions)?.unsqueeze(0)?;
        match &self.layer_norm {
            Some(norm) => norm.forward(&xs),
            None => Ok(xs),
        }
    }
}

/// The whole model: encoder, decoder and the output projection.
pub(crate) struct Network {
    encoder_embeddings: Embeddings,
    encoder_layers: Vec<EncoderLayer>,
    encoder_final_norm: Option<LayerNorm>,
    decoder_embeddings: Embeddings,
    decoder_layers: Vec<DecoderLayer>,
    decoder_final_norm: Option<LayerNorm>,
    lm_head: Tensor,
    final_logits_bias: Option<Tensor>,
    pre_layer_norm: bool,
}

impl Network {
    /// Builds the network from `model.safetensors`' tensors (transformers' names). Tied
    /// embeddings may be stored once (`model.shared.weight`) or under every name.
    pub(crate) fn load(
        architecture: Architecture,
        config: &Seq2SeqConfig,
        vb: VarBuilder,
    ) -> std::result::Result<Self, String> {
        let activation = Activation::from_name(&config.activation_function).ok_or_else(|| {
            format!(
                "activation_function {:?} is not supported",
                config.activation_function
            )
        })?;
        Self::load_weights(architecture, config, activation, vb).map_err(|err| err.to_string())
    }

    fn load_weights(
        architecture: Architecture,
        config: &Seq2SeqConfig,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let d = config.d_model;
        let model = vb.pp("model");
        let shared_shape = (config.vocab_size, d);
        let first_of = |names: &[&str]| -> Result<Tensor> {
            let name = names
                .iter()
                .find(|name| vb.contains_tensor(name))
                .unwrap_or(&names[0]);
            vb.get(shared_shape, name)
        };
        let encoder_tokens =
            first_of(&["model.encoder.embed_tokens.weight", "model.shared.weight"])?;
        let decoder_tokens =
            first_of(&["model.decoder.embed_tokens.weight", "model.shared.weight"])?;
        let lm_head = first_of(&[
            "lm_head.weight",
            "model.decoder.embed_tokens.weight",
            "model.shared.weight",
        ])?;
        let final_logits_bias = if vb.contains_tensor("final_logits_bias") {
            Some(vb.get((1, config.vocab_size), "final_logits_bias")?)
        } else {
            None
        };
        let pre_layer_norm = architecture.pre_layer_norm();
        let kind = architecture.positions();
        let layer_norm_embedding = architecture == Architecture::Bart;
        let scale = if config.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        };
        let side = |name: &str, tokens: Tensor| -> Result<Embeddings> {
            let vb = model.pp(name);
            let positions = match kind {
                PositionKind::Learned => vb.get(
                    (config.max_position_embeddings + 2, d),
                    "embed_positions.weight",
                )?,
                _ => sinusoids(kind, config, tokens.device())?,
            };
            Ok(Embeddings {
                tokens,
                scale,
                positions,
                kind,
                pad_token_id: config.pad_token_id,
                layer_norm: layer_norm_embedding
                    .then(|| layer_norm(d, LAYER_NORM_EPS, vb.pp("layernorm_embedding")))
                    .transpose()?,
            })
        };
        let final_norm = |name: &str| -> Result<Option<LayerNorm>> {
            pre_layer_norm
                .then(|| layer_norm(d, LAYER_NORM_EPS, model.pp(name).pp("layer_norm")))
                .transpose()
        };
        let mut encoder_layers = Vec::with_capacity(config.encoder_layers);
        for i in 0..config.encoder_layers {
            let vb = model.pp("encoder.layers").pp(i);
            encoder_layers.push(EncoderLayer {
                self_attn: Attention::load(d, config.encoder_attention_heads, vb.pp("self_attn"))?,
                self_attn_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
                ffn: FeedForward::load(d, config.encoder_ffn_dim, activation, &vb)?,
                final_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
            });
        }
        let mut decoder_layers = Vec::with_capacity(config.decoder_layers);
        for i in 0..config.decoder_layers {
            let vb = model.pp("decoder.layers").pp(i);
            let heads = config.decoder_attention_heads;
            decoder_layers.push(DecoderLayer {
                self_attn: Attention::load(d, heads, vb.pp("self_attn"))?,
                self_attn_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("self_attn_layer_norm"))?,
                cross_attn: Attention::load(d, heads, vb.pp("encoder_attn"))?,
                cross_attn_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("encoder_attn_layer_norm"))?,
                ffn: FeedForward::load(d, config.decoder_ffn_dim, activation, &vb)?,
                final_norm: layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
            });
        }
        Ok(Self {
            encoder_embeddings: side("encoder", encoder_tokens)?,
            encoder_layers,
            encoder_final_norm: final_norm("encoder")?,
            decoder_embeddings: side("decoder", decoder_tokens)?,
            decoder_layers,
            decoder_final_norm: final_norm("decoder")?,
            lm_head,
            final_logits_bias,
            pre_layer_norm,
        })
    }

    /// How many tokens one side (encoder or decoder) can number with its position table.
    pub(crate) fn max_tokens(&self) -> usize {
        let side = &self.encoder_embeddings;
        let rows = side.positions.dims().first().copied().unwrap_or(0);
        match side.kind {
            PositionKind::Fairseq => rows.saturating_sub(side.pad_token_id as usize + 1),
            PositionKind::Marian => rows,
            PositionKind::Learned => rows.saturating_sub(2),
        }
    }

    /// The encoder's output for one source, `(1, len, d_model)`.
    pub(crate) fn encode(&self, ids: &[u32]) -> Result<Tensor> {
        let mut xs = self.encoder_embeddings.forward(ids, 0)?;
        for layer in &self.encoder_layers {
            xs = residual(&xs, &layer.self_attn_norm, self.pre_layer_norm, |xs| {
                let (keys, values) = layer.self_attn.keys_values(xs)?;
                layer.self_attn.attend(xs, &keys, &values, None)
            })?;
            xs = residual(&xs, &layer.final_norm, self.pre_layer_norm, |xs| {
                layer.ffn.forward(xs)
            })?;
        }
        match &self.encoder_final_norm {
            Some(norm) => norm.forward(&xs),
            None => Ok(xs),
        }
    }

    /// A fresh decoder cache for one encoder output.
    pub(crate) fn start_decoding(&self, encoder_output: &Tensor) -> Result<DecoderCache> {
        let cross = self
            .decoder_layers
            .iter()
            .map(|layer| layer.cross_attn.keys_values(encoder_output))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderCache {
            cross,
            past: vec![None; self.decoder_layers.len()],
            len: 0,
        })
    }

    /// Feeds `ids` (continuing the cached sequence) to the decoder and returns the logits after
    /// the last of them, over the vocabulary.
    pub(crate) fn decode_step(&self, ids: &[u32], cache: &mut DecoderCache) -> Result<Vec<f32>> {
        let start = cache.len;
        let mut xs = self.decoder_embeddings.forward(ids, start)?;
        let mask = causal_mask(ids.len(), start, xs.device())?;
        for (index, layer) in self.decoder_layers.iter().enumerate() {
            xs = residual(&xs, &layer.self_attn_norm, self.pre_layer_norm, |xs| {
                let (keys, values) = layer.self_attn.keys_values(xs)?;
                let (keys, values) = match cache.past[index].take() {
                    Some((past_keys, past_values)) => (
                        Tensor::cat(&[&past_keys, &keys], 2)?,
                        Tensor::cat(&[&past_values, &values], 2)?,
                    ),
                    None => (keys, values),
                };
                let out = layer.self_attn.attend(xs, &keys, &values, mask.as_ref())?;
                cache.past[index] = Some((keys, values));
                Ok(out)
            })?;
            let (cross_keys, cross_values) = &cache.cross[index];
            xs = residual(&xs, &layer.cross_attn_norm, self.pre_layer_norm, |xs| {
                layer.cross_attn.attend(xs, cross_keys, cross_values, None)
            })?;
            xs = residual(&xs, &layer.final_norm, self.pre_layer_norm, |xs| {
                layer.ffn.forward(xs)
            })?;
        }
        cache.len += ids.len();
        if let Some(norm) = &self.decoder_final_norm {
            xs = norm.forward(&xs)?;
        }
        let last = xs.squeeze(0)?.narrow(0, ids.len() - 1, 1)?;
        let mut logits = last.matmul(&self.lm_head.t()?)?;
        if let Some(bias) = &self.final_logits_bias {
            logits = logits.broadcast_add(bias)?;
        }
        logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()
    }
}

/// `-inf` above the diagonal for `len` new positions after `past` cached ones; none for one.
fn causal_mask(len: usize, past: usize, device: &Device) -> Result<Option<Tensor>> {
    if len <= 1 {
        return Ok(None);
    }
    let total = past + len;
    let values: Vec<f32> = (0..len)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (1, 1, len, total), device).map(Some)
}

/// The sinusoidal position table, computed in f64 as transformers does (Marian: numpy) and
/// stored in f32: `max_position_embeddings` rows, plus fairseq's 2 rows of offset.
fn sinusoids(kind: PositionKind, config: &Seq2SeqConfig, device: &Device) -> Result<Tensor> {
    let dim = config.d_model;
    let mut table = Vec::new();
    match kind {
        PositionKind::Fairseq => {
            let rows = config.max_position_embeddings + 2;
            let half = dim / 2;
            let step = (10000f64).ln() / (half.max(2) - 1) as f64;
            for pos in 0..rows {
                let mut row = vec![0f32; dim];
                if pos != config.pad_token_id as usize {
                    for i in 0..half {
                        let angle = pos as f64 * (-(i as f64) * step).exp();
                        row[i] = angle.sin() as f32;
                        row[half + i] = angle.cos() as f32;
                    }
                }
                table.extend(row);
            }
            Tensor::from_vec(table, (rows, dim), device)
        }
        PositionKind::Marian | PositionKind::Learned => {
            let rows = config.max_position_embeddings;
            for pos in 0..rows {
                let angle =
                    |j: usize| pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
                let row = (0..dim)
                    .step_by(2)
                    .map(|j| angle(j).sin())
                    .chain((1..dim).step_by(2).map(|j| angle(j).cos()))
                    .map(|value| value as f32);
                table.extend(row);
            }
            Tensor::from_vec(table, (rows, dim), device)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_causal_mask_hides_only_later_positions() {
        let mask = causal_mask(2, 1, &Device::Cpu).unwrap().unwrap();
        let rows = mask.squeeze(0).unwrap().squeeze(0).unwrap();
        let rows = rows.to_vec2::<f32>().unwrap();
        assert_eq!(rows[0][..2], [0.0, 0.0]);
        assert!(rows[0][2].is_infinite());
        assert_eq!(rows[1], [0.0, 0.0, 0.0]);
        assert!(causal_mask(1, 5, &Device::Cpu).unwrap().is_none());
    }
}
