//! Kiln's BERT encoder: the forward pass of candle-transformers' `BertModel` (same weight names,
//! same semantics: absolute positions from 0, token-type embeddings, post-norm layers, erf GELU by
//! default) laid out for the CPU on plain slices ([`crate::kernels`]). The hidden states are the
//! packed rows of the real tokens only, so padding costs nothing anywhere; every linear layer is
//! one product over all rows with its bias and residual added in the same buffer; the query, key
//! and value projections are one product; and attention runs per sequence and head over that
//! sequence's own length, so it needs no mask. candle only loads the weights.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use rayon::prelude::*;

use crate::kernels::{self, Linear};
use crate::packed::{self, load_linear, Heads, Sequence};

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?.to_vec1()?,
            bias: vb.get(size, "bias")?.to_vec1()?,
            eps: eps as f32,
        })
    }

    fn forward_rows(&self, xs: &mut [f32]) {
        kernels::layer_norm_rows(xs, &self.weight, &self.bias, self.eps);
    }
}

struct Embeddings {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(config: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        let table = |rows: usize, name: &str| -> Result<Vec<f32>> {
            vb.get((rows, hidden), name)?.flatten_all()?.to_vec1()
        };
        Ok(Self {
            word: table(config.vocab_size, "word_embeddings.weight")?,
            position: table(config.max_position_embeddings, "position_embeddings.weight")?,
            token_type: table(config.type_vocab_size, "token_type_embeddings.weight")?,
            layer_norm: LayerNorm::load(hidden, config.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// Each packed token's embedding, normalized, into its row of `out` (tokens, hidden).
    fn forward_into(&self, tokens: &[PackedToken], out: &mut [f32]) -> Result<()> {
        let hidden = self.layer_norm.weight.len();
        fn row(table: &[f32], index: u32, hidden: usize) -> Option<&[f32]> {
            let start = index as usize * hidden;
            table.get(start..start + hidden)
        }
        // An id outside a table (a tokenizer that disagrees with the config) is an error.
        out.par_chunks_mut(hidden)
            .zip(tokens)
            .try_for_each(|(out, token)| {
                let (Some(word), Some(kind), Some(position)) = (
                    row(&self.word, token.id, hidden),
                    row(&self.token_type, token.type_id, hidden),
                    row(&self.position, token.position, hidden),
                ) else {
                    candle_core::bail!("token {token:?} is outside the embedding tables");
                };
                for (((o, w), k), p) in out.iter_mut().zip(word).zip(kind).zip(position) {
                    *o = w + k + p;
                }
                kernels::layer_norm(
                    out,
                    &self.layer_norm.weight,
                    &self.layer_norm.bias,
                    self.layer_norm.eps,
                );
                Ok(())
            })
    }
}

struct Layer {
    /// query, key and value stacked: (hidden, 3·hidden).
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    activation: HiddenAct,
}

/// Buffers one forward pass reuses from layer to layer.
struct Scratch {
    qkv: Vec<f32>,
    context: Vec<f32>,
    intermediate: Vec<f32>,
}

impl Layer {
    fn load(config: &Config, vb: VarBuilder) -> Result<Self> {
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let attention = vb.pp("attention");
        Ok(Self {
            qkv: load_linear(
                &[(hidden, "query"), (hidden, "key"), (hidden, "value")],
                hidden,
                true,
                &attention.pp("self"),
            )?,
            attention_output: load_linear(
                &[(hidden, "")],
                hidden,
                true,
                &attention.pp("output.dense"),
            )?,
            attention_norm: LayerNorm::load(hidden, eps, attention.pp("output.LayerNorm"))?,
            intermediate: load_linear(
                &[(config.intermediate_size, "")],
                hidden,
                true,
                &vb.pp("intermediate.dense"),
            )?,
            output: load_linear(
                &[(hidden, "")],
                config.intermediate_size,
                true,
                &vb.pp("output.dense"),
            )?,
            output_norm: LayerNorm::load(hidden, eps, vb.pp("output.LayerNorm"))?,
            heads: config.num_attention_heads,
            head_dim: hidden / config.num_attention_heads,
            activation: config.hidden_act,
        })
    }

    /// `hidden` is the packed (tokens, hidden) activations of `sequences`; updated in place.
    fn forward(&self, hidden: &mut [f32], sequences: &[Sequence], scratch: &mut Scratch) {
        let tokens = hidden.len() / (self.heads * self.head_dim);
        scratch.qkv.resize(tokens * self.qkv.out_features, 0.0);
        self.qkv.forward_into(hidden, &mut scratch.qkv, false);
        scratch.context.resize(hidden.len(), 0.0);
        let heads = Heads {
            heads: self.heads,
            kv_heads: self.heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
        };
        packed::attention(
            &scratch.qkv,
            sequences,
            &heads,
            &|_, _| {},
            &mut scratch.context,
        );

        // hidden = LayerNorm(hidden + context·W + b), in place: the residual is the product's
        // starting value.
        self.attention_output
            .forward_into(&scratch.context, hidden, true);
        self.attention_norm.forward_rows(hidden);

        scratch
            .intermediate
            .resize(tokens * self.intermediate.out_features, 0.0);
        self.intermediate
            .forward_into(hidden, &mut scratch.intermediate, false);
        match self.activation {
            HiddenAct::Gelu => kernels::gelu_erf_in_place(&mut scratch.intermediate),
            HiddenAct::GeluApproximate => scratch
                .intermediate
                .par_iter_mut()
                .for_each(|x| *x = kernels::gelu_tanh(*x)),
            HiddenAct::Relu => scratch
                .intermediate
                .par_iter_mut()
                .for_each(|x| *x = x.max(0.0)),
        }

        // hidden = LayerNorm(hidden + intermediate·W + b)
        self.output
            .forward_into(&scratch.intermediate, hidden, true);
        self.output_norm.forward_rows(hidden);
    }
}

/// One token of the packed batch.
#[derive(Debug, Clone, Copy)]
struct PackedToken {
    id: u32,
    type_id: u32,
    position: u32,
}

/// The BERT encoder without pooler: token ids in, last hidden states out.
pub(crate) struct BertEncoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    hidden_size: usize,
    scratch: Scratch,
    /// The encoder's own threads: `--threads` bounds it, and it never waits on another
    /// engine's work in rayon's global pool.
    pool: rayon::ThreadPool,
}

impl BertEncoder {
    /// `vb` is rooted where `embeddings.*` and `encoder.layer.*` live (after any `bert.` prefix).
    /// `threads` is the forward pass's thread count (0: one per core).
    pub(crate) fn load(vb: VarBuilder, config: &Config, threads: usize) -> Result<Self> {
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("kiln-bert-{index}"))
            .build()
            .map_err(candle_core::Error::wrap)?;
        Ok(Self {
            embeddings,
            layers,
            hidden_size: config.hidden_size,
            pool,
            scratch: Scratch {
                qkv: Vec::new(),
                context: Vec::new(),
                intermediate: Vec::new(),
            },
        })
    }

    /// `token_ids` and `type_ids` are (batch, len) u32, right-padded; `lengths` holds each
    /// sequence's real token count. Returns (batch, len, hidden); padding positions hold zeros.
    pub(crate) fn forward(
        &mut self,
        token_ids: &Tensor,
        type_ids: &Tensor,
        lengths: &[usize],
    ) -> Result<Tensor> {
        let (batch, len) = token_ids.dims2()?;
        if lengths.len() != batch || lengths.iter().any(|&l| l > len) || len == 0 {
            candle_core::bail!("sequence lengths {lengths:?} do not fit a ({batch}, {len}) batch");
        }
        let ids = token_ids.flatten_all()?.to_vec1::<u32>()?;
        let types = type_ids.flatten_all()?.to_vec1::<u32>()?;
        let sequences = packed::pack(lengths);
        let tokens: Vec<PackedToken> = sequences
            .iter()
            .enumerate()
            .flat_map(|(index, sequence)| {
                (0..sequence.length).map(move |position| (index * len + position, position))
            })
            .map(|(at, position)| PackedToken {
                id: ids[at],
                type_id: types[at],
                position: position as u32,
            })
            .collect();
        let hidden_size = self.hidden_size;
        let mut hidden = vec![0.0f32; tokens.len() * hidden_size];
        let Self {
            embeddings,
            layers,
            scratch,
            pool,
            ..
        } = self;
        pool.install(|| -> Result<()> {
            embeddings.forward_into(&tokens, &mut hidden)?;
            for layer in layers.iter() {
                layer.forward(&mut hidden, &sequences, scratch);
            }
            Ok(())
        })?;
        let padded = packed::unpack(&hidden, &sequences, len, hidden_size);
        Tensor::from_vec(padded, (batch, len, hidden_size), &Device::Cpu)
    }
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
            .map(|(&x, &e)| (f64::from(kernels::erf(x as f32)) - e).abs())
            .fold(0.0f64, f64::max);
        assert!(worst < 1e-6, "worst erf error {worst}");
    }

    #[test]
    fn gelu_matches_candle() {
        let xs = Tensor::arange(-800i64, 800, &candle_core::Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t / 100.0)
            .expect("inputs");
        let mut ours = xs.to_vec1::<f32>().expect("values");
        kernels::gelu_erf_in_place(&mut ours);
        let theirs = xs
            .gelu_erf()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("gelu");
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let tanh_theirs = xs.gelu().and_then(|t| t.to_vec1::<f32>()).expect("gelu");
        let xs = xs.to_vec1::<f32>().expect("values");
        for (x, b) in xs.iter().zip(&tanh_theirs) {
            let a = kernels::gelu_tanh(*x);
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
