//! OpenAPI descriptions of the OpenAI-compatible routes (`routes()` in `mod.rs`). Request
//! bodies are OpenAI's; the handlers read them field by field and name the field they refuse,
//! so they are described as objects with their main fields, not re-specified.

use serde_json::{json, Value};

use crate::openapi::{Operation, Surface, Tag};

/// Errors every OpenAI route may answer (OpenAI's shape); 404 is an unknown model.
const ERRORS: [u16; 8] = [400, 401, 403, 404, 408, 413, 429, 500];

fn openai(summary: &str) -> Operation {
    Operation::new(Tag::OpenAi, summary)
        .authenticated()
        .errors(Surface::OpenAi, &ERRORS)
}

/// A JSON body that is an object; `fields` names the ones that matter, all checked by the
/// handler.
fn object_body(description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": {"application/json": {"schema": {}}},
    })
}

fn object_with(object: &str) -> Value {
    json!({"type": "object", "required": ["object"], "properties": {"object": {"const": object}}})
}

/// A JSON answer, or server-sent events with `stream: true`.
fn json_or_stream(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": {
            "application/json": {"schema": schema},
            "text/event-stream": {"schema": crate::openapi::schema_ref("SseEvent")},
        }
    })
}

pub fn chat_completions() -> Operation {
    openai("Chat completion")
        .request_body_object(object_body(
            "OpenAI's chat completion request: `{model, messages, stream?, max_tokens?, \
             temperature?, tools?, response_format?, …}`.",
        ))
        .response_object(
            200,
            json_or_stream(
                "A `chat.completion`, or `chat.completion.chunk` events.",
                object_with("chat.completion"),
            ),
        )
        // In a cluster: the node serving the model did not answer.
        .errors(Surface::OpenAi, &[503])
}

pub fn completions() -> Operation {
    openai("Text completion")
        .request_body_object(object_body(
            "OpenAI's completion request: `{model, prompt, stream?, max_tokens?, …}`.",
        ))
        .response_object(
            200,
            json_or_stream(
                "A `text_completion`, or its chunks as events.",
                object_with("text_completion"),
            ),
        )
        // In a cluster: the node serving the model did not answer.
        .errors(Surface::OpenAi, &[503])
}

pub fn responses() -> Operation {
    openai("Responses API")
        .request_body_object(object_body(
            "OpenAI's Responses request: `{model, input, instructions?, stream?, …}`.",
        ))
        .response_object(
            200,
            json_or_stream(
                "A `response` object, or Responses stream events.",
                object_with("response"),
            ),
        )
}

pub fn embeddings() -> Operation {
    openai("Embeddings")
        .request_body_object(object_body(
            "`{model, input: string | string[], encoding_format?, dimensions?}`.",
        ))
        .ok_json(
            "A `list` of `embedding` objects.",
            json!({"type": "object", "required": ["object", "data"],
                   "properties": {"object": {"const": "list"}, "data": {"type": "array"}}}),
        )
        // In a cluster: the node serving the model did not answer.
        .errors(Surface::OpenAi, &[503])
}

pub fn rerank() -> Operation {
    openai("Rerank documents")
        .describe(
            "llama-server's and text-embeddings-inference's reranking: `{model, query, \
             documents, top_n?}` ranked by relevance.",
        )
        .request_body_object(object_body("`{model, query, documents, top_n?}`."))
        .ok_json("The ranked documents.", json!({"type": "object"}))
        // In a cluster: the node serving the model did not answer.
        .errors(Surface::OpenAi, &[503])
}

pub fn transcriptions() -> Operation {
    openai("Transcribe audio")
        .describe("Multipart `file` and `model`, with `language`, `prompt`, `response_format`.")
        .body(
            json!({"multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "model": {"type": "string"},
                    "language": {"type": "string"},
                    "prompt": {"type": "string"},
                    "response_format": {"type": "string"},
                }
            }}}),
            true,
        )
        .response(
            200,
            "The transcription: JSON, or text for `text`, `srt` and `vtt`.",
            Some(json!({
                "application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
                "text/vtt": {"schema": {"type": "string"}},
                "application/x-subrip": {"schema": {"type": "string"}},
            })),
        )
}

pub fn speech() -> Operation {
    openai("Speak text")
        .request_body_object(object_body(
            "`{model, input, voice, response_format: mp3 | wav | pcm}`.",
        ))
        .response(
            200,
            "The audio.",
            Some(json!({"audio/*": {"schema": {"type": "string", "format": "binary"}}})),
        )
}

fn model_object() -> Value {
    json!({"type": "object", "required": ["id", "object"],
           "properties": {"id": {"type": "string"}, "object": {"const": "model"}}})
}

pub fn list_models() -> Operation {
    openai("List models").ok_json(
        "Every id this server serves.",
        json!({"type": "object", "required": ["object", "data"],
               "properties": {"object": {"const": "list"},
                              "data": {"type": "array", "items": model_object()}}}),
    )
}

pub fn retrieve_model() -> Operation {
    openai("Retrieve a model")
        .path_param("model", "A catalog id or local model name.")
        .ok_json("The model.", model_object())
}
