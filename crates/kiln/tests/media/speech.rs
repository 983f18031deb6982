//! Speech recognition, checked by a round trip: Kiln's voice speaks, Kiln's Whisper listens.

use serde_json::{json, Value};

use super::*;

pub(super) const SENTENCES: [&str; 5] = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A cup of coffee helps me start the day.",
    "The weather today is sunny and warm.",
    "Please call me back when you get home.",
];

/// Kiln's voice, as 16 kHz 16-bit WAV.
pub(super) async fn speak(text: &str) -> Vec<u8> {
    let response = client()
        .post(media_run_url("@cf/deepgram/aura-1"))
        .bearer_auth("sk-test")
        .json(&json!({"text": text, "encoding": "linear16", "container": "wav", "sample_rate": 16000}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("audio").to_vec()
}

async fn transcribe(model: &str, wav: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(media_run_url(model))
        .bearer_auth("sk-test")
        .body(wav)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate: edit distance over words / reference length.
/// A 16 kHz 16-bit mono WAV of `pcm`.
pub(super) fn wav_of(pcm: &[u8]) -> Vec<u8> {
    let mut wav = b"RIFF".to_vec();
    wav.extend(((36 + pcm.len()) as u32).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(1u16.to_le_bytes()); // PCM
    wav.extend(1u16.to_le_bytes()); // mono
    wav.extend(16_000u32.to_le_bytes());
    wav.extend(32_000u32.to_le_bytes());
    wav.extend(2u16.to_le_bytes());
    wav.extend(16u16.to_le_bytes());
    wav.extend(b"data");
    wav.extend((pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(pcm);
    wav
}

pub(super) fn wer(reference: &str, hypothesis: &str) -> f64 {
    edit_rate(&words(reference), &words(hypothesis))
}

/// Character error rate over letters and digits only: blind to how words are split or joined
/// ("sea shore" / "seashore"), which WER counts as two errors.
pub(super) fn cer(reference: &str, hypothesis: &str) -> f64 {
    let letters = |text: &str| -> Vec<char> {
        text.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    edit_rate(&letters(reference), &letters(hypothesis))
}

/// Levenshtein distance between the sequences / the reference's length.
fn edit_rate<T: PartialEq>(r: &[T], h: &[T]) -> f64 {
    let mut previous: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, hw) in h.iter().enumerate() {
            let substitution = previous[j] + usize::from(rw != hw);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[h.len()] as f64 / r.len().max(1) as f64
}

#[tokio::test]
async fn tts_then_whisper_round_trip() {
    for model in ["whisper-tiny-en", "whisper-base"] {
        kiln_store::ensure_for_tests(model);
    }
    let mut spoken = Vec::new();
    for sentence in SENTENCES {
        spoken.push(speak(sentence).await);
    }
    for (model, limit) in [
        ("@cf/openai/whisper", 0.15),
        ("@cf/openai/whisper-tiny-en", 0.30),
    ] {
        let (mut errors, mut total) = (0.0, 0.0);
        for (sentence, wav) in SENTENCES.iter().zip(&spoken) {
            let (status, body) = transcribe(model, wav.clone()).await;
            assert_eq!(status, 200, "{body}");
            let result = &body["result"];
            let text = result["text"].as_str().expect("text");
            let count = words(sentence).len() as f64;
            errors += wer(sentence, text) * count;
            total += count;
            // Word timestamps increase and stay inside the audio.
            let seconds = (wav.len() - 44) as f64 / 2.0 / 16_000.0;
            let stamps: Vec<(f64, f64)> = result["words"]
                .as_array()
                .expect("words")
                .iter()
                .map(|w| (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap()))
                .collect();
            assert!(!stamps.is_empty(), "{body}");
            assert!(stamps.windows(2).all(|p| p[0].0 <= p[1].0), "{stamps:?}");
            assert!(
                stamps
                    .iter()
                    .all(|&(s, e)| 0.0 <= s && s <= e && e <= seconds + 0.05),
                "{stamps:?} in {seconds} s"
            );
            assert_eq!(
                result["word_count"].as_u64(),
                Some(words(text).len() as u64)
            );
            let vtt = result["vtt"].as_str().expect("vtt");
            assert!(vtt.starts_with("WEBVTT") && vtt.contains(" --> "), "{vtt}");
        }
        let rate = errors / total;
        assert!(
            rate <= limit,
            "{model}: word error rate {rate:.2} > {limit}"
        );
    }
}

#[tokio::test]
async fn long_recordings_are_transcribed_whole() {
    kiln_store::ensure_for_tests("whisper-base");
    // About 65 s: the five sentences, three times, with a second of silence after each.
    let mut pcm: Vec<u8> = Vec::new();
    let mut clips = Vec::new();
    for sentence in SENTENCES {
        clips.push(speak(sentence).await[44..].to_vec());
    }
    while pcm.len() < 65 * 16_000 * 2 {
        for clip in &clips {
            pcm.extend_from_slice(clip);
            pcm.extend(std::iter::repeat_n(0u8, 16_000 * 2));
        }
    }
    let wav = wav_of(&pcm);
    let (status, body) = transcribe("@cf/openai/whisper", wav).await;
    assert_eq!(status, 200, "{body}");
    let text = body["result"]["text"].as_str().unwrap_or("").to_lowercase();
    // Each sentence is heard three times; its key word must be heard every time, so no window
    // boundary lost speech. ("sunny", not "weather": whisper-base sometimes hears "water".)
    for key in ["fox", "shells", "coffee", "sunny", "call"] {
        assert!(text.matches(key).count() >= 3, "{key:?} in {text}");
    }
    let last_end = body["result"]["words"]
        .as_array()
        .and_then(|w| w.last())
        .and_then(|w| w["end"].as_f64())
        .unwrap_or(0.0);
    assert!(last_end > 55.0, "words reach the end: {last_end}");
}

#[tokio::test]
async fn json_inputs_mp3_and_the_turbo_shape() {
    kiln_store::ensure_for_tests("whisper-base");
    let wav = speak(SENTENCES[2]).await;
    // `{audio: number[]}`: the file's bytes as numbers.
    let numbers: Vec<u64> = wav.iter().map(|&b| u64::from(b)).collect();
    let (status, _, body) = run("@cf/openai/whisper", &json!({"audio": numbers})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        wer(SENTENCES[2], body["result"]["text"].as_str().unwrap()) <= 0.3,
        "{body}"
    );

    // whisper-large-v3-turbo's shape: base64 audio in, segments and transcription_info out.
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&wav);
    let (status, _, body) = run(
        "@cf/openai/whisper-large-v3-turbo",
        &json!({"audio": encoded, "task": "transcribe", "language": "en"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert_eq!(result["transcription_info"]["language"], "en", "{body}");
    assert!(result["transcription_info"]["duration"].as_f64() > Some(1.0));
    let segment = &result["segments"][0];
    assert!(
        segment["text"].is_string() && segment["words"].is_array(),
        "{body}"
    );

    // MP3 in: Kiln's own voice as MP3.
    let mp3 = client()
        .post(media_run_url("@cf/deepgram/aura-1"))
        .bearer_auth("sk-test")
        .json(&json!({"text": SENTENCES[0]}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let (status, body) = transcribe("@cf/openai/whisper", mp3).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        wer(SENTENCES[0], body["result"]["text"].as_str().unwrap()) <= 0.3,
        "{body}"
    );
}

#[tokio::test]
async fn bad_audio_and_the_openai_route() {
    kiln_store::ensure_for_tests("whisper-base");
    let (status, body) = transcribe("@cf/openai/whisper", b"definitely not audio".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 5006);
    let (status, _, body) = run("@cf/openai/whisper", &json!({"audio": [1, 2, 3, 4]})).await;
    assert_eq!(status, 400, "{body}");

    // OpenAI's multipart route, in every response format.
    let wav = speak(SENTENCES[0]).await;
    for (format, check) in [
        ("json", "\"text\""),
        ("text", "fox"),
        ("vtt", "WEBVTT"),
        ("srt", " --> "),
        ("verbose_json", "\"segments\""),
    ] {
        let form = reqwest::multipart::Form::new()
            .text("model", "whisper-1")
            .text("response_format", format)
            .part(
                "file",
                reqwest::multipart::Part::bytes(wav.clone()).file_name("a.wav"),
            );
        let response = client()
            .post(media_url("/v1/audio/transcriptions"))
            .bearer_auth("sk-test")
            .multipart(form)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{format}");
        let body = response.text().await.unwrap();
        assert!(
            body.to_lowercase().contains(&check.to_lowercase()),
            "{format}: {body}"
        );
    }
}
