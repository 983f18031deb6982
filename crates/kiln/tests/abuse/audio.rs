//! Speech recognition (`@cf/openai/whisper-tiny-en`): audio headers that declare absurd rates,
//! channel counts or lengths, and audio longer than `limits.audio.max_seconds`. Each is refused
//! with 400 / 5006 naming the limit, before the work, and the model keeps serving.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{assert_refused, assert_still_serving, post_bytes};

const WHISPER: &str = "@cf/openai/whisper-tiny-en";

/// A PCM WAV header with any field values, then `data`.
pub(crate) fn wav(channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block_align = channels.wrapping_mul(bits / 8);
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
    v.extend_from_slice(&block_align.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// A second of a 440 Hz tone at 16 kHz, as `{audio: number[]}`.
fn normal_request() -> Value {
    let pcm: Vec<u8> = (0..16_000)
        .flat_map(|i| {
            let s = (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 8000.0;
            (s as i16).to_le_bytes()
        })
        .collect();
    json!({"audio": wav(1, 16_000, 16, &pcm)})
}

/// Silent MPEG-1 Layer III frames (32 kb/s, 32 kHz): 144 bytes per 36 ms.
fn silent_mp3(seconds: f64) -> Vec<u8> {
    let frames = (seconds * 32_000.0 / 1152.0).ceil() as usize;
    let mut frame = [0u8; 144];
    frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x18, 0xC4]);
    frame.repeat(frames)
}

/// A FLAC stream whose STREAMINFO declares `rate`.
fn flac_declaring(rate: u32) -> Vec<u8> {
    let mut v = b"fLaC".to_vec();
    v.extend_from_slice(&[0x80, 0, 0, 34]);
    v.extend_from_slice(&4096u16.to_be_bytes());
    v.extend_from_slice(&4096u16.to_be_bytes());
    v.extend_from_slice(&[0; 6]);
    let packed: u64 = (u64::from(rate & 0xF_FFFF) << 44) | (1 << 41) | (15 << 36) | 0xF_FFFF;
    v.extend_from_slice(&packed.to_be_bytes());
    v.extend_from_slice(&[0; 16 + 64]);
    v
}

#[tokio::test]
async fn hostile_audio_headers_are_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    // The 60-byte WAV that once aborted the whole process (the resampler asked for 17 GB).
    let abort = wav(1, 4_294_967_291, 16, &[0; 16]);
    assert_eq!(abort.len(), 60);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "rate 4294967291",
            abort,
            "sample rate 4294967291 Hz is outside [1000, 384000] Hz (limits.audio.max_sample_rate)",
        ),
        // Once a panic in the Whisper worker thread.
        (
            "rate 0",
            wav(1, 0, 16, &[0; 16]),
            "limits.audio.min_sample_rate",
        ),
        (
            "65535 channels",
            wav(u16::MAX, 16_000, 16, &[0; 64]),
            "limits.audio.max_channels",
        ),
        ("0 channels", wav(0, 16_000, 16, &[0; 64]), "0 channels"),
        (
            "FLAC declaring 655350 Hz",
            flac_declaring(655_350),
            "limits.audio.max_sample_rate",
        ),
    ];
    for (what, bytes, needle) in cases {
        let (status, body) = post_bytes(WHISPER, "audio/wav", bytes).await;
        eprintln!("{what}: {status} {body}");
        assert_refused(status, &body, 5006, needle);
    }

    // A fmt chunk declaring 4 GB, in a file of 108 bytes.
    let mut huge_chunk = wav(1, 16_000, 16, &[0; 64]);
    huge_chunk[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let (status, body) = post_bytes(WHISPER, "audio/wav", huge_chunk).await;
    assert_refused(status, &body, 5006, "declares");

    assert_still_serving(WHISPER, &normal_request()).await;
}

#[tokio::test]
async fn audio_longer_than_the_cap_is_refused_while_decoding() {
    let _serial = crate::one_attack_at_a_time().await;
    // 1801 s (the default cap is 1800 s) at 1 kHz, 8-bit mono: 1.8 MB.
    let long_wav = wav(1, 1_000, 8, &vec![128; 1_801_000]);
    let started = Instant::now();
    let (status, body) = post_bytes(WHISPER, "audio/wav", long_wav).await;
    assert_refused(status, &body, 5006, "limits.audio.max_seconds");
    // Refused while decoding (the message is the decoder's), never transcribed: 30 minutes of
    // transcription would take many times this bound.
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );

    // The same in MP3: 7.2 MB of frames.
    let started = Instant::now();
    let (status, body) = post_bytes(WHISPER, "audio/mpeg", silent_mp3(1_801.0)).await;
    assert_refused(
        status,
        &body,
        5006,
        "longer than 1800 s (limits.audio.max_seconds)",
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );

    // A WAV whose data chunk declares 4 GB but holds 1 s is what streaming writers produce:
    // decoded as the second it holds.
    let mut streamed = wav(1, 16_000, 16, &[0; 32_000]);
    streamed[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    let (status, body) = post_bytes(WHISPER, "audio/wav", streamed).await;
    assert_eq!(status, 200, "{body}");

    assert_still_serving(WHISPER, &normal_request()).await;
}
