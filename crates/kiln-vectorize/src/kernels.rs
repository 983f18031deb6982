//! Distance kernels for graph traversal: an f32 query against a vector stored as bfloat16 (the
//! upper half of an f32: same range, 8 significant bits), dot product or squared L2, with an
//! AVX2 + FMA version chosen at run time on x86-64 (four independent 8-lane accumulators) and a
//! portable fallback. bfloat16 halves the bytes a search reads per vector, which is what bounds
//! it; the error it adds (relative 2⁻⁹ per component) only affects which candidates the graph
//! proposes, because scores returned to callers are recomputed in f64 by `metric` from the
//! stored f32 vectors.

/// `distance(query, stored)`; smaller is closer.
pub type DistanceFn = fn(&[f32], &[u16]) -> f32;

/// The bfloat16 nearest to `value` (ties to even); finite values stay finite.
pub fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
    let half = (rounded >> 16) as u16;
    if value.is_finite() && (half & 0x7F80) == 0x7F80 {
        // Rounding up overflowed to infinity: truncate instead.
        return (bits >> 16) as u16;
    }
    half
}

pub fn from_bf16(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// What the graph measures. Cosine is `Dot` over L2-normalised vectors (the graph stores and
/// searches normalised copies), which orders neighbours exactly as cosine similarity does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// `-a·b`.
    Dot,
    /// `|a - b|²`.
    L2,
}

impl Space {
    pub fn distance_fn(self) -> DistanceFn {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return match self {
                    Space::Dot => |a, b| -x86::dot(a, b),
                    Space::L2 => x86::l2,
                };
            }
        }
        match self {
            Space::Dot => |a, b| -portable::dot(a, b),
            Space::L2 => portable::l2,
        }
    }
}

/// Scales `values` to unit length (a zero vector stays zero).
pub fn normalize(values: &mut [f32]) {
    let norm = values
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let scale = (1.0 / norm) as f32;
        values.iter_mut().for_each(|x| *x *= scale);
    }
}

/// Asks the CPU to start loading the first `lines` cache lines of `data` into cache (a hint:
/// it never faults and changes nothing).
#[inline(always)]
pub fn prefetch<T>(data: &[T], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let base = data.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(data);
        for line in 0..lines.min(bytes.div_ceil(64)) {
            // SAFETY: prefetching is a hint that never faults; the address is inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, lines);
}

mod portable {
    use super::from_bf16;

    const LANES: usize = 16;

    pub fn dot(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for lane in 0..LANES {
                acc[lane] += x[lane] * from_bf16(y[lane]);
            }
        }
        let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * from_bf16(*y)).sum();
        acc.iter().sum::<f32>() + tail
    }

    pub fn l2(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for lane in 0..LANES {
                let d = x[lane] - from_bf16(y[lane]);
                acc[lane] += d * d;
            }
        }
        let tail: f32 = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| (x - from_bf16(*y)) * (x - from_bf16(*y)))
            .sum();
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Only called once AVX2 and FMA were detected (see `Space::distance_fn`).
    pub fn dot(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: the CPU supports AVX2 and FMA (checked before this function is chosen);
        // every load is within the first `n` elements of both slices.
        unsafe { dot_avx2(a.as_ptr(), b.as_ptr(), n) }
    }

    /// Only called once AVX2 and FMA were detected (see `Space::distance_fn`).
    pub fn l2(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: as for `dot`.
        unsafe { l2_avx2(a.as_ptr(), b.as_ptr(), n) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum8(v: __m256) -> f32 {
        let low = _mm256_castps256_ps128(v);
        let high = _mm256_extractf128_ps::<1>(v);
        let four = _mm_add_ps(low, high);
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        let one = _mm_add_ss(two, _mm_shuffle_ps::<0b01>(two, two));
        _mm_cvtss_f32(one)
    }

    /// Eight bfloat16 at `at` widened to f32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8(at: *const u16) -> __m256 {
        let halves = _mm_loadu_si128(at.cast());
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: *const f32, b: *const u16, n: usize) -> f32 {
        let (mut s0, mut s1, mut s2, mut s3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), load8(b.add(i)), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 8)), load8(b.add(i + 8)), s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 16)), load8(b.add(i + 16)), s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 24)), load8(b.add(i + 24)), s3);
            i += 32;
        }
        while i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), load8(b.add(i)), s0);
            i += 8;
        }
        let mut total = sum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        while i < n {
            total += *a.add(i) * super::from_bf16(*b.add(i));
            i += 1;
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(a: *const f32, b: *const u16, n: usize) -> f32 {
        let (mut s0, mut s1, mut s2, mut s3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i + 32 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(a.add(i)), load8(b.add(i)));
            let d1 = _mm256_sub_ps(_mm256_loadu_ps(a.add(i + 8)), load8(b.add(i + 8)));
            let d2 = _mm256_sub_ps(_mm256_loadu_ps(a.add(i + 16)), load8(b.add(i + 16)));
            let d3 = _mm256_sub_ps(_mm256_loadu_ps(a.add(i + 24)), load8(b.add(i + 24)));
            s0 = _mm256_fmadd_ps(d0, d0, s0);
            s1 = _mm256_fmadd_ps(d1, d1, s1);
            s2 = _mm256_fmadd_ps(d2, d2, s2);
            s3 = _mm256_fmadd_ps(d3, d3, s3);
            i += 32;
        }
        while i + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(a.add(i)), load8(b.add(i)));
            s0 = _mm256_fmadd_ps(d, d, s0);
            i += 8;
        }
        let mut total = sum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        while i < n {
            let d = *a.add(i) - super::from_bf16(*b.add(i));
            total += d * d;
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(space: Space, a: &[f32], b: &[u16]) -> f64 {
        let b = b.iter().map(|half| f64::from(from_bf16(*half)));
        match space {
            Space::Dot => -a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum::<f64>(),
            Space::L2 => a
                .iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - y).powi(2))
                .sum::<f64>(),
        }
    }

    #[test]
    fn kernels_match_f64_for_every_length() {
        for n in [0, 1, 3, 7, 8, 9, 31, 32, 33, 63, 100, 384, 1536] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5)
                .collect();
            let b: Vec<u16> = (0..n)
                .map(|i| to_bf16(((i * 104_729) % 19) as f32 / 5.0 - 1.8))
                .collect();
            for space in [Space::Dot, Space::L2] {
                let expected = reference(space, &a, &b);
                let portable: DistanceFn = match space {
                    Space::Dot => |a, b| -portable::dot(a, b),
                    Space::L2 => portable::l2,
                };
                for (name, f) in [("dispatched", space.distance_fn()), ("portable", portable)] {
                    let got = f64::from(f(&a, &b));
                    assert!(
                        (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                        "{space:?} {name} n={n}: {got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_and_stays_finite() {
        for value in [0.0f32, -0.0, 1.0, -2.5, 0.1, 2.71, 1e-30, 6.5e4, -1e30] {
            let back = from_bf16(to_bf16(value));
            assert!(
                (back - value).abs() <= value.abs() / 256.0,
                "{value} -> {back}"
            );
        }
        assert!(from_bf16(to_bf16(f32::MAX)).is_finite());
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 512.0)), 1.0); // a tie: to even
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut zero = vec![0.0; 4];
        normalize(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }
}
