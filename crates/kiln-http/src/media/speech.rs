//! Speech recognition (spec §3.7): `@cf/openai/whisper` and `whisper-tiny-en` take a binary
//! body or `{audio: number[]}`; `whisper-large-v3-turbo` takes `{audio: base64, task,
//! language, vad_filter, initial_prompt, prefix, beam_size, condition_on_previous_text,
//! no_speech_threshold, compression_ratio_threshold, log_prob_threshold, …}` and answers with
//! segments and `transcription_info`; `@cf/deepgram/*` answer Deepgram's shape (`deepgram`).
//! Also OpenAI's `POST /v1/audio/transcriptions`.

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
    let turbo = entry.name.ends_with("whisper-large-v3-turbo");
    let (audio, options) = match input {
        MediaInput::Binary(bytes) => (bytes.to_vec(), TranscribeOptions::default()),
        MediaInput::Json(value) => {
            let options = options_of(&value, turbo)?;
            let limit = "limits.audio.max_decoded_bytes";
            (
                bytes_field(&value, "audio", max_decoded_bytes, limit)?,
                options,
            )
        }
    };
    let transcription = transcribe(worker, audio, options, admission).await?;
    meter.charge_units("audio minute", f64::from(transcription.duration) / 60.0);
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

/// The most beams a request may ask for: each costs decoder work on every token.
const MAX_BEAM_SIZE: u64 = 10;

/// Whisper's JSON inputs (whisper-large-v3-turbo's, spec §3.7). Turbo decodes as
/// faster-whisper does unless told otherwise: beam search with 5 beams, each window prompted
/// with the text before it, temperature fallback. The other whisper ids keep Kiln's greedy
/// path by default but honour the same fields.
fn options_of(value: &Value, turbo: bool) -> KilnResult<TranscribeOptions> {
    let field = |name: &str| value.get(name).filter(|v| !v.is_null());
    let wrong = |name: &str, what: &str| KilnError::bad_input(format!("'{name}' must be {what}"));
    let text = |name: &str| match field(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(wrong(name, "a string")),
    };
    let flag = |name: &str, default: bool| match field(name) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| wrong(name, "true or false")),
    };
    let number = |name: &str, default: f32| match field(name) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite())
            .ok_or_else(|| wrong(name, "a number")),
    };
    let translate = match text("task")?.as_deref() {
        None | Some("transcribe") => false,
        Some("translate") => true,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'task' must be transcribe or translate, not {other:?}"
            )))
        }
    };
    let beam_size = match field("beam_size") {
        None => {
            if turbo {
                5
            } else {
                1
            }
        }
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_BEAM_SIZE).contains(n))
            .map(|n| n as u32)
            .ok_or_else(|| {
                wrong(
                    "beam_size",
                    &format!("a whole number from 1 to {MAX_BEAM_SIZE}, not {v}"),
                )
            })?,
    };
    let defaults = TranscribeOptions::default();
    Ok(TranscribeOptions {
        language: text("language")?,
        translate,
        initial_prompt: text("initial_prompt")?,
        prefix: text("prefix")?,
        vad_filter: flag("vad_filter", false)?,
        beam_size,
        condition_on_previous_text: flag("condition_on_previous_text", turbo)?,
        temperature_fallback: turbo,
        compression_ratio_threshold: number(
            "compression_ratio_threshold",
            defaults.compression_ratio_threshold,
        )?,
        log_prob_threshold: number("log_prob_threshold", defaults.log_prob_threshold)?,
        no_speech_threshold: number("no_speech_threshold", defaults.no_speech_threshold)?,
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
                   "temperature": segment.temperature, "avg_logprob": segment.avg_logprob,
                   "compression_ratio": segment.compression_ratio,
                   "no_speech_prob": segment.no_speech_prob, "words": words})
        })
        .collect();
    json!({
        "transcription_info": {
            "language": transcription.language,
            "language_probability": transcription.language_probability,
            "duration": transcription.duration,
            "duration_after_vad": transcription.duration_after_vad,
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
        initial_prompt: fields.get("prompt").cloned(),
        ..TranscribeOptions::default()
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
                "id": id, "start": s.start, "end": s.end, "text": s.text,
                "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob,
            })).collect::<Vec<_>>(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turbo_decodes_as_faster_whisper_and_the_others_greedily() {
        let audio = json!({"audio": "UklGRg=="});
        let turbo = options_of(&audio, true).unwrap();
        assert_eq!(turbo.beam_size, 5);
        assert!(turbo.condition_on_previous_text && turbo.temperature_fallback);
        assert!(!turbo.vad_filter && turbo.prefix.is_none());
        let plain = options_of(&audio, false).unwrap();
        assert_eq!(plain, TranscribeOptions::default());
        assert_eq!(plain.beam_size, 1);

        let asked = json!({"audio": "UklGRg==", "beam_size": 1, "vad_filter": true,
            "condition_on_previous_text": false, "prefix": "So,", "task": "translate",
            "compression_ratio_threshold": 3, "log_prob_threshold": -0.5,
            "no_speech_threshold": null});
        let options = options_of(&asked, true).unwrap();
        assert_eq!(options.beam_size, 1);
        assert!(options.vad_filter && !options.condition_on_previous_text && options.translate);
        assert_eq!(options.prefix.as_deref(), Some("So,"));
        assert_eq!(options.compression_ratio_threshold, 3.0);
        assert_eq!(options.log_prob_threshold, -0.5);
        assert_eq!(options.no_speech_threshold, 0.6, "null is the default");
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        for (field, value) in [
            ("beam_size", json!(0)),
            ("beam_size", json!(11)),
            ("beam_size", json!(2.5)),
            ("beam_size", json!("5")),
            ("vad_filter", json!("yes")),
            ("condition_on_previous_text", json!(1)),
            ("prefix", json!(["a"])),
            ("log_prob_threshold", json!("low")),
            ("task", json!("summarize")),
        ] {
            let mut input = json!({"audio": "UklGRg=="});
            input[field] = value.clone();
            let error = options_of(&input, true).expect_err(field);
            assert_eq!(error.kind, kiln_core::ErrorKind::BadInput, "{field}");
            assert!(
                error.message.contains(field),
                "{field}={value}: {}",
                error.message
            );
        }
    }
}
