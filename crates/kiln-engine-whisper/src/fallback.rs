//! Temperature fallback, as openai-whisper's and faster-whisper's `generate_with_fallback`:
//! a window is decoded at temperature 0 first; while the result repeats itself (its text
//! compresses too well) or is unlikely (low mean log probability), it is decoded again at the
//! next temperature, by sampling. If every temperature fails, the likeliest result wins.

/// faster-whisper's default temperatures.
pub const FALLBACK_TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
/// A window decoded above this temperature does not prompt the next one (its text is likely
/// poor; faster-whisper's `prompt_reset_on_temperature`).
pub(crate) const PROMPT_RESET_TEMPERATURE: f32 = 0.5;

/// When a decoded window is not good enough (`None`: never for that reason).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Thresholds {
    pub compression_ratio: Option<f32>,
    pub log_prob: Option<f32>,
    pub no_speech: Option<f32>,
}

/// What a window's decoding is judged by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quality {
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
}

/// One decoding of a window and the temperature it was made at.
#[derive(Debug, Clone)]
pub(crate) struct Attempt<T> {
    pub value: T,
    pub temperature: f32,
    pub quality: Quality,
}

/// The text's UTF-8 length over its zlib-compressed length (level 6, as Python's
/// `zlib.compress`): repetition loops compress far better than speech.
pub(crate) fn compression_ratio(text: &str) -> f32 {
    let bytes = text.as_bytes();
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(bytes, 6);
    bytes.len() as f32 / compressed.len().max(1) as f32
}

impl Thresholds {
    /// Whether a result of this quality is tried again at a higher temperature. A likely
    /// silent window is not: its low log probability is the silence's.
    pub fn needs_fallback(&self, q: &Quality) -> bool {
        let repetitive = self
            .compression_ratio
            .is_some_and(|limit| q.compression_ratio > limit);
        let unlikely = self.log_prob.is_some_and(|limit| q.avg_logprob < limit);
        let silent = self.no_speech.is_some_and(|limit| q.no_speech_prob > limit) && unlikely;
        (repetitive || unlikely) && !silent
    }

    /// Whether a window is skipped as silence: likely no speech, and its text not likely.
    pub fn is_silence(&self, q: &Quality) -> bool {
        self.no_speech.is_some_and(|limit| q.no_speech_prob > limit)
            && !self.log_prob.is_some_and(|limit| q.avg_logprob > limit)
    }
}

/// Decodes at each of `temperatures` in turn (at least temperature 0) until a result needs no
/// fallback. When all fail: the result with the best mean log probability among those under
/// the compression-ratio threshold (or among all, if none is), reported at the last
/// temperature tried, as faster-whisper does.
pub(crate) fn with_fallback<T, E>(
    temperatures: &[f32],
    thresholds: &Thresholds,
    mut decode: impl FnMut(f32) -> Result<(T, Quality), E>,
) -> Result<Attempt<T>, E> {
    let (&first, rest) = temperatures.split_first().unwrap_or((&0.0, &[]));
    let not_repetitive = |q: &Quality| {
        thresholds
            .compression_ratio
            .is_none_or(|limit| q.compression_ratio <= limit)
    };
    // Prefer results under the compression threshold, then the likelier.
    let rank = |q: &Quality| (not_repetitive(q), q.avg_logprob);
    let mut attempt = |temperature: f32| {
        decode(temperature).map(|(value, quality)| Attempt {
            value,
            temperature,
            quality,
        })
    };
    let mut best = attempt(first)?;
    if !thresholds.needs_fallback(&best.quality) {
        return Ok(best);
    }
    for &temperature in rest {
        let next = attempt(temperature)?;
        if !thresholds.needs_fallback(&next.quality) {
            return Ok(next);
        }
        if rank(&next.quality) > rank(&best.quality) {
            best = next;
        }
        best.temperature = temperature;
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Thresholds = Thresholds {
        compression_ratio: Some(2.4),
        log_prob: Some(-1.0),
        no_speech: Some(0.6),
    };

    fn quality(avg_logprob: f32, compression_ratio: f32, no_speech_prob: f32) -> Quality {
        Quality {
            avg_logprob,
            compression_ratio,
            no_speech_prob,
        }
    }

    #[test]
    fn compression_ratio_is_zlibs() {
        // Python: len(s) / len(zlib.compress(s)) for s = b"hello world" (19 bytes compressed).
        assert!((compression_ratio("hello world") - 11.0 / 19.0).abs() < 1e-6);
        let looping = " I'm going to go to the store.".repeat(20);
        let ratio = compression_ratio(&looping);
        assert!(ratio > 2.4 * 4.0, "{ratio}");
        let speech = "The quick brown fox jumps over the lazy dog, then naps by the river.";
        assert!(compression_ratio(speech) < 2.4);
        assert_eq!(compression_ratio(""), 0.0);
    }

    #[test]
    fn fallback_decisions() {
        assert!(!DEFAULTS.needs_fallback(&quality(-0.3, 1.5, 0.01)));
        assert!(
            DEFAULTS.needs_fallback(&quality(-0.3, 3.0, 0.01)),
            "repetitive"
        );
        assert!(
            DEFAULTS.needs_fallback(&quality(-1.2, 1.5, 0.01)),
            "unlikely"
        );
        // Unlikely because silent: no fallback, and the window is silence.
        assert!(!DEFAULTS.needs_fallback(&quality(-1.2, 1.5, 0.9)));
        assert!(DEFAULTS.is_silence(&quality(-1.2, 1.5, 0.9)));
        assert!(
            !DEFAULTS.is_silence(&quality(-0.2, 1.5, 0.9)),
            "confident text"
        );
        assert!(!DEFAULTS.is_silence(&quality(-1.2, 1.5, 0.2)));
        let off = Thresholds {
            compression_ratio: None,
            log_prob: None,
            no_speech: None,
        };
        assert!(
            !off.needs_fallback(&quality(-9.0, 9.0, 0.9))
                && !off.is_silence(&quality(-9.0, 1.0, 1.0))
        );
    }

    #[test]
    fn the_first_good_temperature_wins() {
        let mut asked = Vec::new();
        let attempt = with_fallback::<_, ()>(&FALLBACK_TEMPERATURES, &DEFAULTS, |t| {
            asked.push(t);
            // Repetitive at 0 and 0.2, fine at 0.4.
            let ratio = if t < 0.3 { 3.5 } else { 1.2 };
            Ok((format!("at {t}"), quality(-0.4, ratio, 0.0)))
        })
        .unwrap();
        assert_eq!(asked, [0.0, 0.2, 0.4]);
        assert_eq!(attempt.temperature, 0.4);
        assert_eq!(attempt.value, "at 0.4");
        // Without fallback temperatures only 0 is tried.
        let attempt =
            with_fallback::<_, ()>(&[0.0], &DEFAULTS, |t| Ok((t, quality(-5.0, 9.0, 0.0))))
                .unwrap();
        assert_eq!((attempt.value, attempt.temperature), (0.0, 0.0));
    }

    #[test]
    fn when_every_temperature_fails_the_likeliest_non_repetitive_result_wins() {
        let results = [
            (0.0, quality(-0.2, 5.0, 0.0)), // likeliest, but a loop
            (0.2, quality(-1.5, 2.0, 0.0)),
            (0.4, quality(-1.1, 2.1, 0.0)), // best of the rest
            (0.6, quality(-1.9, 1.0, 0.0)),
            (0.8, quality(-3.0, 1.0, 0.0)),
            (1.0, quality(-2.0, 1.0, 0.0)),
        ];
        let attempt = with_fallback::<_, ()>(&FALLBACK_TEMPERATURES, &DEFAULTS, |t| {
            let (_, q) = results.iter().find(|(at, _)| *at == t).copied().unwrap();
            Ok((t, q))
        })
        .unwrap();
        assert_eq!(attempt.value, 0.4, "the result decoded at 0.4");
        assert_eq!(attempt.temperature, 1.0, "reported at the last temperature");
        // All loops: the likeliest loop.
        let attempt = with_fallback::<_, ()>(&[0.0, 0.5], &DEFAULTS, |t| {
            Ok((t, quality(if t == 0.0 { -0.5 } else { -0.7 }, 4.0, 0.0)))
        })
        .unwrap();
        assert_eq!((attempt.value, attempt.temperature), (0.0, 0.5));
        // An error stops the fallback.
        let failed = with_fallback::<(), _>(&[0.0, 0.2], &DEFAULTS, |_| Err("stopped"));
        assert_eq!(failed.err(), Some("stopped"));
    }
}
