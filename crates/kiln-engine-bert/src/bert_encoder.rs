//! Kiln's BERT encoder: the forward pass of candle-transformers' `BertModel` (same weight names,
//! same semantics: absolute positions from 0, token-type embeddings, post-norm layers, erf GELU by
//! default) laid out for the CPU. Every linear layer runs as one 2-D product over the flattened
//! (batch·len, features) activations instead of one small product per sequence, the query, key
//! and value projections are fused into one product, the hidden states stay 2-D between layers,
//! and padding is dropped from everything but attention (see [`Layout`]). GELU evaluates erf in
//! f32 (see [`gelu_erf`]).

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

/// What a masked attention score gains: torch's `finfo(float32).min`, as transformers and
/// candle-transformers add it, so a padding key's weight underflows to zero.
const MASKED_SCORE: f32 = f32::MIN;

/// LayerNorm over the last dimension (weight and bias).
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            bias: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&xs.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

/// A linear layer, `x·Wᵀ + b`, on 2-D (rows, in) input. The weight is kept transposed, (in, out)
/// and contiguous, so the product reads it in order.
struct Projection {
    weight_t: Tensor,
    bias: Tensor,
}

impl Projection {
    fn load(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Self> {
        Self::fused(&[""], in_features, out_features, &vb)
    }

    /// Several layers reading the same input (query, key and value) stacked along their
    /// outputs, so one product replaces several.
    fn fused(
        names: &[&str],
        in_features: usize,
        out_features: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let mut weights = Vec::with_capacity(names.len());
        let mut biases = Vec::with_capacity(names.len());
        for name in names {
            let part = if name.is_empty() {
                vb.clone()
            } else {
                vb.pp(*name)
            };
            weights.push(part.get((out_features, in_features), "weight")?);
            biases.push(part.get(out_features, "bias")?);
        }
        Ok(Self {
            weight_t: Tensor::cat(&weights, 0)?.t()?.contiguous()?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(config: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        Ok(Self {
            word: vb.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            position: vb.get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?,
            token_type: vb.get(
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?,
            layer_norm: LayerNorm::load(hidden, config.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// `token_ids`, `type_ids` and `positions` are the packed (tokens,) inputs; returns
    /// (tokens, hidden).
    fn forward(&self, token_ids: &Tensor, type_ids: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let words = self.word.index_select(token_ids, 0)?;
        let types = self.token_type.index_select(type_ids, 0)?;
        let positions = self.position.index_select(positions, 0)?;
        self.layer_norm.forward(&((words + types)? + positions)?)
    }
}

struct Layer {
    /// query, key and value stacked: (hidden, 3·hidden).
    qkv: Projection,
    attention_output: Projection,
    attention_norm: LayerNorm,
    intermediate: Projection,
    output: Projection,
    output_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    activation: HiddenAct,
}

impl Layer {
    fn load(config: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let attention = vb.pp("attention");
        Ok(Self {
            qkv: Projection::fused(
                &["query", "key", "value"],
                hidden,
                hidden,
                &attention.pp("self"),
            )?,
            attention_output: Projection::load(hidden, hidden, attention.pp("output.dense"))?,
            attention_norm: LayerNorm::load(hidden, eps, attention.pp("output.LayerNorm"))?,
            intermediate: Projection::load(
                hidden,
                config.intermediate_size,
                vb.pp("intermediate.dense"),
            )?,
            output: Projection::load(config.intermediate_size, hidden, vb.pp("output.dense"))?,
            output_norm: LayerNorm::load(hidden, eps, vb.pp("output.LayerNorm"))?,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            activation: config.hidden_act,
        })
    }

    /// `xs` is the packed (tokens, hidden) activations of `layout`'s sequences.
    fn forward(&self, xs: &Tensor, layout: &Layout) -> Result<Tensor> {
        let (batch, len) = (layout.batch, layout.len);
        let hidden = self.heads * self.head_dim;
        let qkv = self
            .qkv
            .forward(xs)?
            .index_select(&layout.unpack, 0)?
            .reshape((batch, len, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let heads_of = |index: usize| -> Result<Tensor> {
            qkv.get(index)?
                .reshape((batch * self.heads, len, self.head_dim))
        };
        let queries = (heads_of(0)? * (1.0 / (self.head_dim as f64).sqrt()))?;
        let keys = heads_of(1)?;
        let values = heads_of(2)?;
        let scores = queries
            .matmul(&keys.t()?)?
            .reshape((batch, self.heads, len, len))?
            .broadcast_add(&layout.mask)?;
        let weights =
            candle_nn::ops::softmax_last_dim(&scores)?.reshape((batch * self.heads, len, len))?;
        let context = weights
            .matmul(&values)?
            .reshape((batch, self.heads, len, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * len, hidden))?
            .index_select(&layout.pack, 0)?;
        let attended = self
            .attention_norm
            .forward(&(self.attention_output.forward(&context)? + xs)?)?;

        let intermediate = self.intermediate.forward(&attended)?;
        let activated = match self.activation {
            HiddenAct::Gelu => gelu_erf(&intermediate)?,
            HiddenAct::GeluApproximate => intermediate.gelu()?,
            HiddenAct::Relu => intermediate.relu()?,
        };
        self.output_norm
            .forward(&(self.output.forward(&activated)? + attended)?)
    }
}

/// The BERT encoder without pooler: token ids in, last hidden states out.
pub(crate) struct BertEncoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden_size: usize,
}

impl BertEncoder {
    /// `vb` is rooted where `embeddings.*` and `encoder.layer.*` live (after any `bert.` prefix).
    pub(crate) fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            candle_core::bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        let embeddings = Embeddings::load(config, vb.pp("embeddings"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|index| Layer::load(config, vb.pp(format!("encoder.layer.{index}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            hidden_size: config.hidden_size,
        })
    }

    /// `token_ids` and `type_ids` are (batch, len) u32, right-padded; `lengths` holds each
    /// sequence's real token count. Returns (batch, len, hidden); padding positions hold
    /// arbitrary finite values.
    pub(crate) fn forward(
        &self,
        token_ids: &Tensor,
        type_ids: &Tensor,
        lengths: &[usize],
    ) -> Result<Tensor> {
        let (batch, len) = token_ids.dims2()?;
        let layout = Layout::new(lengths, batch, len, token_ids.device())?;
        let mut hidden = self.embeddings.forward(
            &token_ids.flatten_all()?.index_select(&layout.pack, 0)?,
            &type_ids.flatten_all()?.index_select(&layout.pack, 0)?,
            &layout.positions,
        )?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &layout)?;
        }
        hidden
            .index_select(&layout.unpack, 0)?
            .reshape((batch, len, self.hidden_size))
    }
}

/// How a padded batch maps to packed rows. Everything but attention runs on the packed rows
/// (the real tokens only, one after another), so padding costs nothing there; attention runs on
/// the padded (batch, len) layout with padding keys masked.
struct Layout {
    batch: usize,
    len: usize,
    /// For each packed row, its padded row `sequence·len + position`.
    pack: Tensor,
    /// For each padded row, its packed row; padding positions point at their sequence's first
    /// token, so they hold finite values.
    unpack: Tensor,
    /// Each packed row's position in its sequence.
    positions: Tensor,
    /// The additive (batch, 1, 1, len) key mask: 0 for real tokens, [`MASKED_SCORE`] for padding.
    mask: Tensor,
}

impl Layout {
    fn new(lengths: &[usize], batch: usize, len: usize, device: &Device) -> Result<Self> {
        if lengths.len() != batch || lengths.iter().any(|&l| l > len) || len == 0 {
            candle_core::bail!("sequence lengths {lengths:?} do not fit a ({batch}, {len}) batch");
        }
        let (mut pack, mut unpack, mut positions) = (Vec::new(), Vec::new(), Vec::new());
        let mut mask = Vec::with_capacity(batch * len);
        for (sequence, &length) in lengths.iter().enumerate() {
            // A sequence without tokens still computes its first position, as padding.
            let computed = length.max(1);
            let first = pack.len() as u32;
            for position in 0..len {
                if position < computed {
                    unpack.push(first + position as u32);
                    pack.push((sequence * len + position) as u32);
                    positions.push(position as u32);
                } else {
                    unpack.push(first);
                }
                mask.push(if position < length { 0.0 } else { MASKED_SCORE });
            }
        }
        let rows = pack.len();
        Ok(Self {
            batch,
            len,
            pack: Tensor::from_vec(pack, rows, device)?,
            unpack: Tensor::from_vec(unpack, batch * len, device)?,
            positions: Tensor::from_vec(positions, rows, device)?,
            mask: Tensor::from_vec(mask, (batch, 1, 1, len), device)?,
        })
    }
}

/// Erf GELU, `x·(1 + erf(x/√2))/2`, as transformers' `gelu`. candle's `gelu_erf` evaluates erf in
/// f64 one element at a time, which cost as much as the feed-forward products; this evaluates a
/// rational approximation of erf in f32 that the compiler vectorizes, split across threads.
fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    let shape = xs.shape().clone();
    let mut values = xs.flatten_all()?.to_vec1::<f32>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = values.len().div_ceil(threads).max(16 * 1024);
    std::thread::scope(|scope| {
        for part in values.chunks_mut(chunk) {
            scope.spawn(move || part.iter_mut().for_each(|x| *x = gelu(*x)));
        }
    });
    Tensor::from_vec(values, shape, xs.device())
}

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf in f32 to within a few ulp: Eigen's and XLA's rational approximation on [-4, 4] (beyond
/// which erf is ±1 in f32).
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p - 2.101_024e-6;
    p = x2 * p - 5.692_506_4e-5;
    p = x2 * p - 7.349_906_3e-4;
    p = x2 * p - 2.954_600_2e-3;
    p = x2 * p - 1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 - 2.133_740_6e-4;
    q = x2 * q - 1.682_827e-3;
    q = x2 * q - 7.373_329_2e-3;
    q = x2 * q - 1.426_473_9e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn erf_matches_the_exact_function() {
        let xs: Vec<f64> = (-60_000..=60_000)
            .map(|step| f64::from(step) / 10_000.0)
            .collect();
        let exact = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.erf())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("exact erf");
        let worst = xs
            .iter()
            .zip(&exact)
            .map(|(&x, &e)| (f64::from(erf(x as f32)) - e).abs())
            .fold(0.0f64, f64::max);
        assert!(worst < 1e-6, "worst erf error {worst}");
    }

    #[test]
    fn gelu_matches_candle() {
        let xs = Tensor::arange(-800i64, 800, &candle_core::Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t / 100.0)
            .expect("inputs");
        let ours = gelu_erf(&xs)
            .and_then(|t| t.to_vec1::<f32>())
            .expect("gelu");
        let theirs = xs
            .gelu_erf()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("gelu");
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}
