//! Text-to-speech (spec §3.8): `@cf/myshell-ai/melotts` `{prompt, lang}` → `{audio: base64
//! MP3}`; `@cf/deepgram/aura-*` `{text, speaker, encoding, container, sample_rate}` → binary
//! audio. Also OpenAI's `POST /v1/audio/speech`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kiln_catalog::CatalogEntry;
use kiln_core::media::{AudioFormat, MediaOutput};
use kiln_core::{KilnError, KilnResult, MediaRequest};
use kiln_scheduler::{Admission, MediaWorker};
use serde_json::{json, Value};

use super::MediaInput;
use crate::envelope::success;
use crate::platform::Meter;

pub async fn run(
    worker: &MediaWorker,
    entry: &CatalogEntry,
    input: MediaInput,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let MediaInput::Json(value) = input else {
        return Err(KilnError::bad_input("text-to-speech takes a JSON body"));
    };
    if entry.name.starts_with("@cf/deepgram/aura") {
        let text = required_text(&value, "text")?;
        let format = aura_format(&value)?;
        let sample_rate = value
            .get("sample_rate")
            .and_then(Value::as_f64)
            .map(|rate| rate as u32);
        let characters = text.chars().count() as f64;
        let (bytes, content_type, _) = speak(worker, text, format, sample_rate, admission).await?;
        meter.charge_units("characters", characters);
        return Ok(binary(bytes, content_type));
    }
    // MeloTTS (and local TTS models by name): base64 MP3 in the envelope.
    let text = required_text(&value, "prompt")?;
    let (bytes, _, seconds) = speak(worker, text, AudioFormat::Mp3, None, admission).await?;
    meter.charge_units("audio minute", f64::from(seconds) / 60.0);
    let audio = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(success(json!({"audio": audio})).into_response())
}

fn required_text(value: &Value, field: &str) -> KilnResult<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| KilnError::bad_input(format!("'{field}' must be non-empty text")))
}

/// Aura's `encoding` and `container`: MP3 by default; `linear16` raw or in a WAV container.
fn aura_format(value: &Value) -> KilnResult<AudioFormat> {
    let encoding = value
        .get("encoding")
        .and_then(Value::as_str)
        .unwrap_or("mp3");
    let container = value.get("container").and_then(Value::as_str);
    match (encoding, container) {
        ("mp3", _) => Ok(AudioFormat::Mp3),
        ("linear16", Some("wav")) => Ok(AudioFormat::Wav),
        ("linear16", _) => Ok(AudioFormat::Linear16),
        (other, _) => Err(KilnError::bad_input(format!(
            "encoding {other:?} is not produced by Kiln's voices: use mp3 or linear16"
        ))),
    }
}

async fn speak(
    worker: &MediaWorker,
    text: String,
    format: AudioFormat,
    sample_rate: Option<u32>,
    admission: Admission,
) -> KilnResult<(Vec<u8>, &'static str, f32)> {
    let request = MediaRequest::Speak {
        text,
        format,
        sample_rate,
    };
    match worker.run(request, admission).await? {
        MediaOutput::Audio {
            bytes,
            content_type,
            duration,
        } => Ok((bytes, content_type, duration)),
        _ => Err(KilnError::internal(
            "the voice answered with something else",
        )),
    }
}

fn binary(bytes: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = bytes.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `POST /v1/audio/speech`: `{model, input, voice, response_format: mp3|wav|pcm}` → audio.
pub async fn openai_speech(
    worker: &MediaWorker,
    value: &Value,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let text = required_text(value, "input")?;
    let format = match value.get("response_format").and_then(Value::as_str) {
        None | Some("mp3") => AudioFormat::Mp3,
        Some("wav") => AudioFormat::Wav,
        Some("pcm") => AudioFormat::Linear16,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "response_format must be mp3, wav or pcm, not {other:?}"
            )))
        }
    };
    // OpenAI's pcm is 24 kHz.
    let sample_rate = (format == AudioFormat::Linear16).then_some(24_000);
    let (bytes, content_type, seconds) =
        speak(worker, text, format, sample_rate, admission).await?;
    meter.charge_units("audio minute", f64::from(seconds) / 60.0);
    Ok(binary(bytes, content_type))
}
