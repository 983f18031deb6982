//! Speech recognition (spec §3.7): `@cf/openai/whisper` and `whisper-tiny-en` take a binary
//! body or `{audio: number[]}`; `whisper-large-v3-turbo` takes `{audio: base64, task,
//! language, initial_prompt}` and answers with segments and `transcription_info`;
//! `@cf/deepgram/*` answer Deepgram's shape (`deepgram`). Also OpenAI's
//! `POST /v1/audio/transcriptions`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use kiln_core::media::{MediaOutput, TranscribeOptions, Transcription};
use kiln_core::{KilnError, KilnResult, MediaRequest};
use kiln_scheduler::{Admission, MediaWorker};
use serde_json::{json, Value};

use super::{bytes_field, deepgram, MediaInput, MediaTarget};
use crate::envelope::success;
use crate::platform::Meter;

pub async fn run(
    target: &MediaTarget<'_>,
    input: MediaInput,
    max_decoded_bytes: usize,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let (worker, entry) = (target.worker, target.entry);
    if let Some(arch) = entry.name.strip_prefix("@cf/deepgram/") {
        return run_deepgram(target, arch, input, max_decoded_bytes, admission, meter).await;
    }
    let (audio, options) = match input {
        MediaInput::Binary(bytes) => (bytes.to_vec(), TranscribeOptions::default()),
        MediaInput::Json(value) => {
            let limit = "limits.audio.max_decoded_bytes";
            let audio = bytes_field(&value, "audio", max_decoded_bytes, limit)?;
            (audio, options_of(&value)?)
        }
    };
    let transcription = transcribe(worker, audio, options, admission).await?;
    meter.charge_units("audio minute", f64::from(transcription.duration) / 60.0);
    let turbo = entry.name.ends_with("whisper-large-v3-turbo");
    let result = if turbo {
        turbo_result(&transcription)
    } else {
        whisper_result(&transcription)
    };
    Ok(success(result).into_response())
}

/// Nova-3 (and Flux) on Whisper, in Deepgram's shape.
async fn run_deepgram(
    target: &MediaTarget<'_>,
    arch: &str,
    input: MediaInput,
    max_decoded_bytes: usize,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let limit = "limits.audio.max_decoded_bytes";
    let (audio, options) = match input {
        MediaInput::Binary(bytes) => (bytes.to_vec(), deepgram::options(None, target.query)?),
        MediaInput::Json(value) => {
            let fields = value.as_object();
            // `{audio: {body, contentType}}` (the binding's stream), or the bytes themselves.
            let audio = match value.get("audio") {
                Some(stream @ Value::Object(_)) => {
                    bytes_field(stream, "body", max_decoded_bytes, limit)?
                }
                _ => bytes_field(&value, "audio", max_decoded_bytes, limit)?,
            };
            (audio, deepgram::options(fields, target.query)?)
        }
    };
    let audio = deepgram::as_file(audio, options.raw);
    let request = deepgram::transcribe_options(&options);
    let transcription = transcribe(target.worker, audio, request, admission).await?;
    meter.charge_units("audio minute", f64::from(transcription.duration) / 60.0);
    let result = deepgram::result(&transcription, &options, arch, target.served);
    Ok(success(result).into_response())
}

pub(super) async fn transcribe(
    worker: &MediaWorker,
    audio: Vec<u8>,
    options: TranscribeOptions,
    admission: Admission,
) -> KilnResult<Transcription> {
    if audio.is_empty() {
        return Err(KilnError::bad_input("the audio is empty"));
    }
    match worker
        .run(MediaRequest::Transcribe { audio, options }, admission)
        .await?
    {
        MediaOutput::Transcription(transcription) => Ok(transcription),
        _ => Err(KilnError::internal(
            "the recognizer answered with something else",
        )),
    }
}

/// `task`, `language` and `initial_prompt` (whisper-large-v3-turbo's inputs).
fn options_of(value: &Value) -> KilnResult<TranscribeOptions> {
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let translate = match text("task").as_deref() {
        None | Some("transcribe") => false,
        Some("translate") => true,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'task' must be transcribe or translate, not {other:?}"
            )))
        }
    };
    Ok(TranscribeOptions {
        language: text("language"),
        translate,
        initial_prompt: text("initial_prompt"),
    })
}

fn words_json(transcription: &Transcription) -> Vec<Value> {
    transcription
        .segments
        .iter()
        .flat_map(|segment| &segment.words)
        .map(|w| json!({"word": w.word, "start": w.start, "end": w.end}))
        .collect()
}

fn word_count(transcription: &Transcription) -> usize {
    transcription.text.split_whitespace().count()
}

fn whisper_result(transcription: &Transcription) -> Value {
    json!({
        "text": transcription.text,
        "word_count": word_count(transcription),
        "words": words_json(transcription),
        "vtt": transcription.vtt,
    })
}

fn turbo_result(transcription: &Transcription) -> Value {
    let segments: Vec<Value> = transcription
        .segments
        .iter()
        .map(|segment| {
            let words: Vec<Value> = segment
                .words
                .iter()
                .map(|w| json!({"word": w.word, "start": w.start, "end": w.end}))
                .collect();
            json!({"start": segment.start, "end": segment.end, "text": segment.text,
                   "temperature": 0.0, "words": words})
        })
        .collect();
    json!({
        "transcription_info": {
            "language": transcription.language,
            "duration": transcription.duration,
            "duration_after_vad": transcription.duration,
        },
        "text": transcription.text,
        "word_count": word_count(transcription),
        "segments": segments,
        "vtt": transcription.vtt,
    })
}

/// `POST /v1/audio/transcriptions` (multipart `file`, `model`, `language`, `prompt`,
/// `response_format` json|text|verbose_json|srt|vtt).
pub async fn openai_transcription(
    worker: &MediaWorker,
    audio: Vec<u8>,
    fields: &std::collections::HashMap<String, String>,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let options = TranscribeOptions {
        language: fields.get("language").cloned(),
        translate: false,
        initial_prompt: fields.get("prompt").cloned(),
    };
    let transcription = transcribe(worker, audio, options, admission).await?;
    meter.charge_units("audio minute", f64::from(transcription.duration) / 60.0);
    let format = fields.get("response_format").map_or("json", String::as_str);
    let text_response = |body: String, content_type: &'static str| {
        let mut response = body.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    Ok(match format {
        "json" => axum::Json(json!({"text": transcription.text})).into_response(),
        "text" => text_response(transcription.text, "text/plain; charset=utf-8"),
        "vtt" => text_response(transcription.vtt, "text/vtt; charset=utf-8"),
        "srt" => text_response(to_srt(&transcription), "text/plain; charset=utf-8"),
        "verbose_json" => axum::Json(json!({
            "task": "transcribe",
            "language": transcription.language,
            "duration": transcription.duration,
            "text": transcription.text,
            "segments": transcription.segments.iter().enumerate().map(|(id, s)| json!({
                "id": id, "start": s.start, "end": s.end, "text": s.text})).collect::<Vec<_>>(),
            "words": words_json(&transcription),
        }))
        .into_response(),
        other => {
            return Err(KilnError::bad_input(format!(
                "response_format must be json, text, verbose_json, srt or vtt, not {other:?}"
            )))
        }
    })
}

/// SubRip: numbered cues with `HH:MM:SS,mmm` times.
fn to_srt(transcription: &Transcription) -> String {
    let time = |seconds: f32| {
        let millis = (seconds.max(0.0) * 1000.0).round() as u64;
        format!(
            "{:02}:{:02}:{:02},{:03}",
            millis / 3_600_000,
            millis / 60_000 % 60,
            millis / 1000 % 60,
            millis % 1000
        )
    };
    transcription
        .segments
        .iter()
        .enumerate()
        .map(|(n, s)| {
            format!(
                "{}\n{} --> {}\n{}\n",
                n + 1,
                time(s.start),
                time(s.end),
                s.text.trim()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
