//! Building llama.cpp's sampler chain from Kiln's sampling parameters.

use kiln_core::SamplingParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

/// Penalties look this many tokens back.
pub const PENALTY_WINDOW: usize = 64;

/// llama.cpp treats this seed as "pick one at random".
const LLAMA_RANDOM_SEED: u32 = u32::MAX;

/// The seed llama.cpp's sampler gets: the request's seed folded to 32 bits, or a fresh random one.
pub fn sampler_seed(requested: Option<u64>) -> u32 {
    match requested {
        // Folding keeps both halves of a 64-bit seed significant.
        Some(seed) => {
            let folded = (seed ^ (seed >> 32)) as u32;
            // Never hand llama.cpp its "random" sentinel for an explicit seed.
            if folded == LLAMA_RANDOM_SEED {
                folded - 1
            } else {
                folded
            }
        }
        None => rand::random_range(0..LLAMA_RANDOM_SEED),
    }
}

/// penalties → constraint → top-k → top-p → temperature → random draw; temperature 0 draws
/// greedily. The penalties stage has already seen `history` (the prompt's tail); the constraint
/// stage has not, since it only judges generated text.
pub fn build_sampler(
    params: &SamplingParams,
    seed: u32,
    vocabulary_size: i32,
    history: &[LlamaToken],
    constraint: Option<LlamaSampler>,
) -> LlamaSampler {
    let mut stages = Vec::with_capacity(6);
    if let Some(mut penalties) = penalty_stage(params, vocabulary_size) {
        penalties.accept_many(history);
        stages.push(penalties);
    }
    stages.extend(constraint);
    if params.temperature <= 0.0 {
        stages.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(stages);
    }
    if let Some(top_k) = params.top_k.filter(|&k| k > 0) {
        stages.push(LlamaSampler::top_k(
            i32::try_from(top_k).unwrap_or(i32::MAX),
        ));
    }
    if let Some(top_p) = params.top_p.filter(|&p| p > 0.0 && p < 1.0) {
        stages.push(LlamaSampler::top_p(top_p, 1));
    }
    stages.push(LlamaSampler::temp(params.temperature));
    stages.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(stages)
}

fn penalty_stage(params: &SamplingParams, vocabulary_size: i32) -> Option<LlamaSampler> {
    if params.repetition_penalty.is_none()
        && params.frequency_penalty.is_none()
        && params.presence_penalty.is_none()
    {
        return None;
    }
    // llama.cpp requires a positive repetition penalty; 1.0 is its neutral value.
    let repeat = params
        .repetition_penalty
        .filter(|p| p.is_finite() && *p > 0.0)
        .unwrap_or(1.0);
    let frequency = params
        .frequency_penalty
        .filter(|p| p.is_finite())
        .unwrap_or(0.0);
    let presence = params
        .presence_penalty
        .filter(|p| p.is_finite())
        .unwrap_or(0.0);
    Some(LlamaSampler::penalties(
        vocabulary_size,
        PENALTY_WINDOW as i32,
        repeat,
        frequency,
        presence,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_seeds_are_stable_and_never_the_random_sentinel() {
        assert_eq!(sampler_seed(Some(42)), sampler_seed(Some(42)));
        assert_ne!(sampler_seed(Some(1)), sampler_seed(Some(2)));
        assert_ne!(sampler_seed(Some(u64::from(u32::MAX))), LLAMA_RANDOM_SEED);
        assert_ne!(sampler_seed(None), LLAMA_RANDOM_SEED);
    }
}
