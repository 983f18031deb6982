//! The audio encoder: two convolutions, sinusoidal positions, pre-norm attention blocks, on
//! Kiln's kernels (`kiln-kernels`) over plain slices: the convolutions are matrix products over
//! overlapping rows of the input (no im2col copy), the linear layers int8 where the CPU has VNNI
//! ([`Projection`]), attention per block of query frames with every head in one task.

use candle_core::{Device, Tensor};
use candle_transformers::models::whisper::Config;
use kiln_kernels::{self as kernels, MatrixRef};
use rayon::prelude::*;

use super::{Norm, Projection, Weights};
use crate::AsrError;

/// Query frames per attention task: 1500 frames make 16 tasks, enough to balance the threads.
const QUERY_BLOCK: usize = 96;

struct Block {
    attn_ln: Norm,
    /// query (pre-scaled), key and value: d → 3d.
    qkv: Projection,
    out: Projection,
    mlp_ln: Norm,
    fc1: Projection,
    fc2: Projection,
}

/// A 1-D convolution of kernel 3, padding 1, as one product: output frame t reads input
/// frames s·t − 1 ..= s·t + 1, which are 3 consecutive rows of the (frame, channel) input.
struct Conv {
    /// ((tap, in channel), out channel).
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
}

impl Conv {
    fn load(w: &mut Weights, name: &str, stride: usize) -> std::result::Result<Self, AsrError> {
        let weight = w.take(&format!("model.encoder.{name}.weight"))?;
        let bias: Vec<f32> = w.take(&format!("model.encoder.{name}.bias"))?.to_vec1()?;
        let (out_channels, in_channels, taps) = weight.dims3()?;
        if taps != 3 {
            return Err(AsrError::Model(format!("{name} has kernel {taps}, not 3")));
        }
        let values: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        let mut weight_t = vec![0f32; values.len()];
        for c in 0..out_channels {
            for i in 0..in_channels {
                for k in 0..taps {
                    weight_t[(k * in_channels + i) * out_channels + c] =
                        values[(c * in_channels + i) * taps + k];
                }
            }
        }
        Ok(Self {
            weight_t,
            bias,
            in_channels,
            out_channels,
            stride,
        })
    }

    /// `padded`: the input (frames + 2, in channels) with a zero frame before and after;
    /// returns (⌈frames / stride⌉, out channels).
    fn forward(&self, padded: &[f32], frames: usize) -> Vec<f32> {
        let out_frames = frames.div_ceil(self.stride);
        let mut out: Vec<f32> = Vec::with_capacity(out_frames * self.out_channels);
        for _ in 0..out_frames {
            out.extend_from_slice(&self.bias);
        }
        kernels::matmul(
            MatrixRef {
                data: padded,
                rows: out_frames,
                cols: 3 * self.in_channels,
                row_stride: self.stride * self.in_channels,
                col_stride: 1,
            },
            MatrixRef::row_major(&self.weight_t, 3 * self.in_channels, self.out_channels),
            &mut out,
            self.out_channels,
            1.0,
            true,
            kernels::threads(),
        );
        out
    }
}

pub(crate) struct Encoder {
    conv1: Conv,
    conv2: Conv,
    /// (frames, d).
    positions: Vec<f32>,
    blocks: Vec<Block>,
    ln_post: Norm,
    heads: usize,
    d_model: usize,
}

/// OpenAI's `sinusoids()`, computed as candle-transformers computes it (the stored table is the
/// same function rounded to fp16): (length, channels), sines then cosines.
fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let increment = 10000f32.ln() / (half - 1) as f32;
    let inverse: Vec<f32> = (0..half).map(|i| (i as f32 * -increment).exp()).collect();
    let mut table = Vec::with_capacity(length * channels);
    for t in 0..length {
        table.extend(inverse.iter().map(|f| (t as f32 * f).sin()));
        table.extend(inverse.iter().map(|f| (t as f32 * f).cos()));
    }
    table
}

/// Working buffers of one forward pass, reused by every block.
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
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
                    attn_ln: Norm::load(w, &format!("{p}.self_attn_layer_norm"))?,
                    qkv: Projection::load(
                        w,
                        &[
                            format!("{a}.q_proj"),
                            format!("{a}.k_proj"),
                            format!("{a}.v_proj"),
                        ],
                        &[scale],
                    )?,
                    out: Projection::load(w, &[format!("{a}.out_proj")], &[])?,
                    mlp_ln: Norm::load(w, &format!("{p}.final_layer_norm"))?,
                    fc1: Projection::load(w, &[format!("{p}.fc1")], &[])?,
                    fc2: Projection::load(w, &[format!("{p}.fc2")], &[])?,
                })
            })
            .collect::<std::result::Result<Vec<_>, AsrError>>()?;
        // Positions are computed, not read (as candle-transformers does); drop the stored table.
        let _ = w.take_opt("model.encoder.embed_positions.weight");
        Ok(Self {
            conv1: Conv::load(w, "conv1", 1)?,
            conv2: Conv::load(w, "conv2", 2)?,
            positions: sinusoids(cfg.max_source_positions, cfg.d_model),
            blocks,
            ln_post: Norm::load(w, "model.encoder.layer_norm")?,
            heads,
            d_model: cfg.d_model,
        })
    }

    /// `mel`: (1, mel bins, frames) → audio features (frames / 2, d). `keep_going` is asked
    /// before each block (a tenth of the pass or less), so a caller that stops waiting (a live
    /// interim overtaken by its final) frees the model within one block.
    pub fn forward(
        &self,
        mel: &Tensor,
        keep_going: &dyn Fn() -> bool,
    ) -> std::result::Result<Tensor, AsrError> {
        let (_, bins, frames) = mel.dims3()?;
        if bins != self.conv1.in_channels {
            return Err(AsrError::Model(format!(
                "{bins} mel bins for a model of {}",
                self.conv1.in_channels
            )));
        }
        let d = self.d_model;
        let out_frames = frames.div_ceil(2);
        if out_frames * d > self.positions.len() {
            return Err(AsrError::Model(format!(
                "{frames} mel frames exceed the encoder's positions"
            )));
        }
        // (frames + 2, bins): frame-major with a zero frame at each end.
        let by_bin: Vec<f32> = mel.flatten_all()?.to_vec1()?;
        let mut padded = vec![0f32; (frames + 2) * bins];
        for (b, row) in by_bin.chunks_exact(frames).enumerate() {
            for (t, &v) in row.iter().enumerate() {
                padded[(t + 1) * bins + b] = v;
            }
        }
        let mut hidden = vec![0f32; d];
        hidden.extend(self.conv1.forward(&padded, frames));
        hidden.extend(std::iter::repeat_n(0f32, d));
        gelu_in_place(&mut hidden[d..(frames + 1) * d]);
        let mut x = self.conv2.forward(&hidden, frames);
        gelu_in_place(&mut x);
        x.par_chunks_mut(d)
            .zip(self.positions.par_chunks(d))
            .for_each(|(row, position)| row.iter_mut().zip(position).for_each(|(v, p)| *v += p));

        let mut scratch = Scratch {
            normed: vec![0f32; x.len()],
            qkv: vec![0f32; 3 * x.len()],
            attended: vec![0f32; x.len()],
            hidden: Vec::new(),
        };
        for block in &self.blocks {
            if !keep_going() {
                return Err(AsrError::Stopped);
            }
            self.block_forward(block, &mut x, &mut scratch);
        }
        self.ln_post.apply(&mut x);
        Ok(Tensor::from_vec(x, (out_frames, d), &Device::Cpu)?)
    }

    fn block_forward(&self, block: &Block, x: &mut [f32], s: &mut Scratch) {
        let d = self.d_model;
        let frames = x.len() / d;
        s.normed.copy_from_slice(x);
        block.attn_ln.apply(&mut s.normed);
        block.qkv.forward_into(&s.normed, &mut s.qkv, false);
        attention(&s.qkv, &mut s.attended, frames, self.heads, d);
        block.out.forward_into(&s.attended, x, true);

        s.normed.copy_from_slice(x);
        block.mlp_ln.apply(&mut s.normed);
        s.hidden.resize(frames * block.fc1.out_features(), 0.0);
        block.fc1.forward_into(&s.normed, &mut s.hidden, false);
        gelu_in_place(&mut s.hidden);
        block.fc2.forward_into(&s.hidden, x, true);
    }
}

/// Self-attention of every frame over every frame: `qkv` (frames, 3d) holds the (pre-scaled)
/// queries, the keys and the values; `out` (frames, d) gets each head's result in its columns.
fn attention(qkv: &[f32], out: &mut [f32], frames: usize, heads: usize, d: usize) {
    let head_dim = d / heads;
    out.par_chunks_mut(QUERY_BLOCK * d)
        .enumerate()
        .for_each_init(Vec::new, |scores, (block, out)| {
            let first = block * QUERY_BLOCK;
            let queries = out.len() / d;
            scores.resize(queries * frames, 0f32);
            for h in 0..heads {
                let column = h * head_dim;
                kernels::matmul(
                    MatrixRef {
                        data: &qkv[first * 3 * d + column..],
                        rows: queries,
                        cols: head_dim,
                        row_stride: 3 * d,
                        col_stride: 1,
                    },
                    MatrixRef {
                        data: &qkv[d + column..],
                        rows: head_dim,
                        cols: frames,
                        row_stride: 1,
                        col_stride: 3 * d,
                    },
                    scores,
                    frames,
                    1.0,
                    false,
                    1,
                );
                kernels::softmax_rows(scores, frames);
                kernels::matmul(
                    MatrixRef::row_major(scores, queries, frames),
                    MatrixRef {
                        data: &qkv[2 * d + column..],
                        rows: frames,
                        cols: head_dim,
                        row_stride: 3 * d,
                        col_stride: 1,
                    },
                    &mut out[column..],
                    d,
                    1.0,
                    false,
                    1,
                );
            }
        });
}

/// Whisper's GELU (erf, as OpenAI's model and CTranslate2 compute it), across threads.
fn gelu_in_place(xs: &mut [f32]) {
    kernels::gelu_erf_in_place(xs);
}
