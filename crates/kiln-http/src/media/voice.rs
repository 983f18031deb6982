//! Text-to-speech (spec §3.8): `@cf/myshell-ai/melotts` `{prompt, lang}` → `{audio: base64
//! MP3}`; `@cf/deepgram/aura-*` `{text, speaker, encoding, container, sample_rate}` → binary
//! audio. Also OpenAI's `POST /v1/audio/speech`. Speakers and languages pick an installed voice
//! (`speakers`); encodings other than MP3 are made here from the voice's 16-bit PCM
//! (`encode`).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kiln_core::media::{AudioFormat, MediaOutput};
use kiln_core::{KilnError, KilnResult, MediaRequest};
use kiln_scheduler::{Admission, MediaWorker, Worker};
use serde_json::{json, Value};

use super::encode::{self, WavFormat};
use super::{speakers, MediaInput, MediaTarget};
use crate::envelope::success;
use crate::platform::Meter;
use crate::SharedState;

pub async fn run(
    state: &SharedState,
    target: &MediaTarget<'_>,
    input: MediaInput,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let MediaInput::Json(value) = input else {
        return Err(KilnError::bad_input("text-to-speech takes a JSON body"));
    };
    let model = target.entry.name.as_str();
    if model.starts_with("@cf/deepgram/aura") {
        let text = required_text(&value, "text")?;
        let speaker = value.get("speaker").and_then(Value::as_str);
        let language = speakers::aura_language(model, speaker)?;
        let who = format!("speaker {:?}", speaker.unwrap_or("(default)"));
        let output = AuraOutput::of(&value)?;
        let characters = text.chars().count() as f64;
        let voice = Voice::pick(state, target, language, &who).await?;
        let (bytes, content_type, _) = output.speak(voice.worker(target), text, admission).await?;
        meter.charge_units("characters", characters);
        return Ok(binary(bytes, content_type));
    }
    // MeloTTS (and local TTS models by name): base64 MP3 in the envelope.
    let text = required_text(&value, "prompt")?;
    let lang = value.get("lang").and_then(Value::as_str);
    let language = speakers::melo_language(lang)?;
    let who = format!("lang {:?}", lang.unwrap_or("en"));
    let voice = Voice::pick(state, target, language, &who).await?;
    let (bytes, _, seconds) = speak(
        voice.worker(target),
        text,
        AudioFormat::Mp3,
        None,
        admission,
    )
    .await?;
    meter.charge_units("audio minute", f64::from(seconds) / 60.0);
    let audio = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(success(json!({"audio": audio})).into_response())
}

/// The voice that speaks: the served model, or another installed voice of the language.
enum Voice {
    Served,
    Other(kiln_scheduler::ServedModel),
}

impl Voice {
    async fn pick(
        state: &SharedState,
        target: &MediaTarget<'_>,
        language: &str,
        who: &str,
    ) -> KilnResult<Self> {
        let name = speakers::voice_for(&state.registry, target.served, language, who)?;
        if name == target.served {
            return Ok(Voice::Served);
        }
        let served = state.registry.acquire(&name).await?;
        match served.worker {
            Worker::Media(_) => Ok(Voice::Other(served)),
            _ => Err(KilnError::internal(format!("{name} is not a voice"))),
        }
    }

    fn worker<'a>(&'a self, target: &'a MediaTarget<'_>) -> &'a MediaWorker {
        match self {
            Voice::Other(kiln_scheduler::ServedModel {
                worker: Worker::Media(worker),
                ..
            }) => worker,
            _ => target.worker,
        }
    }
}

fn required_text(value: &Value, field: &str) -> KilnResult<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|text| !text.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| KilnError::bad_input(format!("'{field}' must be non-empty text")))
}

/// What Aura's `encoding`, `container` and `sample_rate` ask for (Deepgram's defaults: MP3;
/// linear16, mulaw and alaw in a WAV container at 24, 8 and 8 kHz; FLAC at 48 kHz).
#[derive(Debug, Clone, Copy, PartialEq)]
struct AuraOutput {
    encoding: Encoding,
    wav: bool,
    sample_rate: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Mp3,
    Linear16,
    Mulaw,
    Alaw,
    Flac,
}

const ENCODINGS: &str = "mp3, linear16, mulaw, alaw or flac";

impl AuraOutput {
    fn of(value: &Value) -> KilnResult<Self> {
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        let encoding = match text("encoding").unwrap_or("mp3") {
            "mp3" => Encoding::Mp3,
            "linear16" => Encoding::Linear16,
            "mulaw" => Encoding::Mulaw,
            "alaw" => Encoding::Alaw,
            "flac" => Encoding::Flac,
            other @ ("opus" | "aac") => {
                return Err(KilnError::bad_input(format!(
                    "encoding {other:?} is not available: Kiln has no {other} encoder; use \
                     {ENCODINGS}"
                )))
            }
            other => {
                return Err(KilnError::bad_input(format!(
                    "encoding {other:?} is unknown: use {ENCODINGS}"
                )))
            }
        };
        let pcm = matches!(
            encoding,
            Encoding::Linear16 | Encoding::Mulaw | Encoding::Alaw
        );
        let wav = match (text("container"), pcm) {
            (None | Some("wav"), true) => true,
            (None | Some("none"), _) => false,
            (Some(container), _) => {
                let allowed = if pcm { "none or wav" } else { "none" };
                return Err(KilnError::bad_input(format!(
                    "container {container:?} does not hold {} audio: use {allowed}",
                    text("encoding").unwrap_or("mp3")
                )));
            }
        };
        let sample_rate = match value.get("sample_rate") {
            None => None,
            Some(rate) => Some(
                rate.as_f64()
                    .filter(|r| r.fract() == 0.0 && (8_000.0..=48_000.0).contains(r))
                    .map(|r| r as u32)
                    .ok_or_else(|| {
                        KilnError::bad_input(format!(
                            "sample_rate must be a whole number of Hz from 8000 to 48000, not \
                             {rate}"
                        ))
                    })?,
            ),
        };
        let sample_rate = sample_rate.or(match encoding {
            Encoding::Mp3 => None,
            Encoding::Linear16 => Some(24_000),
            Encoding::Mulaw | Encoding::Alaw => Some(8_000),
            Encoding::Flac => Some(48_000),
        });
        Ok(Self {
            encoding,
            wav,
            sample_rate,
        })
    }

    async fn speak(
        self,
        worker: &MediaWorker,
        text: String,
        admission: Admission,
    ) -> KilnResult<(Vec<u8>, &'static str, f32)> {
        let format = match self.encoding {
            Encoding::Mp3 => AudioFormat::Mp3,
            _ => AudioFormat::Linear16,
        };
        let (bytes, content_type, seconds) =
            speak(worker, text, format, self.sample_rate, admission).await?;
        let rate = self.sample_rate.unwrap_or(22_050);
        let g711 = |code: fn(i16) -> u8| -> Vec<u8> {
            encode::pcm16(&bytes).into_iter().map(code).collect()
        };
        Ok(match (self.encoding, self.wav) {
            (Encoding::Mp3, _) => (bytes, content_type, seconds),
            (Encoding::Linear16, false) => (bytes, "audio/l16", seconds),
            (Encoding::Linear16, true) => {
                let wav = encode::wav(&bytes, WavFormat::Pcm16, rate, 1);
                (wav, "audio/wav", seconds)
            }
            (Encoding::Mulaw, false) => (g711(encode::mulaw), "audio/basic", seconds),
            (Encoding::Alaw, false) => (g711(encode::alaw), "audio/x-alaw-basic", seconds),
            (Encoding::Mulaw, true) => {
                let wav = encode::wav(&g711(encode::mulaw), WavFormat::Mulaw, rate, 1);
                (wav, "audio/wav", seconds)
            }
            (Encoding::Alaw, true) => {
                let wav = encode::wav(&g711(encode::alaw), WavFormat::Alaw, rate, 1);
                (wav, "audio/wav", seconds)
            }
            (Encoding::Flac, _) => (
                encode::flac(&encode::pcm16(&bytes), rate),
                "audio/flac",
                seconds,
            ),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aura_options_follow_deepgram_defaults() {
        let of = |value: Value| AuraOutput::of(&value);
        let mp3 = of(json!({})).unwrap();
        assert_eq!(
            (mp3.encoding, mp3.wav, mp3.sample_rate),
            (Encoding::Mp3, false, None)
        );
        let pcm = of(json!({"encoding": "linear16"})).unwrap();
        assert_eq!((pcm.wav, pcm.sample_rate), (true, Some(24_000)));
        let raw = of(json!({"encoding": "mulaw", "container": "none"})).unwrap();
        assert_eq!((raw.wav, raw.sample_rate), (false, Some(8_000)));
        let flac = of(json!({"encoding": "flac", "sample_rate": 16000})).unwrap();
        assert_eq!(flac.sample_rate, Some(16_000));
        for bad in [
            json!({"encoding": "opus"}),
            json!({"encoding": "aac"}),
            json!({"encoding": "wma"}),
            json!({"encoding": "mp3", "container": "wav"}),
            json!({"encoding": "linear16", "container": "ogg"}),
            json!({"sample_rate": 44100.5}),
            json!({"sample_rate": 96000}),
        ] {
            let error = of(bad.clone()).expect_err("refused");
            assert_eq!(error.kind, kiln_core::ErrorKind::BadInput, "{bad}");
        }
    }
}
