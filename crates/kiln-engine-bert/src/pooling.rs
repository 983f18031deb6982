//! Turning per-token hidden states into one unit-length vector per sequence.

use candle_core::{Result, Tensor};
use kiln_core::Pooling;

/// sentence-transformers' floor for the token count, so an all-padding row divides by a tiny
/// number instead of zero.
const MIN_TOKEN_COUNT: f64 = 1e-9;
/// torch's `F.normalize` epsilon: a zero vector stays zero instead of becoming NaN.
const MIN_NORM: f64 = 1e-12;

/// `hidden` is (batch, tokens, hidden); `attention_mask` is (batch, tokens) of 0.0/1.0 in the same
/// dtype. Returns (batch, hidden), each row L2-normalized.
pub(crate) fn pool_and_normalize(
    hidden: &Tensor,
    attention_mask: &Tensor,
    pooling: Pooling,
) -> Result<Tensor> {
    let pooled = match pooling {
        Pooling::Mean => masked_mean(hidden, attention_mask)?,
        // Padding is on the right, so the first position is always the real [CLS] token.
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
    };
    l2_normalize(&pooled)
}

pub(crate) fn masked_mean(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let summed = hidden
        .broadcast_mul(&attention_mask.unsqueeze(2)?)?
        .sum(1)?;
    let token_counts = attention_mask
        .sum_keepdim(1)?
        .clamp(MIN_TOKEN_COUNT, f64::MAX)?;
    summed.broadcast_div(&token_counts)
}

pub(crate) fn l2_normalize(vectors: &Tensor) -> Result<Tensor> {
    let norms = vectors
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(MIN_NORM, f64::MAX)?;
    vectors.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two sequences of 3 positions, hidden size 2; the second has one padding position whose
    /// huge values must not reach the result.
    fn fixture() -> (Tensor, Tensor) {
        let hidden = Tensor::new(
            &[
                [[3.0f32, 0.0], [1.0, 0.0], [2.0, 0.0]],
                [[0.0, 4.0], [0.0, 2.0], [1e6, 1e6]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1.0f32, 1.0, 1.0], [1.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        (hidden, mask)
    }

    #[test]
    fn mean_ignores_padding_and_normalizes() {
        let (hidden, mask) = fixture();
        let pooled = pool_and_normalize(&hidden, &mask, Pooling::Mean).unwrap();
        assert_eq!(
            pooled.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
    }

    #[test]
    fn cls_takes_the_first_position() {
        let hidden = Tensor::new(&[[[3.0f32, 4.0], [100.0, 0.0]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1.0f32, 1.0]], &Device::Cpu).unwrap();
        let pooled = pool_and_normalize(&hidden, &mask, Pooling::Cls).unwrap();
        assert_eq!(pooled.to_vec2::<f32>().unwrap(), vec![vec![0.6, 0.8]]);
    }

    #[test]
    fn zero_vector_stays_finite() {
        let hidden = Tensor::zeros((1, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mask = Tensor::zeros((1, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let pooled = pool_and_normalize(&hidden, &mask, Pooling::Mean).unwrap();
        assert_eq!(pooled.to_vec2::<f32>().unwrap(), vec![vec![0.0, 0.0, 0.0]]);
    }
}
