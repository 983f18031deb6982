//! Transcription results and their WebVTT rendering.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    /// How sure language detection was of `language` (1 when the language was given or the
    /// model knows only English).
    pub language_probability: f32,
    /// Seconds of audio transcribed.
    pub duration: f32,
    /// Seconds of audio left after `vad_filter` (`duration` without it).
    pub duration_after_vad: f32,
    pub segments: Vec<Segment>,
    pub words: Vec<Word>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Segment {
    pub start: f32,
    pub end: f32,
    pub text: String,
    /// The decoder's probability of each whitespace-separated word of `text` (the mean over
    /// its tokens); empty when unknown.
    pub word_probabilities: Vec<f32>,
    /// How the segment's 30 s window was decoded: the temperature of the result kept, its
    /// mean token log probability, its text's zlib compression ratio and the probability that
    /// the window holds no speech (faster-whisper's segment fields).
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Word {
    pub word: String,
    pub start: f32,
    pub end: f32,
    /// The decoder's probability of the word, 0–1.
    pub probability: f32,
}

/// Approximate word timings: each segment's time is shared among its words in proportion to
/// their length in characters (plus one for the gap before a word).
pub(crate) fn words_of(segments: &[Segment]) -> Vec<Word> {
    let mut words = Vec::new();
    for seg in segments {
        let parts: Vec<&str> = seg.text.split_whitespace().collect();
        let weights: Vec<f32> = parts
            .iter()
            .map(|w| w.chars().count() as f32 + 1.0)
            .collect();
        let total: f32 = weights.iter().sum();
        if total <= 0.0 {
            continue;
        }
        let span = (seg.end - seg.start).max(0.0);
        let mut t = seg.start;
        // Token words that do not line up with the text's words: each gets the mean.
        let probabilities = &seg.word_probabilities;
        let mean = if probabilities.is_empty() {
            1.0
        } else {
            probabilities.iter().sum::<f32>() / probabilities.len() as f32
        };
        let aligned = probabilities.len() == parts.len();
        for (i, (word, weight)) in parts.iter().zip(&weights).enumerate() {
            let end = (t + span * weight / total).min(seg.end.max(seg.start));
            words.push(Word {
                word: (*word).to_string(),
                start: round2(t),
                end: round2(end),
                probability: if aligned { probabilities[i] } else { mean },
            });
            t = end;
        }
    }
    words
}

pub(crate) fn round2(x: f32) -> f32 {
    (x * 100.0).round() / 100.0
}

fn vtt_time(secs: f32) -> String {
    let ms = (secs.max(0.0) as f64 * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Renders the segments as a WebVTT document (`HH:MM:SS.mmm` cue times).
pub fn to_vtt(transcript: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for seg in &transcript.segments {
        let text = seg.text.trim();
        if text.is_empty() {
            continue;
        }
        out.push_str(&vtt_time(seg.start));
        out.push_str(" --> ");
        out.push_str(&vtt_time(seg.end));
        out.push('\n');
        // A blank line would end the cue; "-->" would be read as a timing line.
        out.push_str(&text.replace("\n\n", "\n").replace("-->", "->"));
        out.push_str("\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f32, end: f32, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            ..Segment::default()
        }
    }

    #[test]
    fn vtt_format() {
        let t = Transcript {
            text: "Hello world. Bye.".into(),
            language: "en".into(),
            language_probability: 1.0,
            duration: 3725.5,
            duration_after_vad: 3725.5,
            segments: vec![
                seg(0.0, 1.5, " Hello world."),
                seg(3723.25, 3725.5, " Bye."),
            ],
            words: vec![],
        };
        assert_eq!(
            to_vtt(&t),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello world.\n\n\
             01:02:03.250 --> 01:02:05.500\nBye.\n\n"
        );
    }

    #[test]
    fn words_share_segment_time() {
        let w = words_of(&[seg(1.0, 3.0, " a bbb"), seg(3.0, 4.0, " c")]);
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].word.as_str(), w[0].start, w[0].end), ("a", 1.0, 1.67));
        assert_eq!((w[1].start, w[1].end), (1.67, 3.0));
        assert_eq!((w[2].start, w[2].end), (3.0, 4.0));
    }
}
