//! Text generation: Workers AI input → [`GenerationRequest`], events → `{response, usage}` or SSE,
//! or the OpenAI objects the OpenAI-style catalog models answer with (`openai::shapes`).

pub(crate) mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_catalog::CatalogEntry;
use kiln_core::{
    ChatMessage, ErrorKind, FinishReason, GenerationEvent, GenerationRequest, KilnError,
    KilnResult, PromptInput, SamplingParams, ToolCall, ToolSyntax, Usage,
};
use kiln_scheduler::{Admission, GenerationStream, GenerationWorker, WorkerEvent};
use serde_json::{json, Value};

use crate::envelope::success;
use crate::json_mode::JsonMode;
use crate::offload::off_runtime;
use crate::openai::shapes::{Finished, Shape, Style};
use crate::platform::Meter;
use crate::request_metrics::with_timing_headers;
use crate::tools;
use crate::SharedState;

const DEFAULT_MAX_TOKENS: u32 = 256;
const DEFAULT_TEMPERATURE: f32 = 0.6;

/// The model a native request runs on.
pub struct Target<'a> {
    pub worker: &'a GenerationWorker,
    /// The local model's name (for errors).
    pub local_model: &'a str,
    /// Its GGUF, which LoRA adapters are converted against.
    pub model_file: Option<&'a Path>,
    /// The account in the path: whose fine-tunes `lora` names.
    pub account: &'a str,
    /// The catalog entry whose schema the input passed.
    pub entry: &'static CatalogEntry,
    /// Whether the caller named that catalog entry (rather than a local model): then the
    /// entry's properties (`function_calling`) decide what the request may use.
    pub catalog_id: bool,
    /// Books the request's neurons once its usage is known.
    pub meter: &'a Meter,
}

/// The native route: the answer's shape follows the catalog entry and the input's branch.
pub async fn run(
    state: &SharedState,
    target: &Target<'_>,
    input: Value,
    admission: Admission,
    session: Option<String>,
) -> KilnResult<Response> {
    let answering = Answering {
        style: Style::of(target.entry, &input),
        model: target.entry.name.clone(),
        enveloped: true,
        defaults: Defaults::default(),
    };
    run_shaped(state, target, input, answering, admission, session).await
}

/// How a request is answered, decided by its route.
pub(crate) struct Answering {
    pub style: Style,
    /// The model id the answer names (OpenAI shapes).
    pub model: String,
    /// The native route wraps JSON in the envelope and ends streams with `[DONE]`;
    /// `/v1/responses` answers bare, as OpenAI does.
    pub enveloped: bool,
    /// Defaults for what the request leaves out.
    pub defaults: Defaults,
}

/// `max_tokens` and `temperature` when the request does not set them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    pub max_tokens: u32,
    pub temperature: f32,
}

impl Default for Defaults {
    /// Workers AI's documented defaults.
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            temperature: DEFAULT_TEMPERATURE,
        }
    }
}

pub(crate) async fn run_shaped(
    state: &SharedState,
    target: &Target<'_>,
    input: Value,
    answering: Answering,
    admission: Admission,
    session: Option<String>,
) -> KilnResult<Response> {
    // Compiling a client's JSON Schema (JSON mode) and tool grammars grows with what the client
    // sent: off the async threads, with the input that went through validation.
    let preparing = Preparing {
        limits: state.config.limits.clone(),
        catalog_id: target.catalog_id,
        entry: target.entry,
        tool_syntax: target.worker.tool_syntax(),
        local_model: target.local_model.to_owned(),
        style: answering.style,
        model: answering.model,
        defaults: answering.defaults,
    };
    let prepared = off_runtime("request preparation", move || preparing.run(input)).await?;
    let Prepared {
        mut request,
        answer: (json_mode, tool_syntax),
        lora,
        streaming,
        shape,
    } = prepared;
    if let Some(lora) = lora {
        request.lora = Some(lora_adapter(state, target, lora).await?);
    }
    let deadline = state.config.request_timeout;
    let mut events = target.worker.submit_with_options(
        request,
        admission,
        sequence_options(session, target.meter),
    )?;
    if streaming {
        let first = first_event(&mut events, deadline).await?;
        let timings = events.timings();
        let checks = stream::Checks {
            json_mode,
            tool_syntax,
            meter: target.meter.clone(),
        };
        let framing = shape.framing(answering.enveloped);
        let response = Sse::new(stream::sse_events(first, events, checks, framing)).into_response();
        Ok(with_timing_headers(response, timings))
    } else {
        let (text, usage, finish) = tokio::time::timeout(deadline, collect(&mut events))
            .await
            .map_err(|_| timeout())??;
        // In JSON mode the native `response` is the parsed value, as Workers AI returns it.
        let json = json_mode.map(|mode| mode.check(&text)).transpose()?;
        let (text, calls) = match tool_syntax {
            Some(syntax) => {
                let parsed = syntax.parse(&text, &tools::call_id_seed());
                (parsed.content, parsed.calls)
            }
            None => (text, Vec::new()),
        };
        let finished = Finished {
            text,
            json,
            calls,
            finish,
            usage,
            neurons: target.meter.charge_tokens(&usage),
        };
        let body = shape.render(&finished);
        let response = match answering.enveloped {
            true => success(body).into_response(),
            false => Json(body).into_response(),
        };
        Ok(with_timing_headers(response, events.timings()))
    }
}

/// What [`Preparing::run`] needs of the target, owned for the blocking pool.
struct Preparing {
    /// `[limits.schema]` bounds JSON mode's schema and the tools' parameters.
    limits: Arc<kiln_core::InputLimits>,
    catalog_id: bool,
    entry: &'static CatalogEntry,
    tool_syntax: Option<ToolSyntax>,
    local_model: String,
    style: Style,
    model: String,
    defaults: Defaults,
}

/// The engine request and how its answer is read.
struct Prepared {
    request: GenerationRequest,
    answer: (Option<Arc<JsonMode>>, Option<ToolSyntax>),
    /// The fine-tune `lora` names.
    lora: Option<String>,
    streaming: bool,
    shape: Shape,
}

impl Preparing {
    fn run(self, input: Value) -> KilnResult<Prepared> {
        // A Responses request runs as the native input it stands for, checked like one.
        let (input, shape) = Shape::prepare(self.style, input, &self.model, &self.local_model)?;
        if self.style == Style::Responses {
            kiln_catalog::validate_input(self.entry, &input)?;
        }
        let (mut request, json_mode) = parse_request(&input, &self.limits.schema, self.defaults)?;
        let lora = match input.get("lora").filter(|v| !v.is_null()) {
            None => None,
            Some(lora) => {
                if self.catalog_id && !self.entry.has_property("lora") {
                    return Err(KilnError::new(
                        ErrorKind::LoraUnsupported,
                        format!(
                            "The model {} does not support LoRa inference",
                            self.entry.name
                        ),
                    ));
                }
                let name = lora.as_str().ok_or_else(|| {
                    KilnError::bad_input("'/lora' must be a fine-tune id or name")
                })?;
                Some(name.to_owned())
            }
        };
        let tools = tools::parse_tools(input.get("tools"), &self.limits.schema)?;
        if !tools.is_empty() && self.catalog_id && !self.entry.has_property("function_calling") {
            return Err(KilnError::bad_input(format!(
                "The model {} does not support function calling ('tools')",
                self.entry.name
            )));
        }
        let choice = tools::parse_tool_choice(input.get("tool_choice"))?;
        let tool_syntax = tools::prepare(
            &mut request,
            tools,
            choice,
            self.tool_syntax,
            &self.local_model,
        )?;
        let streaming = input
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Prepared {
            request,
            answer: (json_mode, tool_syntax),
            lora,
            streaming,
            shape,
        })
    }
}

/// The GGUF adapter of the account's fine-tune `lora`, converted for the serving model. Reading
/// the fine-tune's files and converting it run on the blocking pool.
async fn lora_adapter(
    state: &SharedState,
    target: &Target<'_>,
    lora: String,
) -> KilnResult<PathBuf> {
    let model_file = target
        .model_file
        .filter(|file| file.extension().is_some_and(|e| e == "gguf"))
        .map(Path::to_path_buf);
    let (state, account) = (state.clone(), target.account.to_owned());
    let local_model = target.local_model.to_owned();
    off_runtime("adapter conversion", move || {
        let ready = state.finetunes.ready(&account, &lora)?;
        // The adapter was trained for its base model; the request must run on the same weights.
        let base_task = state.catalog.get(&ready.finetune.model).map(|e| e.task);
        let base_local = state
            .registry
            .resolve(&ready.finetune.model, base_task)
            .map(|(name, _)| name);
        if base_local.as_deref() != Some(local_model.as_str()) {
            return Err(KilnError::bad_input(format!(
                "fine-tune {:?} is for {} (served by {}), not this model (served by {})",
                ready.finetune.name,
                ready.finetune.model,
                base_local.as_deref().unwrap_or("no local model"),
                local_model
            )));
        }
        let model_file = model_file.ok_or_else(|| {
            KilnError::new(
                ErrorKind::LoraUnsupported,
                format!("the local model {local_model} cannot take LoRA adapters"),
            )
        })?;
        kiln_finetune::gguf_adapter(&ready, &model_file)
    })
    .await
}

pub(crate) fn native_calls(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|call| json!({"name": call.name, "arguments": call.arguments}))
        .collect()
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

/// Waits for a stream's first event, so that a failure before generation starts is answered
/// with its real status rather than inside an already-started stream.
pub(crate) async fn first_event(
    events: &mut GenerationStream,
    deadline: Duration,
) -> KilnResult<WorkerEvent> {
    let first = tokio::time::timeout(deadline, events.recv())
        .await
        .map_err(|_| timeout())?
        .ok_or_else(worker_gone)?;
    match first {
        WorkerEvent::Error(error) => Err(error),
        event => Ok(event),
    }
}

pub(crate) fn timeout() -> KilnError {
    KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message())
}

pub(crate) fn worker_gone() -> KilnError {
    KilnError::internal("the model's worker ended the request without an answer")
}

async fn collect(events: &mut GenerationStream) -> KilnResult<(String, Usage, FinishReason)> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            WorkerEvent::Generation(GenerationEvent::Text(piece)) => text.push_str(&piece),
            WorkerEvent::Generation(GenerationEvent::Done {
                usage,
                finish_reason,
            }) => return Ok((text, usage, finish_reason)),
            WorkerEvent::Error(error) => return Err(error),
        }
    }
    Err(worker_gone())
}

/// Builds the engine request from input the schema has already accepted; remaining semantic
/// checks (features not served yet, limits that depend on the model) happen here.
pub(crate) fn parse_request(
    input: &Value,
    limits: &kiln_core::limits::SchemaLimits,
    defaults: Defaults,
) -> KilnResult<(GenerationRequest, Option<Arc<JsonMode>>)> {
    if input.get("functions").is_some_and(|v| !v.is_null()) {
        return Err(KilnError::bad_input(
            "'/functions' (embedded function calling, which runs JavaScript) is not supported; \
             use 'tools' and run the calls yourself",
        ));
    }
    let json_mode = JsonMode::from_native(input, limits)?;
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
        None => defaults.max_tokens,
    };
    let number = |key: &str| input.get(key).and_then(Value::as_f64).map(|v| v as f32);
    let sampling = SamplingParams {
        temperature: number("temperature").unwrap_or(defaults.temperature),
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
        tools: Vec::new(),
        lora: None,
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
            let tool_calls = tools::parse_message_calls(message.get("tool_calls"))
                .map_err(|detail| KilnError::bad_input(format!("'/messages/{i}': {detail}")))?;
            Ok(ChatMessage {
                role: role.to_owned(),
                content,
                tool_calls,
                tool_call_id: message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
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

/// The session a request pins, and its account: the prefix cache is per account.
pub(crate) fn sequence_options(
    session: Option<String>,
    meter: &crate::platform::Meter,
) -> kiln_core::engine::SequenceOptions {
    kiln_core::engine::SequenceOptions {
        session,
        tenant: Some(meter.account().to_owned()),
    }
}
