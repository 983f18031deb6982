//! WAV and MP3 encoding and sample-rate conversion of mono f32 audio.

use std::f64::consts::PI;

use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, MonoPcm, Quality};

use crate::TtsError;

fn to_i16(x: f32) -> i16 {
    // NaN clamps to NaN and casts to 0.
    (x.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// A mono 16-bit PCM WAV file (RIFF, 44-byte header) of `samples` in [-1, 1] (clipped).
pub fn encode_wav(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36) & !1;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate.saturating_mul(2)).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in &samples[..data_len as usize / 2] {
        out.extend_from_slice(&to_i16(s).to_le_bytes());
    }
    out
}

/// An MP3 (MPEG-2/2.5/1 layer III, mono, 64 kbit/s CBR, no ID3 tag) of `samples` in [-1, 1].
/// LAME resamples rates that MP3 has no frame format for to the nearest one it has.
pub fn encode_mp3(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>, TtsError> {
    let err = |what: &str, e: &dyn std::fmt::Display| TtsError::Encode(format!("mp3 {what}: {e}"));
    let mut builder =
        Builder::new().ok_or_else(|| TtsError::Encode("cannot create a LAME encoder".into()))?;
    builder
        .set_num_channels(1)
        .map_err(|e| err("channels", &e))?;
    builder
        .set_sample_rate(sample_rate)
        .map_err(|e| err("sample rate", &e))?;
    builder
        .set_brate(Bitrate::Kbps64)
        .map_err(|e| err("bitrate", &e))?;
    builder
        .set_quality(Quality::Good)
        .map_err(|e| err("quality", &e))?;
    // The Xing/LAME tag frame needs the finished stream to be rewritten; leave it out.
    builder
        .set_to_write_vbr_tag(false)
        .map_err(|e| err("vbr tag", &e))?;
    let mut encoder = builder.build().map_err(|e| err("init", &e))?;

    let mut pcm: Vec<i16> = samples.iter().map(|&s| to_i16(s)).collect();
    if pcm.is_empty() {
        // LAME complains when flushing nothing; one frame of silence makes a valid file.
        pcm.resize(1152, 0);
    }
    let mut out = Vec::new();
    // Encode in chunks so that the output buffer stays small.
    for chunk in pcm.chunks(1 << 16) {
        out.reserve(mp3lame_encoder::max_required_buffer_size(chunk.len()));
        encoder
            .encode_to_vec(MonoPcm(chunk), &mut out)
            .map_err(|e| err("encode", &e))?;
    }
    out.reserve(7200);
    encoder
        .flush_to_vec::<FlushNoGap>(&mut out)
        .map_err(|e| err("flush", &e))?;
    Ok(out)
}

/// Converts mono audio from `from` Hz to `to` Hz with a windowed-sinc (Hann, ±16 zero crossings)
/// low-pass interpolator; band-limits to 95 % of the lower Nyquist frequency.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || from == 0 || to == 0 || samples.is_empty() {
        return samples.to_vec();
    }
    const ZERO_CROSSINGS: f64 = 16.0;
    let ratio = f64::from(to) / f64::from(from);
    // Cut-off in cycles per input sample, relative to the input Nyquist frequency.
    let cutoff = ratio.min(1.0) * 0.95;
    let half_width = ZERO_CROSSINGS / cutoff; // in input samples
    let out_len = (samples.len() as f64 * ratio).round() as usize;
    let last = samples.len() as isize - 1;
    let mut out = Vec::with_capacity(out_len);
    for i in 0..out_len {
        let t = i as f64 / ratio;
        let lo = ((t - half_width).ceil() as isize).max(0);
        let hi = ((t + half_width).floor() as isize).min(last);
        let (mut acc, mut norm) = (0.0f64, 0.0f64);
        for j in lo..=hi {
            let x = t - j as f64;
            let arg = PI * cutoff * x;
            let sinc = if arg.abs() < 1e-9 {
                1.0
            } else {
                arg.sin() / arg
            };
            let window = 0.5 * (1.0 + (PI * x / half_width).cos());
            let w = sinc * window;
            acc += w * f64::from(samples[j as usize]);
            norm += w;
        }
        out.push(if norm.abs() > 1e-12 {
            (acc / norm) as f32
        } else {
            0.0
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, secs: f64) -> Vec<f32> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n)
            .map(|i| (0.5 * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    #[test]
    fn wav_header_and_samples() {
        let wav = encode_wav(&[0.0, 1.0, -1.0, 2.0], 22_050);
        assert_eq!(wav.len(), 44 + 8);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([wav[4], wav[5], wav[6], wav[7]]), 44);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(
            u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
            22_050
        );
        assert_eq!(&wav[36..40], b"data");
        let s: Vec<i16> = wav[44..]
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(s, vec![0, 32767, -32767, 32767]);
        let reader = hound::WavReader::new(std::io::Cursor::new(wav)).expect("hound reads it");
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 22_050, 16)
        );
        assert_eq!(reader.len(), 4);
    }

    #[test]
    fn resample_keeps_a_tone_and_drops_aliases() {
        let x = tone(440.0, 22_050, 1.0);
        for to in [24_000, 16_000, 44_100] {
            let y = resample(&x, 22_050, to);
            assert_eq!(y.len(), to as usize);
            // Same level, away from the edges.
            let (a, b) = (rms(&x[2000..20_000]), rms(&y[2000..(to as usize - 2000)]));
            assert!((a - b).abs() / a < 0.02, "{to}: rms {a} vs {b}");
        }
        // 10 kHz is above the 8 kHz Nyquist frequency of 16 kHz audio: it must (mostly) go.
        let high = tone(10_000.0, 22_050, 1.0);
        let y = resample(&high, 22_050, 16_000);
        assert!(
            rms(&y[1000..15_000]) < 0.01,
            "alias rms {}",
            rms(&y[1000..15_000])
        );
        assert_eq!(resample(&x, 22_050, 22_050), x);
        assert!(resample(&[], 22_050, 16_000).is_empty());
    }

    #[test]
    fn mp3_starts_with_a_frame() {
        let x = tone(440.0, 22_050, 0.5);
        let mp3 = encode_mp3(&x, 22_050).expect("mp3");
        assert!(mp3.len() > 1000, "{} bytes", mp3.len());
        assert_eq!(mp3[0], 0xFF);
        assert_eq!(mp3[1] & 0xE0, 0xE0);
        // Empty input still flushes to a valid (possibly empty) stream.
        encode_mp3(&[], 22_050).expect("empty mp3");
        encode_mp3(&x, 24_000).expect("24 kHz mp3");
    }
}
