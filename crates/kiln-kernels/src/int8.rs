//! Linear layers in int8 on AVX-512 VNNI, the scheme CTranslate2 (faster-whisper's engine) uses:
//! weights quantized once per output column (symmetric, scale = max|w| / 127), activations
//! quantized per row at each call, products accumulated exactly in i32 by `vpdpbusd` (64
//! multiply-adds per instruction, four times an f32 FMA's), then scaled back to f32 with the
//! bias (and a residual) added in the same pass.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so a row is stored as `q + 128` (q in
//! −127..=127) and the constant `128·Σₖ w[k][j]` is subtracted from each column's sum.
//!
//! [`Int8Linear::new`] returns `None` where the CPU lacks VNNI: callers keep their f32 path.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output columns in one vector of i32 sums.
const LANES: usize = 16;
/// Rows of one micro-tile (24 of the 32 vector registers hold sums).
const TILE_ROWS: usize = 12;
/// Columns of one micro-tile: two vectors.
const TILE_COLS: usize = 2 * LANES;
/// Multiply-adds below which a product runs on the calling thread.
const MIN_PARALLEL_WORK: usize = 2 << 20;
/// Rows per task when rows are split across threads.
const ROWS_PER_TASK: usize = 4 * TILE_ROWS;

/// Whether this CPU runs the int8 kernels.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x·W + b` with W in int8. The weights are packed for the kernel: for each block of 16
/// output columns, for each group of 4 inputs, the 16 columns' 4 bytes side by side (64 bytes,
/// one vector).
pub struct Int8Linear {
    in_features: usize,
    out_features: usize,
    /// `in_features` rounded up to a multiple of 4 (zero weights in the padding).
    padded_in: usize,
    packed: Vec<i8>,
    /// Per output column (padded to whole blocks): the dequantization scale and `128·Σₖ w`.
    column_scale: Vec<f32>,
    column_offset: Vec<i32>,
    bias: Vec<f32>,
}

/// A batch of rows quantized for [`Int8Linear`]: `q + 128` bytes, `padded_in` per row, and each
/// row's scale.
pub struct QuantizedRows {
    bytes: Vec<u8>,
    scales: Vec<f32>,
    width: usize,
    padded: usize,
}

impl QuantizedRows {
    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    pub fn width(&self) -> usize {
        self.width
    }
}

impl Int8Linear {
    /// From an (out, in) row-major weight (PyTorch's layout) and its bias (`out` values, or
    /// empty for none). `None` when the CPU has no VNNI or the shapes disagree.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        in_features: usize,
        out_features: usize,
    ) -> Option<Self> {
        if !supported() {
            return None;
        }
        Self::new_unchecked(weight, bias, in_features, out_features)
    }

    fn new_unchecked(
        weight: &[f32],
        bias: &[f32],
        in_features: usize,
        out_features: usize,
    ) -> Option<Self> {
        if in_features == 0
            || out_features == 0
            || weight.len() != in_features * out_features
            || !(bias.is_empty() || bias.len() == out_features)
        {
            return None;
        }
        let padded_in = in_features.div_ceil(4) * 4;
        let blocks = out_features.div_ceil(LANES);
        let groups = padded_in / 4;
        let mut packed = vec![0i8; blocks * groups * 64];
        let mut column_scale = vec![0f32; blocks * LANES];
        let mut column_offset = vec![0i32; blocks * LANES];
        for (j, row) in weight.chunks_exact(in_features).enumerate() {
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            let inverse = 1.0 / scale;
            let (block, lane) = (j / LANES, j % LANES);
            let mut sum = 0i32;
            for (k, &w) in row.iter().enumerate() {
                let q = crate::round_nearest(w * inverse).clamp(-127.0, 127.0) as i8;
                sum += q as i32;
                packed[(block * groups + k / 4) * 64 + lane * 4 + k % 4] = q;
            }
            column_scale[j] = scale;
            column_offset[j] = 128 * sum;
        }
        // Padded to whole blocks, as the column scales, so the epilogue reads whole vectors.
        let mut padded_bias = vec![0f32; blocks * LANES];
        padded_bias[..bias.len()].copy_from_slice(bias);
        let bias = padded_bias;
        Some(Self {
            in_features,
            out_features,
            padded_in,
            packed,
            column_scale,
            column_offset,
            bias,
        })
    }

    /// From an (in, out) row-major weight (`kernels::Linear::weight_t`'s layout).
    pub fn from_transposed(
        weight_t: &[f32],
        bias: &[f32],
        in_features: usize,
        out_features: usize,
    ) -> Option<Self> {
        if weight_t.len() != in_features * out_features {
            return None;
        }
        let mut weight = vec![0f32; weight_t.len()];
        for (k, row) in weight_t.chunks_exact(out_features).enumerate() {
            for (j, &w) in row.iter().enumerate() {
                weight[j * in_features + k] = w;
            }
        }
        Self::new(&weight, bias, in_features, out_features)
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Quantizes (rows, in) activations for [`Self::forward_quantized`]; one quantization can
    /// feed several layers of the same input width.
    pub fn quantize(&self, xs: &[f32]) -> QuantizedRows {
        quantize_rows(xs, self.in_features, self.padded_in)
    }

    /// `out = start + xs·W + b`, `xs` (rows, in), `out` (rows, out); `start` is what `out`
    /// holds on entry when `add_to_output` (a residual), zero otherwise.
    pub fn forward_into(&self, xs: &[f32], out: &mut [f32], add_to_output: bool) {
        let rows = self.quantize(xs);
        self.forward_quantized(&rows, out, add_to_output);
    }

    /// As [`Self::forward_into`], on rows [`Self::quantize`]d (by this layer or one of the same
    /// input width).
    pub fn forward_quantized(&self, xs: &QuantizedRows, out: &mut [f32], add_to_output: bool) {
        assert_eq!(xs.width, self.in_features, "input width");
        assert_eq!(xs.padded, self.padded_in, "input padding");
        let rows = xs.rows();
        assert_eq!(out.len(), rows * self.out_features, "output is whole rows");
        if rows == 0 {
            return;
        }
        let panels = self.out_features.div_ceil(TILE_COLS);
        // Few rows (a decoder step): split the columns across threads; many: split the rows.
        let row_tasks = rows.div_ceil(ROWS_PER_TASK);
        let column_tasks = if row_tasks >= 2 * crate::threads() {
            1
        } else {
            panels.min(4 * crate::threads())
        };
        let panels_per_task = panels.div_ceil(column_tasks);
        let out_ptr = SharedOut(out.as_mut_ptr());
        let run_task = |task: usize| {
            let (row_task, column_task) = (task / column_tasks, task % column_tasks);
            let first_row = row_task * ROWS_PER_TASK;
            let last_row = (first_row + ROWS_PER_TASK).min(rows);
            let first_panel = column_task * panels_per_task;
            let last_panel = (first_panel + panels_per_task).min(panels);
            for panel in first_panel..last_panel {
                let mut row = first_row;
                while row < last_row {
                    let tile = (last_row - row).min(TILE_ROWS);
                    // SAFETY: each task writes only its own rows × panels rectangle of
                    // `out`, whose bounds were checked above; tiles stay inside it.
                    unsafe { self.tile(xs, row, tile, panel, &out_ptr, add_to_output) };
                    row += tile;
                }
            }
        };
        let tasks = row_tasks * column_tasks;
        // A small product (one decoder step through a 512-wide layer) takes less time than
        // waking the other threads.
        if rows * self.padded_in * self.out_features < MIN_PARALLEL_WORK {
            (0..tasks).for_each(run_task);
        } else {
            (0..tasks).into_par_iter().for_each(run_task);
        }
    }

    /// One micro-tile: `tile` rows from `row`, the columns of `panel`.
    unsafe fn tile(
        &self,
        xs: &QuantizedRows,
        row: usize,
        tile: usize,
        panel: usize,
        out: &SharedOut,
        add_to_output: bool,
    ) {
        let first_column = panel * TILE_COLS;
        let columns = (self.out_features - first_column).min(TILE_COLS);
        let mut sums = [[0i32; TILE_COLS]; TILE_ROWS];
        self.dot_tile(xs, row, tile, panel, columns.div_ceil(LANES), &mut sums);
        let out_tile = out.0.add(row * self.out_features + first_column);
        #[cfg(target_arch = "x86_64")]
        if supported() {
            vnni::store_tile(
                &sums,
                &xs.scales[row..row + tile],
                &self.column_scale[first_column..],
                &self.column_offset[first_column..],
                &self.bias[first_column..],
                out_tile,
                self.out_features,
                columns,
                add_to_output,
            );
            return;
        }
        for (r, tile_sums) in sums.iter().enumerate().take(tile) {
            let row_scale = xs.scales[row + r];
            let out_row = out_tile.add(r * self.out_features);
            for (c, &sum) in tile_sums.iter().enumerate().take(columns) {
                let j = first_column + c;
                let value = (sum - self.column_offset[j]) as f32
                    * (row_scale * self.column_scale[j])
                    + self.bias[j];
                let slot = out_row.add(c);
                *slot = if add_to_output { *slot + value } else { value };
            }
        }
    }

    /// The i32 sums of one tile, by the VNNI kernel (or the portable one in tests).
    fn dot_tile(
        &self,
        xs: &QuantizedRows,
        row: usize,
        tile: usize,
        panel: usize,
        vectors: usize,
        sums: &mut [[i32; TILE_COLS]; TILE_ROWS],
    ) {
        let groups = self.padded_in / 4;
        let a = &xs.bytes[row * xs.padded..(row + tile) * xs.padded];
        let first_block = panel * 2;
        let b = &self.packed[first_block * groups * 64..(first_block + vectors) * groups * 64];
        #[cfg(target_arch = "x86_64")]
        if supported() {
            // SAFETY: the CPU has the features (checked); the slices hold `tile` rows of
            // `padded_in` bytes and `vectors` blocks of `groups` 64-byte groups.
            unsafe { vnni::dot_tile(a, xs.padded, tile, b, groups, vectors, sums) };
            return;
        }
        portable_dot_tile(a, xs.padded, tile, b, groups, vectors, sums);
    }
}

/// The reference the VNNI kernel is tested against (and the path where it cannot run).
fn portable_dot_tile(
    a: &[u8],
    stride: usize,
    tile: usize,
    b: &[i8],
    groups: usize,
    vectors: usize,
    sums: &mut [[i32; TILE_COLS]; TILE_ROWS],
) {
    for (r, row_sums) in sums.iter_mut().enumerate().take(tile) {
        let a_row = &a[r * stride..];
        for v in 0..vectors {
            for lane in 0..LANES {
                let mut sum = 0i32;
                for g in 0..groups {
                    for i in 0..4 {
                        let w = b[(v * groups + g) * 64 + lane * 4 + i] as i32;
                        sum += a_row[g * 4 + i] as i32 * w;
                    }
                }
                row_sums[v * LANES + lane] = sum;
            }
        }
    }
}

/// Quantizes (rows, width) f32 to `q + 128` bytes per row with each row's scale, rows padded to
/// `padded` bytes (the padding meets zero weights).
pub fn quantize_rows(xs: &[f32], width: usize, padded: usize) -> QuantizedRows {
    assert!(
        width > 0 && xs.len().is_multiple_of(width),
        "input is whole rows"
    );
    let rows = xs.len() / width;
    let mut bytes = vec![128u8; rows * padded];
    let mut scales = vec![1f32; rows];
    if rows <= 16 {
        for ((row_bytes, scale), x) in bytes
            .chunks_exact_mut(padded)
            .zip(scales.iter_mut())
            .zip(xs.chunks_exact(width))
        {
            *scale = quantize_row(x, row_bytes);
        }
        return QuantizedRows {
            bytes,
            scales,
            width,
            padded,
        };
    }
    bytes
        .par_chunks_mut(padded * 16)
        .zip(scales.par_chunks_mut(16))
        .zip(xs.par_chunks(width * 16))
        .for_each(|((bytes, scales), xs)| {
            for ((row_bytes, scale), x) in bytes
                .chunks_exact_mut(padded)
                .zip(scales.iter_mut())
                .zip(xs.chunks_exact(width))
            {
                *scale = quantize_row(x, row_bytes);
            }
        });
    QuantizedRows {
        bytes,
        scales,
        width,
        padded,
    }
}

wide_dispatch! {
    /// Quantizes one row into `bytes` (`q + 128`); returns its scale (NaN for a row with an
    /// infinite or NaN value, which makes its outputs NaN).
    fn quantize_row(x: &[f32], bytes: &mut [u8]) -> f32 {
        let mut maxes = [0f32; LANES];
        let chunks = x.chunks_exact(LANES);
        let mut max = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
        for chunk in chunks {
            for (m, v) in maxes.iter_mut().zip(chunk) {
                *m = m.max(v.abs());
            }
        }
        max = maxes.iter().fold(max, |m, &v| m.max(v));
        if !max.is_finite() {
            return f32::NAN;
        }
        if max == 0.0 {
            return 1.0;
        }
        let inverse = 127.0 / max;
        for (byte, &v) in bytes.iter_mut().zip(x) {
            *byte = (crate::round_nearest(v * inverse) + 128.0).clamp(1.0, 255.0) as i32 as u8;
        }
        max / 127.0
    }
}

/// A raw pointer to the output that tasks share; each writes a disjoint part.
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::*;

    /// `sums[r][v·16 + lane] = Σₖ a[r][k]·b[v][k][lane]` for `tile` ≤ 12 rows and `vectors` ≤ 2
    /// blocks of 16 columns, dispatched to a kernel whose sizes are constants (so the sums
    /// stay in registers).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot_tile(
        a: &[u8],
        stride: usize,
        tile: usize,
        b: &[i8],
        groups: usize,
        vectors: usize,
        sums: &mut [[i32; TILE_COLS]; TILE_ROWS],
    ) {
        macro_rules! dispatch {
            ($($rows:literal)*) => {
                match (tile, vectors) {
                    $(
                        ($rows, 2) => kernel::<$rows, 2>(a.as_ptr(), stride, b.as_ptr(), groups, sums),
                        ($rows, _) => kernel::<$rows, 1>(a.as_ptr(), stride, b.as_ptr(), groups, sums),
                    )*
                    _ => unreachable!("a tile has 1 to 12 rows"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
    }

    /// Scales a tile's i32 sums back to f32 and writes them (or adds them) to `out`: `value =
    /// (sum − offset) · row scale · column scale + bias`. The column slices are padded to whole
    /// vectors; `out` is written only in its `columns` columns.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn store_tile(
        sums: &[[i32; TILE_COLS]; TILE_ROWS],
        row_scales: &[f32],
        column_scale: &[f32],
        column_offset: &[i32],
        bias: &[f32],
        out: *mut f32,
        out_stride: usize,
        columns: usize,
        add_to_output: bool,
    ) {
        let vectors = columns.div_ceil(LANES);
        assert!(column_scale.len() >= vectors * LANES && column_offset.len() >= vectors * LANES);
        assert!(bias.len() >= vectors * LANES);
        for (r, (sums, &row_scale)) in sums.iter().zip(row_scales).enumerate() {
            let row_scale = _mm512_set1_ps(row_scale);
            for v in 0..vectors {
                let left = columns - v * LANES;
                let mask: __mmask16 = if left >= LANES {
                    0xffff
                } else {
                    (1u16 << left) - 1
                };
                let sum = _mm512_loadu_si512(sums[v * LANES..].as_ptr() as *const _);
                let offset = _mm512_loadu_si512(column_offset[v * LANES..].as_ptr() as *const _);
                let scale = _mm512_mul_ps(
                    row_scale,
                    _mm512_loadu_ps(column_scale[v * LANES..].as_ptr()),
                );
                let bias = _mm512_loadu_ps(bias[v * LANES..].as_ptr());
                let mut value = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset)), scale),
                    bias,
                );
                let target = out.add(r * out_stride + v * LANES);
                if add_to_output {
                    value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, target));
                }
                _mm512_mask_storeu_ps(target, mask, value);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const ROWS: usize, const VECTORS: usize>(
        a: *const u8,
        stride: usize,
        b: *const i8,
        groups: usize,
        sums: &mut [[i32; TILE_COLS]; TILE_ROWS],
    ) {
        let mut acc = [[_mm512_setzero_si512(); VECTORS]; ROWS];
        for g in 0..groups {
            let mut w = [_mm512_setzero_si512(); VECTORS];
            for (v, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_si512(b.add((v * groups + g) * 64) as *const _);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x =
                    _mm512_set1_epi32((a.add(r * stride + g * 4) as *const i32).read_unaligned());
                for v in 0..VECTORS {
                    acc[v] = _mm512_dpbusd_epi32(acc[v], x, w[v]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                _mm512_storeu_si512(sums[r][v * LANES..].as_mut_ptr() as *mut _, *acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    /// The f32 product the int8 one approximates.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        rows: usize,
        inputs: usize,
        outputs: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; rows * outputs];
        for r in 0..rows {
            for j in 0..outputs {
                out[r * outputs + j] = b[j]
                    + (0..inputs)
                        .map(|k| x[r * inputs + k] * w[j * inputs + k])
                        .sum::<f32>();
            }
        }
        out
    }

    #[test]
    fn int8_products_match_f32_within_quantization_error() {
        // Odd sizes: partial tiles, a partial last block, inputs not a multiple of 4.
        for &(rows, inputs, outputs) in &[(1, 7, 5), (5, 64, 48), (13, 130, 33), (50, 257, 100)] {
            let x = values(rows * inputs, 1);
            let w = values(inputs * outputs, 2);
            let b = values(outputs, 3);
            let Some(layer) = Int8Linear::new_unchecked(&w, &b, inputs, outputs) else {
                panic!("valid shapes");
            };
            let mut out = vec![0f32; rows * outputs];
            layer.forward_into(&x, &mut out, false);
            let want = reference(&x, &w, &b, rows, inputs, outputs);
            // Each factor is within half a step of 1/127 of its row's or column's maximum (1).
            let bound = inputs as f32 * (1.0 / 127.0) * 1.01;
            for (got, want) in out.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= bound,
                    "{got} vs {want} ({rows}×{inputs}×{outputs})"
                );
            }
            // The residual path adds onto what is there.
            let mut again = vec![1f32; rows * outputs];
            layer.forward_into(&x, &mut again, true);
            for (a, o) in again.iter().zip(&out) {
                assert!((a - 1.0 - o).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn vnni_sums_equal_the_portable_ones_exactly() {
        if !supported() {
            return;
        }
        let (rows, inputs, outputs) = (12, 68, 40);
        let layer = Int8Linear::new_unchecked(&values(inputs * outputs, 4), &[], inputs, outputs)
            .expect("valid shapes");
        let xs = layer.quantize(&values(rows * inputs, 5));
        for panel in 0..2 {
            for tile in [1, 7, 12] {
                let vectors = if panel == 0 { 2 } else { 1 };
                let groups = layer.padded_in / 4;
                let b = &layer.packed[panel * 2 * groups * 64..(panel * 2 + vectors) * groups * 64];
                let a = &xs.bytes[..tile * xs.padded];
                let mut fast = [[0i32; TILE_COLS]; TILE_ROWS];
                let mut slow = [[0i32; TILE_COLS]; TILE_ROWS];
                unsafe { vnni::dot_tile(a, xs.padded, tile, b, groups, vectors, &mut fast) };
                portable_dot_tile(a, xs.padded, tile, b, groups, vectors, &mut slow);
                assert_eq!(fast, slow, "panel {panel}, {tile} rows");
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_weights_are_exact() {
        let layer = Int8Linear::new_unchecked(&[0.0; 12], &[0.5, -0.5, 2.0], 4, 3).expect("shapes");
        let mut out = vec![9f32; 6];
        layer.forward_into(&[0.0; 8], &mut out, false);
        assert_eq!(out, [0.5, -0.5, 2.0, 0.5, -0.5, 2.0]);
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        assert!(Int8Linear::new_unchecked(&[0.0; 5], &[], 2, 3).is_none());
        assert!(Int8Linear::new_unchecked(&[0.0; 6], &[1.0], 2, 3).is_none());
        assert!(Int8Linear::new_unchecked(&[], &[], 0, 0).is_none());
    }
}
