//! OpenAI's response objects: `chat.completion`, `chat.completion.chunk`, `text_completion`.

use std::time::{SystemTime, UNIX_EPOCH};

use kiln_core::{FinishReason, ToolCall, Usage};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

/// What every object of one response shares.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id as the caller asked for it.
    pub model: String,
    /// Identifies the backend configuration: Kiln's version and the local model.
    pub system_fingerprint: String,
}

impl ResponseMeta {
    pub fn new(id_prefix: &str, requested_model: &str, served_model: &str) -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Self {
            id: format!(
                "{id_prefix}-{}",
                Alphanumeric.sample_string(&mut rand::rng(), 24)
            ),
            created,
            model: requested_model.to_owned(),
            system_fingerprint: format!("fp_kiln_{}_{served_model}", env!("CARGO_PKG_VERSION")),
        }
    }

    fn object(&self, object: &str) -> Value {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
        })
    }
}

/// One finished generation.
#[derive(Debug, Clone)]
pub struct Choice {
    pub text: String,
    pub finish_reason: FinishReason,
    /// Tool calls found in the answer (then `text` is what surrounded them).
    pub calls: Vec<ToolCall>,
}

pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// OpenAI's `tool_calls`: ids, `type: "function"`, arguments as a JSON string; `index` for
/// stream deltas.
pub fn tool_calls(calls: &[ToolCall], with_index: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let mut object = json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments.to_string()},
            });
            if with_index {
                object["index"] = json!(index);
            }
            object
        })
        .collect()
}

/// Written field by field so the wire shape stays OpenAI's whatever `Usage` grows.
pub fn usage(usage: Usage) -> Value {
    crate::text_generation::usage_json(usage)
}

fn with(mut object: Value, key: &str, value: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
    object
}

pub fn chat_completion(meta: &ResponseMeta, choices: &[Choice], total: Usage) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            if choice.calls.is_empty() {
                return json!({
                    "index": index,
                    "message": {"role": "assistant", "content": choice.text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": finish_reason(choice.finish_reason),
                });
            }
            let content = (!choice.text.is_empty()).then_some(&choice.text);
            json!({
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": null,
                    "tool_calls": tool_calls(&choice.calls, false)},
                "logprobs": null,
                "finish_reason": "tool_calls",
            })
        })
        .collect();
    let object = with(meta.object("chat.completion"), "choices", json!(choices));
    with(object, "usage", usage(total))
}

pub fn text_completion(meta: &ResponseMeta, choices: &[Choice], total: Usage) -> Value {
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            json!({
                "text": choice.text,
                "index": index,
                "logprobs": null,
                "finish_reason": finish_reason(choice.finish_reason),
            })
        })
        .collect();
    let object = with(meta.object("text_completion"), "choices", json!(choices));
    with(object, "usage", usage(total))
}

/// Which object a stream is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Chat,
    Completion,
}

impl StreamKind {
    pub fn id_prefix(self) -> &'static str {
        match self {
            StreamKind::Chat => "chatcmpl",
            StreamKind::Completion => "cmpl",
        }
    }
}

/// One streamed chunk holding a single choice. For chat, `delta` is the delta object; for
/// completions, its `content` becomes `text`. `usage: null` is present on every chunk when the
/// caller asked for usage, as OpenAI does.
pub fn chunk(
    meta: &ResponseMeta,
    kind: StreamKind,
    delta: Value,
    finish: Option<&str>,
    include_usage: bool,
) -> Value {
    let (object, choice) = match kind {
        StreamKind::Chat => (
            "chat.completion.chunk",
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}),
        ),
        StreamKind::Completion => {
            let text = delta.get("content").cloned().unwrap_or_else(|| json!(""));
            (
                "text_completion",
                json!({"text": text, "index": 0, "logprobs": null, "finish_reason": finish}),
            )
        }
    };
    let chunk = with(meta.object(object), "choices", json!([choice]));
    if include_usage {
        with(chunk, "usage", Value::Null)
    } else {
        chunk
    }
}

/// The trailer sent when `stream_options.include_usage` is set: no choices, the usage.
pub fn usage_chunk(meta: &ResponseMeta, kind: StreamKind, total: Usage) -> Value {
    let object = match kind {
        StreamKind::Chat => "chat.completion.chunk",
        StreamKind::Completion => "text_completion",
    };
    let chunk = with(meta.object(object), "choices", json!([]));
    with(chunk, "usage", usage(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_completion_has_openai_fields() {
        let meta = ResponseMeta::new("chatcmpl", "gpt-x", "local");
        assert!(meta.id.starts_with("chatcmpl-") && meta.id.len() > 20);
        let choice = Choice {
            text: "Paris".into(),
            finish_reason: FinishReason::Stop,
            calls: Vec::new(),
        };
        let body = chat_completion(&meta, &[choice], Usage::new(10, 2));
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-x");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert!(body["choices"][0]["message"]["refusal"].is_null());
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 12);
    }

    #[test]
    fn tool_calls_have_ids_string_arguments_and_their_finish_reason() {
        let meta = ResponseMeta::new("chatcmpl", "m", "local");
        let choice = Choice {
            text: String::new(),
            finish_reason: FinishReason::Stop,
            calls: vec![ToolCall {
                id: "call_a0".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Paris"}),
            }],
        };
        let body = chat_completion(&meta, &[choice], Usage::new(10, 2));
        let message = &body["choices"][0]["message"];
        assert!(message["content"].is_null(), "{message}");
        assert_eq!(
            message["tool_calls"],
            json!([{"id": "call_a0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn completion_chunks_carry_text() {
        let meta = ResponseMeta::new("cmpl", "m", "local");
        let chunk = chunk(
            &meta,
            StreamKind::Completion,
            json!({"content": "hi"}),
            Some(finish_reason(FinishReason::Length)),
            true,
        );
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["choices"][0]["text"], "hi");
        assert_eq!(chunk["choices"][0]["finish_reason"], "length");
        assert!(chunk.get("usage").is_some_and(Value::is_null));
    }
}
