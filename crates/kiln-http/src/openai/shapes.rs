//! What a text generation answers with on the native route: Workers AI's `{response, usage}`,
//! or, for the OpenAI-style catalog models (spec §1.2, §3.1.3), `chat.completion` for messages,
//! `text_completion` for a prompt and (gpt-oss) a Responses object for `input`; streamed as
//! their chunks, followed by Workers AI's usage trailer and `[DONE]` (spec §1.4).

use axum::response::sse::Event;
use kiln_catalog::CatalogEntry;
use kiln_core::{FinishReason, KilnError, KilnResult, ToolCall, Usage};
use serde_json::{json, Value};

use super::response::{self, Choice, ResponseMeta, StreamKind};
use super::responses::{input as responses_input, output as responses_output};
use crate::platform::meter::with_neurons;
use crate::text_generation::stream::{self, data, done, Framing, StreamEnd};
use crate::text_generation::{native_calls, usage_json};

/// Which shape a request is answered in, known before its input is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Native,
    Chat,
    Completion,
    Responses,
}

impl Style {
    /// On `/ai/run`: by the catalog entry's schema family and the input's branch.
    pub fn of(entry: &CatalogEntry, input: &Value) -> Style {
        if entry.schema.takes_responses_input() && input.get("input").is_some() {
            Style::Responses
        } else if !entry.schema.answers_openai_objects() {
            Style::Native
        } else if input.get("messages").is_some() {
            Style::Chat
        } else {
            Style::Completion
        }
    }
}

/// A [`Style`] with what its objects share (ids, the model, the Responses request's echo).
pub(crate) enum Shape {
    Native,
    Chat(ResponseMeta),
    Completion(ResponseMeta),
    Responses(Box<responses_output::Template>),
}

/// A finished, non-streamed answer.
pub(crate) struct Finished {
    /// The text, without the tool calls found in it.
    pub text: String,
    /// JSON mode's parsed answer.
    pub json: Option<Value>,
    pub calls: Vec<ToolCall>,
    pub finish: FinishReason,
    pub usage: Usage,
    /// What the request was billed.
    pub neurons: f64,
}

impl Shape {
    /// The native input the request runs as (a Responses request becomes one), and its shape.
    /// `model` is the id the answer names; `local_model` serves it.
    pub fn prepare(
        style: Style,
        input: Value,
        model: &str,
        local_model: &str,
    ) -> KilnResult<(Value, Shape)> {
        let meta = |prefix: &str| ResponseMeta::new(prefix, model, local_model);
        Ok(match style {
            Style::Native => (input, Shape::Native),
            Style::Chat => (input, Shape::Chat(meta("chatcmpl"))),
            Style::Completion => (input, Shape::Completion(meta("cmpl"))),
            Style::Responses => {
                let (native, template) = responses_input::to_native(&input, model)?;
                (native, Shape::Responses(Box::new(template)))
            }
        })
    }

    pub fn render(&self, finished: &Finished) -> Value {
        let usage = with_neurons(usage_json(finished.usage), finished.neurons);
        let choice = || Choice {
            text: finished.text.clone(),
            finish_reason: finished.finish,
            calls: finished.calls.clone(),
        };
        let mut body = match self {
            Shape::Native => {
                let text = Value::String(finished.text.clone());
                return json!({
                    "response": finished.json.clone().unwrap_or(text),
                    "tool_calls": native_calls(&finished.calls),
                    "usage": usage,
                });
            }
            Shape::Responses(template) => return template.object(finished),
            Shape::Chat(meta) => response::chat_completion(meta, &[choice()], finished.usage),
            Shape::Completion(meta) => response::text_completion(meta, &[choice()], finished.usage),
        };
        body["usage"] = usage;
        body
    }

    /// The stream's framing; `enveloped` (the native route) ends Responses events with `[DONE]`.
    pub fn framing(self, enveloped: bool) -> Box<dyn Framing> {
        match self {
            Shape::Native => Box::new(stream::Native),
            Shape::Chat(meta) => Box::new(Chunks {
                meta,
                kind: StreamKind::Chat,
            }),
            Shape::Completion(meta) => Box::new(Chunks {
                meta,
                kind: StreamKind::Completion,
            }),
            Shape::Responses(template) => {
                Box::new(responses_output::Events::new(*template, enveloped))
            }
        }
    }
}

/// `chat.completion.chunk` / `text_completion` chunks as Workers AI streams them for its
/// OpenAI-style models: the chunks, one with the finish reason, a `choices: []` usage chunk,
/// then the native usage trailer and `[DONE]`.
struct Chunks {
    meta: ResponseMeta,
    kind: StreamKind,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Event {
        data(&response::chunk(
            &self.meta, self.kind, delta, finish, false,
        ))
    }
}

impl Framing for Chunks {
    fn start(&mut self) -> Vec<Event> {
        match self.kind {
            StreamKind::Chat => vec![self.chunk(json!({"role": "assistant", "content": ""}), None)],
            StreamKind::Completion => Vec::new(),
        }
    }

    fn text(&mut self, piece: &str) -> Vec<Event> {
        vec![self.chunk(json!({"content": piece}), None)]
    }

    fn finish(&mut self, end: StreamEnd) -> Vec<Event> {
        let mut events = Vec::new();
        let mut finish = response::finish_reason(end.finish);
        if !end.calls.is_empty() {
            let calls = response::tool_calls(&end.calls, true);
            events.push(self.chunk(json!({"tool_calls": calls}), None));
            finish = "tool_calls";
        }
        events.push(self.chunk(json!({}), Some(finish)));
        let mut usage = response::usage_chunk(&self.meta, self.kind, end.usage);
        usage["usage"] = with_neurons(usage["usage"].take(), end.neurons);
        events.push(data(&usage));
        events.push(stream::native_trailer(&end));
        events.push(done());
        events
    }

    fn error(&mut self, error: &KilnError) -> Vec<Event> {
        stream::native_error(error)
    }
}
