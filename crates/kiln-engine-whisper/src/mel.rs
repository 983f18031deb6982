//! The log-mel filterbank Whisper was trained with, computed instead of downloaded.
//!
//! This is `librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`, which
//! is what OpenAI's `mel_filters.npz` holds.

use candle_transformers::models::whisper::{N_FFT, SAMPLE_RATE};

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

#[cfg(test)]
mod tests {
    use super::*;

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
