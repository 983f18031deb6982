//! The decoder's weights as its steps read them: [`StepLinear`] for the projections and
//! [`Table`] for the token embeddings, which are also the output projection.

use candle_core::{Result, Tensor};
use kiln_kernels::int8::Int8Linear;

use super::matvec::{f16_to_f32, HalfRows};
use super::{Linear, Weights};
use crate::AsrError;

/// A decoder projection. Where the CPU has VNNI, int8 for every row count (the prompt, the
/// alignment pass, one-row steps, beams). Elsewhere the f32 product for many rows and an f16
/// matrix-vector product for a few (see [`super::matvec`]), when f16 holds the weights exactly.
pub(super) enum StepLinear {
    Int8(Int8Linear),
    Float {
        full: kiln_kernels::Linear,
        half: Option<HalfRows>,
    },
}

/// Rows up to which the f16 product (weights read once for all rows) beats the f32 one.
const MAX_HALF_ROWS: usize = 8;

impl StepLinear {
    pub fn fused(
        w: &mut Weights,
        prefixes: &[String],
        scales: &[f64],
    ) -> std::result::Result<Self, AsrError> {
        let full = Linear::fused(w, prefixes, scales)?;
        Ok(Self::new(w, full)?)
    }

    pub fn load(w: &mut Weights, prefix: &str) -> std::result::Result<Self, AsrError> {
        let full = Linear::load(w, prefix)?;
        Ok(Self::new(w, full)?)
    }

    fn new(w: &Weights, full: Linear) -> Result<Self> {
        let (in_features, out_features) = full.weight_t.dims2()?;
        let values: Vec<f32> = full.weight_t.t()?.contiguous()?.flatten_all()?.to_vec1()?;
        let bias: Vec<f32> = full.bias.to_vec1()?;
        if let Some(int8) = w.int8(&values, &bias, in_features, out_features) {
            return Ok(StepLinear::Int8(int8));
        }
        Ok(StepLinear::Float {
            half: HalfRows::exact(&values, out_features, in_features),
            full: kiln_kernels::Linear {
                weight_t: full.weight_t.flatten_all()?.to_vec1()?,
                bias,
                in_features,
                out_features,
            },
        })
    }

    pub fn out_features(&self) -> usize {
        match self {
            StepLinear::Int8(int8) => int8.out_features(),
            StepLinear::Float { full, .. } => full.out_features,
        }
    }

    /// `out = start + xs·W + b` for `n` rows (`start`: `out` on entry when `add_to_output`).
    pub fn forward_into(&self, xs: &[f32], n: usize, out: &mut [f32], add_to_output: bool) {
        match self {
            StepLinear::Int8(int8) => int8.forward_into(xs, out, add_to_output),
            StepLinear::Float {
                half: Some(half),
                full,
            } if n <= MAX_HALF_ROWS => {
                let mut product = vec![0f32; out.len()];
                if n == 1 {
                    half.matvec(xs, &mut product);
                } else {
                    half.matmul_rows(xs, n, &mut product);
                }
                for (row, product) in out
                    .chunks_exact_mut(full.out_features)
                    .zip(product.chunks_exact(full.out_features))
                {
                    for ((o, p), b) in row.iter_mut().zip(product).zip(&full.bias) {
                        *o = if add_to_output { *o + p + b } else { p + b };
                    }
                }
            }
            StepLinear::Float { full, .. } => full.forward_into(xs, out, add_to_output),
        }
    }
}

/// The embedding table, also the output projection: rows read as f16 when that is exact (see
/// [`super::matvec`]), else f32; logits from an int8 copy where the CPU has VNNI.
pub(super) struct Table {
    rows: TableRows,
    int8: Option<Int8Linear>,
}

enum TableRows {
    Half(HalfRows),
    Full {
        values: Vec<f32>,
        rows: usize,
        cols: usize,
    },
}

impl Table {
    pub fn new(w: &mut Weights, name: &str) -> std::result::Result<Self, AsrError> {
        let table: Tensor = w.take(name)?;
        let (rows, cols) = table.dims2()?;
        let values: Vec<f32> = table.flatten_all()?.to_vec1()?;
        let int8 = w.int8(&values, &[], cols, rows);
        Ok(Self {
            int8,
            rows: match HalfRows::exact(&values, rows, cols) {
                Some(half) => TableRows::Half(half),
                None => TableRows::Full { values, rows, cols },
            },
        })
    }

    /// Appends token `t`'s embedding to `out`.
    pub fn push_row(&self, t: usize, out: &mut Vec<f32>) -> Result<()> {
        match &self.rows {
            TableRows::Half(half) => match half.row(t) {
                Some(row) => out.extend(row.iter().map(|&h| f16_to_f32(h))),
                None => candle_core::bail!("token {t} is outside the vocabulary"),
            },
            TableRows::Full { values, rows, cols } if t < *rows => {
                out.extend_from_slice(&values[t * cols..(t + 1) * cols]);
            }
            TableRows::Full { .. } => candle_core::bail!("token {t} is outside the vocabulary"),
        }
        Ok(())
    }

    /// `hidden` (n, d) times the table's transpose: (n, vocabulary), row-major.
    pub fn logits(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        if let Some(int8) = &self.int8 {
            let mut logits = vec![0f32; n * int8.out_features()];
            int8.forward_into(hidden, &mut logits, false);
            return logits;
        }
        match &self.rows {
            TableRows::Half(table) => {
                let mut logits = vec![0f32; n * table.rows()];
                if n == 1 {
                    table.matvec(hidden, &mut logits);
                } else {
                    table.matmul_rows(hidden, n, &mut logits);
                }
                logits
            }
            TableRows::Full { values, rows, cols } => {
                let mut logits = vec![0f32; n * rows];
                kiln_kernels::matmul(
                    kiln_kernels::MatrixRef::row_major(hidden, n, *cols),
                    kiln_kernels::MatrixRef {
                        data: values,
                        rows: *cols,
                        cols: *rows,
                        row_stride: 1,
                        col_stride: *cols,
                    },
                    &mut logits,
                    *rows,
                    1.0,
                    false,
                    kiln_kernels::threads(),
                );
                logits
            }
        }
    }
}
