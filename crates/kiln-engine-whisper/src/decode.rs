//! One 30 s window's decoding, as openai-whisper's `DecodingTask` does it: greedy (one sequence
//! through the decoder's one-row f16 steps, the fast path), beam search at temperature 0, and
//! best-of-N sampling at higher temperatures. Beams and samples run side by side as rows of one
//! decoder step ([`Decoder::forward_rows`]), so the weights are read once per step for all.

use crate::model::{Decoder, Rows};
use crate::rules::{argmax, log_softmax, LogitRules};
use crate::AsrError;

/// Decoder steps between two progress checks inside a window.
const TOKENS_PER_CHECK: usize = 32;

/// What a window decoded to.
#[derive(Debug, Clone)]
pub(crate) struct WindowResult {
    /// The transcript's tokens (text and timestamps; a forced prefix included), without
    /// end-of-text.
    pub tokens: Vec<u32>,
    /// The probability the decoder gave each of `tokens`.
    pub token_probs: Vec<f32>,
    /// Sum of the tokens' log probabilities (end-of-text's included) over their count plus one.
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Strategy {
    Greedy,
    /// Beam search with this many beams (openai-whisper's, patience 1).
    Beam(usize),
    /// `best_of` samples at `temperature`; the likeliest (per token) is kept.
    Sample {
        temperature: f32,
        best_of: usize,
    },
}

/// The tokens a window starts from.
pub(crate) struct Prompt<'a> {
    /// `<|startofprev|>` and earlier text, or nothing.
    pub previous: &'a [u32],
    /// `<|startoftranscript|>`, language and task.
    pub sot_seq: &'a [u32],
    /// Tokens the transcript is forced to start with (`prefix`), or nothing.
    pub forced: &'a [u32],
}

/// A transcript being decoded.
#[derive(Debug, Clone, Default)]
struct Hypothesis {
    tokens: Vec<u32>,
    probs: Vec<f32>,
    sum_logprob: f32,
}

impl Hypothesis {
    fn push(&mut self, token: u32, logprob: f32) {
        self.tokens.push(token);
        self.probs.push(logprob.exp());
        self.sum_logprob += logprob;
    }

    /// openai-whisper's ranking without a length penalty: log probability (with that of the
    /// end-of-text, `eot_logprob`) per token.
    fn score(&self, eot_logprob: f32) -> f32 {
        (self.sum_logprob + eot_logprob) / self.tokens.len().max(1) as f32
    }

    fn into_result(self, eot_logprob: f32, no_speech_prob: f32) -> WindowResult {
        let sum = self.sum_logprob + eot_logprob;
        WindowResult {
            avg_logprob: sum / (self.tokens.len() + 1) as f32,
            tokens: self.tokens,
            token_probs: self.probs,
            no_speech_prob,
        }
    }
}

/// A small seeded generator (SplitMix64) for sampling: a request decodes the same every time.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A token drawn from `softmax(logits / temperature)`, or `None` when no token is allowed.
pub(crate) fn sample_token(logits: &[f32], temperature: f32, rng: &mut Rng) -> Option<usize> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    let weight = |l: f32| ((l - max) / temperature).exp();
    let total: f32 = logits.iter().map(|&l| weight(l)).sum();
    let mut left = rng.next_f32() * total;
    let mut last = None;
    for (i, &l) in logits.iter().enumerate() {
        let w = weight(l);
        if w > 0.0 {
            last = Some(i);
            left -= w;
            if left < 0.0 {
                return last;
            }
        }
    }
    last
}

/// The `k` largest finite values of `xs` with their indices, largest first.
pub(crate) fn top_k(xs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &x) in xs.iter().enumerate() {
        if !x.is_finite() || (best.len() == k && best.last().is_some_and(|&(_, b)| x <= b)) {
            continue;
        }
        let at = best.iter().position(|&(_, b)| x > b).unwrap_or(best.len());
        best.insert(at, (i, x));
        best.truncate(k);
    }
    best
}

pub(crate) struct WindowDecoder<'a> {
    pub decoder: &'a mut Decoder,
    pub rules: LogitRules<'a>,
    pub keep_going: &'a dyn Fn() -> bool,
}

/// What the prompt's one forward pass gives every strategy.
struct Start {
    /// The forced tokens, with their probabilities.
    forced: Hypothesis,
    /// Logits for the first free token.
    logits: Vec<f32>,
    no_speech_prob: f32,
    /// Tokens (prompt and transcript) a window may hold.
    max_len: usize,
    /// Prompt tokens before the transcript.
    sample_begin: usize,
}

impl WindowDecoder<'_> {
    /// Decodes the window whose audio the decoder holds ([`Decoder::set_audio`]).
    pub fn decode(
        &mut self,
        prompt: &Prompt,
        strategy: Strategy,
        rng: &mut Rng,
    ) -> Result<WindowResult, AsrError> {
        let start = self.start(prompt)?;
        match strategy {
            Strategy::Greedy => self.greedy(start),
            Strategy::Beam(beams) => self.beam_search(start, beams.max(1)),
            Strategy::Sample {
                temperature,
                best_of,
            } => self.sample(start, temperature, best_of.max(1), rng),
        }
    }

    fn start(&mut self, prompt: &Prompt) -> Result<Start, AsrError> {
        let n_ctx = self.decoder.n_ctx();
        let tokens: Vec<u32> = [prompt.previous, prompt.sot_seq, prompt.forced].concat();
        if tokens.len() >= n_ctx {
            return Err(AsrError::Model(format!(
                "a prompt of {} tokens leaves no room in {n_ctx} positions",
                tokens.len()
            )));
        }
        let sample_begin = prompt.previous.len() + prompt.sot_seq.len();
        self.decoder.reset();
        let out = self.decoder.forward(&tokens, &[])?;
        let mut no_speech_prob = 0.0;
        if let Some(ns) = self.rules.tokens.no_speech {
            let at_sot = log_softmax(&self.decoder.logits(&out.hidden, prompt.previous.len())?);
            no_speech_prob = at_sot.get(ns as usize).map_or(0.0, |x| x.exp());
        }
        // The forced tokens are part of the transcript, with the probability the model gives them.
        let mut forced = Hypothesis::default();
        for (i, &token) in prompt.forced.iter().enumerate() {
            let logprobs = log_softmax(&self.decoder.logits(&out.hidden, sample_begin - 1 + i)?);
            let logprob = logprobs.get(token as usize).copied().unwrap_or(0.0);
            forced.push(token, logprob.max(f32::MIN));
        }
        Ok(Start {
            forced,
            logits: self.decoder.logits(&out.hidden, tokens.len() - 1)?,
            no_speech_prob,
            max_len: (tokens.len() + n_ctx / 2).min(n_ctx),
            sample_begin,
        })
    }

    /// The decoder rows for the next step: the hypotheses `sources` names continue the rows
    /// they came from; before the first step every row forks the prompt.
    fn continue_rows(&self, rows: Option<Rows>, sources: &[u32]) -> Result<Rows, AsrError> {
        Ok(match rows {
            Some(mut rows) => {
                rows.select(sources)?;
                rows
            }
            None => self.decoder.fork(sources.len())?,
        })
    }

    fn check(&self, step: usize) -> Result<(), AsrError> {
        if step % TOKENS_PER_CHECK == TOKENS_PER_CHECK - 1 && !(self.keep_going)() {
            return Err(AsrError::Stopped);
        }
        Ok(())
    }

    /// The likeliest token at each step, one row through the f16 matrix-vector steps.
    fn greedy(&mut self, start: Start) -> Result<WindowResult, AsrError> {
        let eot = self.rules.tokens.eot;
        let mut hyp = start.forced;
        let mut logits = start.logits;
        let mut step = 0;
        loop {
            self.rules.apply(&mut logits, &hyp.tokens);
            let logprobs = log_softmax(&logits);
            let next = argmax(&logits) as u32;
            if next == eot {
                return Ok(hyp.into_result(logprobs[next as usize], start.no_speech_prob));
            }
            hyp.push(next, logprobs[next as usize]);
            if start.sample_begin + hyp.tokens.len() >= start.max_len {
                return Ok(hyp.into_result(0.0, start.no_speech_prob));
            }
            self.check(step)?;
            step += 1;
            let out = self.decoder.forward(&[next], &[])?;
            logits = self.decoder.logits(&out.hidden, 0)?;
        }
    }

    /// openai-whisper's `BeamSearchDecoder` (patience 1): each step keeps the `beams` likeliest
    /// continuations that do not end; ending ones are kept aside until `beams` have ended, and
    /// the one with the best log probability per token wins.
    fn beam_search(&mut self, start: Start, beams: usize) -> Result<WindowResult, AsrError> {
        let eot = self.rules.tokens.eot;
        let mut live = vec![start.forced];
        let mut logits = vec![start.logits];
        let mut rows: Option<Rows> = None;
        // Ended hypotheses with the log probability of their end-of-text.
        let mut finished: Vec<(Hypothesis, f32)> = Vec::new();
        let mut step = 0;
        loop {
            let mut candidates: Vec<(f32, usize, u32, f32)> = Vec::new();
            for (i, (hyp, row)) in live.iter().zip(&mut logits).enumerate() {
                self.rules.apply(row, &hyp.tokens);
                for (token, logprob) in top_k(&log_softmax(row), beams + 1) {
                    candidates.push((hyp.sum_logprob + logprob, i, token as u32, logprob));
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            let (mut next, mut sources) = (Vec::new(), Vec::new());
            for (_, from, token, logprob) in candidates {
                if token == eot {
                    if finished.len() < beams {
                        finished.push((live[from].clone(), logprob));
                    }
                    continue;
                }
                let mut hyp = live[from].clone();
                hyp.push(token, logprob);
                next.push(hyp);
                sources.push(from as u32);
                if next.len() == beams {
                    break;
                }
            }
            let full = next
                .first()
                .is_none_or(|h| start.sample_begin + h.tokens.len() >= start.max_len);
            live = next;
            if finished.len() >= beams || full {
                break;
            }
            self.check(step)?;
            step += 1;
            let mut batch = self.continue_rows(rows.take(), &sources)?;
            let last: Vec<u32> = live
                .iter()
                .filter_map(|h| h.tokens.last().copied())
                .collect();
            let hidden = self.decoder.forward_rows(&mut batch, &last)?;
            rows = Some(batch);
            logits = self.decoder.logits_rows(&hidden)?;
        }
        // Out of room before enough ended: the live beams count as ended, as openai-whisper
        // finalizes them.
        finished.extend(live.into_iter().map(|h| (h, 0.0)));
        let best = finished
            .into_iter()
            .max_by(|a, b| a.0.score(a.1).total_cmp(&b.0.score(b.1)))
            .ok_or_else(|| AsrError::Model("beam search ended without a hypothesis".into()))?;
        Ok(best.0.into_result(best.1, start.no_speech_prob))
    }

    /// `best_of` transcripts sampled at `temperature` (each token from the temperature-scaled
    /// distribution; its log probability from the unscaled one); the best per token wins.
    fn sample(
        &mut self,
        start: Start,
        temperature: f32,
        best_of: usize,
        rng: &mut Rng,
    ) -> Result<WindowResult, AsrError> {
        let eot = self.rules.tokens.eot;
        let mut hyps = vec![start.forced; best_of];
        let mut eot_logprob = vec![0f32; best_of];
        // Which hypothesis each decoder row continues; before the first step, all share the
        // prompt's logits.
        let mut rows_of: Vec<usize> = (0..best_of).collect();
        let mut logits: Vec<Vec<f32>> = vec![start.logits; best_of];
        let mut rows: Option<Rows> = None;
        let mut step = 0;
        loop {
            let mut going = Vec::new();
            for (row, (&h, row_logits)) in rows_of.iter().zip(&mut logits).enumerate() {
                let hyp = &mut hyps[h];
                self.rules.apply(row_logits, &hyp.tokens);
                let logprobs = log_softmax(row_logits);
                let token = sample_token(row_logits, temperature, rng).unwrap_or(eot as usize);
                let logprob = logprobs.get(token).copied().unwrap_or(0.0);
                if token == eot as usize {
                    eot_logprob[h] = logprob;
                    continue;
                }
                hyp.push(token as u32, logprob);
                if start.sample_begin + hyp.tokens.len() < start.max_len {
                    going.push((row as u32, h));
                }
            }
            if going.is_empty() {
                break;
            }
            self.check(step)?;
            step += 1;
            let sources: Vec<u32> = going.iter().map(|&(row, _)| row).collect();
            rows_of = going.iter().map(|&(_, h)| h).collect();
            let mut batch = self.continue_rows(rows.take(), &sources)?;
            let last: Vec<u32> = rows_of
                .iter()
                .filter_map(|&h| hyps[h].tokens.last().copied())
                .collect();
            let hidden = self.decoder.forward_rows(&mut batch, &last)?;
            rows = Some(batch);
            logits = self.decoder.logits_rows(&hidden)?;
        }
        let score = |h: usize| hyps[h].score(eot_logprob[h]);
        let best = (0..best_of)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap_or(0);
        let hyp = std::mem::take(&mut hyps[best]);
        Ok(hyp.into_result(eot_logprob[best], start.no_speech_prob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_largest_finite_values_in_order() {
        let xs = [0.5, f32::NEG_INFINITY, 2.0, -1.0, 2.0, 7.0, f32::NAN];
        assert_eq!(top_k(&xs, 3), vec![(5, 7.0), (2, 2.0), (4, 2.0)]);
        assert_eq!(top_k(&xs, 10).len(), 5);
        assert!(top_k(&[f32::NEG_INFINITY; 4], 2).is_empty());
    }

    #[test]
    fn sampling_is_seeded_and_follows_the_temperature() {
        let logits = [0.0f32, 1.0, f32::NEG_INFINITY, 0.5];
        let draw = |temperature: f32, seed: u64| {
            let mut rng = Rng::new(seed);
            let mut counts = [0usize; 4];
            for _ in 0..4000 {
                counts[sample_token(&logits, temperature, &mut rng).unwrap()] += 1;
            }
            counts
        };
        // The same seed draws the same tokens.
        assert_eq!(draw(1.0, 7), draw(1.0, 7));
        let warm = draw(1.0, 7);
        assert_eq!(warm[2], 0, "a banned token is never drawn");
        // softmax([0, 1, 0.5]) = [0.19, 0.51, 0.31]
        let share = |n: usize| n as f32 / 4000.0;
        assert!((share(warm[1]) - 0.51).abs() < 0.04, "{warm:?}");
        assert!((share(warm[0]) - 0.19).abs() < 0.04, "{warm:?}");
        // A low temperature is nearly greedy.
        let cold = draw(0.05, 7);
        assert!(cold[1] > 3900, "{cold:?}");
        assert_eq!(
            sample_token(&[f32::NEG_INFINITY; 3], 1.0, &mut Rng::new(1)),
            None
        );
    }

    #[test]
    fn hypotheses_rank_by_log_probability_per_token() {
        let mut short = Hypothesis::default();
        short.push(1, -0.9);
        let mut long = Hypothesis::default();
        for _ in 0..4 {
            long.push(2, -0.5);
        }
        // -2.0 in total beats -0.9 once it is shared among four tokens.
        assert!(long.score(0.0) > short.score(0.0));
        assert!(long.score(-0.5) < long.score(0.0));
        let result = long.into_result(-0.5, 0.1);
        assert_eq!(result.tokens, [2, 2, 2, 2]);
        assert!((result.avg_logprob - (-2.5 / 5.0)).abs() < 1e-6);
        assert!((result.token_probs[0] - (-0.5f32).exp()).abs() < 1e-6);
    }
}
