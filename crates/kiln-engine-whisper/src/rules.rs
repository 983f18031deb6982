//! Special tokens and the logit rules of OpenAI's greedy decoder (`whisper/decoding.py`):
//! blank suppression at the start, special-token suppression, and the timestamp rules.

use tokenizers::Tokenizer;

use crate::AsrError;

/// Seconds per timestamp token.
pub(crate) const TIME_PRECISION: f32 = 0.02;
/// Latest allowed first timestamp, in timestamp steps (1 s).
const MAX_INITIAL_TIMESTAMP_INDEX: usize = 50;

#[derive(Debug, Clone)]
pub(crate) struct SpecialTokens {
    pub sot: u32,
    pub eot: u32,
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    pub sot_prev: Option<u32>,
    pub no_speech: Option<u32>,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
    /// `(code, token)` for every language token of the vocabulary.
    pub languages: Vec<(String, u32)>,
}

impl SpecialTokens {
    pub fn from_tokenizer(tok: &Tokenizer, lang_ids: &[u32]) -> Result<Self, AsrError> {
        let id = |s: &str| tok.token_to_id(s);
        let need = |s: &str| {
            id(s).ok_or_else(|| AsrError::Model(format!("tokenizer lacks the `{s}` token")))
        };
        let no_timestamps = need("<|notimestamps|>")?;
        let languages = lang_ids
            .iter()
            .filter_map(|&t| {
                let s = tok.id_to_token(t)?;
                let code = s.strip_prefix("<|")?.strip_suffix("|>")?;
                Some((code.to_string(), t))
            })
            .collect();
        Ok(Self {
            sot: need("<|startoftranscript|>")?,
            eot: need("<|endoftext|>")?,
            transcribe: id("<|transcribe|>"),
            translate: id("<|translate|>"),
            sot_prev: id("<|startofprev|>"),
            no_speech: id("<|nospeech|>").or_else(|| id("<|nocaptions|>")),
            no_timestamps,
            timestamp_begin: id("<|0.00|>").unwrap_or(no_timestamps + 1),
            languages,
        })
    }

    pub fn language_token(&self, code: &str) -> Option<u32> {
        let code = code.trim().to_ascii_lowercase();
        self.languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, t)| *t)
    }

    pub fn language_code(&self, token: u32) -> Option<&str> {
        self.languages
            .iter()
            .find(|(_, t)| *t == token)
            .map(|(c, _)| c.as_str())
    }
}

pub(crate) struct LogitRules<'a> {
    pub tokens: &'a SpecialTokens,
    /// Non-speech symbols (config.json `suppress_ids`).
    pub suppress: &'a [u32],
    /// Suppressed as the first sampled token (config.json `suppress_ids_begin`).
    pub suppress_begin: &'a [u32],
}

impl LogitRules<'_> {
    /// Masks `logits` for the next token after `sampled` (the tokens produced so far, without
    /// the prompt).
    pub fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let n = logits.len();
        let ts = (self.tokens.timestamp_begin as usize).min(n);
        let eot = self.tokens.eot as usize;
        let mut ban = |i: usize| {
            if let Some(l) = logits.get_mut(i) {
                *l = f32::NEG_INFINITY;
            }
        };
        if sampled.is_empty() {
            for &t in self.suppress_begin {
                ban(t as usize);
            }
        }
        for &t in self.suppress {
            ban(t as usize);
        }
        // Every special token but end-of-text (start/language/task/no-timestamps...).
        for i in eot + 1..ts {
            ban(i);
        }

        let is_ts = |t: u32| t >= self.tokens.timestamp_begin;
        let last_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penultimate_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_ts {
            if penultimate_ts {
                logits[ts..].fill(f32::NEG_INFINITY);
            } else {
                logits[..eot].fill(f32::NEG_INFINITY);
            }
        }
        // Timestamps never go backwards (and a closed segment's end is not reused as a start).
        if let Some(&last) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let floor = if last_ts && !penultimate_ts {
                last
            } else {
                last + 1
            };
            let floor = (floor as usize).min(n);
            logits[ts..floor].fill(f32::NEG_INFINITY);
        }
        if sampled.is_empty() {
            logits[..ts].fill(f32::NEG_INFINITY);
            let limit = (ts + MAX_INITIAL_TIMESTAMP_INDEX + 1).min(n);
            logits[limit..].fill(f32::NEG_INFINITY);
        }
        // If the timestamps together are likelier than any single text token, emit one.
        let logprobs = log_softmax(logits);
        let ts_logprob = log_sum_exp(&logprobs[ts..]);
        let max_text = logprobs[..ts]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if ts_logprob > max_text {
            logits[..ts].fill(f32::NEG_INFINITY);
        }
    }
}

pub(crate) fn log_sum_exp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + xs.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

pub(crate) fn log_softmax(xs: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(xs);
    xs.iter().map(|&x| x - lse).collect()
}

pub(crate) fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> SpecialTokens {
        SpecialTokens {
            sot: 11,
            eot: 10,
            transcribe: None,
            translate: None,
            sot_prev: None,
            no_speech: None,
            no_timestamps: 13,
            timestamp_begin: 14,
            languages: vec![],
        }
    }

    #[test]
    fn timestamp_rules() {
        let st = tokens();
        let rules = LogitRules {
            tokens: &st,
            suppress: &[3],
            suppress_begin: &[10],
        };
        // First token must be a timestamp.
        let mut l = vec![0.0f32; 80];
        rules.apply(&mut l, &[]);
        assert!(l[..14].iter().all(|x| x.is_infinite()));
        assert!(l[14..65].iter().all(|x| x.is_finite()));
        assert!(l[65..].iter().all(|x| x.is_infinite()));
        // After one timestamp, text or a later timestamp; after text closing, no earlier time.
        let mut l = vec![0.0f32; 80];
        rules.apply(&mut l, &[20, 5]);
        assert!(l[3].is_infinite() && l[12].is_infinite() && l[20].is_infinite());
        assert!(l[21].is_finite());
        // A lone closing timestamp must be followed by a timestamp or end-of-text.
        let mut l = vec![0.0f32; 80];
        l[10] = 20.0;
        rules.apply(&mut l, &[20, 5, 30]);
        assert!(l[..10].iter().all(|x| x.is_infinite()));
        assert!(l[10].is_finite() && l[30].is_finite() && l[29].is_infinite());
        // A timestamp pair must be followed by text.
        let mut l = vec![0.0f32; 80];
        l[5] = 10.0;
        rules.apply(&mut l, &[20, 5, 30, 30]);
        assert!(l[14..].iter().all(|x| x.is_infinite()));
        assert_eq!(argmax(&l), 5);
    }
}
