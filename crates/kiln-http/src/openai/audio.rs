//! `POST /v1/audio/transcriptions` (multipart) and `POST /v1/audio/speech` (JSON): OpenAI's
//! audio API on Kiln's speech models. OpenAI's model names (`whisper-1`, `tts-1`) have no
//! catalog entry; they reach the task's default model unless an alias maps them.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, State};
use axum::http::{HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_core::{KilnError, Task};
use kiln_scheduler::{Admission, MediaWorker, Worker};

use super::{admit, read_request, OpenAiError};
use crate::platform::Caller;
use crate::{media, SharedState};

pub async fn transcriptions(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    request: Request<Body>,
) -> Response {
    let answered = async {
        let (audio, fields) = read_form(request).await?;
        let model = fields.get("model").map_or("whisper-1", String::as_str);
        let (name, worker) = media_worker(&state, model, Task::SpeechRecognition).await?;
        let meter = admit(&state, &caller, model, Task::SpeechRecognition)?;
        media::openai_transcription(&worker, audio, &fields, Admission::default(), &meter)
            .await
            .map_err(|e| OpenAiError::from(e).served_by(&name))
    };
    answered.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn speech(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let answered = async {
        let value = read_request(&state, &headers, request_body).await?;
        let model = value
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("tts-1")
            .to_owned();
        let (name, worker) = media_worker(&state, &model, Task::TextToSpeech).await?;
        let meter = admit(&state, &caller, &model, Task::TextToSpeech)?;
        media::openai_speech(&worker, &value, Admission::default(), &meter)
            .await
            .map_err(|e| OpenAiError::from(e).served_by(&name))
    };
    answered.await.unwrap_or_else(IntoResponse::into_response)
}

/// The worker of the model serving `model` for `task`: an alias or local name first, then the
/// task's default.
async fn media_worker(
    state: &SharedState,
    model: &str,
    task: Task,
) -> Result<(String, MediaWorker), OpenAiError> {
    let (name, served_task) = state
        .registry
        .resolve(model, Some(task))
        .ok_or_else(|| OpenAiError::model_not_found(model))?;
    if served_task != task {
        return Err(OpenAiError::invalid(
            "model",
            format!(
                "The model `{model}` is a {} model, not {}",
                served_task.name(),
                task.name()
            ),
        ));
    }
    let name = name.to_owned();
    let served = state
        .registry
        .acquire(&name)
        .await
        .map_err(|e| OpenAiError::from(e).served_by(&name))?;
    match served.worker {
        Worker::Media(worker) => Ok((name, worker)),
        _ => Err(OpenAiError::from(KilnError::internal("not a media model"))),
    }
}

/// The multipart form: the `file` bytes and every text field.
async fn read_form(
    request: Request<Body>,
) -> Result<(Vec<u8>, HashMap<String, String>), OpenAiError> {
    let invalid = |message: String| OpenAiError::invalid("file", message);
    let mut form = Multipart::from_request(request, &()).await.map_err(|e| {
        invalid(format!(
            "expected a multipart/form-data body: {}",
            e.body_text()
        ))
    })?;
    let mut file = None;
    let mut fields = HashMap::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| invalid(e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            file = Some(
                field
                    .bytes()
                    .await
                    .map_err(|e| invalid(e.body_text()))?
                    .to_vec(),
            );
        } else {
            fields.insert(
                name,
                field.text().await.map_err(|e| invalid(e.body_text()))?,
            );
        }
    }
    let file = file.ok_or_else(|| invalid("the form has no 'file' field".into()))?;
    Ok((file, fields))
}
