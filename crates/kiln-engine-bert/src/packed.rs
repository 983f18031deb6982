//! What Kiln's BERT and Gemma encoders share on top of [`crate::kernels`]: the packed-row layout
//! of a padded batch (real tokens only, one sequence after another), attention per sequence and
//! head over that layout, and loading stacked linear layers from safetensors.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::kernels::{self, Linear, MatrixRef};

/// Where a sequence's tokens sit among the packed rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sequence {
    pub first_row: usize,
    pub length: usize,
}

/// The packed layout of a right-padded batch whose rows hold `lengths` real tokens. A sequence
/// without tokens still computes its first position, so that pooling reads finite values.
pub(crate) fn pack(lengths: &[usize]) -> Vec<Sequence> {
    let mut first_row = 0;
    lengths
        .iter()
        .map(|&length| {
            let sequence = Sequence {
                first_row,
                length: length.max(1),
            };
            first_row += sequence.length;
            sequence
        })
        .collect()
}

/// Each packed row's position in its sequence.
pub(crate) fn positions(sequences: &[Sequence]) -> Vec<usize> {
    sequences
        .iter()
        .flat_map(|sequence| 0..sequence.length)
        .collect()
}

/// Packed (tokens, width) rows laid back into a (batch, len, width) batch, zeros at padding.
pub(crate) fn unpack(packed: &[f32], sequences: &[Sequence], len: usize, width: usize) -> Vec<f32> {
    let mut padded = vec![0.0f32; sequences.len() * len * width];
    for (index, sequence) in sequences.iter().enumerate() {
        let rows = sequence.first_row * width..(sequence.first_row + sequence.length) * width;
        let start = index * len * width;
        padded[start..start + rows.len()].copy_from_slice(&packed[rows]);
    }
    padded
}

/// The heads of one attention layer. Each packed row of its projections holds the `heads` query
/// heads, then the `kv_heads` key heads, then the `kv_heads` value heads, each `head_dim` wide;
/// query heads share key/value heads in equal groups.
pub(crate) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// What every query·key product is multiplied by.
    pub scale: f32,
}

/// Scaled dot-product attention of every sequence and query head over that sequence's own
/// tokens, into `context` (tokens, heads·head_dim). `adjust_scores(query, row)` sees each query's
/// scaled scores before the softmax (softcaps, windows: a score set to -∞ is hidden).
pub(crate) fn attention(
    qkv: &[f32],
    sequences: &[Sequence],
    shape: &Heads,
    adjust_scores: &(dyn Fn(usize, &mut [f32]) + Sync),
    context: &mut [f32],
) {
    let Heads {
        heads,
        kv_heads,
        head_dim,
        scale,
    } = *shape;
    let stride = (heads + 2 * kv_heads) * head_dim;
    let groups = heads / kv_heads;
    let tasks: Vec<(Sequence, usize)> = sequences
        .iter()
        .flat_map(|&sequence| (0..heads).map(move |head| (sequence, head)))
        .collect();
    // Each task answers its (length, head_dim) block; the blocks are then laid into place.
    let blocks: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(Sequence { first_row, length }, head)| {
            let kv_head = head / groups;
            let base = first_row * stride;
            let queries = MatrixRef {
                data: &qkv[base + head * head_dim..],
                rows: length,
                cols: head_dim,
                row_stride: stride,
                col_stride: 1,
            };
            // Keys transposed: (head_dim, length).
            let keys_t = MatrixRef {
                data: &qkv[base + (heads + kv_head) * head_dim..],
                rows: head_dim,
                cols: length,
                row_stride: 1,
                col_stride: stride,
            };
            let mut scores = vec![0.0; length * length];
            kernels::matmul(queries, keys_t, &mut scores, length, scale, false, 1);
            for (query, row) in scores.chunks_exact_mut(length).enumerate() {
                adjust_scores(query, row);
            }
            kernels::softmax_rows(&mut scores, length);
            let values = MatrixRef {
                data: &qkv[base + (heads + kv_heads + kv_head) * head_dim..],
                rows: length,
                cols: head_dim,
                row_stride: stride,
                col_stride: 1,
            };
            let mut block = vec![0.0; length * head_dim];
            let weights = MatrixRef::row_major(&scores, length, length);
            kernels::matmul(weights, values, &mut block, head_dim, 1.0, false, 1);
            block
        })
        .collect();
    let width = heads * head_dim;
    for (&(sequence, head), block) in tasks.iter().zip(blocks) {
        for (position, values) in block.chunks_exact(head_dim).enumerate() {
            let start = (sequence.first_row + position) * width + head * head_dim;
            context[start..start + head_dim].copy_from_slice(values);
        }
    }
}

/// One linear layer (`parts` of one entry named ""), or several reading the same input (query,
/// key and value; gate and up) stacked along their outputs, so that one product replaces several.
/// `parts` are (out_features, name under `vb`); without `bias` the layer adds zeros.
pub(crate) fn load_linear(
    parts: &[(usize, &str)],
    in_features: usize,
    bias: bool,
    vb: &VarBuilder,
) -> Result<Linear> {
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
            biases.push(part.get(out_features, "bias")?.to_vec1::<f32>()?);
        }
    }
    let out_features: usize = parts.iter().map(|(out, _)| out).sum();
    Ok(Linear {
        weight_t: Tensor::cat(&weights, 0)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?,
        bias: if bias {
            biases.concat()
        } else {
            vec![0.0; out_features]
        },
        in_features,
        out_features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_one_row_for_an_empty_sequence() {
        let sequences = pack(&[2, 0, 3]);
        let layout: Vec<(usize, usize)> =
            sequences.iter().map(|s| (s.first_row, s.length)).collect();
        assert_eq!(layout, vec![(0, 2), (2, 1), (3, 3)]);
        assert_eq!(positions(&sequences), vec![0, 1, 0, 0, 1, 2]);
        let packed: Vec<f32> = (0..6).map(|row| row as f32).collect();
        assert_eq!(
            unpack(&packed, &sequences, 3, 1),
            vec![0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 3.0, 4.0, 5.0]
        );
    }
}
