//! Text-to-speech on the Piper voice: MeloTTS's base64 MP3, Aura's binary audio, OpenAI's
//! `/v1/audio/speech`.

use base64::Engine;
use serde_json::json;

use super::*;

/// Seconds of 16-bit mono PCM in a WAV file.
fn wav_seconds(wav: &[u8]) -> f32 {
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[8..12], b"WAVE");
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap());
    (wav.len() - 44) as f32 / 2.0 / rate as f32
}

fn is_mp3(bytes: &[u8]) -> bool {
    bytes.starts_with(b"ID3") || (bytes.len() > 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0)
}

#[tokio::test]
async fn melotts_answers_base64_mp3() {
    let (status, headers, body) = post_json(
        &media_run_url("@cf/myshell-ai/melotts"),
        &json!({"prompt": "Hello from Kiln.", "lang": "en"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-kiln-model"], "piper-en-us-joe-medium");
    let audio = base64::engine::general_purpose::STANDARD
        .decode(body["result"]["audio"].as_str().expect("base64 audio"))
        .expect("valid base64");
    assert!(
        is_mp3(&audio) && audio.len() > 2000,
        "{} bytes",
        audio.len()
    );

    let (status, _, body) = post_json(
        &media_run_url("@cf/myshell-ai/melotts"),
        &json!({"prompt": ""}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 5006);
}

#[tokio::test]
async fn aura_answers_binary_audio_in_the_asked_encoding() {
    let speak = |body: serde_json::Value| aura("@cf/deepgram/aura-1", body);
    let sentence = "The quick brown fox jumps over the lazy dog.";
    let (status, content_type, mp3) = speak(json!({"text": sentence})).await;
    assert_eq!((status, content_type.as_str()), (200, "audio/mpeg"));
    assert!(is_mp3(&mp3));
    let (status, content_type, wav) = speak(
        json!({"text": sentence, "encoding": "linear16", "container": "wav", "sample_rate": 16000}),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "audio/wav"));
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16000);
    let seconds = wav_seconds(&wav);
    assert!((1.5..5.0).contains(&seconds), "{seconds} s");
    let (status, _, _) = speak(json!({"text": sentence, "encoding": "opus"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn openai_speech_route() {
    let response = client()
        .post(media_url("/v1/audio/speech"))
        .bearer_auth("sk-test")
        .json(
            &json!({"model": "tts-1", "input": "Testing one two three.", "voice": "alloy",
                      "response_format": "wav"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let wav = response.bytes().await.unwrap();
    assert!(wav_seconds(&wav) > 0.5);
}
