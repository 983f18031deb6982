//! Streaming as OpenAI streams: SSE `data:` chunks, a finishing chunk, an optional usage chunk
//! (`stream_options.include_usage`), then `data: [DONE]`. A failure after the first chunk is sent
//! as `data: {"error":…}`, which the SDKs raise as an `APIError`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use kiln_core::{GenerationEvent, KilnResult};
use kiln_scheduler::{Admission, GenerationStream, GenerationWorker, WorkerEvent};
use serde_json::json;

use super::error::OpenAiError;
use super::request::TextRequest;
use super::response::{self, ResponseMeta, StreamKind};
use crate::json_mode::JsonMode;
use crate::platform::meter::with_neurons;
use crate::platform::Meter;
use crate::request_metrics::with_timing_headers;
use crate::text_generation::{first_event, worker_gone};
use crate::tools::{self, CallDetector};
use crate::SharedState;

pub async fn respond(
    state: &SharedState,
    worker: &GenerationWorker,
    request: TextRequest,
    meta: ResponseMeta,
    kind: StreamKind,
    meter: Meter,
) -> KilnResult<Response> {
    let options = crate::text_generation::sequence_options(request.session, &meter);
    let mut events =
        worker.submit_with_options(request.generation, Admission::default(), options)?;
    let first = first_event(&mut events, state.config.request_timeout).await?;
    let timings = events.timings();
    let chunks = Chunks {
        meta,
        kind,
        include_usage: request.include_usage,
        events: Some(events),
        first: Some(first),
        pending: VecDeque::new(),
        json_mode: request.json_mode,
        text: String::new(),
        detector: request.tool_syntax.map(CallDetector::new),
        meter,
    };
    let response = Sse::new(chunks.into_stream()).into_response();
    Ok(with_timing_headers(response, timings))
}

/// Turns worker events into SSE payloads. Dropping it (client gone) drops the receiver, which
/// stops the engine before its next token.
struct Chunks {
    /// Books the request when its usage arrives.
    meter: Meter,
    meta: ResponseMeta,
    kind: StreamKind,
    include_usage: bool,
    /// `None` once the generation has ended.
    events: Option<GenerationStream>,
    first: Option<WorkerEvent>,
    /// Payloads ready to send.
    pending: VecDeque<String>,
    /// JSON mode: the whole answer is checked against the schema when it ends.
    json_mode: Option<Arc<JsonMode>>,
    /// The answer so far (kept only in JSON mode).
    text: String,
    /// With tools: holds back text that opens a tool call.
    detector: Option<CallDetector>,
}

impl Chunks {
    fn into_stream(mut self) -> impl Stream<Item = Result<Event, Infallible>> {
        if self.kind == StreamKind::Chat {
            self.push_chunk(json!({"role": "assistant", "content": ""}), None);
        }
        stream::unfold(self, |mut chunks| async move {
            let data = chunks.next_payload().await?;
            Some((Ok(Event::default().data(data)), chunks))
        })
    }

    async fn next_payload(&mut self) -> Option<String> {
        loop {
            if let Some(data) = self.pending.pop_front() {
                return Some(data);
            }
            let event = match self.first.take() {
                Some(event) => event,
                None => match self.events.as_mut()?.recv().await {
                    Some(event) => event,
                    None => WorkerEvent::Error(worker_gone()),
                },
            };
            self.translate(event);
        }
    }

    fn translate(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Generation(GenerationEvent::Text(piece)) => {
                if self.json_mode.is_some() {
                    self.text.push_str(&piece);
                }
                let piece = match &mut self.detector {
                    Some(detector) => detector.push(&piece),
                    None => piece,
                };
                if !piece.is_empty() {
                    self.push_chunk(json!({"content": piece}), None);
                }
            }
            WorkerEvent::Generation(GenerationEvent::Done {
                usage,
                finish_reason,
            }) => {
                self.events = None;
                if let Some(Err(error)) = self.json_mode.as_ref().map(|m| m.check(&self.text)) {
                    let body = OpenAiError::from(error).body();
                    self.pending.push_back(body.to_string());
                    return;
                }
                let mut finish = response::finish_reason(finish_reason);
                if let Some(detector) = self.detector.take() {
                    let parsed = detector.finish(&tools::call_id_seed());
                    if !parsed.content.is_empty() {
                        self.push_chunk(json!({"content": parsed.content}), None);
                    }
                    if !parsed.calls.is_empty() {
                        let calls = response::tool_calls(&parsed.calls, true);
                        self.push_chunk(json!({"tool_calls": calls}), None);
                        finish = "tool_calls";
                    }
                }
                self.push_chunk(json!({}), Some(finish));
                let neurons = self.meter.charge_tokens(&usage);
                if self.include_usage {
                    let mut trailer = response::usage_chunk(&self.meta, self.kind, usage);
                    trailer["usage"] = with_neurons(trailer["usage"].take(), neurons);
                    self.pending.push_back(trailer.to_string());
                }
                self.pending.push_back("[DONE]".to_owned());
            }
            WorkerEvent::Error(error) => {
                self.events = None;
                let body = OpenAiError::from(error).body();
                self.pending.push_back(body.to_string());
            }
        }
    }

    fn push_chunk(&mut self, delta: serde_json::Value, finish: Option<&str>) {
        let chunk = response::chunk(&self.meta, self.kind, delta, finish, self.include_usage);
        self.pending.push_back(chunk.to_string());
    }
}
