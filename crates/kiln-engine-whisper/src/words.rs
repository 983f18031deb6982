//! Word timestamps for one decoded window: the decoder re-reads the window's text (after the
//! start-of-transcript sequence and `<|notimestamps|>`), its alignment heads' cross-attention
//! gives a token × frame alignment ([`crate::timing`]), and words take the times of their first
//! and last tokens. As openai-whisper does, punctuation joins its word, over-long words at
//! sentence and segment boundaries are cut to twice the median word length, and a segment's
//! bounds follow its words.

use std::ops::Range;

use tokenizers::Tokenizer;

use crate::model::Decoder;
use crate::output::{round2, Segment, Word};
use crate::rules::SpecialTokens;
use crate::timing::{
    alignment_matrix, dtw, row_starts, sounding_frames, trim_to_sound, HeadScores,
};
use crate::AsrError;

const PREPENDED: &str = "\"'“¿([{-";
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_ENDS: &str = ".。!！?？";
/// Languages written without spaces between words: each token (or run of tokens forming whole
/// characters) is a word.
const NO_SPACES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// openai-whisper's alignment heads (`_ALIGNMENT_HEADS`) as (layer, head), by the model's
/// (decoder layers, heads, multilingual).
pub(crate) fn known_alignment_heads(
    layers: usize,
    heads: usize,
    multilingual: bool,
) -> Vec<(usize, usize)> {
    let known: &[(usize, usize)] = match (layers, heads, multilingual) {
        (4, 6, false) => &[
            (1, 0),
            (2, 0),
            (2, 5),
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4),
        ],
        (4, 6, true) => &[(2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)],
        (6, 8, false) => &[(3, 3), (4, 7), (5, 1), (5, 5), (5, 7)],
        (6, 8, true) => &[
            (3, 1),
            (4, 2),
            (4, 3),
            (4, 7),
            (5, 1),
            (5, 2),
            (5, 4),
            (5, 6),
        ],
        // Otherwise every head of the second half of the layers (openai-whisper's default).
        _ => {
            return (layers / 2..layers)
                .flat_map(|l| (0..heads).map(move |h| (l, h)))
                .collect()
        }
    };
    known.to_vec()
}

/// A word being built: its text (with its leading space), token count and probabilities.
struct Draft {
    text: String,
    tokens: usize,
    prob_sum: f32,
    start: f32,
    end: f32,
}

/// What [`align_window`] needs of the transcriber.
pub(crate) struct Aligner<'a> {
    pub decoder: &'a mut Decoder,
    pub tokenizer: &'a Tokenizer,
    pub special: &'a SpecialTokens,
    pub heads: &'a [(usize, usize)],
    pub language: &'a str,
}

impl Aligner<'_> {
    /// Words of one window's new `segments` (whose tokens are `ranges` of `tokens`, with
    /// `probs` the decoder's probability of each token). `frames` is the window's length in mel
    /// frames; times are offset by `time_offset`. Updates the segments' bounds and
    /// `last_speech` (the end of the last segment with words). `audio` is the window's samples
    /// (16 kHz); words are pulled in to where it sounds.
    #[allow(clippy::too_many_arguments)]
    pub fn align_window(
        &mut self,
        audio: &[f32],
        sot_seq: &[u32],
        tokens: &[u32],
        probs: &[f32],
        ranges: &[Range<usize>],
        segments: &mut [Segment],
        frames: usize,
        time_offset: f32,
        last_speech: &mut f32,
    ) -> Result<Vec<Word>, AsrError> {
        let eot = self.special.eot;
        let per_segment: Vec<Vec<(u32, f32)>> = ranges
            .iter()
            .map(|r| {
                let toks = tokens.get(r.clone()).unwrap_or_default();
                let ps = probs.get(r.clone()).unwrap_or_default();
                toks.iter()
                    .zip(ps.iter().chain(std::iter::repeat(&0.0)))
                    .filter(|(&t, _)| t < eot)
                    .map(|(&t, &p)| (t, p))
                    .collect()
            })
            .collect();
        let text: Vec<u32> = per_segment.iter().flatten().map(|(t, _)| *t).collect();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let text_probs: Vec<f32> = per_segment.iter().flatten().map(|(_, p)| *p).collect();
        let mut drafts = self.split_words(&text, &text_probs)?;
        let starts = self.token_times(sot_seq, &text, frames)?;
        if starts.len() != text.len() + 1 {
            return Ok(Vec::new());
        }
        let sounding = sounding_frames(audio);
        let mut at = 0;
        for d in &mut drafts {
            (d.start, d.end) = trim_to_sound(starts[at], starts[at + d.tokens], &sounding);
            at += d.tokens;
        }

        let durations: Vec<f32> = drafts
            .iter()
            .map(|d| d.end - d.start)
            .filter(|&x| x > 0.0)
            .collect();
        let median = median_of(durations).min(0.7);
        let max_duration = median * 2.0;
        if median > 0.0 {
            for i in 1..drafts.len() {
                if drafts[i].end - drafts[i].start > max_duration {
                    if SENTENCE_ENDS.contains(drafts[i].text.trim()) {
                        drafts[i].end = drafts[i].start + max_duration;
                    } else if SENTENCE_ENDS.contains(drafts[i - 1].text.trim()) {
                        drafts[i].start = drafts[i].end - max_duration;
                    }
                }
            }
        }
        merge_punctuation(&mut drafts);

        let mut out = Vec::new();
        let mut next = 0;
        for (segment, seg_tokens) in segments.iter_mut().zip(&per_segment) {
            let mut words: Vec<Word> = Vec::new();
            let mut saved = 0;
            while next < drafts.len() && saved < seg_tokens.len() {
                let d = &drafts[next];
                if !d.text.is_empty() {
                    words.push(Word {
                        word: d.text.trim().to_string(),
                        start: round2(time_offset + d.start),
                        end: round2(time_offset + d.end),
                        probability: d.prob_sum / d.tokens.max(1) as f32,
                    });
                }
                saved += d.tokens;
                next += 1;
            }
            adjust_segment(segment, &mut words, median, *last_speech);
            if let Some(last) = words.last() {
                *last_speech = last.end.max(segment.end);
            }
            out.extend(words);
        }
        Ok(out)
    }

    /// Start time (seconds into the window) of each row: the `<|notimestamps|>` query and each
    /// text token's; `text.len() + 1` values.
    fn token_times(
        &mut self,
        sot_seq: &[u32],
        text: &[u32],
        frames: usize,
    ) -> Result<Vec<f32>, AsrError> {
        let mut input: Vec<u32> = sot_seq.to_vec();
        input.push(self.special.no_timestamps);
        input.extend_from_slice(text);
        input.push(self.special.eot);
        if input.len() > self.decoder.n_ctx() {
            return Ok(Vec::new());
        }
        self.decoder.reset();
        let out = self.decoder.forward(&input, self.heads)?;
        self.decoder.reset();
        let heads = out
            .cross_scores
            .iter()
            .map(|t| {
                let (rows, stride) = t.dims2()?;
                Ok(HeadScores {
                    values: t.flatten_all()?.to_vec1::<f32>()?,
                    rows,
                    stride,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (matrix, rows) = alignment_matrix(&heads, frames / 2, sot_seq.len());
        let cols = matrix.len().checked_div(rows).unwrap_or(0);
        let cost: Vec<f32> = matrix.iter().map(|x| -x).collect();
        let path = dtw(&cost, rows, cols);
        Ok(row_starts(&path, rows))
    }

    /// Splits text tokens into words (tokens that decode to whole characters, then joined at
    /// spaces and punctuation unless the language has no spaces).
    fn split_words(&self, text: &[u32], probs: &[f32]) -> Result<Vec<Draft>, AsrError> {
        let decode = |ids: &[u32]| {
            self.tokenizer
                .decode(ids, false)
                .map_err(|e| AsrError::Model(format!("tokenizer: {e}")))
        };
        // Groups of tokens that decode to whole characters.
        let mut pieces: Vec<(String, Range<usize>)> = Vec::new();
        let mut begin = 0;
        for end in 1..=text.len() {
            let piece = decode(&text[begin..end])?;
            if !piece.contains('\u{FFFD}') || end == text.len() {
                pieces.push((piece, begin..end));
                begin = end;
            }
        }
        let spaced = !NO_SPACES.contains(&self.language);
        let mut drafts: Vec<Draft> = Vec::new();
        for (piece, range) in pieces {
            let prob: f32 = probs.get(range.clone()).unwrap_or_default().iter().sum();
            let starts_word = !spaced
                || piece.starts_with(' ')
                || is_punctuation(piece.trim())
                || drafts.is_empty();
            match drafts.last_mut() {
                Some(last) if !starts_word => {
                    last.text.push_str(&piece);
                    last.tokens += range.len();
                    last.prob_sum += prob;
                }
                _ => drafts.push(Draft {
                    text: piece,
                    tokens: range.len(),
                    prob_sum: prob,
                    start: 0.0,
                    end: 0.0,
                }),
            }
        }
        Ok(drafts)
    }
}

fn is_punctuation(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_punctuation())
}

fn median_of(mut xs: Vec<f32>) -> f32 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_unstable_by(f32::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Joins opening punctuation to the following word and closing punctuation to the previous one
/// (the absorbed draft keeps its tokens but loses its text).
fn merge_punctuation(drafts: &mut [Draft]) {
    let n = drafts.len();
    if n < 2 {
        return;
    }
    let mut following = n - 1;
    for i in (0..n - 1).rev() {
        let prev = &drafts[i];
        if prev.text.starts_with(' ')
            && PREPENDED.contains(prev.text.trim())
            && !prev.text.trim().is_empty()
        {
            let text = std::mem::take(&mut drafts[i].text);
            let target = &mut drafts[following];
            target.text = text + &target.text;
        } else {
            following = i;
        }
    }
    let mut previous = 0;
    for j in 1..n {
        let absorb = !drafts[previous].text.ends_with(' ')
            && !drafts[j].text.is_empty()
            && APPENDED.contains(drafts[j].text.as_str());
        if absorb {
            let text = std::mem::take(&mut drafts[j].text);
            drafts[previous].text.push_str(&text);
        } else {
            previous = j;
        }
    }
}

/// openai-whisper's boundary rules: after a pause, the first word(s) may not be over-long; a
/// segment's start and end follow its first and last word unless that word overshoots the
/// segment's own timestamp by more than half a second.
fn adjust_segment(segment: &mut Segment, words: &mut [Word], median: f32, last_speech: f32) {
    let max_duration = median * 2.0;
    let n = words.len();
    if n == 0 {
        return;
    }
    if median > 0.0
        && words[0].end - last_speech > median * 4.0
        && (words[0].end - words[0].start > max_duration
            || (n > 1 && words[1].end - words[0].start > max_duration * 2.0))
    {
        if n > 1 && words[1].end - words[1].start > max_duration {
            let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = (words[0].end - max_duration).max(0.0);
    }
    if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
        words[0].start = (words[0].end - median).min(segment.start).max(0.0);
    } else {
        segment.start = words[0].start;
    }
    let last = n - 1;
    if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
        words[last].end = (words[last].start + median).max(segment.end);
    } else {
        segment.end = words[last].end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &str) -> Draft {
        Draft {
            text: text.into(),
            tokens: 1,
            prob_sum: 1.0,
            start: 0.0,
            end: 0.0,
        }
    }

    #[test]
    fn punctuation_joins_its_word() {
        let mut d = vec![
            draft(" \""),
            draft("Hello"),
            draft(","),
            draft(" world"),
            draft("."),
        ];
        merge_punctuation(&mut d);
        let texts: Vec<&str> = d.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, vec!["", " \"Hello,", "", " world.", ""]);
    }
}
