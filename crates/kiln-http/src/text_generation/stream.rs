//! Streaming a native-route generation: the engine's events through JSON mode's check and the
//! tool-call detector, framed by a [`Framing`] as the answer's shape streams (Workers AI's
//! `{"response":…}` events, `chat.completion.chunk`s, or Responses API events).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::Event;
use futures::stream::{self, Stream};
use kiln_core::{FinishReason, GenerationEvent, KilnError, ToolCall, ToolSyntax, Usage};
use kiln_scheduler::{GenerationStream, WorkerEvent};
use serde_json::{json, Value};

use super::{native_calls, usage_json, worker_gone};
use crate::json_mode::JsonMode;
use crate::platform::meter::with_neurons;
use crate::platform::Meter;
use crate::tools::{self, CallDetector};

/// How a generation's end reaches a framing: the calls found in the answer, why it stopped,
/// and its usage with the neurons it was billed.
pub(crate) struct StreamEnd {
    pub calls: Vec<ToolCall>,
    pub finish: FinishReason,
    pub usage: Usage,
    pub neurons: f64,
}

/// One answer shape's SSE events. Text pieces arrive already cleared of tool-call syntax.
pub(crate) trait Framing: Send {
    /// Events before the first piece of text.
    fn start(&mut self) -> Vec<Event> {
        Vec::new()
    }
    fn text(&mut self, piece: &str) -> Vec<Event>;
    /// The last events: calls, finish reason, usage, and the terminator if the shape has one.
    fn finish(&mut self, end: StreamEnd) -> Vec<Event>;
    /// A failure after the stream started (the engine's, or JSON mode's unmet schema).
    fn error(&mut self, error: &KilnError) -> Vec<Event>;
}

/// `data: <json>`.
pub(crate) fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}

pub(crate) fn done() -> Event {
    Event::default().data("[DONE]")
}

/// The error event of Workers AI's streams, then `[DONE]`.
pub(crate) fn native_error(error: &KilnError) -> Vec<Event> {
    let body =
        json!({"response": "", "errors": [{"code": error.code(), "message": error.message}]});
    vec![data(&body), done()]
}

/// The usage trailer every Workers AI stream ends with (cumulative, with neurons).
pub(crate) fn native_trailer(end: &StreamEnd) -> Event {
    let usage = with_neurons(usage_json(end.usage), end.neurons);
    data(&json!({"response": "", "usage": usage}))
}

/// Workers AI framing: `data: {"response":…}` per piece, the calls as one
/// `{"response":"","tool_calls":[…]}` event, a usage trailer, then `data: [DONE]`.
pub(crate) struct Native;

impl Framing for Native {
    fn text(&mut self, piece: &str) -> Vec<Event> {
        vec![data(&json!({"response": piece}))]
    }

    fn finish(&mut self, end: StreamEnd) -> Vec<Event> {
        let mut events = Vec::new();
        if !end.calls.is_empty() {
            let calls = native_calls(&end.calls);
            events.push(data(&json!({"response": "", "tool_calls": calls})));
        }
        events.push(native_trailer(&end));
        events.push(done());
        events
    }

    fn error(&mut self, error: &KilnError) -> Vec<Event> {
        native_error(error)
    }
}

/// What the stream checks the answer with.
pub(crate) struct Checks {
    pub json_mode: Option<Arc<JsonMode>>,
    pub tool_syntax: Option<ToolSyntax>,
    /// Books the request when its usage arrives.
    pub meter: Meter,
}

/// The SSE events of one generation. In JSON mode a finished text that does not validate ends
/// the stream with an error event instead of the usage; with tools, text that opens a call is
/// held back and the calls come at the end. Dropping the stream (client gone) drops the
/// receiver, which stops the engine.
pub(crate) fn sse_events(
    first: WorkerEvent,
    events: GenerationStream,
    checks: Checks,
    framing: Box<dyn Framing>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct SseState {
        events: GenerationStream,
        pending: Option<WorkerEvent>,
        checks: Checks,
        framing: Box<dyn Framing>,
        detector: Option<CallDetector>,
        /// The text so far, kept only in JSON mode.
        text: String,
        /// Events ready to send; the stream ends once they are sent after the end.
        queue: VecDeque<Event>,
        ended: bool,
    }
    let mut framing = framing;
    let queue = VecDeque::from(framing.start());
    let state = SseState {
        events,
        pending: Some(first),
        detector: checks.tool_syntax.map(CallDetector::new),
        checks,
        framing,
        text: String::new(),
        queue,
        ended: false,
    };
    stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Some((Ok(event), state));
            }
            if state.ended {
                return None;
            }
            let event = match state.pending.take() {
                Some(event) => event,
                None => state
                    .events
                    .recv()
                    .await
                    .unwrap_or_else(|| WorkerEvent::Error(worker_gone())),
            };
            let out = match event {
                WorkerEvent::Generation(GenerationEvent::Text(piece)) => {
                    if state.checks.json_mode.is_some() {
                        state.text.push_str(&piece);
                    }
                    let piece = match &mut state.detector {
                        Some(detector) => detector.push(&piece),
                        None => piece,
                    };
                    if piece.is_empty() {
                        Vec::new()
                    } else {
                        state.framing.text(&piece)
                    }
                }
                WorkerEvent::Generation(GenerationEvent::Done {
                    usage,
                    finish_reason,
                }) => {
                    state.ended = true;
                    let mut out = Vec::new();
                    let mut calls = Vec::new();
                    if let Some(detector) = state.detector.take() {
                        let parsed = detector.finish(&tools::call_id_seed());
                        if !parsed.content.is_empty() {
                            out.extend(state.framing.text(&parsed.content));
                        }
                        calls = parsed.calls;
                    }
                    let unmet = state
                        .checks
                        .json_mode
                        .as_ref()
                        .map(|m| m.check(&state.text));
                    match unmet {
                        Some(Err(error)) => out.extend(state.framing.error(&error)),
                        _ => {
                            let neurons = state.checks.meter.charge_tokens(&usage);
                            out.extend(state.framing.finish(StreamEnd {
                                calls,
                                finish: finish_reason,
                                usage,
                                neurons,
                            }));
                        }
                    }
                    out
                }
                WorkerEvent::Error(error) => {
                    state.ended = true;
                    state.framing.error(&error)
                }
            };
            state.queue.extend(out);
        }
    })
}
