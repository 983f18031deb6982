//! The log-mel filterbank Whisper was trained with, computed instead of downloaded.
//!
//! This is `librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")`, which
//! is what OpenAI's `mel_filters.npz` holds.

use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use candle_transformers::models::whisper::{HOP_LENGTH, N_FFT, SAMPLE_RATE};

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

/// The real DFT of one `N_FFT` frame as a matrix, (N_FFT, 2·(N_FFT/2 + 1)): columns `2k` and
/// `2k + 1` are the cosine and negated sine of bin `k`, each row scaled by the periodic Hann
/// window, so a frame's windowed spectrum is one row of a product.
fn dft_basis() -> &'static [f32] {
    static BASIS: OnceLock<Vec<f32>> = OnceLock::new();
    BASIS.get_or_init(|| {
        let bins = N_FFT / 2 + 1;
        let mut values = Vec::with_capacity(N_FFT * 2 * bins);
        for j in 0..N_FFT {
            let hann = 0.5 * (1.0 - (std::f64::consts::TAU * j as f64 / N_FFT as f64).cos());
            for k in 0..bins {
                // k·j mod N_FFT keeps the angle within one turn.
                let angle = std::f64::consts::TAU * ((k * j) % N_FFT) as f64 / N_FFT as f64;
                values.push((hann * angle.cos()) as f32);
                values.push((-hann * angle.sin()) as f32);
            }
        }
        values
    })
}

/// log10 mel energies of `frames` frames of `samples` (frame `i` reads samples `160·i..160·i+400`,
/// zeros past the end), as `n_mels` rows of `frames`: candle's `log_mel_spectrogram_` before its
/// normalisation (including its doubling of the power of bins 1..N_FFT/2, which the model was
/// run with), but with the DFT as two matrix products instead of a recursive FFT.
fn raw_log_mel(
    samples: &[f32],
    frames: usize,
    filters: &[f32],
    n_mels: usize,
) -> Result<Vec<f32>, AsrError> {
    let bins = N_FFT / 2 + 1;
    let mut framed = vec![0f32; frames * N_FFT];
    for (i, row) in framed.chunks_exact_mut(N_FFT).enumerate() {
        let start = (i * HOP_LENGTH).min(samples.len());
        let end = (start + N_FFT).min(samples.len());
        row[..end - start].copy_from_slice(&samples[start..end]);
    }
    let model = |e: candle_core::Error| AsrError::Model(format!("spectrogram: {e}"));
    let framed = Tensor::from_vec(framed, (frames, N_FFT), &Device::Cpu).map_err(model)?;
    let spectrum: Vec<f32> = framed
        .matmul(&Tensor::from_slice(dft_basis(), (N_FFT, 2 * bins), &Device::Cpu).map_err(model)?)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(model)?;
    let mut power = vec![0f32; frames * bins];
    for (p, s) in power
        .chunks_exact_mut(bins)
        .zip(spectrum.chunks_exact(2 * bins))
    {
        for (k, (p, c)) in p.iter_mut().zip(s.chunks_exact(2)).enumerate() {
            let e = c[0] * c[0] + c[1] * c[1];
            *p = if k == 0 || k == bins - 1 { e } else { e + e };
        }
    }
    let power = Tensor::from_vec(power, (frames, bins), &Device::Cpu).map_err(model)?;
    let filters = Tensor::from_slice(filters, (n_mels, bins), &Device::Cpu).map_err(model)?;
    let mel: Vec<f32> = filters
        .matmul(&power.t().map_err(model)?)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(model)?;
    Ok(mel.into_iter().map(|v| v.max(1e-10).log10()).collect())
}

/// Mel frames computed per spectrogram call: 150 s, so a deadline is checked
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
        let frames = f1 - f0;
        let out = raw_log_mel(&chunk, frames, filters, n_mels)?;
        for m in 0..n_mels {
            let row = &out[m * frames..(m + 1) * frames];
            let dst = &mut mel[m * n_frames + f0..m * n_frames + f1];
            for (d, &raw) in dst.iter_mut().zip(row) {
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
    use candle_transformers::models::whisper::audio::log_mel_spectrogram_;

    #[test]
    fn log_mel_matches_candles_spectrogram() {
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
        // Two f32 DFTs (candle's recursive FFT, Kiln's product with an f64-built basis) differ
        // by rounding: measured 5.5e-4 here, about 0.5% of a quiet bin's energy.
        assert!(worst < 1e-3, "{worst}");
        let mean = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / ours.len() as f32;
        assert!(mean < 1e-5, "{mean}");
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
