//! `POST /accounts/{account_id}/ai/run/{model}`: resolve the model, read the input, dispatch by task.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_catalog::CatalogEntry;
use kiln_core::{ErrorKind, KilnError, Task};
use kiln_scheduler::{Admission, Worker};
use serde_json::Value;

use crate::envelope::ApiError;
use crate::{body, embeddings, text_generation, SharedState};

/// Catalog entries whose schemas stand in for local models run by their own name.
const REPRESENTATIVE_IDS: [(Task, &str); 5] = [
    (Task::TextGeneration, "@cf/meta/llama-3.1-8b-instruct"),
    (Task::TextEmbeddings, "@cf/baai/bge-small-en-v1.5"),
    (Task::SpeechRecognition, "@cf/openai/whisper"),
    (Task::TextToSpeech, "@cf/myshell-ai/melotts"),
    (Task::ImageClassification, "@cf/microsoft/resnet-50"),
];

pub async fn run_model(
    State(state): State<SharedState>,
    Path((account_id, model)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    match run(&state, &account_id, &model, &headers, request_body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(
    state: &SharedState,
    account: &str,
    model: &str,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    crate::auth::check(crate::auth::bearer_token(headers).as_deref())?;
    let (name, entry) = resolve(state, model)?;
    let served = state
        .registry
        .acquire(name)
        .await
        .map_err(|e| ApiError::from(e).served_by(name))?;
    // Media models take binary bodies as well as JSON: they read their own.
    if let Worker::Media(worker) = &served.worker {
        return crate::media::run(
            state,
            worker,
            entry,
            headers,
            request_body,
            Admission::default(),
        )
        .await
        .map(|r| crate::envelope::with_model_header(r, &served.name))
        .map_err(|e| ApiError::from(e).served_by(&served.name));
    }
    let input = body::read_json(headers, request_body, state.config.max_body_bytes)
        .await
        .map_err(|e| ApiError::from(e).served_by(&served.name))?;
    kiln_catalog::validate_input(entry, &input)
        .map_err(|e| ApiError::from(e).served_by(&served.name))?;
    let admission = admission_options(&input);
    let response = match &served.worker {
        Worker::Generation(worker) => {
            let target = text_generation::Target {
                worker,
                local_model: &served.name,
                model_file: served.model_file.as_deref(),
                account,
                entry,
                catalog_id: entry.name == model.trim_start_matches('/'),
            };
            let session = body::session_affinity(headers);
            text_generation::run(state, &target, &input, admission, session).await
        }
        Worker::Embedding(worker) => embeddings::run(worker, &input, admission).await,
        Worker::Media(_) => Err(KilnError::internal("media requests are served above")),
    };
    response
        .map(|r| crate::envelope::with_model_header(r, &served.name))
        .map_err(|e| ApiError::from(e).served_by(&served.name))
}

/// Finds the local model for `model` and the catalog entry whose schema validates its input.
fn resolve<'a>(
    state: &'a SharedState,
    model: &str,
) -> Result<(&'a str, &'static CatalogEntry), ApiError> {
    let model = model.trim_start_matches('/');
    if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
        return Err(KilnError::new(ErrorKind::InvalidModelId, "The model name is invalid").into());
    }
    let entry = state.catalog.get(model);
    let (name, task) = state
        .registry
        .resolve(model, entry.map(|e| e.task))
        .ok_or_else(|| {
            let message = match entry {
                Some(_) => format!(
                "No such model {model} or task: it is in the Workers AI catalog but no installed \
                 local model serves it; install one and map it with an alias in kiln.toml"
            ),
                None => format!("No such model {model} or task"),
            };
            ApiError::from(KilnError::new(ErrorKind::NoSuchModel, message))
        })?;
    let entry = match entry.filter(|e| e.task == task) {
        Some(entry) => entry,
        None => representative_entry(state, task)
            .ok_or_else(|| ApiError::from(KilnError::no_such_model(model)))?,
    };
    Ok((name, entry))
}

fn representative_entry(state: &SharedState, task: Task) -> Option<&'static CatalogEntry> {
    let (_, id) = REPRESENTATIVE_IDS.iter().find(|(t, _)| *t == task)?;
    state.catalog.get(id)
}

/// `{"options": {"rejectIfBusy": true}}` (native REST extension).
fn admission_options(input: &Value) -> Admission {
    let reject_if_busy = input
        .get("options")
        .and_then(|o| o.get("rejectIfBusy"))
        .is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true"));
    Admission {
        reject_if_busy,
        deadline: None,
    }
}
