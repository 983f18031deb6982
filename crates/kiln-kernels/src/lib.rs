//! Kiln's CPU kernels, shared by the engines that run their own forward passes (BERT and
//! EmbeddingGemma embeddings, Whisper): plain row-major `f32` slices instead of tensors, so a
//! bias, a residual and a normalization share one pass over memory.
//!
//! - [`dense`]: f32 matrix products on the `gemm` crate, LayerNorm, softmax with a vectorizing
//!   `exp`, GELU.
//! - [`int8`]: linear layers with int8 weights on AVX-512 VNNI (CTranslate2's scheme), where the
//!   CPU has it.

/// Defines `fn $name` whose body is compiled twice: for the baseline x86-64 (SSE2) and for
/// AVX-512, picked at run time, so that loops over slices become 16-lane vector code where the
/// CPU has it. Helpers the body calls must be `#[inline(always)]` to be compiled for AVX-512.
macro_rules! wide_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $crate::has_avx512() {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Whether the CPU runs AVX-512 (F, BW, VL) code.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub mod dense;
pub mod int8;

pub use dense::*;

/// Deterministic values in [-1, 1) for the kernels' tests.
#[cfg(test)]
mod test_values {
    pub fn values(count: usize, seed: u32) -> Vec<f32> {
        (0..count)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }
}
