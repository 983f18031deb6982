//! The contract for sequence classifiers: an encoder with a classification head that reads a text
//! (sentiment, topics) or a text pair (a cross-encoder reranker scoring a query against a
//! passage) and answers one logit per label. Each runs on its own worker thread
//! (`kiln_scheduler::ClassifierWorker`); nothing here is async.

use crate::KilnResult;

/// One input: a text, or a (query, passage) pair for cross-encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierInput {
    pub text: String,
    /// The second text of a pair (the passage, when `text` is the query).
    pub pair: Option<String>,
}

impl ClassifierInput {
    pub fn single(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            pair: None,
        }
    }

    pub fn pair(query: impl Into<String>, passage: impl Into<String>) -> Self {
        Self {
            text: query.into(),
            pair: Some(passage.into()),
        }
    }
}

/// What a classifier's logits mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifierHead {
    /// One logit per label (`id2label` order); probabilities are their softmax.
    Labels(Vec<String>),
    /// One relevance logit per (query, passage) pair: a cross-encoder reranker. Higher is more
    /// relevant; its sigmoid maps it to [0, 1].
    Relevance,
}

/// The logits of each input, in input order, and how many tokens each took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassifierOutput {
    pub logits: Vec<Vec<f32>>,
    pub token_counts: Vec<u32>,
}

impl ClassifierOutput {
    pub fn prompt_tokens(&self) -> u32 {
        self.token_counts
            .iter()
            .fold(0u32, |sum, &n| sum.saturating_add(n))
    }
}

/// A sequence classifier. Work is split in two so that a worker can batch the inputs of many
/// requests into one forward pass while a bad input (too long, say) fails only its own request.
pub trait SequenceClassifier: Send {
    fn head(&self) -> &ClassifierHead;

    /// The most tokens one input may take, special tokens included.
    fn max_input_tokens(&self) -> usize;

    /// Token ids of one input with the model's special tokens. An input longer than
    /// [`Self::max_input_tokens`] is `ErrorKind::BadInput` saying how long it is.
    fn tokenize(&self, input: &ClassifierInput) -> KilnResult<Vec<u32>>;

    /// One padded forward pass over already tokenized inputs: their logits, in order.
    fn forward(&mut self, batch: &[&[u32]]) -> KilnResult<Vec<Vec<f32>>>;
}

/// Probabilities of one input's label logits (softmax, computed stably).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A relevance logit mapped to [0, 1].
pub fn sigmoid(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let probabilities = softmax(&[0.0, 2f32.ln()]);
        assert!((probabilities[0] - 1.0 / 3.0).abs() < 1e-6);
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // exp(1000) overflows f32; the shift by the largest logit keeps this finite.
        assert_eq!(softmax(&[1000.0, 1000.0]), [0.5, 0.5]);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
    }
}
