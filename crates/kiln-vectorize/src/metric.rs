//! Distance metrics and the score conventions of spec §5.1.
//!
//! | metric | score | better |
//! |---|---|---|
//! | `cosine` | cosine similarity in [-1, 1] | higher |
//! | `euclidean` | L2 distance | lower |
//! | `dot-product` | **negative** dot product | lower |

use std::cmp::Ordering;

use kiln_core::{KilnError, KilnResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Cosine,
    Euclidean,
    DotProduct,
}

impl Metric {
    pub fn parse(name: &str) -> KilnResult<Self> {
        match name {
            "cosine" => Ok(Self::Cosine),
            "euclidean" => Ok(Self::Euclidean),
            "dot-product" => Ok(Self::DotProduct),
            other => Err(KilnError::bad_input(format!(
                "config.metric must be one of cosine, euclidean, dot-product (got {other:?})"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Euclidean => "euclidean",
            Self::DotProduct => "dot-product",
        }
    }

    /// The score Vectorize reports for `query` against `stored`.
    pub fn score(self, query: &[f32], stored: &[f32]) -> f32 {
        match self {
            Self::Cosine => cosine_similarity(query, stored),
            Self::Euclidean => squared_l2(query, stored).sqrt(),
            Self::DotProduct => -dot(query, stored),
        }
    }

    /// Orders scores best first: descending for cosine, ascending for the other two.
    pub fn best_first(self, a: f32, b: f32) -> Ordering {
        match self {
            Self::Cosine => b.total_cmp(&a),
            Self::Euclidean | Self::DotProduct => a.total_cmp(&b),
        }
    }
}

/// f64 lanes of the exact kernels: independent partial sums (so that the loop is not one long
/// chain of dependent additions), added up in lane order at the end. The AVX2 versions keep
/// exactly these lanes and this order, so every machine computes the same scores.
const LANES: usize = 16;

/// The three sums the exact scores need, per lane: a·b, a·a, b·b (or Σ(a - b)² in the first).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sums {
    Dot,
    SquaredL2,
    Cosine,
}

fn exact_sums(kind: Sums, a: &[f32], b: &[f32]) -> [f64; 3] {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available; the kernel reads only the first `n` of each slice.
            return unsafe { x86::exact_sums(kind, a, b) };
        }
    }
    let mut sums = [[0f64; LANES]; 3];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for lane in 0..LANES {
            let (x, y) = (f64::from(x[lane]), f64::from(y[lane]));
            accumulate(kind, &mut sums, lane, x, y);
        }
    }
    finish(kind, sums, ra, rb)
}

#[inline(always)]
fn accumulate(kind: Sums, sums: &mut [[f64; LANES]; 3], lane: usize, x: f64, y: f64) {
    match kind {
        Sums::Dot => sums[0][lane] += x * y,
        Sums::SquaredL2 => {
            let d = x - y;
            sums[0][lane] += d * d;
        }
        Sums::Cosine => {
            sums[0][lane] += x * y;
            sums[1][lane] += x * x;
            sums[2][lane] += y * y;
        }
    }
}

/// Adds the tail (into lane 0) and then the lanes, in order.
fn finish(kind: Sums, mut sums: [[f64; LANES]; 3], ra: &[f32], rb: &[f32]) -> [f64; 3] {
    for (x, y) in ra.iter().zip(rb) {
        accumulate(kind, &mut sums, 0, f64::from(*x), f64::from(*y));
    }
    sums.map(|lanes| lanes.iter().sum::<f64>())
}

/// Accumulates in f64 so that exact rescoring of long (1536-d) vectors does not drift.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    exact_sums(Sums::Dot, a, b)[0] as f32
}

pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    exact_sums(Sums::SquaredL2, a, b)[0] as f32
}

/// Cosine similarity; a zero vector is orthogonal to everything (0) rather than NaN.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let [ab, aa, bb] = exact_sums(Sums::Cosine, a, b);
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{finish, Sums, LANES};

    /// `exact_sums` with the same lanes: four 4-wide f64 accumulators per sum (lanes 0–3, 4–7,
    /// 8–11, 12–15), multiply then add (no FMA: the same rounding as the portable loop).
    #[target_feature(enable = "avx2")]
    #[allow(clippy::needless_range_loop)] // `quarter` indexes the accumulators and the input
    pub unsafe fn exact_sums(kind: Sums, a: &[f32], b: &[f32]) -> [f64; 3] {
        let n = a.len().min(b.len());
        let chunks = n / LANES;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [[_mm256_setzero_pd(); 4]; 3];
        for chunk in 0..chunks {
            let at = chunk * LANES;
            for quarter in 0..4 {
                let x = _mm256_cvtps_pd(_mm_loadu_ps(pa.add(at + quarter * 4)));
                let y = _mm256_cvtps_pd(_mm_loadu_ps(pb.add(at + quarter * 4)));
                match kind {
                    Sums::Dot => {
                        acc[0][quarter] = _mm256_add_pd(acc[0][quarter], _mm256_mul_pd(x, y));
                    }
                    Sums::SquaredL2 => {
                        let d = _mm256_sub_pd(x, y);
                        acc[0][quarter] = _mm256_add_pd(acc[0][quarter], _mm256_mul_pd(d, d));
                    }
                    Sums::Cosine => {
                        acc[0][quarter] = _mm256_add_pd(acc[0][quarter], _mm256_mul_pd(x, y));
                        acc[1][quarter] = _mm256_add_pd(acc[1][quarter], _mm256_mul_pd(x, x));
                        acc[2][quarter] = _mm256_add_pd(acc[2][quarter], _mm256_mul_pd(y, y));
                    }
                }
            }
        }
        let mut sums = [[0f64; LANES]; 3];
        for (sum, lanes) in sums.iter_mut().zip(&acc) {
            for (quarter, vector) in lanes.iter().enumerate() {
                _mm256_storeu_pd(sum[quarter * 4..].as_mut_ptr(), *vector);
            }
        }
        let tail = chunks * LANES;
        finish(kind, sums, &a[tail..n], &b[tail..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_scores() {
        let q = [1.0, 0.0];
        let a = [3.0, 4.0];
        // cos = 3 / 5
        assert!((Metric::Cosine.score(&q, &a) - 0.6).abs() < 1e-6);
        // |(1,0) - (3,4)| = sqrt(4 + 16)
        assert!((Metric::Euclidean.score(&q, &a) - 20f32.sqrt()).abs() < 1e-6);
        // -(1*3 + 0*4)
        assert_eq!(Metric::DotProduct.score(&q, &a), -3.0);
        assert_eq!(Metric::Cosine.score(&[0.0, 0.0], &a), 0.0);
    }

    #[test]
    fn exact_kernels_agree_with_a_plain_f64_loop() {
        for n in [0, 1, 5, 15, 16, 17, 100, 384, 1536] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 31) % 17) as f32 / 3.0 - 2.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 7) % 13) as f32 / 4.0 - 1.0).collect();
            let plain_dot: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let plain_l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
                .sum();
            assert!((f64::from(dot(&a, &b)) - plain_dot).abs() <= 1e-5 * plain_dot.abs().max(1.0));
            assert!((f64::from(squared_l2(&a, &b)) - plain_l2).abs() <= 1e-5 * plain_l2.max(1.0));
            let norms: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
                * b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
            let plain_cos = if norms == 0.0 { 0.0 } else { plain_dot / norms };
            assert!((f64::from(cosine_similarity(&a, &b)) - plain_cos).abs() <= 1e-6);
        }
    }

    #[test]
    fn ordering_is_best_first() {
        assert_eq!(Metric::Cosine.best_first(0.9, 0.1), Ordering::Less);
        assert_eq!(Metric::Euclidean.best_first(0.1, 0.9), Ordering::Less);
        // -1000 beats -500; 15 beats 50 (spec §5.1)
        assert_eq!(
            Metric::DotProduct.best_first(-1000.0, -500.0),
            Ordering::Less
        );
        assert_eq!(Metric::DotProduct.best_first(15.0, 50.0), Ordering::Less);
    }
}
