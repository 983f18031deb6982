//! `POST /accounts/{account_id}/ai/run/{model}`: resolve the model, read the input, dispatch by task.

use axum::body::Body;
use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_catalog::CatalogEntry;
use kiln_core::{ErrorKind, KilnError, Task};
use kiln_scheduler::{Admission, Worker};
use serde_json::Value;

use crate::envelope::ApiError;
use crate::forward;
use crate::offload::{off_runtime_if, INLINE_BYTES};
use crate::platform::{Caller, Meter};
use crate::{batch, body, classification, embeddings, text_generation, SharedState};

/// Catalog entries whose schemas stand in for local models run by their own name.
const REPRESENTATIVE_IDS: [(Task, &str); 7] = [
    (Task::TextGeneration, "@cf/meta/llama-3.1-8b-instruct"),
    (Task::TextEmbeddings, "@cf/baai/bge-small-en-v1.5"),
    (Task::SpeechRecognition, "@cf/openai/whisper"),
    (Task::TextToSpeech, "@cf/myshell-ai/melotts"),
    (Task::ImageClassification, "@cf/microsoft/resnet-50"),
    (Task::Translation, "@cf/meta/m2m100-1.2b"),
    (Task::Summarization, "@cf/facebook/bart-large-cnn"),
];

pub async fn run_model(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((_account_id, model)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    // The body streams through unread, so only `x-session-affinity` steers it.
    let peer = match forward::peer_serving(&state, model.trim_start_matches('/'), &headers, None) {
        Ok(peer) => peer,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if let Some(peer) = peer {
        let request = forward::rebuild(Method::POST, uri, headers, request_body);
        return match forward::send(&state, peer, request).await {
            Ok(response) => response,
            Err(error) => ApiError::from(error).into_response(),
        };
    }
    let _serving = forward::Serving::start();
    let call = Call {
        caller: &caller,
        // Catalog ids have no leading slash; a `{*model}` capture may.
        model: model.trim_start_matches('/'),
        queued: batch::requested(query.as_deref()),
    };
    match run(&state, call, query.as_deref(), &headers, request_body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Who runs which model, and whether as a queued batch.
#[derive(Clone, Copy)]
struct Call<'a> {
    caller: &'a Caller,
    model: &'a str,
    queued: bool,
}

async fn run(
    state: &SharedState,
    call: Call<'_>,
    query: Option<&str>,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    let Call { caller, model, .. } = call;
    let account = caller.account.as_str();
    let (name, entry) = resolve(state, model)?;
    let name = name.as_str();
    if call.queued {
        return batch::submit_or_poll(state, caller, model, headers, request_body).await;
    }
    let served = state
        .registry
        .acquire(name)
        .await
        .map_err(|e| ApiError::from(e).served_by(name))?;
    // Media models take binary bodies as well as JSON: they read their own.
    if let Worker::Media(worker) = &served.worker {
        let meter = admit(state, caller, model, entry).map_err(|e| e.served_by(&served.name))?;
        let target = crate::media::MediaTarget {
            worker,
            entry,
            served: &served.name,
            query,
        };
        return crate::media::run(
            state,
            &target,
            headers,
            request_body,
            Admission::default(),
            &meter,
        )
        .await
        .map(|r| crate::envelope::with_model_header(r, &served.name))
        .map_err(|e| ApiError::from(e).served_by(&served.name));
    }
    let bytes = body::read_limited(headers, request_body, state.config.max_body_bytes)
        .await
        .map_err(|e| ApiError::from(e).served_by(&served.name))?;
    // Parsing and schema validation grow with the input.
    let input = off_runtime_if(bytes.len() > INLINE_BYTES, "input validation", move || {
        let mut input = body::parse_json(&bytes)?;
        kiln_catalog::drop_null_fields(entry, &mut input);
        // A Worker polls a batch with `env.AI.run(model, {request_id})`, without the query.
        if batch::poll_id(&input).is_none() {
            kiln_catalog::validate_input(entry, &input)?;
        }
        Ok(input)
    })
    .await
    .map_err(|e| ApiError::from(e).served_by(&served.name))?;
    if let Some(request_id) = batch::poll_id(&input) {
        return batch::poll(state, caller, request_id).await;
    }
    let meter = admit(state, caller, model, entry).map_err(|e| e.served_by(&served.name))?;
    let admission = admission_options(&input);
    let response = match &served.worker {
        Worker::Generation(worker) => {
            let target = text_generation::Target {
                worker,
                local_model: &served.name,
                model_file: served.model_file.as_deref(),
                account,
                entry,
                catalog_id: entry.name == model,
                meter: &meter,
            };
            let session = body::session_affinity(headers);
            text_generation::run(state, &target, input, admission, session).await
        }
        Worker::Embedding(worker) => embeddings::run(worker, &input, admission, &meter).await,
        Worker::Classifier(worker) => {
            let limits = &state.config.limits.text_classification;
            let names = (model, served.name.as_str());
            classification::run(worker, entry, names, &input, limits, (admission, &meter)).await
        }
        Worker::Media(_) => Err(KilnError::internal("media requests are served above")),
    };
    response
        .map(|r| crate::envelope::with_model_header(r, &served.name))
        .map_err(|e| ApiError::from(e).served_by(&served.name))
}

/// The per-minute limit and the daily allocation, before any work starts.
fn admit(
    state: &SharedState,
    caller: &Caller,
    model: &str,
    entry: &'static CatalogEntry,
) -> Result<Meter, ApiError> {
    Ok(state
        .platform
        .admit(caller, entry.task, model, Some(entry))?)
}

/// Whether any engine of Kiln's runs models like `entry`'s (else no install can serve it).
/// Translation is m2m100's schema only (not IndicTrans2's).
fn has_engine(entry: &CatalogEntry) -> bool {
    if entry.task == Task::Translation {
        return entry.schema == kiln_catalog::SchemaKind::M2m100;
    }
    matches!(
        entry.task,
        Task::TextGeneration
            | Task::TextEmbeddings
            | Task::TextClassification
            | Task::SpeechRecognition
            | Task::TextToSpeech
            | Task::ImageClassification
            | Task::Translation
            | Task::Summarization
    )
}

/// Finds the local model for `model` and the catalog entry whose schema validates its input.
fn resolve(state: &SharedState, model: &str) -> Result<(String, &'static CatalogEntry), ApiError> {
    if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
        return Err(KilnError::new(ErrorKind::InvalidModelId, "The model name is invalid").into());
    }
    let entry = state.catalog.get(model);
    let (name, task) = state
        .registry
        .resolve(model, entry.map(|e| e.task))
        .ok_or_else(|| {
            let message = match (entry, state.registry.missing_alias_target(model)) {
                (_, Some(target)) => format!(
                    "No such model {model} or task: it is served by the local model {target}, \
                     which is not installed; run `kiln models pull {target}`"
                ),
                (Some(entry), None) if !has_engine(entry) => format!(
                    "No such model {model} or task: it is in the Workers AI catalog, but Kiln \
                     has no engine for {} models like it yet (README, \"Default models\", \
                     lists what runs)",
                    entry.task.name()
                ),
                (Some(entry), None) => format!(
                    "No such model {model} or task: it is in the Workers AI catalog but no \
                     installed local model serves it; {}",
                    classification::install_hint(entry)
                        .or_else(|| crate::media::seq2seq_install_hint(entry))
                        .unwrap_or("install one and map it with an alias in kiln.toml")
                ),
                (None, None) => format!("No such model {model} or task"),
            };
            ApiError::from(KilnError::new(ErrorKind::NoSuchModel, message))
        })?;
    // A local model named directly answers in its own kind's shapes where the task alone does
    // not decide them (classifier or reranker), else in its task representative's.
    let own_schema = || {
        let id = state.registry.schema_id(&name)?;
        state.catalog.get(&id).filter(|e| e.task == task)
    };
    let entry = match entry.filter(|e| e.task == task) {
        Some(entry) => entry,
        None => own_schema()
            .or_else(|| representative_entry(state, task))
            .ok_or_else(|| ApiError::from(KilnError::no_such_model(model)))?,
    };
    Ok((name, entry))
}

/// The catalog entry a request for `model` is priced at: its own, or its task's
/// representative's when `model` names a local model.
pub(crate) fn priced_entry(
    state: &SharedState,
    model: &str,
    task: Task,
) -> Option<&'static CatalogEntry> {
    state
        .catalog
        .get(model)
        .filter(|entry| entry.task == task)
        .or_else(|| representative_entry(state, task))
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
