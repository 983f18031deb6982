//! The log-mel filterbank Whisper was trained with, computed instead of downloaded.
//!
//! This is `librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`, which
//! is what OpenAI's `mel_filters.npz` holds.

use candle_transformers::models::whisper::{
    audio::log_mel_spectrogram_, HOP_LENGTH, N_FFT, SAMPLE_RATE,
};

use crate::AsrError;

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

/// Slaney-style Hz → mel (linear below 1 kHz, logarithmic above).
pub fn hz_to_mel(hz: f64) -> f64 {
    if hz < MIN_LOG_HZ {
        hz / F_SP
    } else {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    }
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    if mel < MIN_LOG_MEL {
        F_SP * mel
    } else {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    }
}

/// The filterbank as `n_mels` rows of `N_FFT / 2 + 1` weights, flattened row-major (the layout
/// candle's `pcm_to_mel` takes).
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let n_bins = N_FFT / 2 + 1;
    let nyquist = SAMPLE_RATE as f64 / 2.0;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * nyquist / (n_bins - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = Vec::with_capacity(n_mels * n_bins);
    for i in 0..n_mels {
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for &f in &fft_freqs {
            let lower = (f - mel_f[i]) / (mel_f[i + 1] - mel_f[i]);
            let upper = (mel_f[i + 2] - f) / (mel_f[i + 2] - mel_f[i + 1]);
            out.push((lower.min(upper).max(0.0) * enorm) as f32);
        }
    }
    out
}

/// Mel frames computed per call of candle's spectrogram: 150 s, so a deadline is checked
/// every few hundred milliseconds and a call's buffers stay small.
const CHUNK_FRAMES: usize = 15_000;
/// Frames candle pads its spectrogram with (half a 30 s window).
const PAD_FRAMES: usize = 1_500;

/// The normalised log-mel spectrogram of `samples` followed by 30 s of silence: what candle's
/// `pcm_to_mel` returns for them, as `n_mels` rows of `n_frames` (the second value), but
/// computed in chunks with `keep_going` asked between them, and without candle's per-thread
/// copies of the whole spectrogram (12 × its size on a large machine).
///
/// Each chunk comes out of candle normalised by its own maximum (`max(v, max − 8) / 4 + 1`);
/// that is undone and the whole is normalised by the global maximum. A chunk's floor is at
/// most the global floor, so this is candle's result, except if the partial frames past a
/// chunk's end were louder than any real frame (then that chunk's quietest values sit higher).
pub fn log_mel(
    samples: &[f32],
    n_mels: usize,
    filters: &[f32],
    keep_going: &dyn Fn() -> bool,
) -> Result<(Vec<f32>, usize), AsrError> {
    let padded_len = samples.len() + candle_transformers::models::whisper::N_SAMPLES;
    let mut n_frames = padded_len / HOP_LENGTH;
    if !n_frames.is_multiple_of(PAD_FRAMES) {
        n_frames = (n_frames / PAD_FRAMES + 1) * PAD_FRAMES;
    }
    n_frames += PAD_FRAMES;
    let mut mel = vec![0f32; n_mels * n_frames];
    let mut global_max = f32::NEG_INFINITY;
    let mut chunk = Vec::new();
    let mut f0 = 0;
    while f0 < n_frames {
        if !keep_going() {
            return Err(AsrError::Stopped);
        }
        let f1 = (f0 + CHUNK_FRAMES).min(n_frames);
        // The samples frames f0..f1 read (each N_FFT long, HOP_LENGTH apart), zeros past the end.
        let (start, end) = (f0 * HOP_LENGTH, (f1 - 1) * HOP_LENGTH + N_FFT);
        chunk.clear();
        chunk.extend_from_slice(&samples[start.min(samples.len())..end.min(samples.len())]);
        chunk.resize(end - start, 0.0);
        let out = log_mel_spectrogram_(&chunk, filters, N_FFT, HOP_LENGTH, n_mels, false);
        let stride = out.len() / n_mels;
        if stride < f1 - f0 {
            return Err(AsrError::Model(format!(
                "spectrogram chunk has {stride} frames, fewer than {}",
                f1 - f0
            )));
        }
        for m in 0..n_mels {
            let row = &out[m * stride..m * stride + (f1 - f0)];
            let dst = &mut mel[m * n_frames + f0..m * n_frames + f1];
            for (d, &v) in dst.iter_mut().zip(row) {
                // Undo candle's `v / 4 + 1`.
                let raw = (v - 1.0) * 4.0;
                global_max = global_max.max(raw);
                *d = raw;
            }
        }
        f0 = f1;
    }
    let floor = global_max - 8.0;
    for v in &mut mel {
        *v = v.max(floor) / 4.0 + 1.0;
    }
    Ok((mel, n_frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_log_mel_matches_candle() {
        // 400 s of a chirp with noise: more than two chunks, and frames across their edges.
        let n = 16_000 * 400 + 77;
        let mut seed = 1u32;
        let samples: Vec<f32> = (0..n)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f32 / 16_000.0;
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                (t * (200.0 + t * 5.0) * std::f32::consts::TAU).sin() * 0.3 * (t * 0.05).sin()
                    + noise * 0.01
            })
            .collect();
        let filters = mel_filters(80);
        let (ours, frames) = log_mel(&samples, 80, &filters, &|| true).expect("mel");
        let mut padded = samples.clone();
        padded.extend(std::iter::repeat_n(
            0.0,
            candle_transformers::models::whisper::N_SAMPLES,
        ));
        let theirs = log_mel_spectrogram_(&padded, &filters, N_FFT, HOP_LENGTH, 80, false);
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(frames * 80, theirs.len());
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
    }

    #[test]
    fn log_mel_stops_when_told() {
        let samples = vec![0.1f32; 16_000 * 10];
        let filters = mel_filters(80);
        assert!(matches!(
            log_mel(&samples, 80, &filters, &|| false),
            Err(AsrError::Stopped)
        ));
    }

    #[test]
    fn matches_openai_mel_filters() {
        let w = mel_filters(80);
        assert_eq!(w.len(), 80 * 201);
        let at = |row: usize, col: usize| w[row * 201 + col];
        // Reference values of OpenAI's mel_filters.npz["mel_80"] / librosa 0.10.
        assert!((at(0, 1) - 0.024_862_594).abs() < 1e-7);
        assert_eq!(at(0, 2), 0.0);
        assert!((at(1, 2) - 0.022_871_772).abs() < 1e-7);
        assert!((at(79, 190) - 0.002_232_055).abs() < 1e-8);
        assert!((at(79, 199) - 0.000_448_759).abs() < 1e-8);
        let total: f32 = w.iter().sum();
        assert!((total - 1.999_024).abs() < 1e-4, "{total}");
    }

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
    }
}
