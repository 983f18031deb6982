//! Text Generation (spec §3.1) and Image-to-Text (§3.10) schemas.
//!
//! Bounds are the loosest seen across Workers AI models (spec §9 "be lenient"); unknown
//! properties are allowed so OpenAI-style options pass through to the engine.

use serde_json::{json, Map, Value};

use super::{bytes, integer, number};

/// `max_tokens` ceiling: the largest context window a classic schema admits.
const MAX_TOKENS_CEILING: i64 = 131_072;

/// Sampling and control fields shared by both branches.
fn sampling_properties() -> Map<String, Value> {
    let properties = json!({
        "stream": {"type": "boolean", "default": false},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CEILING, "default": 256},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CEILING},
        "temperature": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.6},
        "top_p": number(0.0, 2.0),
        "top_k": integer(1, 50),
        "seed": integer(1, 9_999_999_999),
        "repetition_penalty": number(0.0, 2.0),
        "frequency_penalty": number(-2.0, 2.0),
        "presence_penalty": number(-2.0, 2.0),
        "stop": {"type": ["string", "array"], "items": {"type": "string"}},
        "lora": {"type": "string", "description": "Name or id of a LoRA finetune of this model."},
        "response_format": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["json_object", "json_schema", "text"]},
                "json_schema": {"type": "object"}
            },
            "required": ["type"]
        },
        "guided_json": {"type": "object"},
        "image": bytes(),
        "reasoning_effort": {"type": ["string", "null"]},
        "chat_template_kwargs": {"type": "object"},
        "stream_options": {"type": "object"},
        "tool_choice": {"type": ["string", "object"]},
        "parallel_tool_calls": {"type": "boolean"},
        "logprobs": {"type": "boolean"},
        "top_logprobs": integer(0, 20),
        "options": {"type": "object", "properties": {"rejectIfBusy": {"type": "boolean"}}}
    });
    match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn with_sampling(own: Value) -> Map<String, Value> {
    let mut properties = sampling_properties();
    if let Value::Object(own) = own {
        properties.extend(own);
    }
    properties
}

fn prompt_branch() -> Value {
    let properties = with_sampling(json!({
        "prompt": {"type": "string", "minLength": 1, "description": "The input text prompt."},
        // Docs examples send `"raw": "true"`, so the string spellings pass too.
        "raw": {
            "type": ["boolean", "string"],
            "enum": [true, false, "true", "false"],
            "default": false,
            "description": "Skip the chat template."
        }
    }));
    json!({"type": "object", "title": "Prompt", "properties": properties, "required": ["prompt"]})
}

/// One content part: `{type:"text", text}`, `{type:"image_url", image_url:{url}}`, ...
fn content_part() -> Value {
    json!({
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "text": {"type": "string"},
            "image_url": {
                "type": "object",
                "properties": {"url": {"type": "string"}, "detail": {"type": "string"}},
                "required": ["url"]
            },
            "input_audio": {"type": "object"},
            "file": {"type": "object"}
        },
        "required": ["type"],
        "if": {"properties": {"type": {"const": "text"}}, "required": ["type"]},
        "then": {"required": ["text"]}
    })
}

fn message() -> Value {
    json!({
        "type": "object",
        "properties": {
            "role": {"type": "string", "minLength": 1},
            "content": {"type": ["string", "array", "null"], "items": content_part()},
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}}
        },
        "required": ["role"],
        // Only an assistant turn that calls tools may omit its content.
        "if": {"properties": {"role": {"const": "assistant"}}, "required": ["role", "tool_calls"]},
        "else": {"required": ["content"]}
    })
}

fn tool() -> Value {
    let parameters = json!({"type": "object", "properties": {"type": {"type": "string"}}});
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "parameters": parameters,
            "type": {"type": "string"},
            "function": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "parameters": parameters
                },
                "required": ["name"]
            }
        },
        "anyOf": [{"required": ["name"]}, {"required": ["function"]}]
    })
}

fn messages_branch() -> Value {
    let properties = with_sampling(json!({
        "messages": {"type": "array", "minItems": 1, "items": message()},
        "tools": {"type": "array", "items": tool()},
        "functions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "code": {"type": "string"}},
                "required": ["name", "code"]
            }
        }
    }));
    json!({"type": "object", "title": "Messages", "properties": properties, "required": ["messages"]})
}

pub(super) fn generation_input() -> Value {
    json!({"type": "object", "oneOf": [prompt_branch(), messages_branch()]})
}

/// gpt-oss: the classic branches plus OpenAI's Responses input (spec §3.1.3).
pub(super) fn responses_input() -> Value {
    json!({"type": "object", "oneOf": [prompt_branch(), messages_branch(), responses_branch()]})
}

/// `{input, instructions?, reasoning?, ...}`. Items and tools are checked field by field when
/// the request is turned into a generation, so the schema only fixes the outer types.
fn responses_branch() -> Value {
    let text = json!({"type": "string"});
    let properties = with_sampling(json!({
        "input": {
            "type": ["string", "array"],
            "minLength": 1,
            "minItems": 1,
            "items": {"type": "object"},
            "description": "Responses API input: text, or an array of message and function call items."
        },
        "instructions": text,
        "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CEILING},
        "reasoning": {
            "type": "object",
            "properties": {
                "effort": {"type": ["string", "null"], "enum": ["minimal", "low", "medium", "high", null]},
                "summary": {"type": ["string", "null"], "enum": ["auto", "concise", "detailed", null]}
            }
        },
        "text": {"type": "object", "properties": {"format": {"type": "object"}}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "metadata": {"type": "object"},
        "store": {"type": "boolean"},
        "user": text,
        "previous_response_id": text
    }));
    json!({"type": "object", "title": "Responses", "properties": properties, "required": ["input"]})
}

pub(super) fn generation_output() -> Value {
    let usage = json!({
        "type": "object",
        "properties": {
            "prompt_tokens": {"type": "number", "default": 0},
            "completion_tokens": {"type": "number", "default": 0},
            "total_tokens": {"type": "number", "default": 0}
        }
    });
    json!({
        "oneOf": [
            {
                "type": "object",
                "contentType": "application/json",
                "properties": {
                    "response": {"type": ["string", "object", "number", "boolean", "null"]},
                    "usage": usage,
                    "tool_calls": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "arguments": {"type": ["object", "string"]}
                            }
                        }
                    }
                },
                "required": ["response"]
            },
            {
                "type": "object",
                "title": "Chat Completion",
                "contentType": "application/json",
                "properties": {
                    "id": {"type": "string"},
                    "object": {"type": "string"},
                    "created": {"type": "number"},
                    "model": {"type": "string"},
                    "choices": {"type": "array", "items": {"type": "object"}},
                    "usage": usage
                },
                "required": ["choices"]
            },
            {"type": "string", "contentType": "text/event-stream", "format": "binary"}
        ]
    })
}

/// OpenAI-style catalog models: `chat.completion` for messages, `text_completion` for a prompt,
/// and with `responses` the Responses object for `input` (spec §1.2, §3.1.3).
pub(super) fn openai_style_output(responses: bool) -> Value {
    let usage = json!({"type": "object"});
    let object = |title: &str, object: &str, required: &str| {
        json!({
            "type": "object",
            "title": title,
            "contentType": "application/json",
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "const": object},
                "model": {"type": "string"},
                "usage": usage
            },
            "required": ["id", "object", required]
        })
    };
    let mut branches = vec![
        object("Chat Completion", "chat.completion", "choices"),
        object("Text Completion", "text_completion", "choices"),
    ];
    if responses {
        branches.insert(0, object("Response", "response", "output"));
    }
    branches
        .push(json!({"type": "string", "contentType": "text/event-stream", "format": "binary"}));
    json!({"oneOf": branches})
}

pub(super) fn image_to_text_input() -> Value {
    let properties = json!({
        "image": bytes(),
        "prompt": {"type": "string"},
        "raw": {"type": "boolean", "default": false},
        "messages": {"type": "array", "items": message()},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CEILING, "default": 512},
        "temperature": number(0.0, 5.0),
        "top_p": number(0.0, 2.0),
        "top_k": integer(1, 50),
        "seed": integer(1, 9_999_999_999),
        "repetition_penalty": number(0.0, 2.0),
        "frequency_penalty": number(-2.0, 2.0),
        "presence_penalty": number(-2.0, 2.0),
        "ignore_eos": {"type": "boolean"}
    });
    json!({
        "oneOf": [
            super::binary_body(),
            {"type": "object", "properties": properties, "required": ["image"]}
        ]
    })
}

pub(super) fn image_to_text_output() -> Value {
    json!({"type": "object", "properties": {"description": {"type": "string"}}, "required": ["description"]})
}
