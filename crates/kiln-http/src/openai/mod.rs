//! The OpenAI-compatible surface: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
//! `/v1/embeddings`, `/v1/rerank` and `/v1/models`, also under Workers AI's `…/accounts/{account_id}/ai/v1`.
//! The official SDKs use these unchanged; errors take OpenAI's shape, not the Workers AI
//! envelope. `shapes` also gives the native route the OpenAI objects that Workers AI's
//! OpenAI-style models answer with.

pub(crate) mod api_doc;
mod audio;
mod embeddings;
pub(crate) mod error;
mod models;
mod request;
pub(crate) mod rerank;
pub(crate) mod response;
mod responses;
pub(crate) mod shapes;
mod stream;
mod text;

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::routing::post;
use kiln_core::Task;
use kiln_scheduler::ServedModel;
use serde_json::Value;

pub use error::OpenAiError;

use crate::openapi::ApiRouter;
use crate::platform::{Caller, Meter};
use crate::{body, SharedState};

/// The routes, to be nested under `/v1` and `…/ai/v1`.
pub fn routes() -> ApiRouter<SharedState> {
    ApiRouter::new()
        .post(
            "/chat/completions",
            text::chat_completions,
            api_doc::chat_completions(),
        )
        .post("/completions", text::completions, api_doc::completions())
        .post("/responses", responses::responses, api_doc::responses())
        .post("/embeddings", embeddings::embeddings, api_doc::embeddings())
        .post("/rerank", rerank::rerank, api_doc::rerank())
        .route(
            "/audio/transcriptions",
            &[Method::POST],
            post(audio::transcriptions).layer(axum::extract::DefaultBodyLimit::max(
                crate::media::MAX_AUDIO_BYTES,
            )),
            api_doc::transcriptions(),
        )
        .post("/audio/speech", audio::speech, api_doc::speech())
        .get("/models", models::list_models, api_doc::list_models())
        .get(
            "/models/{*model}",
            models::retrieve_model,
            api_doc::retrieve_model(),
        )
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
}

/// Authenticates, then reads and parses the JSON body within the configured size limit.
async fn read_request(
    state: &SharedState,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Value, OpenAiError> {
    Ok(body::read_json(headers, request_body, state.config.max_body_bytes).await?)
}

/// The per-minute limit and the daily allocation for `caller`'s request for `model`.
fn admit(
    state: &SharedState,
    caller: &Caller,
    model: &str,
    task: Task,
) -> Result<Meter, OpenAiError> {
    let priced = crate::run::priced_entry(state, model, task);
    Ok(state.platform.admit(caller, task, model, priced)?)
}

/// The local model serving `model`, exactly as the native route finds it: catalog task, then
/// the registry.
fn route(state: &SharedState, model: &str) -> Result<(String, Task), OpenAiError> {
    let task = state.catalog.get(model).map(|entry| entry.task);
    state
        .registry
        .resolve(model, task)
        .ok_or_else(|| OpenAiError::model_not_found(model))
}

/// [`route`] for a model of `task` (the one `path` serves), then its worker, loading the model
/// if it is not resident.
async fn resolve(
    state: &SharedState,
    model: &str,
    task: Task,
    path: &str,
) -> Result<ServedModel, OpenAiError> {
    let (name, served_task) = route(state, model)?;
    let name = name.as_str();
    if served_task != task {
        return Err(wrong_task(model, name, served_task, path));
    }
    state
        .registry
        .acquire(name)
        .await
        .map_err(|e| OpenAiError::from(e).served_by(name))
}

/// A model of the wrong kind for the route (an embedding model asked to chat, say).
fn wrong_task(model: &str, local: &str, task: Task, route: &str) -> OpenAiError {
    OpenAiError::invalid(
        "model",
        format!(
            "The model `{model}` is a {} model (served by {local}); it cannot be used with {route}",
            task.name(),
        ),
    )
    .served_by(local)
}
