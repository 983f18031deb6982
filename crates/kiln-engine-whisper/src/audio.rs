//! Audio input: any wav/mp3/flac/ogg(vorbis) file as bytes → 16 kHz mono f32 samples.

use std::io::Cursor;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::AsrError;

/// The sample rate Whisper consumes.
pub const TARGET_RATE: u32 = 16_000;

/// Decodes an audio file (format probed from its content) to 16 kHz mono samples in [-1, 1].
///
/// Workers AI's `{audio: number[]}` input is the file's bytes as an array of u8, so it goes
/// through here too.
pub fn decode_audio(bytes: &[u8]) -> Result<Vec<f32>, AsrError> {
    if bytes.is_empty() {
        return Err(AsrError::EmptyAudio);
    }
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymError::Unsupported(what) => AsrError::UnsupportedFormat(what.to_string()),
            SymError::IoError(_) => {
                AsrError::UnsupportedFormat("unrecognised or truncated audio container".into())
            }
            other => AsrError::CorruptAudio(other.to_string()),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AsrError::UnsupportedFormat("no audio track".into()))?;
    let track_id = track.id;
    let mut rate = track.codec_params.sample_rate;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(what) => AsrError::UnsupportedFormat(what.to_string()),
            other => AsrError::CorruptAudio(other.to_string()),
        })?;

    let mut mono = Vec::new();
    let mut decoded_packets = 0usize;
    let mut last_error = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                last_error = Some(e.to_string());
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do; the whole file failing is reported.
            Err(SymError::DecodeError(e)) => {
                last_error = Some(e.to_string());
                continue;
            }
            Err(SymError::IoError(e)) => {
                last_error = Some(e.to_string());
                continue;
            }
            Err(e) => return Err(AsrError::CorruptAudio(e.to_string())),
        };
        decoded_packets += 1;
        let spec = *decoded.spec();
        rate.get_or_insert(spec.rate);
        let channels = spec.channels.count().max(1);
        let mut buf = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buf.copy_interleaved_ref(decoded);
        mono.extend(
            buf.samples()
                .chunks(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
    }
    if decoded_packets == 0 {
        return Err(match last_error {
            Some(e) => AsrError::CorruptAudio(e),
            None => AsrError::EmptyAudio,
        });
    }
    if mono.is_empty() {
        return Err(AsrError::EmptyAudio);
    }
    let rate = rate.ok_or_else(|| AsrError::CorruptAudio("unknown sample rate".into()))?;
    resample_to_16k(&mono, rate)
}

/// Converts signed 16-bit PCM to f32 in [-1, 1].
pub fn pcm_i16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| s as f32 / 32768.0).collect()
}

/// Resamples mono samples at `rate` Hz to 16 kHz (band-limited FFT resampler).
pub fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, AsrError> {
    if samples.is_empty() {
        return Err(AsrError::EmptyAudio);
    }
    if rate == TARGET_RATE {
        return Ok(samples.to_vec());
    }
    if rate == 0 {
        return Err(AsrError::CorruptAudio("sample rate 0".into()));
    }
    let resample_err = |e: String| AsrError::CorruptAudio(format!("resampling failed: {e}"));
    let mut resampler = FftFixedIn::<f32>::new(rate as usize, TARGET_RATE as usize, 1024, 2, 1)
        .map_err(|e| resample_err(e.to_string()))?;
    let expected = (samples.len() as u64 * TARGET_RATE as u64 / rate as u64) as usize;
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected + delay + 2048);
    let mut pos = 0;
    while samples.len() - pos >= resampler.input_frames_next() {
        let n = resampler.input_frames_next();
        let chunk = resampler
            .process(&[&samples[pos..pos + n]], None)
            .map_err(|e| resample_err(e.to_string()))?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    if pos < samples.len() {
        let chunk = resampler
            .process_partial(Some(&[&samples[pos..]]), None)
            .map_err(|e| resample_err(e.to_string()))?;
        out.extend_from_slice(&chunk[0]);
    }
    while out.len() < expected + delay {
        let chunk = resampler
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| resample_err(e.to_string()))?;
        if chunk[0].is_empty() {
            break;
        }
        out.extend_from_slice(&chunk[0]);
    }
    let end = (delay + expected).min(out.len());
    Ok(out[delay.min(end)..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 16-bit PCM WAV file.
    pub(crate) fn wav_bytes(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        v.extend_from_slice(&(channels * 2).to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| ((i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 16000.0) as i16)
            .collect()
    }

    #[test]
    fn decodes_and_resamples_wav() {
        let wav = wav_bytes(&sine(44_100, 1.5, 440.0), 44_100, 1);
        let out = decode_audio(&wav).expect("decode");
        assert!((out.len() as i64 - 24_000).abs() <= 2, "{}", out.len());
        let peak = out.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 16000.0 / 32768.0).abs() < 0.05, "{peak}");
    }

    #[test]
    fn mixes_stereo_to_mono() {
        let left = sine(16_000, 0.5, 300.0);
        let inter: Vec<i16> = left.iter().flat_map(|&s| [s, 0]).collect();
        let out = decode_audio(&wav_bytes(&inter, 16_000, 2)).expect("decode");
        assert_eq!(out.len(), 8_000);
        assert!((out[100] - left[100] as f32 / 65536.0).abs() < 1e-4);
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert!(matches!(decode_audio(&[]), Err(AsrError::EmptyAudio)));
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        assert!(matches!(
            decode_audio(&garbage),
            Err(AsrError::UnsupportedFormat(_))
        ));
        let empty_wav = wav_bytes(&[], 16_000, 1);
        assert!(matches!(
            decode_audio(&empty_wav),
            Err(AsrError::EmptyAudio | AsrError::CorruptAudio(_))
        ));
        let mut truncated = wav_bytes(&sine(16_000, 1.0, 200.0), 16_000, 1);
        truncated.truncate(30);
        assert!(decode_audio(&truncated).is_err());
    }

    #[test]
    fn i16_conversion() {
        assert_eq!(pcm_i16_to_f32(&[0, 16384, -32768]), vec![0.0, 0.5, -1.0]);
    }
}
