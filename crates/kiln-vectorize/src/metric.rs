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

/// Accumulates in f64 so that exact rescoring of long (1536-d) vectors does not drift.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        sum += f64::from(*x) * f64::from(*y);
    }
    sum as f32
}

pub fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = f64::from(*x) - f64::from(*y);
        sum += d * d;
    }
    sum as f32
}

/// Cosine similarity; a zero vector is orthogonal to everything (0) rather than NaN.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
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
