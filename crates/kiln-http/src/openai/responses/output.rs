//! OpenAI's Responses object (`object: "response"`) and its stream of typed events
//! (`response.created` … `response.output_text.delta` … `response.completed`), as the official
//! SDKs read them.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::Event;
use kiln_core::{FinishReason, KilnError, ToolCall, Usage};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Map, Value};

use crate::openai::error::OpenAiError;
use crate::openai::shapes::Finished;
use crate::platform::meter::with_neurons;
use crate::text_generation::stream::{done, Framing, StreamEnd};

/// What every object of one response shares: its ids, and the request's settings it echoes.
pub(crate) struct Template {
    id: String,
    message_id: String,
    created_at: u64,
    echo: Map<String, Value>,
}

fn random_id(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    )
}

impl Template {
    pub fn new(echo: Map<String, Value>) -> Self {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Self {
            id: random_id("resp"),
            message_id: random_id("msg"),
            created_at,
            echo,
        }
    }

    /// The object with `status`, its `output` and (once known) `usage`.
    fn with(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        let text: String = output
            .iter()
            .filter(|item| item["type"] == "message")
            .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
            .filter_map(|part| part["text"].as_str().map(str::to_owned))
            .collect();
        let mut object = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": incomplete,
            "output": output,
            "output_text": text,
            "previous_response_id": null,
            "store": false,
            "truncation": "disabled",
            "usage": usage,
        });
        if let Some(map) = object.as_object_mut() {
            map.extend(self.echo.clone());
        }
        object
    }

    fn message(&self, text: &str, status: &str) -> Value {
        let content = match status {
            "in_progress" => json!([]),
            _ => json!([output_text(text)]),
        };
        json!({
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": content,
        })
    }

    /// The whole answer: a message (unless the answer is only calls), then the calls.
    pub fn object(&self, finished: &Finished) -> Value {
        let status = status(finished.finish);
        let mut output = Vec::new();
        if !finished.text.is_empty() || finished.calls.is_empty() {
            output.push(self.message(&finished.text, status));
        }
        output.extend(
            finished
                .calls
                .iter()
                .map(|call| function_call(call, "completed")),
        );
        self.with(status, output, usage(finished.usage, finished.neurons))
    }
}

fn status(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "completed",
        FinishReason::Length => "incomplete",
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn function_call(call: &ToolCall, status: &str) -> Value {
    let arguments = match status {
        "in_progress" => String::new(),
        _ => call.arguments.to_string(),
    };
    json!({
        "type": "function_call",
        "id": format!("fc_{}", call.id),
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    })
}

/// The Responses API's usage object, with Workers AI's `neurons`.
fn usage(usage: Usage, neurons: f64) -> Value {
    let object = json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    });
    with_neurons(object, neurons)
}

/// The stream: `event: <type>` / `data: {"type": <type>, "sequence_number": n, …}` pairs.
pub(crate) struct Events {
    template: Template,
    sequence: u64,
    /// The message item is opened by the first text.
    message_open: bool,
    text: String,
    /// The native route ends every stream with `data: [DONE]`.
    with_done: bool,
}

impl Events {
    pub fn new(template: Template, with_done: bool) -> Self {
        Self {
            template,
            sequence: 0,
            message_open: false,
            text: String::new(),
            with_done,
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Event {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Event::default().event(kind).data(body.to_string())
    }

    fn open_message(&mut self, events: &mut Vec<Event>) {
        if self.message_open {
            return;
        }
        self.message_open = true;
        let item = self.template.message("", "in_progress");
        events.push(self.event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        ));
        let id = self.template.message_id.clone();
        events.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "part": output_text("")}),
        ));
    }
}

impl Framing for Events {
    fn start(&mut self) -> Vec<Event> {
        let response = self.template.with("in_progress", Vec::new(), Value::Null);
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    fn text(&mut self, piece: &str) -> Vec<Event> {
        let mut events = Vec::new();
        self.open_message(&mut events);
        self.text.push_str(piece);
        let id = self.template.message_id.clone();
        events.push(self.event(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "delta": piece,
                   "logprobs": []}),
        ));
        events
    }

    fn finish(&mut self, end: StreamEnd) -> Vec<Event> {
        let mut events = Vec::new();
        let status = status(end.finish);
        let mut output = Vec::new();
        if self.message_open || end.calls.is_empty() {
            self.open_message(&mut events);
            let (id, text) = (self.template.message_id.clone(), self.text.clone());
            let at = json!({"item_id": id, "output_index": 0, "content_index": 0});
            let mut done_text = at.clone();
            done_text["text"] = json!(text);
            done_text["logprobs"] = json!([]);
            events.push(self.event("response.output_text.done", done_text));
            let mut part = at;
            part["part"] = output_text(&text);
            events.push(self.event("response.content_part.done", part));
            let item = self.template.message(&text, status);
            output.push(item.clone());
            events.push(self.event(
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            ));
        }
        for call in &end.calls {
            let index = output.len();
            let id = format!("fc_{}", call.id);
            let arguments = call.arguments.to_string();
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": function_call(call, "in_progress")}),
            ));
            events.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": arguments}),
            ));
            events.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": call.name,
                       "arguments": arguments}),
            ));
            let item = function_call(call, "completed");
            output.push(item.clone());
            events.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
        }
        let response = self
            .template
            .with(status, output, usage(end.usage, end.neurons));
        let kind = match end.finish {
            FinishReason::Stop => "response.completed",
            FinishReason::Length => "response.incomplete",
        };
        events.push(self.event(kind, json!({"response": response})));
        if self.with_done {
            events.push(done());
        }
        events
    }

    /// OpenAI's `error` event; the SDKs raise it.
    fn error(&mut self, error: &KilnError) -> Vec<Event> {
        let body = OpenAiError::from(error.clone()).body();
        let error = &body["error"];
        let event = json!({"code": error["code"].as_str().unwrap_or("server_error"),
                           "message": error["message"], "param": null});
        let mut events = vec![self.event("error", event)];
        if self.with_done {
            events.push(done());
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(text: &str, calls: Vec<ToolCall>, finish: FinishReason) -> Finished {
        Finished {
            text: text.to_owned(),
            json: None,
            calls,
            finish,
            usage: Usage::new(10, 3),
            neurons: 0.5,
        }
    }

    fn template() -> Template {
        let echo = json!({"model": "@cf/openai/gpt-oss-20b", "instructions": "Be brief."});
        Template::new(echo.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn a_finished_answer_is_a_completed_response() {
        let object = template().object(&finished("Paris.", Vec::new(), FinishReason::Stop));
        assert_eq!(object["object"], "response");
        assert!(object["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("resp_")));
        assert_eq!(object["status"], "completed");
        assert_eq!(object["model"], "@cf/openai/gpt-oss-20b");
        assert_eq!(object["instructions"], "Be brief.");
        assert_eq!(object["output_text"], "Paris.");
        let message = &object["output"][0];
        assert_eq!(message["type"], "message");
        assert_eq!(message["role"], "assistant");
        assert_eq!(message["content"][0]["type"], "output_text");
        assert_eq!(message["content"][0]["text"], "Paris.");
        assert_eq!(object["usage"]["input_tokens"], 10);
        assert_eq!(object["usage"]["output_tokens"], 3);
        assert_eq!(object["usage"]["total_tokens"], 13);
    }

    #[test]
    fn calls_are_function_call_items_and_length_is_incomplete() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: json!({"city": "Paris"}),
        };
        let object = template().object(&finished("", vec![call], FinishReason::Length));
        assert_eq!(object["status"], "incomplete");
        assert_eq!(object["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(object["output"].as_array().map(Vec::len), Some(1));
        let item = &object["output"][0];
        assert_eq!(item["type"], "function_call");
        assert_eq!(item["call_id"], "call_1");
        assert_eq!(item["arguments"], "{\"city\":\"Paris\"}");
    }
}
