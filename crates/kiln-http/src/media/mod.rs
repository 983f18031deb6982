//! The media tasks on the native route (spec §3.7, §3.8, §3.11): speech recognition, speech
//! synthesis and image classification; also translation and summarization (§3.5, §3.6), whose
//! engines run one request at a time on a media worker. Inputs come as a raw binary body or as JSON; the shape of
//! the answer follows the catalog model that was asked for (e.g. whisper vs whisper-large-v3-turbo,
//! melotts vs aura).

mod deepgram;
mod encode;
mod image;
mod json;
mod live;
mod live_session;
mod speakers;
mod speech;
mod text;
mod voice;
mod ws;

pub use live_session::{binding_upgrade, rest_upgrade};
pub use speech::openai_transcription;
pub use text::install_hint as seq2seq_install_hint;
pub use voice::openai_speech;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use base64::Engine;
use kiln_catalog::CatalogEntry;
use kiln_core::{KilnError, KilnResult, Task};
use kiln_scheduler::{Admission, MediaWorker};
use serde_json::Value;

use crate::offload::{off_runtime_if, INLINE_BYTES};
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
        // Audio and images as JSON arrays run to megabytes: parsed off the runtime threads.
        let text = bytes.clone();
        let parsed = off_runtime_if(bytes.len() > INLINE_BYTES, "JSON parsing", move || {
            // Small JSON that is not an object still goes to the schema, which names what it
            // should be.
            let small = text.len() <= INLINE_BYTES;
            Ok(json::parse_media_json(&text)
                .or_else(|| small.then(|| serde_json::from_slice(&text).ok()).flatten()))
        })
        .await?;
        if let Some(value) = parsed {
            return Ok(MediaInput::Json(value));
        }
        if declared_json {
            return Err(KilnError::bad_input(
                "the body is not valid JSON, or not a JSON object",
            ));
        }
    }
    Ok(MediaInput::Binary(bytes))
}

/// Who serves a media request, and what its URL said.
pub struct MediaTarget<'a> {
    pub worker: &'a MediaWorker,
    /// The catalog model asked for: it decides the shapes.
    pub entry: &'a CatalogEntry,
    /// The local model behind `worker`.
    pub served: &'a str,
    /// The URL's query: Deepgram's options arrive there on REST.
    pub query: Option<&'a str>,
}

/// Serves one media request for the model `target.entry` names.
pub async fn run(
    state: &SharedState,
    target: &MediaTarget<'_>,
    headers: &HeaderMap,
    body: Body,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let (worker, entry) = (target.worker, target.entry);
    let input = match read_input(state, headers, body).await? {
        MediaInput::Json(mut value) => {
            kiln_catalog::drop_null_fields(entry, &mut value);
            // Validation walks every element of a byte array: off the runtime when large.
            let large = value.as_object().is_some_and(|fields| {
                fields
                    .values()
                    .any(|v| v.as_array().is_some_and(|a| a.len() > INLINE_BYTES / 4))
            });
            let checked = entry.clone();
            MediaInput::Json(
                off_runtime_if(large, "input validation", move || {
                    kiln_catalog::validate_input(&checked, &value).map(|()| value)
                })
                .await?,
            )
        }
        binary => binary,
    };
    match worker.task() {
        Task::SpeechRecognition => {
            let max = state.config.limits.audio.max_decoded_bytes;
            speech::run(target, input, max, admission, meter).await
        }
        Task::TextToSpeech => voice::run(state, target, input, admission, meter).await,
        Task::Translation | Task::Summarization => text::run(worker, input, admission, meter).await,
        Task::ImageClassification => {
            let max = state.config.limits.image.max_decoded_bytes;
            image::run(worker, input, max, admission, meter).await
        }
        task => Err(KilnError::internal(format!(
            "no media route for task {}",
            task.name()
        ))),
    }
}

/// Bytes from a JSON field: an array of byte values (0–255) or a base64 string, refused
/// before decoding when it would decode to more than `max` bytes (`limit` names the setting).
fn bytes_field(value: &Value, field: &str, max: usize, limit: &str) -> KilnResult<Vec<u8>> {
    let too_big = |bytes: usize| {
        KilnError::bad_input(format!(
            "'{field}' holds {bytes} bytes, more than {max} ({limit})"
        ))
    };
    match value.get(field) {
        Some(Value::Array(items)) => {
            if items.len() > max {
                return Err(too_big(items.len()));
            }
            items
                .iter()
                .map(|item| {
                    item.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or_else(|| {
                            KilnError::bad_input(format!("'{field}' must hold byte values 0–255"))
                        })
                })
                .collect()
        }
        Some(Value::String(encoded)) => {
            let encoded = encoded.trim();
            // Exact for valid base64: every 4 characters (padding excluded) are 3 bytes.
            let unpadded = encoded.trim_end_matches('=').len();
            let decoded = unpadded / 4 * 3 + (unpadded % 4).saturating_sub(1);
            if decoded > max {
                return Err(too_big(decoded));
            }
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| KilnError::bad_input(format!("'{field}' is not valid base64: {e}")))
        }
        _ => Err(KilnError::bad_input(format!(
            "'{field}' is required: an array of bytes or a base64 string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: &str = "limits.image.max_decoded_bytes";

    #[test]
    fn byte_arrays_are_bounded_before_decoding() {
        let value = json!({"image": [1, 2, 3, 4]});
        assert_eq!(
            bytes_field(&value, "image", 4, LIMIT).expect("4"),
            [1, 2, 3, 4]
        );
        let error = bytes_field(&value, "image", 3, LIMIT).expect_err("over");
        assert_eq!(error.kind, kiln_core::ErrorKind::BadInput);
        assert!(
            error
                .message
                .contains("4 bytes, more than 3 (limits.image.max_decoded_bytes)"),
            "{}",
            error.message
        );
        assert!(bytes_field(&json!({"image": [256]}), "image", 3, LIMIT).is_err());
    }

    #[test]
    fn base64_is_bounded_by_its_decoded_size() {
        use base64::Engine;
        for len in 0..20usize {
            let data = vec![7u8; len];
            let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
            let value = json!({"audio": format!(" {encoded}\n")});
            assert_eq!(
                bytes_field(&value, "audio", len, LIMIT).expect("fits"),
                data
            );
            if len > 0 {
                let error = bytes_field(&value, "audio", len - 1, LIMIT).expect_err("over");
                assert!(
                    error.message.contains(&format!("{len} bytes")),
                    "{}",
                    error.message
                );
            }
        }
        // 40 MB of base64 is refused from its length, without decoding it.
        let value = json!({"audio": "A".repeat(40_000_000)});
        let error = bytes_field(&value, "audio", 25 << 20, LIMIT).expect_err("over");
        assert!(
            error.message.contains("30000000 bytes"),
            "{}",
            error.message
        );
    }
}
