//! Parsing OpenAI request bodies into engine requests. Every check names the field it is about,
//! and features Kiln cannot serve yet are refused with a 400 rather than silently ignored.

use std::sync::Arc;

use kiln_core::limits::SchemaLimits;
use kiln_core::{
    ChatMessage, GenerationRequest, PromptInput, SamplingParams, ToolChoice, ToolSpec, ToolSyntax,
};
use serde_json::{Map, Value};

use super::error::OpenAiError;
use crate::json_mode::JsonMode;
use crate::text_generation::flatten_content;
use crate::tools;

type Parsed<T> = Result<T, OpenAiError>;

/// OpenAI's documented default temperature.
const DEFAULT_TEMPERATURE: f32 = 1.0;
/// Legacy completions stop after 16 tokens unless told otherwise, as OpenAI's do.
const DEFAULT_COMPLETION_MAX_TOKENS: u32 = 16;
/// Choices per request; each is a full generation, so keep the fan-out modest.
const MAX_CHOICES: u64 = 8;
/// OpenAI accepts at most four stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// A chat or legacy completion request, ready for the worker.
#[derive(Debug, Clone)]
pub struct TextRequest {
    pub model: String,
    pub generation: GenerationRequest,
    /// Choices to generate; choice `i` uses seed `seed + i` when a seed is given.
    pub choices: u32,
    pub stream: bool,
    pub include_usage: bool,
    /// `x-session-affinity`, set by the route: pins the conversation to its prefix-cache slot.
    pub session: Option<String>,
    /// `response_format` asked for JSON: the answer is checked against it when it ends.
    pub json_mode: Option<Arc<JsonMode>>,
    /// `tools` and `tool_choice` (chat only), applied once the serving model is known.
    pub tools: (Vec<ToolSpec>, ToolChoice),
    /// Set when tools are in play: how to find the calls in the answer.
    pub tool_syntax: Option<ToolSyntax>,
}

/// The JSON object of a request body, read field by field.
pub struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn of(body: &'a Value) -> Parsed<Self> {
        body.as_object()
            .map(Fields)
            .ok_or_else(|| OpenAiError::invalid("body", "The request body must be a JSON object"))
    }

    /// The field's value; `null` counts as absent, as OpenAI treats it.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn model(&self) -> Parsed<String> {
        match self.get("model") {
            Some(Value::String(model)) if !model.trim().is_empty() => Ok(model.clone()),
            Some(Value::String(_)) => Err(OpenAiError::invalid("model", "'model' is empty")),
            Some(other) => Err(type_error("model", "a string", other)),
            None => Err(OpenAiError::invalid(
                "model",
                "you must provide a model parameter ('model')",
            )),
        }
    }

    pub fn bool(&self, name: &str) -> Parsed<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(type_error(name, "a boolean", other)),
        }
    }

    pub fn string(&self, name: &str) -> Parsed<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(type_error(name, "a string", other)),
        }
    }

    pub fn number(&self, name: &str, min: f64, max: f64) -> Parsed<Option<f32>> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let number = value
            .as_f64()
            .ok_or_else(|| type_error(name, "a number", value))?;
        if !(min..=max).contains(&number) {
            return Err(OpenAiError::invalid(
                name,
                format!("'{name}' is {number}; it must be between {min} and {max}"),
            ));
        }
        Ok(Some(number as f32))
    }

    pub fn integer(&self, name: &str, min: i64, max: i64) -> Parsed<Option<i64>> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let integer = value
            .as_i64()
            .ok_or_else(|| type_error(name, "an integer", value))?;
        if !(min..=max).contains(&integer) {
            return Err(OpenAiError::invalid(
                name,
                format!("'{name}' is {integer}; it must be between {min} and {max}"),
            ));
        }
        Ok(Some(integer))
    }

    /// Refuses a field whose value asks for something Kiln cannot do yet.
    fn refuse_if(&self, name: &str, unsupported: impl Fn(&Value) -> bool, why: &str) -> Parsed<()> {
        match self.get(name) {
            Some(value) if unsupported(value) => Err(OpenAiError::invalid(
                name,
                format!("'{name}' is not supported by Kiln yet: {why}"),
            )),
            _ => Ok(()),
        }
    }
}

pub fn type_error(name: &str, expected: &str, got: &Value) -> OpenAiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    OpenAiError::invalid(
        name,
        format!("Invalid type for '{name}': expected {expected}, but got {got}"),
    )
}

/// `POST /v1/chat/completions`. `limits` bound `response_format` and the tools' schemas.
pub fn parse_chat(body: &Value, context_window: u32, limits: &SchemaLimits) -> Parsed<TextRequest> {
    let fields = Fields::of(body)?;
    let model = fields.model()?;
    let messages = parse_messages(fields.get("messages"))?;
    fields.refuse_if(
        "logprobs",
        |v| v == &Value::Bool(true),
        "the engine does not report log probabilities",
    )?;
    fields.refuse_if(
        "top_logprobs",
        |v| v.as_u64() != Some(0),
        "the engine does not report log probabilities",
    )?;
    fields.refuse_if(
        "functions",
        non_empty,
        "function calling is not implemented",
    )?;
    let tools = tools::parse_tools(fields.get("tools"), limits)
        .map_err(|error| OpenAiError::invalid("tools", error.message))?;
    let tool_choice = tools::parse_tool_choice(fields.get("tool_choice"))
        .map_err(|error| OpenAiError::invalid("tool_choice", error.message))?;
    fields.refuse_if(
        "modalities",
        |v| v.as_array().is_none_or(|m| m.iter().any(|m| m != "text")),
        "only text output is served",
    )?;
    fields.refuse_if("audio", |_| true, "only text output is served")?;
    let max_tokens = match fields.integer("max_completion_tokens", 1, i64::from(u32::MAX))? {
        Some(n) => Some(n),
        None => fields.integer("max_tokens", 1, i64::from(u32::MAX))?,
    };
    // OpenAI's default is "whatever the context window leaves"; the engine clamps to that.
    let max_tokens = max_tokens.map_or(context_window, |n| n as u32);
    let input = PromptInput::Messages(messages);
    let mut request = text_request(&fields, model, input, max_tokens, limits)?;
    request.tools = (tools, tool_choice);
    Ok(request)
}

/// `POST /v1/completions`: the prompt is raw text, no chat template.
pub fn parse_completion(body: &Value, limits: &SchemaLimits) -> Parsed<TextRequest> {
    let fields = Fields::of(body)?;
    let model = fields.model()?;
    let prompt =
        match fields.get("prompt") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(items)) => match items.as_slice() {
                [Value::String(text)] => text.clone(),
                [] => return Err(OpenAiError::invalid("prompt", "'prompt' is an empty array")),
                [_] => {
                    return Err(OpenAiError::invalid(
                        "prompt",
                        "'prompt' as token ids is not supported; send the prompt as a string",
                    ))
                }
                _ => return Err(OpenAiError::invalid(
                    "prompt",
                    "'prompt' with several prompts is not supported; send one prompt per request",
                )),
            },
            Some(other) => return Err(type_error("prompt", "a string", other)),
            None => return Err(OpenAiError::invalid("prompt", "'prompt' is required")),
        };
    fields.refuse_if(
        "logprobs",
        |v| v.as_u64() != Some(0),
        "the engine does not report log probabilities",
    )?;
    fields.refuse_if(
        "echo",
        |v| v == &Value::Bool(true),
        "echoing the prompt is not implemented",
    )?;
    fields.refuse_if("suffix", |_| true, "insertion (suffix) is not implemented")?;
    fields.refuse_if(
        "best_of",
        |v| v.as_u64() != Some(1),
        "best_of other than 1 is not implemented",
    )?;
    let max_tokens = fields
        .integer("max_tokens", 1, i64::from(u32::MAX))?
        .map_or(DEFAULT_COMPLETION_MAX_TOKENS, |n| n as u32);
    let input = PromptInput::Prompt {
        text: prompt,
        raw: true,
    };
    text_request(&fields, model, input, max_tokens, limits)
}

/// The fields chat and legacy completions share.
fn text_request(
    fields: &Fields<'_>,
    model: String,
    input: PromptInput,
    max_tokens: u32,
    limits: &SchemaLimits,
) -> Parsed<TextRequest> {
    fields.string("user")?;
    fields.refuse_if("logit_bias", non_empty, "logit_bias is not implemented")?;
    let json_mode = match fields.get("response_format") {
        None | Some(Value::Null) => None,
        Some(format) => JsonMode::from_response_format(format, "response_format", limits)
            .map_err(|error| OpenAiError::invalid("response_format", error.message))?,
    };
    let sampling = SamplingParams {
        temperature: fields
            .number("temperature", 0.0, 2.0)?
            .unwrap_or(DEFAULT_TEMPERATURE),
        top_p: fields.number("top_p", 0.0, 1.0)?,
        top_k: None,
        // OpenAI seeds are signed 64-bit; any value is a valid seed.
        seed: fields
            .integer("seed", i64::MIN, i64::MAX)?
            .map(|s| s as u64),
        repetition_penalty: None,
        frequency_penalty: fields.number("frequency_penalty", -2.0, 2.0)?,
        presence_penalty: fields.number("presence_penalty", -2.0, 2.0)?,
    };
    let choices = fields.integer("n", 1, MAX_CHOICES as i64)?.unwrap_or(1) as u32;
    let stream = fields.bool("stream")?.unwrap_or(false);
    let include_usage = match fields.get("stream_options") {
        None => false,
        Some(_) if !stream => {
            return Err(OpenAiError::invalid(
                "stream_options",
                "'stream_options' is only allowed when 'stream' is true",
            ))
        }
        Some(options @ Value::Object(_)) => Fields::of(options)?
            .bool("include_usage")
            .map_err(|_| {
                OpenAiError::invalid(
                    "stream_options.include_usage",
                    "'stream_options.include_usage' must be a boolean",
                )
            })?
            .unwrap_or(false),
        Some(other) => return Err(type_error("stream_options", "an object", other)),
    };
    if stream && choices > 1 {
        return Err(OpenAiError::invalid(
            "n",
            "'n' greater than 1 is not supported together with 'stream'; ask for one choice",
        ));
    }
    Ok(TextRequest {
        model,
        generation: GenerationRequest {
            input,
            max_tokens,
            sampling,
            stop: parse_stop(fields.get("stop"))?,
            constraint: json_mode.as_ref().map(|mode| mode.constraint()),
            tools: Vec::new(),
            lora: None,
        },
        choices,
        stream,
        include_usage,
        session: None,
        json_mode,
        tools: (Vec::new(), ToolChoice::Auto),
        tool_syntax: None,
    })
}

fn non_empty(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}

fn parse_messages(messages: Option<&Value>) -> Parsed<Vec<ChatMessage>> {
    let items = match messages {
        Some(Value::Array(items)) => items,
        Some(other) => return Err(type_error("messages", "an array", other)),
        None => return Err(OpenAiError::invalid("messages", "'messages' is required")),
    };
    if items.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "'messages' must contain at least one message",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let param = format!("messages[{i}]");
            let fields = Fields::of(message)
                .map_err(|_| type_error(&param, "an object", message))?;
            let role = match fields.get("role") {
                Some(Value::String(role)) => role.as_str(),
                Some(other) => return Err(type_error(&format!("{param}.role"), "a string", other)),
                None => {
                    return Err(OpenAiError::invalid(
                        &format!("{param}.role"),
                        format!("'{param}.role' is required"),
                    ))
                }
            };
            let role = match role {
                // OpenAI's newer name for system instructions.
                "developer" => "system",
                "system" | "user" | "assistant" | "tool" => role,
                other => {
                    return Err(OpenAiError::invalid(
                        &format!("{param}.role"),
                        format!(
                            "'{param}.role' is '{other}'; expected 'system', 'developer', 'user', 'assistant' or 'tool'"
                        ),
                    ))
                }
            };
            let tool_calls = tools::parse_message_calls(fields.get("tool_calls")).map_err(
                |detail| OpenAiError::invalid(&format!("{param}.tool_calls"), detail),
            )?;
            let content = flatten_content(fields.get("content")).map_err(|detail| {
                OpenAiError::invalid(&format!("{param}.content"), format!("'{param}.content' {detail}"))
            })?;
            Ok(ChatMessage {
                role: role.to_owned(),
                content,
                tool_calls,
                tool_call_id: fields.get("tool_call_id").and_then(Value::as_str).map(str::to_owned),
            })
        })
        .collect()
}

fn parse_stop(stop: Option<&Value>) -> Parsed<Vec<String>> {
    let stops = match stop {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| OpenAiError::invalid("stop", "'stop' must hold only strings"))
            })
            .collect::<Parsed<Vec<String>>>()?,
        Some(other) => return Err(type_error("stop", "a string or an array of strings", other)),
    };
    if stops.len() > MAX_STOP_SEQUENCES {
        return Err(OpenAiError::invalid(
            "stop",
            format!(
                "'stop' has {} sequences; at most {MAX_STOP_SEQUENCES} are allowed",
                stops.len()
            ),
        ));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_defaults_follow_openai() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]});
        let request = parse_chat(&body, 8192, &SchemaLimits::default()).unwrap();
        assert_eq!(request.generation.max_tokens, 8192);
        assert_eq!(request.generation.sampling.temperature, 1.0);
        assert_eq!(
            (request.choices, request.stream, request.include_usage),
            (1, false, false)
        );
        assert_eq!(
            request.generation.input,
            PromptInput::Messages(vec![ChatMessage {
                role: "user".into(),
                content: "Hi".into(),
                ..Default::default()
            }])
        );
    }

    #[test]
    fn chat_fields_map_onto_the_engine_request() {
        let body = json!({
            "model": "m", "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 9, "max_completion_tokens": 5, "temperature": 0.5, "top_p": 0.9, "seed": -1,
            "stop": "END", "presence_penalty": 0.5, "frequency_penalty": -0.5, "n": 3,
            "tool_choice": "none", "tools": [], "logprobs": false, "response_format": {"type": "text"}
        });
        let request = parse_chat(&body, 8192, &SchemaLimits::default()).unwrap();
        let generation = &request.generation;
        assert_eq!(generation.max_tokens, 5, "max_completion_tokens wins");
        assert_eq!(generation.sampling.seed, Some(u64::MAX));
        assert_eq!(generation.sampling.top_p, Some(0.9));
        assert_eq!(generation.sampling.presence_penalty, Some(0.5));
        assert_eq!(generation.sampling.frequency_penalty, Some(-0.5));
        assert_eq!(generation.stop, vec!["END".to_owned()]);
        assert_eq!(request.choices, 3);
        let PromptInput::Messages(messages) = &generation.input else {
            panic!("chat input is messages");
        };
        assert_eq!(messages[0].role, "system");
    }

    #[test]
    fn completions_are_raw_and_short_by_default() {
        let body = json!({"model": "m", "prompt": "Once", "stream": true, "stream_options": {"include_usage": true}});
        let request = parse_completion(&body, &SchemaLimits::default()).unwrap();
        assert_eq!(request.generation.max_tokens, DEFAULT_COMPLETION_MAX_TOKENS);
        assert_eq!(
            request.generation.input,
            PromptInput::Prompt {
                text: "Once".into(),
                raw: true
            }
        );
        assert!(request.stream && request.include_usage);
    }

    #[test]
    fn unsupported_features_name_their_field() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]});
        for (field, value) in [
            ("logprobs", json!(true)),
            ("logit_bias", json!({"50256": -100})),
        ] {
            let mut body = base.clone();
            body[field] = value;
            let error = parse_chat(&body, 8192, &SchemaLimits::default()).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(field));
            assert!(
                error.error.message.contains("not supported"),
                "{}",
                error.error.message
            );
        }
    }
}
