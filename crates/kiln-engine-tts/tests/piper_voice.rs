//! Real-weights tests: the Piper voice en_US-joe-medium from the model store, ONNX Runtime from
//! `scripts/install-deps` (or `ORT_DYLIB_PATH`), espeak-ng on PATH.

use std::sync::OnceLock;
use std::time::Instant;

use kiln_engine_tts::{encode_mp3, encode_wav, resample, Synthesizer, TtsError};

fn voice() -> &'static Synthesizer {
    static VOICE: OnceLock<Synthesizer> = OnceLock::new();
    VOICE.get_or_init(|| {
        let model = kiln_store::ensure_for_tests("piper-en-us-joe-medium");
        match Synthesizer::load(&model.dir) {
            Ok(s) => s,
            Err(e) => panic!("cannot load the Piper voice: {e}"),
        }
    })
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

#[test]
fn speaks_a_sentence() {
    let tts = voice();
    assert_eq!(tts.sample_rate(), 22_050);
    let text = "The quick brown fox jumps over the lazy dog.";
    let start = Instant::now();
    let audio = tts.speak(text).expect("speak");
    let took = start.elapsed().as_secs_f32();
    let secs = audio.len() as f32 / tts.sample_rate() as f32;
    eprintln!(
        "{secs:.2} s of audio in {took:.2} s (real-time factor {:.3})",
        took / secs
    );
    assert!((1.5..=5.0).contains(&secs), "{secs} s");
    assert!(audio.iter().all(|s| (-1.0..=1.0).contains(s)));
    let level = rms(&audio);
    assert!(level > 0.02, "too quiet: rms {level}");
    let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.2, "peak {peak}");

    let wav = encode_wav(&audio, tts.sample_rate());
    let reader = hound::WavReader::new(std::io::Cursor::new(&wav)).expect("a valid WAV");
    let spec = reader.spec();
    assert_eq!(spec.channels, 1);
    assert_eq!(spec.sample_rate, 22_050);
    assert_eq!(spec.bits_per_sample, 16);
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    assert_eq!(reader.len() as usize, audio.len());

    let mp3 = encode_mp3(&audio, tts.sample_rate()).expect("mp3");
    assert!(
        mp3.starts_with(b"ID3") || (mp3[0] == 0xFF && mp3[1] & 0xE0 == 0xE0),
        "no MP3 frame sync: {:02x?}",
        &mp3[..4]
    );
    // 64 kbit/s: about 8 kB per second of audio.
    assert!(mp3.len() as f32 > secs * 6_000.0, "{} bytes", mp3.len());

    let at_24k = resample(&audio, tts.sample_rate(), 24_000);
    assert!((at_24k.len() as f32 / 24_000.0 - secs).abs() < 0.01);
    assert!((rms(&at_24k) - level).abs() / level < 0.05);
}

#[test]
fn sentences_get_a_pause_and_add_up() {
    let tts = voice();
    let one = tts.speak("Hello there.").expect("one");
    let two = tts.speak("Hello there. Hello there!").expect("two");
    let (one, two) = (one.len() as f32 / 22_050.0, two.len() as f32 / 22_050.0);
    // Two sentences ≈ twice one plus the 0.2 s pause (the model's durations vary a little).
    assert!(
        two > 2.0 * one - 0.1 && two < 2.0 * one + 0.7,
        "{one} s, {two} s"
    );
}

#[test]
fn empty_text_is_an_error() {
    let tts = voice();
    assert_eq!(tts.speak(""), Err(TtsError::EmptyText));
    assert_eq!(tts.speak(" \n\t "), Err(TtsError::EmptyText));
}

#[test]
fn punctuation_and_odd_input_do_not_panic() {
    let tts = voice();
    for text in [
        ".",
        "...",
        "?!",
        ", , ,",
        "-",
        "--help",
        "\"\"",
        "[[h@'loU]]",
        "(((",
        "\u{1F600}",
        "\0\u{7}",
        "a",
        "Mr. Smith paid $3.50, i.e. a lot; really?!\n\nNew paragraph",
        "日本語",
    ] {
        match tts.speak(text) {
            Ok(audio) => {
                assert!(
                    audio.iter().all(|s| s.is_finite() && s.abs() <= 1.0),
                    "{text:?}"
                );
                assert!(
                    audio.len() < 22_050 * 10,
                    "{text:?}: {} samples",
                    audio.len()
                );
            }
            Err(e) => panic!("{text:?}: {e}"),
        }
    }
}
