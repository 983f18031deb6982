//! `POST /v1/chat/completions` and `POST /v1/completions`.

use crate::request_metrics::with_timing_headers;
use crate::tools;
use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use kiln_catalog::Catalog;
use kiln_core::{GenerationEvent, KilnResult, Task, ToolSyntax, Usage};
use kiln_scheduler::{Admission, GenerationStream, GenerationWorker, Worker, WorkerEvent};
use serde_json::Value;

use super::error::OpenAiError;
use super::request::{self, TextRequest};
use super::response::{self, Choice, ResponseMeta, StreamKind};
use super::{admit, read_request, resolve, stream, wrong_task};
use crate::envelope::with_model_header;
use crate::offload::off_runtime;
use crate::platform::meter::with_neurons;
use crate::platform::{Caller, Meter};
use crate::text_generation::{timeout, worker_gone};
use crate::SharedState;

pub async fn chat_completions(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let request = Incoming {
        caller: &caller,
        uri,
        headers: &headers,
    };
    respond(serve(&state, request, request_body, StreamKind::Chat).await)
}

pub async fn completions(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let request = Incoming {
        caller: &caller,
        uri,
        headers: &headers,
    };
    respond(serve(&state, request, request_body, StreamKind::Completion).await)
}

/// Who asked, and the request's line and headers (to forward it in a cluster).
struct Incoming<'a> {
    caller: &'a Caller,
    uri: Uri,
    headers: &'a HeaderMap,
}

fn respond(result: Result<Response, OpenAiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    state: &SharedState,
    incoming: Incoming<'_>,
    request_body: Body,
    kind: StreamKind,
) -> Result<Response, OpenAiError> {
    let Incoming {
        caller,
        uri,
        headers,
    } = incoming;
    let body = read_request(state, headers, request_body).await?;
    // The model is resolved first so that later errors can name the local model.
    let requested = request::Fields::of(&body)?.model()?;
    if let Some(answer) =
        crate::forward::json_elsewhere(state, &requested, uri, headers, &body).await?
    {
        return Ok(answer);
    }
    let route = match kind {
        StreamKind::Chat => "/v1/chat/completions",
        StreamKind::Completion => "/v1/completions",
    };
    let served = resolve(state, &requested, Task::TextGeneration, route).await?;
    let Worker::Generation(worker) = &served.worker else {
        return Err(wrong_task(
            &requested,
            &served.name,
            served.worker.task(),
            route,
        ));
    };
    let name = served.name.as_str();
    // Compiling a client's JSON Schema (`response_format`) and tool grammars grows with what
    // the client sent: off the async threads.
    let preparing = Preparing {
        limits: state.config.limits.clone(),
        catalog: state.catalog,
        requested: requested.clone(),
        context_window: worker.context_window(),
        tool_syntax: worker.tool_syntax(),
        local_model: name.to_owned(),
    };
    let prepared = off_runtime(
        "request preparation",
        move || Ok(preparing.run(&body, kind)),
    );
    let mut request = prepared
        .await
        .map_err(OpenAiError::from)
        .and_then(|prepared| prepared)
        .map_err(|e| e.served_by(name))?;
    request.session = crate::body::session_affinity(headers);
    let meter =
        admit(state, caller, &requested, Task::TextGeneration).map_err(|e| e.served_by(name))?;
    let meta = ResponseMeta::new(kind.id_prefix(), &request.model, name);
    let response = if request.stream {
        stream::respond(state, worker, request, meta, kind, meter).await
    } else {
        complete(state, worker, request, &meta, kind, &meter).await
    };
    response
        .map(|r| with_model_header(r, name))
        .map_err(|e| OpenAiError::from(e).served_by(name))
}

/// What preparing a request needs of the state and the worker, owned for the blocking pool.
struct Preparing {
    /// `[limits.schema]` bounds `response_format` and the tools' parameters.
    limits: std::sync::Arc<kiln_core::InputLimits>,
    catalog: &'static Catalog,
    requested: String,
    context_window: u32,
    tool_syntax: Option<ToolSyntax>,
    local_model: String,
}

impl Preparing {
    /// The engine request, with the request's tools shown to the model.
    fn run(self, body: &Value, kind: StreamKind) -> Result<TextRequest, OpenAiError> {
        let mut request = match kind {
            StreamKind::Chat => request::parse_chat(body, self.context_window, &self.limits.schema),
            StreamKind::Completion => request::parse_completion(body, &self.limits.schema),
        }?;
        self.apply_tools(&mut request)?;
        Ok(request)
    }

    /// Shows the request's tools to the model, once it is known which model serves it.
    fn apply_tools(&self, request: &mut TextRequest) -> Result<(), OpenAiError> {
        let (tools, choice) = std::mem::take(&mut request.tools);
        if tools.is_empty() {
            return Ok(());
        }
        // A catalog id keeps its catalog capabilities; a local name has its template's.
        if let Some(entry) = self.catalog.get(&self.requested) {
            if !entry.has_property("function_calling") {
                return Err(OpenAiError::invalid(
                    "tools",
                    format!(
                        "The model {} does not support function calling ('tools')",
                        self.requested
                    ),
                ));
            }
        }
        request.tool_syntax = tools::prepare(
            &mut request.generation,
            tools,
            choice,
            self.tool_syntax,
            &self.local_model,
        )
        .map_err(|error| OpenAiError::invalid("tools", error.message))?;
        Ok(())
    }
}

/// Runs every choice to the end and answers with one object.
async fn complete(
    state: &SharedState,
    worker: &GenerationWorker,
    request: TextRequest,
    meta: &ResponseMeta,
    kind: StreamKind,
    meter: &Meter,
) -> KilnResult<Response> {
    // Submitting every choice at once lets them queue together; each is still its own run.
    let mut streams = Vec::with_capacity(request.choices as usize);
    for index in 0..request.choices {
        let mut generation = request.generation.clone();
        generation.sampling.seed = generation
            .sampling
            .seed
            .map(|seed| seed.wrapping_add(u64::from(index)));
        let options = crate::text_generation::sequence_options(request.session.clone(), meter);
        streams.push(worker.submit_with_options(generation, Admission::default(), options)?);
    }
    // Read every choice at once: with continuous batching they run together, and an unread
    // stream would stall the engine on a full channel.
    let collect_all = async {
        let answers = futures::future::try_join_all(streams.iter_mut().map(collect)).await?;
        let mut choices = Vec::with_capacity(answers.len());
        let mut total = Usage::default();
        for (choice, usage) in answers {
            // Each choice reads the prompt, but it is billed once, as OpenAI bills it; its
            // prefix-cache reuse is the best any choice had.
            total = Usage::with_cached(
                usage.prompt_tokens,
                total.completion_tokens + usage.completion_tokens,
                total.cached_tokens.max(usage.cached_tokens),
            );
            choices.push(choice);
        }
        Ok::<_, kiln_core::KilnError>((choices, total))
    };
    let (choices, total) = tokio::time::timeout(state.config.request_timeout, collect_all)
        .await
        .map_err(|_| timeout())??;
    if let Some(json_mode) = &request.json_mode {
        for choice in &choices {
            json_mode.check(&choice.text)?;
        }
    }
    let mut choices = choices;
    if let Some(syntax) = request.tool_syntax {
        for choice in &mut choices {
            let parsed = syntax.parse(&choice.text, &tools::call_id_seed());
            choice.text = parsed.content;
            choice.calls = parsed.calls;
        }
    }
    // The first choice's phases: every choice queues and runs alongside it.
    let timings = streams
        .first()
        .map(GenerationStream::timings)
        .unwrap_or_default();
    let mut body = match kind {
        StreamKind::Chat => response::chat_completion(meta, &choices, total),
        StreamKind::Completion => response::text_completion(meta, &choices, total),
    };
    let neurons = meter.charge_tokens(&total);
    body["usage"] = with_neurons(body["usage"].take(), neurons);
    Ok(with_timing_headers(Json(body).into_response(), timings))
}

async fn collect(events: &mut GenerationStream) -> KilnResult<(Choice, Usage)> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            WorkerEvent::Generation(GenerationEvent::Text(piece)) => text.push_str(&piece),
            WorkerEvent::Generation(GenerationEvent::Done {
                usage,
                finish_reason,
            }) => {
                return Ok((
                    Choice {
                        text,
                        finish_reason,
                        calls: Vec::new(),
                    },
                    usage,
                ))
            }
            WorkerEvent::Error(error) => return Err(error),
        }
    }
    Err(worker_gone())
}
