//! Aura's `speaker`, `encoding`, `container` and `sample_rate`, and MeloTTS's `lang`, change
//! the output as docs/speech.md says; what no voice or encoder here can do is a 400. FLAC and
//! µ-law output are checked by ear: Kiln's nova-3 transcribes them.

use serde_json::{json, Value};

use super::speech::wer;
use super::*;

const SENTENCE: &str = "The weather today is sunny and warm.";

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The error envelope's message, after checking it is a 400 / 5006.
fn refused(status: u16, body: &[u8]) -> String {
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
    let body: Value = serde_json::from_slice(body).expect("JSON error");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 5006, "{body}");
    message
}

async fn nova_transcript(audio: Vec<u8>) -> String {
    kiln_store::ensure_for_tests("whisper-base");
    let response = client()
        .post(media_run_url("@cf/deepgram/nova-3"))
        .bearer_auth("sk-test")
        .body(audio)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    body["result"]["results"]["channels"][0]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

#[tokio::test]
async fn aura_encodings_and_containers() {
    let model = "@cf/deepgram/aura-2-en";
    // linear16 is a 24 kHz WAV unless asked otherwise (Deepgram's defaults).
    let (status, content_type, wav) =
        aura(model, json!({"text": SENTENCE, "encoding": "linear16"})).await;
    assert_eq!((status, content_type.as_str()), (200, "audio/wav"));
    assert_eq!(
        (&wav[..4], le16(&wav, 20), le32(&wav, 24)),
        (&b"RIFF"[..], 1, 24_000)
    );
    let pcm_len = wav.len() - 44;
    let (status, content_type, raw) = aura(
        model,
        json!({"text": SENTENCE, "encoding": "linear16", "container": "none"}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "audio/l16"));
    // No header, 16-bit samples at 24 kHz (VITS's noise makes each take a little different).
    assert!(!raw.starts_with(b"RIFF") && raw.len() % 2 == 0);
    let seconds = raw.len() as f32 / 2.0 / 24_000.0;
    assert!((1.5..6.0).contains(&seconds), "{seconds} s");

    // µ-law in WAV: 8 kHz, one byte a sample, format 7; and it still sounds like the text.
    let (status, content_type, mulaw) =
        aura(model, json!({"text": SENTENCE, "encoding": "mulaw"})).await;
    assert_eq!((status, content_type.as_str()), (200, "audio/wav"));
    assert_eq!(
        (le16(&mulaw, 20), le32(&mulaw, 24), le16(&mulaw, 34)),
        (7, 8_000, 8)
    );
    let seconds = le32(&mulaw, 54) as f32 / 8_000.0;
    assert!((1.5..6.0).contains(&seconds), "{seconds} s");
    let heard = nova_transcript(mulaw).await;
    assert!(wer(SENTENCE, &heard) <= 0.15, "µ-law: {heard}");

    // Raw A-law at 16 kHz: one byte a sample.
    let (status, content_type, alaw) = aura(
        model,
        json!({"text": SENTENCE, "encoding": "alaw", "container": "none", "sample_rate": 16000}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "audio/x-alaw-basic"));
    let seconds = alaw.len() as f32 / 16_000.0;
    assert!((1.5..6.0).contains(&seconds), "{seconds} s");

    // FLAC, smaller than the same PCM, and transcribable.
    let (status, content_type, flac) = aura(
        model,
        json!({"text": SENTENCE, "encoding": "flac", "sample_rate": 24000}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "audio/flac"));
    assert!(
        flac.starts_with(b"fLaC") && flac.len() < pcm_len,
        "{} bytes",
        flac.len()
    );
    let heard = nova_transcript(flac).await;
    assert!(wer(SENTENCE, &heard) <= 0.15, "FLAC: {heard}");

    // What no encoder here makes, and containers that do not hold the encoding.
    for (body, says) in [
        (
            json!({"text": SENTENCE, "encoding": "opus"}),
            "no opus encoder",
        ),
        (
            json!({"text": SENTENCE, "encoding": "aac"}),
            "no aac encoder",
        ),
        (
            json!({"text": SENTENCE, "encoding": "opus", "container": "ogg"}),
            "opus",
        ),
        (
            json!({"text": SENTENCE, "container": "wav"}),
            "container \"wav\"",
        ),
        (
            json!({"text": SENTENCE, "encoding": "linear16", "sample_rate": 96000}),
            "sample_rate",
        ),
    ] {
        let (status, _, error) = aura(model, body.clone()).await;
        let message = refused(status, &error);
        assert!(message.contains(says), "{body}: {message}");
    }
}

#[tokio::test]
async fn aura_speakers_map_onto_installed_voices() {
    // Every English speaker is spoken by the installed English voice.
    for (model, speaker) in [
        ("@cf/deepgram/aura-1", "zeus"),
        ("@cf/deepgram/aura-1", "luna"),
        ("@cf/deepgram/aura-2-en", "thalia"),
        ("@cf/deepgram/aura-2-en", "aura-2-apollo-en"),
    ] {
        let (status, content_type, _) =
            aura(model, json!({"text": "Hi.", "speaker": speaker})).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "audio/mpeg"),
            "{speaker}"
        );
    }
    // A name the model does not have: 400 listing its voices.
    let (status, _, error) = aura(
        "@cf/deepgram/aura-2-en",
        json!({"text": "Hi.", "speaker": "sirio"}),
    )
    .await;
    let message = refused(status, &error);
    assert!(
        message.contains("amalthea") && message.contains("zeus"),
        "{message}"
    );
    let (status, _, error) = aura(
        "@cf/deepgram/aura-1",
        json!({"text": "Hi.", "speaker": "nobody"}),
    )
    .await;
    refused(status, &error);
    // A Spanish speaker needs a Spanish voice; the only one installed speaks English.
    let (status, _, error) = aura(
        "@cf/deepgram/aura-2-es",
        json!({"text": "Hola.", "speaker": "sirio"}),
    )
    .await;
    let message = refused(status, &error);
    assert!(
        message.contains("\"es\"") && message.contains("en (piper-en-us-joe-medium)"),
        "{message}"
    );
}

#[tokio::test]
async fn melotts_lang_picks_a_voice_or_names_the_installed_ones() {
    let url = media_run_url("@cf/myshell-ai/melotts");
    for lang in ["en", "EN"] {
        let (status, _, body) = post_json(&url, &json!({"prompt": "Hello.", "lang": lang})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["result"]["audio"]
            .as_str()
            .is_some_and(|a| a.len() > 100));
    }
    let (status, _, body) = post_json(&url, &json!({"prompt": "Bonjour.", "lang": "fr"})).await;
    assert_eq!(status, 400, "{body}");
    let message = assert_error_envelope(&body).1;
    assert!(
        message.contains("lang \"fr\"") && message.contains("installed voices speak: en"),
        "{message}"
    );
    let (status, _, body) = post_json(&url, &json!({"prompt": "Hi.", "lang": "klingon"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        assert_error_envelope(&body)
            .1
            .contains("en, es, fr, zh, jp, kr"),
        "{body}"
    );
}
