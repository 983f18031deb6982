//! faster-whisper's decoding options on the real models, with espeak-ng speech: beam search,
//! `prefix`, `vad_filter`, conditioning on previous text, the temperature fallback and
//! translation.

mod common;

use common::{base, espeak, espeak_in, tiny, wer};
use kiln_engine_whisper::{decode_audio, TranscribeOptions, FALLBACK_TEMPERATURES};

const SENTENCES: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to water the tomato plants.",
    "The train to London leaves from platform seven.",
    "Our neighbour painted the fence bright green.",
];

fn speech(text: &str) -> Vec<f32> {
    decode_audio(&espeak(text)).expect("decode espeak wav")
}

fn silence(seconds: f32) -> Vec<f32> {
    vec![0.0; (seconds * 16_000.0) as usize]
}

#[test]
fn beam_search_is_at_least_as_good_as_greedy() {
    let mut asr = tiny();
    let beams = TranscribeOptions {
        beam_size: 5,
        ..Default::default()
    };
    let (mut greedy_errors, mut beam_errors) = (0.0, 0.0);
    for sentence in SENTENCES {
        let samples = speech(sentence);
        let greedy = asr
            .transcribe(&samples, &TranscribeOptions::default())
            .unwrap();
        let beam = asr.transcribe(&samples, &beams).unwrap();
        eprintln!(
            "greedy {:?} {:?}\nbeam 5 {:?} {:?}",
            greedy.text, greedy.segments, beam.text, beam.segments
        );
        greedy_errors += wer(sentence, &greedy.text);
        beam_errors += wer(sentence, &beam.text);
        assert!(beam.segments.iter().all(|s| s.temperature == 0.0));
    }
    eprintln!("summed WER: greedy {greedy_errors:.3}, beam {beam_errors:.3}");
    assert!(
        beam_errors <= greedy_errors,
        "beam {beam_errors} vs greedy {greedy_errors}"
    );
}

#[test]
fn a_prefix_is_the_start_of_the_transcript() {
    let mut asr = tiny();
    let samples = speech(SENTENCES[0]);
    for beam_size in [1, 4] {
        let options = TranscribeOptions {
            prefix: Some("Once upon a time,".into()),
            beam_size,
            ..Default::default()
        };
        let t = asr.transcribe(&samples, &options).unwrap();
        eprintln!("{t:#?}");
        assert!(t.text.starts_with("Once upon a time,"), "{:?}", t.text);
        assert_eq!(t.words.first().map(|w| w.word.trim()), Some("Once"));
    }
}

#[test]
fn vad_filter_transcribes_only_the_speech() {
    let mut asr = tiny();
    let mut samples = silence(5.0);
    samples.extend(speech(SENTENCES[1]));
    samples.extend(silence(4.0));
    let second = samples.len() as f32 / 16_000.0;
    samples.extend(speech(SENTENCES[2]));
    samples.extend(silence(5.0));
    let plain = asr
        .transcribe(&samples, &TranscribeOptions::default())
        .unwrap();
    let vad = TranscribeOptions {
        vad_filter: true,
        ..Default::default()
    };
    let t = asr.transcribe(&samples, &vad).unwrap();
    eprintln!("{:?}\n{t:#?}", plain.text);
    assert_eq!(plain.duration_after_vad, plain.duration);
    assert_eq!(t.duration, plain.duration);
    assert!(
        t.duration_after_vad < t.duration - 10.0,
        "{} of {}",
        t.duration_after_vad,
        t.duration
    );
    // The same words as without the filter (tiny.en mishears some of espeak's anyway).
    assert!(
        wer(&plain.text, &t.text) <= 0.3,
        "{:?} vs {:?}",
        plain.text,
        t.text
    );
    for key in ["remember", "London", "platform"] {
        assert!(t.text.contains(key), "{key} in {:?}", t.text);
    }
    assert!(
        t.words.first().is_some_and(|w| w.start > 4.5),
        "{:?}",
        t.words
    );
    let train = t
        .words
        .iter()
        .find(|w| w.word.trim() == "train")
        .expect("the word train");
    assert!(
        train.start > second - 0.3,
        "{train:?}, second sentence at {second}"
    );
    for pair in t.segments.windows(2) {
        assert!(pair[1].start >= pair[0].start, "{pair:?}");
    }
}

#[test]
fn conditioning_on_previous_text_across_windows() {
    let mut asr = tiny();
    let mut samples = Vec::new();
    while samples.len() < 45 * 16_000 {
        for sentence in SENTENCES {
            samples.extend(speech(sentence));
            samples.extend(silence(1.0));
        }
    }
    for condition in [false, true] {
        let options = TranscribeOptions {
            condition_on_previous_text: condition,
            temperatures: FALLBACK_TEMPERATURES.to_vec(),
            ..Default::default()
        };
        let t = asr.transcribe(&samples, &options).unwrap();
        eprintln!("conditioned {condition}: {:?}", t.text);
        let text = t.text.to_lowercase();
        for key in ["lazy", "tomato", "london", "fence"] {
            assert!(
                text.matches(key).count() >= 2,
                "{key}, conditioned {condition}: {text}"
            );
        }
        assert!(t.segments.last().is_some_and(|s| s.end > 40.0));
    }
}

#[test]
fn the_fallback_samples_when_no_result_passes() {
    let mut asr = tiny();
    let samples = speech(SENTENCES[3]);
    let options = TranscribeOptions {
        temperatures: FALLBACK_TEMPERATURES.to_vec(),
        log_prob_threshold: Some(0.0),
        ..Default::default()
    };
    let t = asr.transcribe(&samples, &options).unwrap();
    eprintln!("{t:#?}");
    assert!(!t.segments.is_empty());
    assert!(
        t.segments.iter().all(|s| s.temperature == 1.0),
        "{:?}",
        t.segments
    );
    assert!(wer(SENTENCES[3], &t.text) <= 0.3, "{:?}", t.text);
    assert_eq!(
        asr.transcribe(&samples, &options).unwrap(),
        t,
        "seeded sampling"
    );
    // Only sampled results to choose from: temperature 0 is not tried.
    let hot = TranscribeOptions {
        temperatures: vec![0.8],
        ..options
    };
    let t = asr.transcribe(&samples, &hot).unwrap();
    eprintln!("{t:#?}");
    assert!(t.segments.iter().all(|s| s.temperature == 0.8));
}

#[test]
fn translate_on_the_multilingual_model() {
    let mut asr = base();
    let samples = decode_audio(&espeak_in(
        "de",
        "Guten Morgen. Das Wetter ist heute sehr schön.",
        &[],
    ))
    .unwrap();
    let german = TranscribeOptions {
        language: Some("de".into()),
        ..Default::default()
    };
    let t = asr.transcribe(&samples, &german).unwrap();
    eprintln!("{t:#?}");
    let translate = TranscribeOptions {
        task: kiln_engine_whisper::Task::Translate,
        ..german
    };
    let english = asr.transcribe(&samples, &translate).unwrap();
    eprintln!("{english:#?}");
    let heard = t.text.to_lowercase();
    assert!(heard.contains("guten morgen"), "{heard:?}");
    let translated = english.text.to_lowercase();
    assert!(translated.contains("good morning"), "{translated:?}");
    assert!(!translated.contains("guten") && !translated.contains("morgen"));
    assert_eq!(english.language, "de");
    assert_eq!(english.language_probability, 1.0, "given, not detected");
    // Detected, with its probability among the languages.
    let detected = asr
        .transcribe(&samples, &TranscribeOptions::default())
        .unwrap();
    eprintln!(
        "detected {} ({})",
        detected.language, detected.language_probability
    );
    assert_eq!(detected.language, "de");
    assert!((0.3..=1.0).contains(&detected.language_probability));
}
