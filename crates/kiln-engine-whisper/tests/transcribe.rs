//! End-to-end transcription of speech synthesised with espeak-ng.

mod common;

use common::{espeak, espeak_with, normalise, tiny, wer};
use kiln_engine_whisper::{
    decode_audio, to_vtt, AsrError, Precision, TranscribeOptions, Transcriber,
};

#[test]
fn wer_function() {
    assert_eq!(wer("a b c d", "a b c d"), 0.0);
    assert_eq!(wer("a b c d", "a x c"), 0.5);
}

#[test]
fn transcribes_short_sentence() {
    let reference = "The quick brown fox jumps over the lazy dog.";
    // Slightly separated words: espeak runs "brown fox" together in a way tiny.en mishears.
    let samples = decode_audio(&espeak_with(reference, &["-g", "6"])).expect("decode espeak wav");
    let mut asr = tiny();
    let t = asr
        .transcribe(&samples, &TranscribeOptions::default())
        .expect("transcribe");
    eprintln!("{t:#?}");
    assert!(wer(reference, &t.text) <= 0.3, "transcript: {:?}", t.text);
    // Exactly what candle-transformers' Whisper decoded from this audio (Kiln's model replaced
    // it and was checked token for token against it).
    assert_eq!(t.text, reference);
    assert_eq!(t.language, "en");
    assert!(!t.segments.is_empty());
    assert!(!t.words.is_empty());
    let mut last = 0.0f32;
    for w in &t.words {
        assert!(w.start >= last - 1e-3 && w.end >= w.start, "{:?}", t.words);
        assert!(w.end <= t.duration + 1e-3, "{w:?} past {}", t.duration);
        last = w.end;
    }
    let vtt = to_vtt(&t);
    assert!(vtt.starts_with("WEBVTT\n\n00:00:0"), "{vtt}");
    assert!(vtt.contains(" --> "));
}

/// The int8 path (CPUs with VNNI) and the f32/f16 path (every other CPU) hear the same words:
/// both run here whatever the CPU, since `Precision::Float` forces the second.
#[test]
fn int8_and_float_layers_transcribe_alike() {
    let reference =
        "Our train was delayed for almost an hour because a fallen tree blocked the line.";
    let samples = decode_audio(&espeak(reference)).expect("decode espeak wav");
    let installed = kiln_store::ensure_for_tests("whisper-tiny-en");
    let mut texts = Vec::new();
    for precision in [Precision::Auto, Precision::Float] {
        let mut asr = Transcriber::load_with_precision(&installed.dir, precision).expect("load");
        let t = asr
            .transcribe(&samples, &TranscribeOptions::default())
            .expect("transcribe");
        eprintln!("{precision:?}: {:?}", t.text);
        assert!(
            wer(reference, &t.text) <= 0.35,
            "{precision:?}: {:?}",
            t.text
        );
        assert!(!t.words.is_empty());
        texts.push(t.text);
    }
    assert!(
        wer(&texts[1], &texts[0]) <= 0.15,
        "int8 {:?} vs f32 {:?}",
        texts[0],
        texts[1]
    );
}

#[test]
fn initial_prompt_is_accepted() {
    let samples = decode_audio(&espeak("Kiln serves models locally.")).expect("decode");
    let mut asr = tiny();
    let options = TranscribeOptions {
        initial_prompt: Some("Kiln, a self-hosted inference server.".into()),
        ..Default::default()
    };
    let t = asr.transcribe(&samples, &options).expect("transcribe");
    assert!(t.text.to_lowercase().contains("models"), "{:?}", t.text);
}

#[test]
fn long_recording_is_transcribed_completely() {
    let sentences = [
        "The first sentence talks about an orange elephant.",
        "Yesterday the garden was full of yellow flowers.",
        "My brother bought a new bicycle last summer.",
        "The library closes at nine in the evening.",
        "Please remember to water the tomato plants.",
        "A small boat crossed the river before sunrise.",
        "The teacher wrote a long equation on the board.",
        "We watched a movie about a famous detective.",
        "The train to London leaves from platform seven.",
        "Fresh bread smells wonderful in the morning.",
        "The mountain was covered with deep snow.",
        "Our neighbour painted the fence bright green.",
        "Finally, the concert ended with a loud guitar solo.",
    ];
    let keywords = [
        "elephant",
        "garden",
        "bicycle",
        "library",
        "tomato",
        "river",
        "equation",
        "detective",
        "london",
        "bread",
        "mountain",
        "guitar",
    ];
    let mut samples = Vec::new();
    for s in sentences {
        samples.extend(decode_audio(&espeak(s)).expect("decode"));
        samples.extend(std::iter::repeat_n(0.0f32, 16_000 * 3 / 2));
    }
    let secs = samples.len() as f32 / 16_000.0;
    assert!(secs > 60.0, "test audio only {secs} s");
    let mut asr = tiny();
    let started = std::time::Instant::now();
    let t = asr
        .transcribe(&samples, &TranscribeOptions::default())
        .expect("transcribe");
    let rtf = started.elapsed().as_secs_f32() / secs;
    eprintln!("tiny.en RTF {rtf:.3} on {secs:.1}s → {:#?}", t.segments);
    let text = t.text.to_lowercase();
    let missing: Vec<_> = keywords.iter().filter(|k| !text.contains(*k)).collect();
    eprintln!("missing keywords: {missing:?}");
    assert!(missing.len() <= 2, "missing {missing:?} in {text:?}");
    let last = t.segments.last().expect("segments");
    assert!(last.end > 55.0 && last.end <= secs + 0.01, "{last:?}");
    for pair in t.segments.windows(2) {
        assert!(pair[1].start >= pair[0].start, "{pair:?}");
    }
}

#[test]
fn bad_audio_is_a_typed_error() {
    assert!(matches!(decode_audio(&[]), Err(AsrError::EmptyAudio)));
    let mut wav = espeak("hello");
    let garbage = vec![0x5a; 2000];
    assert!(matches!(
        decode_audio(&garbage),
        Err(AsrError::UnsupportedFormat(_))
    ));
    wav.truncate(20);
    assert!(decode_audio(&wav).is_err());
    let mut asr = tiny();
    assert!(matches!(
        asr.transcribe(&[], &TranscribeOptions::default()),
        Err(AsrError::EmptyAudio)
    ));
}

#[test]
fn multilingual_base_detects_english() {
    let installed = kiln_store::ensure_for_tests("whisper-base");
    let mut asr = Transcriber::load(&installed.dir).expect("load whisper base");
    assert!(asr.is_multilingual());
    let reference = "The quick brown fox jumps over the lazy dog.";
    let samples = decode_audio(&espeak_with(reference, &["-g", "6"])).expect("decode");
    let started = std::time::Instant::now();
    let t = asr
        .transcribe(&samples, &TranscribeOptions::default())
        .expect("transcribe");
    let rtf = started.elapsed().as_secs_f32() / t.duration;
    eprintln!("base RTF {rtf:.3}: {t:?}");
    assert_eq!(t.language, "en");
    assert!(wer(reference, &t.text) <= 0.3, "transcript: {:?}", t.text);
    let bad = TranscribeOptions {
        language: Some("xx".into()),
        ..Default::default()
    };
    assert!(asr.transcribe(&samples, &bad).is_err());
}

/// Word timestamps against known truth: each word synthesized on its own, trimmed to its sound,
/// and placed after a known silence; a recognized word must start within 0.2 s of where its
/// sound starts.
#[test]
fn word_timestamps_follow_the_speech() {
    let words = [
        "Morning",
        "coffee",
        "tastes",
        "wonderful",
        "with",
        "fresh",
        "bread",
    ];
    let gaps = [0.6f32, 0.35, 0.8, 0.45, 0.7, 0.4, 0.55];
    let mut samples = Vec::new();
    let mut truth = Vec::new();
    for (word, gap) in words.iter().zip(gaps) {
        let clip = decode_audio(&espeak(word)).expect("decode");
        let peak = clip.iter().fold(0f32, |m, x| m.max(x.abs()));
        let loud = |x: &&f32| x.abs() > peak * 0.05;
        let first = clip.iter().position(|x| loud(&x)).expect("sound");
        let last = clip.iter().rposition(|x| loud(&x)).expect("sound");
        samples.extend(std::iter::repeat_n(0.0f32, (gap * 16_000.0) as usize));
        truth.push(samples.len() as f32 / 16_000.0);
        samples.extend_from_slice(&clip[first..=last]);
    }
    samples.extend(std::iter::repeat_n(0.0f32, 8_000));
    let mut asr = tiny();
    let t = asr
        .transcribe(&samples, &TranscribeOptions::default())
        .expect("transcribe");
    eprintln!("truth {truth:?}\n{:#?}", t.words);
    // Reference words matched in order to the recognized ones.
    let mut found = 0;
    let mut next = 0;
    for (word, start) in words.iter().zip(&truth) {
        let want = normalise(word);
        let Some(at) = t.words[next..]
            .iter()
            .position(|w| normalise(&w.word) == want)
        else {
            continue;
        };
        let w = &t.words[next + at];
        next += at + 1;
        found += 1;
        assert!(
            (w.start - start).abs() <= 0.2,
            "{word}: starts at {} s, truth {start} s ({:?})",
            w.start,
            t.words
        );
        assert!(w.end > w.start, "{w:?}");
    }
    assert!(
        found >= words.len() - 1,
        "recognized {found} of {words:?}: {:?}",
        t.text
    );
}

/// Speech tiled to `secs` seconds (16 kHz).
fn speech_for(secs: f32) -> Vec<f32> {
    let clip = decode_audio(&espeak(
        "Kiln serves models on your own machine. The quick brown fox jumps over the lazy dog.",
    ))
    .expect("decode");
    let want = (secs * 16_000.0) as usize;
    clip.iter().copied().cycle().take(want).collect()
}

#[test]
fn a_passed_deadline_stops_a_long_transcription_within_a_window() {
    use std::time::{Duration, Instant};
    let mut asr = tiny();
    let options = TranscribeOptions::default();
    // What one 30 s window costs here.
    let window = speech_for(30.0);
    let started = Instant::now();
    asr.transcribe(&window, &options).expect("one window");
    let one_window = started.elapsed();
    // Ten minutes (20 windows) with a deadline 1.5 s away.
    let long = speech_for(600.0);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(1500);
    let result = asr.transcribe_within(&long, &options, &|| Instant::now() < deadline);
    let took = started.elapsed();
    eprintln!("one window {one_window:?}; stopped after {took:?}");
    assert!(matches!(result, Err(AsrError::Stopped)), "{result:?}");
    assert!(
        took < Duration::from_millis(1500) + one_window + Duration::from_secs(1),
        "held the model {took:?} (one window takes {one_window:?})"
    );
    // And the model is still usable afterwards.
    asr.transcribe(&window, &options).expect("after a stop");
}
