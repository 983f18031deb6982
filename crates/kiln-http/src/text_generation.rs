//! Text generation: Workers AI input → [`GenerationRequest`], events → `{response, usage}` or SSE.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use kiln_catalog::CatalogEntry;
use kiln_core::{
    ChatMessage, ErrorKind, GenerationEvent, GenerationRequest, KilnError, KilnResult, PromptInput,
    SamplingParams, Usage,
};
use kiln_scheduler::{Admission, GenerationStream, GenerationWorker, WorkerEvent};
use serde_json::{json, Value};

use crate::envelope::success;
use crate::json_mode::JsonMode;
use crate::request_metrics::with_timing_headers;
use crate::SharedState;

const DEFAULT_MAX_TOKENS: u32 = 256;
const DEFAULT_TEMPERATURE: f32 = 0.6;

pub async fn run(
    state: &SharedState,
    worker: &GenerationWorker,
    input: &Value,
    admission: Admission,
    session: Option<String>,
    entry: &CatalogEntry,
) -> KilnResult<Response> {
    let (request, json_mode) = parse_request(input, entry)?;
    let streaming = input
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let deadline = state.config.request_timeout;
    let events = worker.submit_with_session(request, admission, session)?;
    if streaming {
        // Wait for the first event so that errors before generation starts get a real status.
        let mut events = events;
        let first = tokio::time::timeout(deadline, events.recv())
            .await
            .map_err(|_| timeout())?
            .ok_or_else(worker_gone)?;
        if let WorkerEvent::Error(error) = first {
            return Err(error);
        }
        let timings = events.timings();
        let response = Sse::new(sse_events(first, events, json_mode)).into_response();
        Ok(with_timing_headers(response, timings))
    } else {
        let mut events = events;
        let (text, usage) = tokio::time::timeout(deadline, collect(&mut events))
            .await
            .map_err(|_| timeout())??;
        // In JSON mode `response` is the parsed value, as Workers AI returns it.
        let response = match &json_mode {
            Some(json_mode) => json_mode.check(&text)?,
            None => Value::String(text),
        };
        let result = json!({"response": response, "tool_calls": [], "usage": usage_json(usage)});
        Ok(with_timing_headers(
            success(result).into_response(),
            events.timings(),
        ))
    }
}

/// The usage object of both APIs: OpenAI's fields, with prefix-cache reuse reported the way
/// Workers AI's newer models and OpenAI both report it.
pub(crate) fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

pub(crate) fn timeout() -> KilnError {
    KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message())
}

pub(crate) fn worker_gone() -> KilnError {
    KilnError::internal("the model's worker ended the request without an answer")
}

async fn collect(events: &mut GenerationStream) -> KilnResult<(String, Usage)> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            WorkerEvent::Generation(GenerationEvent::Text(piece)) => text.push_str(&piece),
            WorkerEvent::Generation(GenerationEvent::Done { usage, .. }) => {
                return Ok((text, usage))
            }
            WorkerEvent::Error(error) => return Err(error),
        }
    }
    Err(worker_gone())
}

/// Workers AI framing: `data: {"response":…}` per piece, a usage trailer, then `data: [DONE]`.
/// In JSON mode the pieces are JSON text, and a finished text that does not validate ends the
/// stream with an error event instead of the usage trailer. Dropping the stream (client gone)
/// drops the receiver, which stops the engine.
fn sse_events(
    first: WorkerEvent,
    events: GenerationStream,
    json_mode: Option<Arc<JsonMode>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct SseState {
        events: GenerationStream,
        pending: Option<WorkerEvent>,
        json_mode: Option<Arc<JsonMode>>,
        /// The text so far, kept only in JSON mode.
        text: String,
        ended: bool,
        done_sent: bool,
    }
    let state = SseState {
        events,
        pending: Some(first),
        json_mode,
        text: String::new(),
        ended: false,
        done_sent: false,
    };
    let error_event = |error: &KilnError| json!({"response": "", "errors": [{"code": error.code(), "message": error.message}]});
    stream::unfold(state, move |mut state| async move {
        if state.done_sent {
            return None;
        }
        if state.ended {
            state.done_sent = true;
            return Some((Ok(Event::default().data("[DONE]")), state));
        }
        let event = match state.pending.take() {
            Some(event) => event,
            None => state.events.recv().await?,
        };
        let data = match event {
            WorkerEvent::Generation(GenerationEvent::Text(piece)) => {
                if state.json_mode.is_some() {
                    state.text.push_str(&piece);
                }
                json!({"response": piece})
            }
            WorkerEvent::Generation(GenerationEvent::Done { usage, .. }) => {
                state.ended = true;
                let unmet = state.json_mode.as_ref().map(|mode| mode.check(&state.text));
                match unmet {
                    Some(Err(error)) => error_event(&error),
                    _ => json!({"response": "", "usage": usage_json(usage)}),
                }
            }
            WorkerEvent::Error(error) => {
                state.ended = true;
                error_event(&error)
            }
        };
        Some((Ok(Event::default().data(data.to_string())), state))
    })
}

/// Builds the engine request from input the schema has already accepted; remaining semantic
/// checks (features not served yet, limits that depend on the model) happen here.
pub fn parse_request(
    input: &Value,
    entry: &CatalogEntry,
) -> KilnResult<(GenerationRequest, Option<Arc<JsonMode>>)> {
    if input.get("lora").is_some_and(|v| !v.is_null()) {
        return Err(KilnError::new(
            ErrorKind::LoraUnsupported,
            format!("The model {} does not support LoRa inference", entry.name),
        ));
    }
    for unsupported in ["tools", "functions"] {
        if input.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(KilnError::bad_input(format!(
                "'/{unsupported}' is not supported by Kiln yet (tool calling is being built); \
                 remove it from the request"
            )));
        }
    }
    let json_mode = JsonMode::from_native(input)?;
    let prompt_input = if let Some(messages) = input.get("messages") {
        PromptInput::Messages(parse_messages(messages)?)
    } else {
        let text = input
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let raw = input
            .get("raw")
            .is_some_and(|v| v.as_bool() == Some(true) || v == "true");
        PromptInput::Prompt { text, raw }
    };
    let max_tokens = match input.get("max_tokens").and_then(Value::as_u64) {
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        None => DEFAULT_MAX_TOKENS,
    };
    let number = |key: &str| input.get(key).and_then(Value::as_f64).map(|v| v as f32);
    let sampling = SamplingParams {
        temperature: number("temperature").unwrap_or(DEFAULT_TEMPERATURE),
        top_p: number("top_p"),
        top_k: input.get("top_k").and_then(Value::as_u64).map(|k| k as u32),
        seed: input.get("seed").and_then(Value::as_u64),
        repetition_penalty: number("repetition_penalty"),
        frequency_penalty: number("frequency_penalty"),
        presence_penalty: number("presence_penalty"),
    };
    let request = GenerationRequest {
        input: prompt_input,
        max_tokens,
        sampling,
        stop: parse_stop(input)?,
        constraint: json_mode.as_ref().map(|mode| mode.constraint()),
    };
    Ok((request, json_mode))
}

fn parse_messages(messages: &Value) -> KilnResult<Vec<ChatMessage>> {
    let items = messages
        .as_array()
        .ok_or_else(|| KilnError::bad_input("Type mismatch of '/messages', expected 'array'"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let role = message.get("role").and_then(Value::as_str).ok_or_else(|| {
                KilnError::bad_input(format!("required properties at '/messages/{i}' are 'role'"))
            })?;
            let content = flatten_content(message.get("content")).map_err(|detail| {
                KilnError::bad_input(format!("'/messages/{i}/content' {detail}"))
            })?;
            Ok(ChatMessage {
                role: role.to_owned(),
                content,
            })
        })
        .collect()
}

/// Content is a string, null (assistant turns with tool calls), or an array of text parts.
pub(crate) fn flatten_content(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text") | None, Some(Value::String(piece))) => text.push_str(piece),
                    (Some(kind), _) => {
                        return Err(format!(
                            "has a '{kind}' part; only text parts are supported"
                        ))
                    }
                    _ => return Err("has a part without text".to_owned()),
                }
            }
            Ok(text)
        }
        Some(_) => Err("must be a string or an array of text parts".to_owned()),
    }
}

fn parse_stop(input: &Value) -> KilnResult<Vec<String>> {
    match input.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| KilnError::bad_input("'/stop' must hold strings"))
            })
            .collect(),
        Some(_) => Err(KilnError::bad_input(
            "'/stop' must be a string or an array of strings",
        )),
    }
}
