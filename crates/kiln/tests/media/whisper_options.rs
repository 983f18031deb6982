//! whisper-large-v3-turbo's decoding inputs (spec §3.7) end to end, on whisper-base with
//! Kiln's own voice (or espeak-ng for other languages): `beam_size`, `prefix`, `vad_filter`,
//! `condition_on_previous_text`, the temperature fallback and its thresholds, `task:
//! translate`, and the 400s for bad values.

use base64::Engine;
use serde_json::{json, Value};

use super::speech::{cer, speak, wav_of, wer, SENTENCES};
use super::*;

const TURBO: &str = "@cf/openai/whisper-large-v3-turbo";

/// POSTs `audio` (a WAV file) with `options` to the turbo id; answers the status and body.
async fn turbo(audio: &[u8], options: Value) -> (u16, Value) {
    kiln_store::ensure_for_tests("whisper-base");
    let mut body = json!({"audio": base64::engine::general_purpose::STANDARD.encode(audio)});
    for (key, value) in options.as_object().expect("options object") {
        body[key] = value.clone();
    }
    let (status, _, body) = post_json(&media_run_url(TURBO), &body).await;
    (status, body)
}

/// The turbo result of a request that must succeed.
async fn transcribe(audio: &[u8], options: Value) -> Value {
    let (status, body) = turbo(audio, options).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

fn text(result: &Value) -> &str {
    result["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{result}"))
}

fn segments(result: &Value) -> &Vec<Value> {
    result["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"))
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// 16 kHz 16-bit mono PCM of a 16 kHz WAV that Kiln's voice made.
fn pcm(wav: &[u8]) -> &[u8] {
    &wav[44..]
}

fn silence(seconds: f32) -> Vec<u8> {
    vec![0u8; (seconds * 16_000.0) as usize * 2]
}

#[tokio::test]
async fn beam_search_is_at_least_as_good_as_greedy() {
    let (mut greedy, mut beams, mut total) = (0.0, 0.0, 0.0);
    for sentence in SENTENCES {
        let wav = speak(sentence).await;
        let one = transcribe(&wav, json!({"beam_size": 1, "language": "en"})).await;
        let five = transcribe(&wav, json!({"beam_size": 5, "language": "en"})).await;
        eprintln!("greedy {:?}\nbeam 5 {:?}", text(&one), text(&five));
        // Characters, not words: beam search writing "seashore" where greedy wrote the
        // reference's "sea shore" is no worse.
        let letters = sentence.chars().filter(|c| c.is_alphanumeric()).count() as f64;
        greedy += cer(sentence, text(&one)) * letters;
        beams += cer(sentence, text(&five)) * letters;
        total += letters;
        for segment in segments(&five) {
            assert_eq!(number(&segment["temperature"]), 0.0, "{segment}");
            let logprob = number(&segment["avg_logprob"]);
            assert!((-1.0..0.0).contains(&logprob), "{segment}");
            assert!(number(&segment["compression_ratio"]) > 0.0, "{segment}");
            assert!(
                (0.0..0.6).contains(&number(&segment["no_speech_prob"])),
                "{segment}"
            );
        }
    }
    let (greedy, beams) = (greedy / total, beams / total);
    eprintln!("character error rate: greedy {greedy:.3}, beam search {beams:.3}");
    assert!(
        beams <= greedy && beams <= 0.08,
        "beam {beams} vs greedy {greedy}"
    );
}

#[tokio::test]
async fn a_prefix_forces_the_start_of_the_transcript() {
    let wav = speak(SENTENCES[0]).await;
    let plain = transcribe(&wav, json!({"language": "en"})).await;
    assert!(text(&plain).starts_with("The quick brown"), "{plain}");
    for beam_size in [1, 5] {
        let forced = transcribe(
            &wav,
            json!({"prefix": "Once upon a time,", "beam_size": beam_size, "language": "en"}),
        )
        .await;
        let forced_text = text(&forced);
        assert!(forced_text.starts_with("Once upon a time,"), "{forced}");
        assert!(!forced_text.starts_with("The quick"), "{forced}");
        let first = &segments(&forced)[0];
        assert!(
            first["text"]
                .as_str()
                .is_some_and(|t| t.trim().starts_with("Once upon a time,")),
            "{first}"
        );
        // The prefix's words are words of the transcript.
        assert_eq!(
            first["words"][0]["word"].as_str().map(str::trim),
            Some("Once")
        );
    }
}

#[tokio::test]
async fn vad_filter_drops_the_silence_and_keeps_the_words() {
    // 6 s of silence, a sentence, 3 s of silence, a sentence, 6 s of silence.
    let (first, second) = (speak(SENTENCES[2]).await, speak(SENTENCES[3]).await);
    let mut audio = silence(6.0);
    audio.extend_from_slice(pcm(&first));
    audio.extend(silence(3.0));
    let second_at = audio.len() as f64 / 32_000.0;
    audio.extend_from_slice(pcm(&second));
    audio.extend(silence(6.0));
    let wav = wav_of(&audio);
    let duration = audio.len() as f64 / 32_000.0;

    let plain = transcribe(&wav, json!({"language": "en"})).await;
    let info = &plain["transcription_info"];
    assert_eq!(
        number(&info["duration_after_vad"]),
        number(&info["duration"])
    );

    let filtered = transcribe(&wav, json!({"vad_filter": true, "language": "en"})).await;
    let info = &filtered["transcription_info"];
    let (total, kept) = (
        number(&info["duration"]),
        number(&info["duration_after_vad"]),
    );
    assert!((total - duration).abs() < 0.01, "{info}");
    // Both sentences and about 0.4 s around each: the 15 s of silence are gone.
    let speech = (pcm(&first).len() + pcm(&second).len()) as f64 / 32_000.0;
    assert!(
        kept < total - 12.0 && kept >= speech * 0.9,
        "{info}, speech {speech} s"
    );
    let reference = format!("{} {}", SENTENCES[2], SENTENCES[3]);
    assert!(wer(&reference, text(&filtered)) <= 0.15, "{filtered}");
    assert!(
        wer(text(&plain), text(&filtered)) <= 0.15,
        "{plain} vs {filtered}"
    );
    // Times are the recording's: the first word after the leading silence, the second
    // sentence's words after its start.
    let words: Vec<(String, f64)> = segments(&filtered)
        .iter()
        .flat_map(|s| s["words"].as_array().cloned().unwrap_or_default())
        .map(|w| {
            (
                w["word"].as_str().unwrap_or("").trim().to_lowercase(),
                number(&w["start"]),
            )
        })
        .collect();
    assert!(
        words.first().is_some_and(|(_, start)| *start > 5.5),
        "{words:?}"
    );
    let weather = words.iter().find(|(w, _)| w.starts_with("weather"));
    assert!(
        weather.is_some_and(|(_, start)| *start > second_at - 0.5),
        "{words:?} (second sentence at {second_at} s)"
    );
    assert!(words.iter().all(|(_, start)| *start <= total), "{words:?}");

    // Silence alone: nothing to transcribe.
    let quiet = transcribe(&wav_of(&silence(5.0)), json!({"vad_filter": true})).await;
    assert_eq!(text(&quiet), "", "{quiet}");
    assert_eq!(
        number(&quiet["transcription_info"]["duration_after_vad"]),
        0.0
    );
}

#[tokio::test]
async fn long_audio_with_and_without_conditioning_on_previous_text() {
    // About 40 s: the five sentences, twice, a second of silence after each.
    let mut clips = Vec::new();
    for sentence in SENTENCES {
        clips.push(speak(sentence).await);
    }
    let mut audio = Vec::new();
    while audio.len() < 40 * 32_000 {
        for clip in &clips {
            audio.extend_from_slice(pcm(clip));
            audio.extend(silence(1.0));
        }
    }
    let wav = wav_of(&audio);
    for condition in [false, true] {
        let result = transcribe(
            &wav,
            json!({"condition_on_previous_text": condition, "beam_size": 1, "language": "en"}),
        )
        .await;
        let heard = text(&result).to_lowercase();
        for key in ["fox", "shells", "coffee", "sunny", "call"] {
            assert!(
                heard.matches(key).count() >= 2,
                "{key:?}, conditioned {condition}: {heard}"
            );
        }
        let last_end = segments(&result).last().map_or(0.0, |s| number(&s["end"]));
        assert!(
            last_end > 35.0,
            "conditioned {condition}: ends at {last_end}"
        );
    }
}

#[tokio::test]
async fn failing_thresholds_fall_back_to_sampling_deterministically() {
    // Not the sea-shells sentence: "seashells" for "sea shells" is right but scores as two
    // word errors.
    let sentence = SENTENCES[2];
    let wav = speak(sentence).await;
    let plain = transcribe(&wav, json!({"language": "en"})).await;
    assert!(
        segments(&plain)
            .iter()
            .all(|s| number(&s["temperature"]) == 0.0),
        "{plain}"
    );
    // No result is ever likely enough: every temperature up to 1.0 is tried (sampling five
    // transcripts at each), and the likeliest result of all is kept, reported at 1.0.
    let options = json!({"log_prob_threshold": 0.0, "language": "en"});
    let hot = transcribe(&wav, options.clone()).await;
    for segment in segments(&hot) {
        assert_eq!(number(&segment["temperature"]), 1.0, "{segment}");
    }
    assert!(wer(sentence, text(&hot)) <= 0.3, "{hot}");
    // Sampling is seeded: the same request decodes the same way.
    let again = transcribe(&wav, options).await;
    assert_eq!(hot["segments"], again["segments"]);
    // A compression-ratio threshold nothing passes does the same.
    let repetitive = transcribe(&wav, json!({"compression_ratio_threshold": 0.1})).await;
    assert!(!segments(&repetitive).is_empty(), "{repetitive}");
    assert!(
        segments(&repetitive)
            .iter()
            .all(|s| number(&s["temperature"]) > 0.0),
        "{repetitive}"
    );
}

/// German speech from espeak-ng, as WAV.
fn espeak_german(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("de.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "de", "-s", "130", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("espeak-ng must be installed (apt-get install espeak-ng)");
    assert!(status.success());
    std::fs::read(&path).expect("read wav")
}

#[tokio::test]
async fn translate_turns_german_into_english() {
    // A sentence whisper-base hears from espeak-ng's German voice in both precisions (int8 and
    // f32); "Guten Morgen" comes out as noise about as often as not.
    let wav = espeak_german("Heute ist das Wetter sehr gut, und die Sonne scheint.");
    let german = transcribe(&wav, json!({"language": "de"})).await;
    let heard = text(&german).to_lowercase();
    assert!(
        heard.contains("heute") || heard.contains("wetter"),
        "{german}"
    );
    let english = transcribe(&wav, json!({"language": "de", "task": "translate"})).await;
    let translated = text(&english).to_lowercase();
    assert!(
        translated.contains("today") || translated.contains("weather"),
        "{english}"
    );
    assert!(
        !translated.contains("heute") && !translated.contains("wetter"),
        "{english}"
    );
}

#[tokio::test]
async fn bad_option_values_are_400s_naming_the_field() {
    let wav = speak(SENTENCES[4]).await;
    for (field, value) in [
        ("beam_size", json!(0)),
        ("beam_size", json!(11)),
        ("beam_size", json!(1.5)),
        ("beam_size", json!("five")),
        ("vad_filter", json!("yes")),
        ("condition_on_previous_text", json!(0)),
        ("prefix", json!(42)),
        ("log_prob_threshold", json!("low")),
        ("task", json!("summarize")),
    ] {
        let (status, body) = turbo(&wav, json!({ field: value })).await;
        assert_eq!(status, 400, "{field}={value}: {body}");
        let (code, message) = assert_error_envelope(&body);
        assert_eq!(code, 5006, "{body}");
        assert!(message.contains(field), "{field}={value}: {message}");
    }
}
