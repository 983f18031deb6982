//! `vad_filter`, as faster-whisper does it: the recording's speech is found (here by Kiln's
//! energy gate, [`kiln_core::vad::EnergyGate`], where faster-whisper runs Silero), only the
//! speech is transcribed, and the times are mapped back onto the whole recording.

use std::ops::Range;

use kiln_core::vad::{rms_f32, EnergyGate, FRAME_MS};

use crate::output::{round2, Transcript};

const SAMPLE_RATE: usize = 16_000;
/// A pause this long splits the speech (faster-whisper's `min_silence_duration_ms`).
const MIN_SILENCE_MS: usize = 2_000;
/// Kept on both sides of the speech (faster-whisper's `speech_pad_ms`).
const SPEECH_PAD_MS: usize = 400;
/// Sound shorter than this is a click, not speech.
const MIN_SPEECH_MS: usize = 100;

/// The sample ranges of `samples` (16 kHz) that hold speech, padded, in order, not overlapping.
pub(crate) fn speech_chunks(samples: &[f32]) -> Vec<Range<usize>> {
    let frame_ms = FRAME_MS as usize;
    let frame = SAMPLE_RATE * frame_ms / 1000;
    let mut gate = EnergyGate::default();
    // Runs of speech frames, joined across pauses shorter than MIN_SILENCE_MS.
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (i, chunk) in samples.chunks(frame).enumerate() {
        if !gate.is_speech(rms_f32(chunk)) {
            continue;
        }
        match runs.last_mut() {
            Some(run) if (i - run.end) * frame_ms < MIN_SILENCE_MS => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    let pad = SAMPLE_RATE * SPEECH_PAD_MS / 1000;
    let mut chunks: Vec<Range<usize>> = Vec::new();
    for run in runs
        .into_iter()
        .filter(|r| r.len() * frame_ms >= MIN_SPEECH_MS)
    {
        let start = (run.start * frame).saturating_sub(pad);
        let end = (run.end * frame + pad).min(samples.len());
        match chunks.last_mut() {
            Some(last) if start <= last.end => last.end = end,
            _ => chunks.push(start..end),
        }
    }
    chunks
}

/// The samples of `chunks`, one after the other.
pub(crate) fn collect(samples: &[f32], chunks: &[Range<usize>]) -> Vec<f32> {
    chunks
        .iter()
        .flat_map(|r| samples[r.clone()].iter().copied())
        .collect()
}

/// Maps times in the collected speech back to times in the whole recording.
pub(crate) struct TimeMap {
    /// Per chunk: where it starts in the recording and in the collected speech, and where it
    /// ends in the collected speech (seconds).
    chunks: Vec<(f32, f32, f32)>,
}

impl TimeMap {
    pub fn new(chunks: &[Range<usize>]) -> Self {
        let seconds = |samples: usize| samples as f32 / SAMPLE_RATE as f32;
        let mut kept = 0;
        let chunks = chunks
            .iter()
            .map(|r| {
                let entry = (seconds(r.start), seconds(kept), seconds(kept + r.len()));
                kept += r.len();
                entry
            })
            .collect();
        Self { chunks }
    }

    /// The chunk holding collected time `t`; a time on a boundary belongs to the chunk it
    /// ends when `is_end`, else to the one it starts.
    fn chunk_of(&self, t: f32, is_end: bool) -> usize {
        let last = self.chunks.len().saturating_sub(1);
        self.chunks
            .iter()
            .position(|&(_, _, end)| if is_end { t <= end } else { t < end })
            .unwrap_or(last)
    }

    fn original_in(&self, t: f32, chunk: usize) -> f32 {
        self.chunks
            .get(chunk)
            .map_or(t, |&(original, kept, _)| original + (t - kept))
    }

    /// Moves every segment and word of `transcript` (times in the collected speech) to its
    /// time in the recording. A word stays in the chunk its middle is in.
    pub fn restore(&self, transcript: &mut Transcript) {
        for word in &mut transcript.words {
            let chunk = self.chunk_of((word.start + word.end) / 2.0, false);
            word.start = round2(self.original_in(word.start, chunk));
            word.end = round2(self.original_in(word.end, chunk));
        }
        for segment in &mut transcript.segments {
            let (start, end) = (segment.start, segment.end);
            segment.start = round2(self.original_in(start, self.chunk_of(start, false)));
            segment.end = round2(self.original_in(end, self.chunk_of(end, true)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Segment, Word};

    /// `ms` of a 300 Hz tone at `amplitude` (silence when 0).
    fn tone(ms: usize, amplitude: f32) -> Vec<f32> {
        (0..16 * ms)
            .map(|i| (i as f32 * 300.0 * std::f32::consts::TAU / 16_000.0).sin() * amplitude)
            .collect()
    }

    #[test]
    fn speech_is_found_padded_and_joined_across_short_pauses() {
        // 3 s silence, 1 s "speech", 1 s pause, 1 s speech, 4 s silence, a 40 ms click, 3 s
        // silence, 0.5 s speech, 3 s silence.
        let mut audio = tone(3_000, 0.0);
        for (ms, amplitude) in [
            (1_000, 0.3),
            (1_000, 0.0),
            (1_000, 0.3),
            (4_000, 0.0),
            (40, 0.5),
            (3_000, 0.0),
            (500, 0.3),
            (3_000, 0.0),
        ] {
            audio.extend(tone(ms, amplitude));
        }
        let chunks = speech_chunks(&audio);
        let seconds: Vec<(f32, f32)> = chunks
            .iter()
            .map(|r| (r.start as f32 / 16_000.0, r.end as f32 / 16_000.0))
            .collect();
        // The two close utterances are one chunk, padded by 0.4 s; the click is gone.
        assert_eq!(seconds, [(2.6, 6.4), (12.64, 13.94)], "{seconds:?}");
        assert!(speech_chunks(&tone(5_000, 0.0)).is_empty());
        assert_eq!(
            collect(&audio, &chunks).len(),
            chunks.iter().map(|r| r.len()).sum::<usize>()
        );
    }

    #[test]
    fn times_go_back_to_the_recording() {
        // Chunks at 2.6–6.4 s and 13.6–14.9 s: collected as 0–3.8 s and 3.8–5.1 s.
        let map = TimeMap::new(&[41_600..102_400, 217_600..238_400]);
        let word = |start: f32, end: f32| Word {
            word: "w".into(),
            start,
            end,
            probability: 1.0,
        };
        let mut transcript = Transcript {
            text: String::new(),
            language: "en".into(),
            language_probability: 1.0,
            duration: 5.1,
            duration_after_vad: 5.1,
            segments: vec![
                Segment {
                    start: 0.5,
                    end: 3.8,
                    text: "a b".into(),
                    ..Segment::default()
                },
                Segment {
                    start: 3.8,
                    end: 4.5,
                    text: "c".into(),
                    ..Segment::default()
                },
            ],
            words: vec![word(0.5, 1.0), word(3.7, 3.9), word(4.0, 4.5)],
        };
        map.restore(&mut transcript);
        let words: Vec<(f32, f32)> = transcript.words.iter().map(|w| (w.start, w.end)).collect();
        // The middle word's middle (3.8) starts the second chunk.
        assert_eq!(words, [(3.1, 3.6), (13.5, 13.7), (13.8, 14.3)]);
        let segments: Vec<(f32, f32)> = transcript
            .segments
            .iter()
            .map(|s| (s.start, s.end))
            .collect();
        assert_eq!(segments, [(3.1, 6.4), (13.6, 14.3)]);
    }
}
