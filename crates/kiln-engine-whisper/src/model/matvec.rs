//! Matrix-vector products of one decoder step. A step multiplies one row by every decoder
//! weight and by the whole embedding table (51,864 × d), so it reads the weights once per token
//! and is bound by memory: `gemm` runs a one-row product as a single-threaded loop (17 ms for
//! tiny's f32 embedding table on this machine). Here the weights are kept in f16, which is
//! exact for the CTranslate2 files Kiln ships (they store f16; [`HalfRows::exact`] checks it
//! value by value), so a step reads half the bytes, and large products are split across threads.
//! Each output is still an f32 dot product over f32 activations.

/// Products smaller than this many weights run on one thread (spawning costs more).
const MIN_PARALLEL_WEIGHTS: usize = 1 << 20;

/// A row-major (rows, cols) matrix in IEEE half precision.
pub(crate) struct HalfRows {
    bits: Vec<u16>,
    rows: usize,
    cols: usize,
}

impl HalfRows {
    /// The (rows, cols) matrix `values` in f16, if every value is exactly an f16.
    pub fn exact(values: &[f32], rows: usize, cols: usize) -> Option<Self> {
        if values.len() != rows * cols {
            return None;
        }
        let bits = values
            .iter()
            .map(|&v| f32_to_f16_exact(v))
            .collect::<Option<Vec<u16>>>()?;
        Some(Self { bits, rows, cols })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `r`'s f16 bits.
    pub fn row(&self, r: usize) -> Option<&[u16]> {
        self.bits.get(r * self.cols..(r + 1) * self.cols)
    }

    /// `out[r] = Σ_c self[r, c]·x[c]`; `x` has `cols` values and `out` `rows`.
    pub fn matvec(&self, x: &[f32], out: &mut [f32]) {
        if x.len() != self.cols || out.len() != self.rows || self.cols == 0 {
            out.fill(f32::NAN);
            return;
        }
        let threads = if self.bits.len() < MIN_PARALLEL_WEIGHTS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        if threads <= 1 {
            return rows_dot(&self.bits, x, out);
        }
        let per = self.rows.div_ceil(threads);
        std::thread::scope(|scope| {
            for (part_out, part) in out.chunks_mut(per).zip(self.bits.chunks(per * self.cols)) {
                scope.spawn(move || rows_dot(part, x, part_out));
            }
        });
    }

    /// `out[j, r] = Σ_c self[r, c]·xs[j, c]` for `n` vectors `xs` (n, cols) at once, `out`
    /// (n, rows): each weight row is read from memory once for all of them (beam search).
    pub fn matmul_rows(&self, xs: &[f32], n: usize, out: &mut [f32]) {
        if n == 0 || xs.len() != n * self.cols || out.len() != n * self.rows || self.cols == 0 {
            out.fill(f32::NAN);
            return;
        }
        let threads = if self.bits.len() < MIN_PARALLEL_WEIGHTS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        // Row-major by weight row while computing, so each thread writes one contiguous part.
        let mut by_row = vec![0f32; n * self.rows];
        if threads <= 1 {
            rows_dot_many(&self.bits, xs, n, &mut by_row);
        } else {
            let per = self.rows.div_ceil(threads);
            std::thread::scope(|scope| {
                let parts = by_row
                    .chunks_mut(per * n)
                    .zip(self.bits.chunks(per * self.cols));
                for (part_out, part) in parts {
                    scope.spawn(move || rows_dot_many(part, xs, n, part_out));
                }
            });
        }
        for (r, values) in by_row.chunks_exact(n).enumerate() {
            for (j, &v) in values.iter().enumerate() {
                out[j * self.rows + r] = v;
            }
        }
    }
}

/// [`rows_dot`] for `n` vectors: `out[r·n + j]` is weight row `r` times vector `j` (the row
/// stays in the L1 cache between the vectors).
fn rows_dot_many(m: &[u16], xs: &[f32], n: usize, out: &mut [f32]) {
    let cols = xs.len() / n;
    for (r, row) in m.chunks_exact(cols).enumerate() {
        for (j, x) in xs.chunks_exact(cols).enumerate() {
            out[r * n + j] = dot(row, x);
        }
    }
}

fn dot(row: &[u16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has the three features; `row` and `x` have the same length.
        return unsafe { dot_f16c(row, x) };
    }
    row.iter().zip(x).map(|(&w, &v)| f16_to_f32(w) * v).sum()
}

fn rows_dot(m: &[u16], x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        for (o, row) in out.iter_mut().zip(m.chunks_exact(x.len())) {
            // SAFETY: the CPU has the three features; `row` and `x` have the same length.
            *o = unsafe { dot_f16c(row, x) };
        }
        return;
    }
    for (o, row) in out.iter_mut().zip(m.chunks_exact(x.len())) {
        *o = row.iter().zip(x).map(|(&w, &v)| f16_to_f32(w) * v).sum();
    }
}

/// Dot product of an f16 row with f32 values, 16 at a time in two accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16c(w: &[u16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = x.len().min(w.len());
    let body = n - n % 16;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut a1 = _mm256_setzero_ps();
    let mut i = 0;
    while i < body {
        let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i).cast()));
        let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i + 8).cast()));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp.add(i)), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(i + 8)), a1);
        i += 16;
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1));
    let tail: f32 = (body..n).map(|j| f16_to_f32(w[j]) * x[j]).sum();
    lanes.iter().sum::<f32>() + tail
}

pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match (exp, man) {
        (0, 0) => f32::from_bits(sign),
        (0, m) => {
            let v = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            if sign != 0 {
                -v
            } else {
                v
            }
        }
        (31, m) => f32::from_bits(sign | 0x7f80_0000 | (m << 13)),
        (e, m) => f32::from_bits(sign | ((e + 112) << 23) | (m << 13)),
    }
}

/// `v` as f16 bits when the conversion loses nothing (finite values only).
pub(crate) fn f32_to_f16_exact(v: f32) -> Option<u16> {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0 && man == 0 {
        return Some(sign);
    }
    if exp == 0xff || exp == 0 {
        return None; // inf, NaN, f32 subnormals (far below f16's range)
    }
    let e = exp - 127;
    if (-14..=15).contains(&e) {
        if man & 0x1fff != 0 {
            return None;
        }
        return Some(sign | (((e + 15) as u16) << 10) | (man >> 13) as u16);
    }
    if (-24..-14).contains(&e) {
        let full = man | 0x80_0000;
        let shift = (-1 - e) as u32; // 13 bits of mantissa plus the subnormal's shift
        if full & ((1 << shift) - 1) != 0 {
            return None;
        }
        return Some(sign | (full >> shift) as u16);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_exactly_and_refuses_what_it_cannot_hold() {
        for h in (0..=u16::MAX).filter(|h| (h >> 10) & 0x1f != 31) {
            let v = f16_to_f32(h);
            let back = f32_to_f16_exact(v);
            // -0.0 and 0.0 both come back as themselves.
            assert_eq!(back, Some(h), "{h:#06x} → {v}");
        }
        assert_eq!(f32_to_f16_exact(0.1), None);
        assert_eq!(f32_to_f16_exact(1e6), None);
        assert_eq!(f32_to_f16_exact(f32::NAN), None);
    }

    #[test]
    fn matvec_matches_plain_dot_products() {
        // 700 rows of 37 columns (vector steps and a tail); values exact in f16.
        let (rows, cols) = (700, 37);
        let m: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i % 5) as f32 * 0.3 - 0.7).collect();
        let half = HalfRows::exact(&m, rows, cols).expect("exact in f16");
        let mut out = vec![0f32; rows];
        half.matvec(&x, &mut out);
        for (r, &o) in out.iter().enumerate() {
            let want: f32 = (0..cols).map(|i| m[r * cols + i] * x[i]).sum();
            assert!((o - want).abs() < 1e-4, "row {r}: {o} vs {want}");
        }
        assert!(HalfRows::exact(&[0.1], 1, 1).is_none());
    }

    #[test]
    fn matmul_rows_matches_one_matvec_per_row() {
        let (rows, cols, n) = (300, 21, 3);
        let m: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 5) % 11) as f32 * 0.5 - 2.0)
            .collect();
        let xs: Vec<f32> = (0..n * cols).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let half = HalfRows::exact(&m, rows, cols).expect("exact in f16");
        let mut out = vec![0f32; n * rows];
        half.matmul_rows(&xs, n, &mut out);
        for j in 0..n {
            let mut one = vec![0f32; rows];
            half.matvec(&xs[j * cols..(j + 1) * cols], &mut one);
            assert_eq!(&out[j * rows..(j + 1) * rows], &one[..], "vector {j}");
        }
        let mut wrong = vec![0f32; 2];
        half.matmul_rows(&xs, n, &mut wrong);
        assert!(wrong.iter().all(|x| x.is_nan()));
    }
}
