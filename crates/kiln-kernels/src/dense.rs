//! Dense f32 kernels on plain row-major slices: matrix products on the `gemm` crate (AVX-512
//! where present), everything else fused into one pass per row and split across rayon's threads. Working on slices rather than tensors lets a bias, a residual
//! and a normalization share one pass over memory, and attention skip padding entirely.

use gemm::Parallelism;
use rayon::prelude::*;

/// Rows per rayon task in the row-wise passes: enough work to be worth a task.
const ROWS_PER_TASK: usize = 16;

/// A linear layer's weights: `weight_t` is (in, out), row-major.
pub struct Linear {
    pub weight_t: Vec<f32>,
    pub bias: Vec<f32>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    /// `out = start + xs·W + b`, where `xs` is (rows, in) and `out` is (rows, out): `start` is
    /// what `out` holds on entry when `add_to_output` (a residual), zero otherwise.
    pub fn forward_into(&self, xs: &[f32], out: &mut [f32], add_to_output: bool) {
        let rows = xs.len() / self.in_features;
        assert_eq!(xs.len(), rows * self.in_features, "input is whole rows");
        assert_eq!(out.len(), rows * self.out_features, "output is whole rows");
        let bias = &self.bias;
        out.par_chunks_mut(self.out_features * ROWS_PER_TASK)
            .for_each(|block| {
                for row in block.chunks_exact_mut(bias.len()) {
                    if add_to_output {
                        row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                    } else {
                        row.copy_from_slice(bias);
                    }
                }
            });
        matmul(
            MatrixRef::row_major(xs, rows, self.in_features),
            MatrixRef::row_major(&self.weight_t, self.in_features, self.out_features),
            out,
            self.out_features,
            1.0,
            true,
            threads(),
        );
    }
}

/// A read-only matrix view: `rows × cols` starting at `data[0]`, element (r, c) at
/// `r·row_stride + c·col_stride`.
#[derive(Clone, Copy)]
pub struct MatrixRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatrixRef<'a> {
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The last element's index plus one: how much of `data` the view reads.
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
    }
}

/// `out = (accumulate ? out : 0) + scale·lhs·rhs`, with `out` row-major at `out_row_stride`.
pub fn matmul(
    lhs: MatrixRef,
    rhs: MatrixRef,
    out: &mut [f32],
    out_row_stride: usize,
    scale: f32,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions agree");
    if m == 0 || n == 0 {
        return;
    }
    // The bounds gemm relies on, checked here so that the unsafe call below reads and writes
    // only inside these slices.
    assert!(lhs.extent() <= lhs.data.len() && rhs.extent() <= rhs.data.len());
    assert!(n <= out_row_stride && (m - 1) * out_row_stride + n <= out.len());
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every index gemm touches is inside the slices, as checked above; `out` does not
    // alias the inputs (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The threads the encoder's passes use: rayon's pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// LayerNorm of every `weight.len()`-wide row of `xs`, in place.
pub fn layer_norm_rows(xs: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let width = weight.len();
    if xs.len() <= width * ROWS_PER_TASK {
        // One task's worth (a decoder step): no threads to wake.
        xs.chunks_exact_mut(width)
            .for_each(|row| layer_norm(row, weight, bias, eps));
        return;
    }
    xs.par_chunks_mut(width * ROWS_PER_TASK).for_each(|block| {
        for row in block.chunks_exact_mut(width) {
            layer_norm(row, weight, bias, eps);
        }
    });
}

/// Lanes of the partial sums in the row passes: one AVX-512 vector, so that the sums
/// vectorize (a single running sum would have to be added in order).
const LANES: usize = 16;

/// The sum of `xs`, added lane-wise in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut sums = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        for (sum, &x) in sums.iter_mut().zip(chunk) {
            *sum += f(x);
        }
    }
    sums.iter().sum::<f32>() + rest
}

wide_dispatch! {
    /// LayerNorm of one row, in place.
    pub fn layer_norm(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let width = row.len() as f32;
        let mean = lane_sum(row, |x| x) / width;
        let variance = lane_sum(row, |x| (x - mean) * (x - mean)) / width;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *x = (*x - mean) * inverse * w + b;
        }
    }
}

/// Softmax of each `width`-wide row, in place.
pub fn softmax_rows(xs: &mut [f32], width: usize) {
    for row in xs.chunks_exact_mut(width) {
        softmax(row);
    }
}

wide_dispatch! {
    /// Softmax of one row, in place; the exponentials are [`exp`], which vectorizes.
    pub fn softmax(row: &mut [f32]) {
        let mut maxes = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        for chunk in chunks {
            for (m, &x) in maxes.iter_mut().zip(chunk) {
                *m = if x > *m { x } else { *m };
            }
        }
        max = maxes.iter().fold(max, |m, &x| if x > m { x } else { m });
        let mut sums = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (sum, x) in sums.iter_mut().zip(chunk.iter_mut()) {
                *x = exp(*x - max);
                *sum += *x;
            }
        }
        let mut sum = 0.0;
        for x in chunks.into_remainder() {
            *x = exp(*x - max);
            sum += *x;
        }
        let inverse = 1.0 / (sum + sums.iter().sum::<f32>());
        row.iter_mut().for_each(|x| *x *= inverse);
    }
}

wide_dispatch! {
    /// One query against keys stored transposed: `scores[t] = Σₑ q[e]·keys_t[e·stride + t]`
    /// for every `t < scores.len()` (each key row is read once, in order).
    pub fn dot_transposed(q: &[f32], keys_t: &[f32], stride: usize, scores: &mut [f32]) {
        scores.fill(0.0);
        let len = scores.len();
        for (e, &qe) in q.iter().enumerate() {
            let row = &keys_t[e * stride..e * stride + len];
            for (s, &k) in scores.iter_mut().zip(row) {
                *s += qe * k;
            }
        }
    }
}

wide_dispatch! {
    /// One query against keys stored by token: `scores[t] = q · keys[t·stride..][..q.len()]`.
    pub fn dot_rows(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) {
        for (t, score) in scores.iter_mut().enumerate() {
            let key = &keys[t * stride..t * stride + q.len()];
            let mut sums = [0f32; LANES];
            let (head, tail) = key.split_at(key.len() / LANES * LANES);
            for (chunk, q_chunk) in head.chunks_exact(LANES).zip(q.chunks_exact(LANES)) {
                for ((sum, &k), &x) in sums.iter_mut().zip(chunk).zip(q_chunk) {
                    *sum += k * x;
                }
            }
            let rest: f32 = tail.iter().zip(&q[head.len()..]).map(|(k, x)| k * x).sum();
            *score = sums.iter().sum::<f32>() + rest;
        }
    }
}

wide_dispatch! {
    /// The weighted sum of value rows: `out = Σₜ weights[t]·values[t·stride..][..out.len()]`.
    pub fn weighted_rows(weights: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
        out.fill(0.0);
        let width = out.len();
        for (t, &w) in weights.iter().enumerate() {
            let row = &values[t * stride..t * stride + width];
            for (o, &v) in out.iter_mut().zip(row) {
                *o += w * v;
            }
        }
    }
}

/// Rounds to the nearest integer (ties to even) by adding and taking away 1.5·2²³, which
/// leaves no fraction bits: plain adds, which vectorize on any x86-64, where `round` and `floor`
/// are libm calls without SSE4.1. Exact for |x| < 2²².
#[inline(always)]
pub fn round_nearest(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// `eˣ` to about 2 ulp, without branches or libm calls, so that a loop over a slice becomes
/// vector code (libm's `expf` is called one element at a time). Cephes' polynomial after
/// reducing x by whole multiples of ln 2; below −87 it is (almost) 0, above 88 saturates.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = round_nearest(x * LOG2E);
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ from the exponent bits; n is in [-126, 127] after the clamp.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Erf GELU of every element, in place, split across threads.
pub fn gelu_erf_in_place(xs: &mut [f32]) {
    const PER_TASK: usize = 16 * 1024;
    if xs.len() <= PER_TASK {
        return gelu_erf_slice(xs);
    }
    xs.par_chunks_mut(PER_TASK).for_each(gelu_erf_slice);
}

wide_dispatch! {
    /// Erf GELU of every element of one slice, in place.
    pub fn gelu_erf_slice(xs: &mut [f32]) {
        xs.iter_mut().for_each(|x| *x = gelu(*x));
    }
}

/// Erf GELU, `x·(1 + erf(x/√2))/2`, as transformers' `gelu`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// tanh-approximated GELU (`gelu_new`, `gelu_pytorch_tanh`).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// erf in f32 to within a few ulp: Eigen's and XLA's rational approximation on [-4, 4] (beyond
/// which erf is ±1 in f32). candle's evaluates erf in f64 one element at a time, which cost as
/// much as the feed-forward products.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
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
    use crate::test_values::values;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn linear_adds_bias_and_residual() {
        let (rows, inputs, outputs) = (5, 7, 3);
        let xs = values(rows * inputs, 1);
        let weight_t = values(inputs * outputs, 2);
        let bias = values(outputs, 3);
        let residual = values(rows * outputs, 4);
        let linear = Linear {
            weight_t: weight_t.clone(),
            bias: bias.clone(),
            in_features: inputs,
            out_features: outputs,
        };
        let mut out = residual.clone();
        linear.forward_into(&xs, &mut out, true);
        let product = naive(&xs, &weight_t, rows, inputs, outputs);
        for (index, value) in out.iter().enumerate() {
            let expected = residual[index] + product[index] + bias[index % outputs];
            assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
        }
        let mut fresh = vec![f32::NAN; rows * outputs];
        linear.forward_into(&xs, &mut fresh, false);
        for (index, value) in fresh.iter().enumerate() {
            let expected = product[index] + bias[index % outputs];
            assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
        }
    }

    #[test]
    fn strided_matmul_matches_the_naive_product() {
        // lhs is every other column of a (4, 6) matrix; rhs is a transposed view.
        let (m, k, n) = (4, 3, 5);
        let wide = values(m * 6, 5);
        let lhs: Vec<f32> = (0..m * k)
            .map(|i| wide[(i / k) * 6 + (i % k) * 2])
            .collect();
        let rhs_t = values(n * k, 6);
        let rhs: Vec<f32> = (0..k * n).map(|i| rhs_t[(i % n) * k + i / n]).collect();
        let mut out = vec![0.0; m * 8];
        matmul(
            MatrixRef {
                data: &wide,
                rows: m,
                cols: k,
                row_stride: 6,
                col_stride: 2,
            },
            MatrixRef {
                data: &rhs_t,
                rows: k,
                cols: n,
                row_stride: 1,
                col_stride: k,
            },
            &mut out,
            8,
            0.5,
            false,
            2,
        );
        let expected = naive(&lhs, &rhs, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let (got, want) = (out[i * 8 + j], 0.5 * expected[i * n + j]);
                assert!((got - want).abs() < 1e-5, "({i}, {j}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn exp_matches_libm() {
        for i in -1000..=1000 {
            let x = i as f32 * 0.087;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= want * 4e-7,
                "exp({x}) = {got}, libm {want}"
            );
        }
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(-1e30) >= 0.0);
    }

    #[test]
    fn softmax_and_layer_norm_match_the_plain_formulas() {
        let row: Vec<f32> = values(37, 7).iter().map(|x| x * 20.0).collect();
        let mut soft = row.clone();
        softmax(&mut soft);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
        for (s, &x) in soft.iter().zip(&row) {
            let want = ((x - max) as f64).exp() / total;
            assert!((*s as f64 - want).abs() < 1e-6, "{s} vs {want}");
        }
        let (weight, bias) = (values(37, 8), values(37, 9));
        let mut normed = row.clone();
        layer_norm(&mut normed, &weight, &bias, 1e-5);
        let mean = row.iter().map(|&x| x as f64).sum::<f64>() / 37.0;
        let var = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / 37.0;
        for (i, n) in normed.iter().enumerate() {
            let want =
                (row[i] as f64 - mean) / (var + 1e-5).sqrt() * weight[i] as f64 + bias[i] as f64;
            assert!((*n as f64 - want).abs() < 1e-4, "{n} vs {want}");
        }
    }

    #[test]
    fn attention_row_helpers_match_plain_loops() {
        let (dh, len, stride) = (20, 7, 24);
        let q = values(dh, 10);
        let keys = values(len * stride, 11);
        let mut by_row = vec![0f32; len];
        dot_rows(&q, &keys, stride, &mut by_row);
        let transposed: Vec<f32> = (0..dh * len)
            .map(|i| keys[(i % len) * stride + i / len])
            .collect();
        let mut by_column = vec![0f32; len];
        dot_transposed(&q, &transposed, len, &mut by_column);
        for t in 0..len {
            let want: f32 = (0..dh).map(|e| q[e] * keys[t * stride + e]).sum();
            assert!((by_row[t] - want).abs() < 1e-5 && (by_column[t] - want).abs() < 1e-5);
        }
        let weights = values(len, 12);
        let mut out = vec![0f32; dh];
        weighted_rows(&weights, &keys, stride, &mut out);
        for (e, o) in out.iter().enumerate() {
            let want: f32 = (0..len).map(|t| weights[t] * keys[t * stride + e]).sum();
            assert!((o - want).abs() < 1e-5);
        }
    }
}
