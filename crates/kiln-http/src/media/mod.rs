//! The media tasks on the native route (spec §3.7, §3.8, §3.11): speech recognition, speech
//! synthesis and image classification. Inputs come as a raw binary body or as JSON; the shape of
//! the answer follows the catalog model that was asked for (e.g. whisper vs whisper-large-v3-turbo,
//! melotts vs aura).

mod image;
mod speech;
mod voice;

pub use speech::openai_transcription;
pub use voice::openai_speech;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use base64::Engine;
use kiln_catalog::CatalogEntry;
use kiln_core::{KilnError, KilnResult, Task};
use kiln_scheduler::{Admission, MediaWorker};
use serde_json::Value;

use crate::platform::Meter;
use crate::SharedState;

/// OpenAI's limit for an uploaded audio file.
pub const MAX_AUDIO_BYTES: usize = 25 * 1024 * 1024;

/// The request as the native route received it.
pub enum MediaInput {
    /// A raw body: an audio file or an image.
    Binary(Bytes),
    Json(Value),
}

/// Reads the body: JSON when it says or looks so, else the raw bytes of a file.
pub async fn read_input(
    state: &SharedState,
    headers: &HeaderMap,
    body: Body,
) -> KilnResult<MediaInput> {
    let bytes = crate::body::read_limited(headers, body, state.config.max_body_bytes).await?;
    if bytes.is_empty() {
        return Err(KilnError::bad_input(
            "the body is empty: send a file or a JSON object",
        ));
    }
    let declared_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let looks_json = bytes.first().is_some_and(|b| *b == b'{');
    if declared_json || looks_json {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            return Ok(MediaInput::Json(value));
        }
        if declared_json {
            return Err(KilnError::bad_input("the body is not valid JSON"));
        }
    }
    Ok(MediaInput::Binary(bytes))
}

/// Serves one media request for the model `entry` names.
pub async fn run(
    state: &SharedState,
    worker: &MediaWorker,
    entry: &CatalogEntry,
    headers: &HeaderMap,
    body: Body,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let input = read_input(state, headers, body).await?;
    if let MediaInput::Json(value) = &input {
        kiln_catalog::validate_input(entry, value)?;
    }
    match worker.task() {
        Task::SpeechRecognition => speech::run(worker, entry, input, admission, meter).await,
        Task::TextToSpeech => voice::run(worker, entry, input, admission, meter).await,
        Task::ImageClassification => image::run(worker, input, admission, meter).await,
        task => Err(KilnError::internal(format!(
            "no media route for task {}",
            task.name()
        ))),
    }
}

/// Bytes from a JSON field: an array of byte values (0–255) or a base64 string.
fn bytes_field(value: &Value, field: &str) -> KilnResult<Vec<u8>> {
    match value.get(field) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| {
                        KilnError::bad_input(format!("'{field}' must hold byte values 0–255"))
                    })
            })
            .collect(),
        Some(Value::String(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| KilnError::bad_input(format!("'{field}' is not valid base64: {e}"))),
        _ => Err(KilnError::bad_input(format!(
            "'{field}' is required: an array of bytes or a base64 string"
        ))),
    }
}
