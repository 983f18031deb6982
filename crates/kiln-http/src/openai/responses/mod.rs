//! `POST /v1/responses` (also `…/ai/v1/responses`): OpenAI's Responses API, for the catalog
//! models Workers AI serves it for (gpt-oss, spec §1.7) and for local models named directly.
//! The request runs as the native input it stands for (`input.rs`), through the same text
//! generation path as `/ai/run`; the answer is a Responses object (`output.rs`), or its events
//! when `stream` is true (Workers AI documents no streaming here; Kiln streams as OpenAI does).

pub(crate) mod input;
pub(crate) mod output;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_core::{KilnError, Task};
use kiln_scheduler::{Admission, Worker};

use super::error::OpenAiError;
use super::shapes::Style;
use super::{admit, read_request, request, resolve, wrong_task};
use crate::envelope::with_model_header;
use crate::platform::Caller;
use crate::text_generation::{self, Answering, Defaults, Target};
use crate::SharedState;

const ROUTE: &str = "/v1/responses";

/// OpenAI's default sampling temperature.
const DEFAULT_TEMPERATURE: f32 = 1.0;

pub async fn responses(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    serve(&state, &caller, &headers, request_body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    state: &SharedState,
    caller: &Caller,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, OpenAiError> {
    let body = read_request(state, headers, request_body).await?;
    let requested = request::Fields::of(&body)?.model()?;
    let entry = state.catalog.get(&requested);
    // Workers AI serves this API for gpt-oss only; its other models answer chat completions.
    if entry.is_some_and(|entry| !entry.schema.takes_responses_input()) {
        return Err(OpenAiError::invalid(
            "model",
            format!(
                "The model `{requested}` does not support the Responses API (on Workers AI only \
                 @cf/openai/gpt-oss-120b and @cf/openai/gpt-oss-20b do); use /v1/chat/completions"
            ),
        ));
    }
    let served = resolve(state, &requested, Task::TextGeneration, ROUTE).await?;
    let name = served.name.as_str();
    let Worker::Generation(worker) = &served.worker else {
        return Err(wrong_task(&requested, name, served.worker.task(), ROUTE));
    };
    let priced = crate::run::priced_entry(state, &requested, Task::TextGeneration)
        .ok_or_else(|| KilnError::internal("no catalog entry prices text generation"))?;
    let meter =
        admit(state, caller, &requested, Task::TextGeneration).map_err(|e| e.served_by(name))?;
    let target = Target {
        worker,
        local_model: name,
        model_file: served.model_file.as_deref(),
        account: &caller.account,
        entry: priced,
        catalog_id: entry.is_some(),
        meter: &meter,
    };
    let answering = Answering {
        style: Style::Responses,
        model: requested.clone(),
        enveloped: false,
        // As OpenAI: the answer may use what the context window leaves.
        defaults: Defaults {
            max_tokens: worker.context_window(),
            temperature: DEFAULT_TEMPERATURE,
        },
    };
    let session = crate::body::session_affinity(headers);
    text_generation::run_shaped(
        state,
        &target,
        body,
        answering,
        Admission::default(),
        session,
    )
    .await
    .map(|response| with_model_header(response, name))
    .map_err(|e| OpenAiError::from(e).served_by(name))
}
