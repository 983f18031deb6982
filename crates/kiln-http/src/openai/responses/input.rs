//! A Responses API request (`input`, `instructions`, `max_output_tokens`, `text.format`,
//! function `tools`, ...) as the native Workers AI input it stands for, which the usual text
//! generation path then runs. Every field is checked here, naming it, and what Kiln cannot do
//! (stored responses, built-in tools, non-text input) is refused with a 400, never ignored.

use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Map, Value};

use super::output::Template;

type Checked<T> = KilnResult<T>;

/// Native fields a Responses request may carry as they are (Workers AI sampling extensions,
/// `options.rejectIfBusy`, a fine-tune).
const NATIVE_FIELDS: [&str; 11] = [
    "stream",
    "top_k",
    "seed",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "lora",
    "options",
    "parallel_tool_calls",
    "stream_options",
];

/// Fields that need state Kiln does not keep or work it does not do.
const REFUSED: [(&str, &str); 4] = [
    (
        "previous_response_id",
        "Kiln does not store responses; send the earlier turns in 'input'",
    ),
    (
        "conversation",
        "Kiln does not store conversations; send the earlier turns in 'input'",
    ),
    (
        "prompt",
        "stored prompt templates are not served; send the text in 'input'",
    ),
    ("messages", "send either Responses 'input' or 'messages'"),
];

/// `body` → (native input, the response object's template). `model` is the id answers name.
pub(crate) fn to_native(body: &Value, model: &str) -> Checked<(Value, Template)> {
    let fields = body
        .as_object()
        .ok_or_else(|| KilnError::bad_input("the request body must be a JSON object"))?;
    let get = |name: &str| fields.get(name).filter(|v| !v.is_null());
    for (name, why) in REFUSED {
        if get(name).is_some() {
            return Err(KilnError::bad_input(format!(
                "'{name}' cannot be used with 'input': {why}"
            )));
        }
    }
    refuse_if(get("background"), "background", |v| v != &json!(false))?;
    refuse_if(get("include"), "include", |v| v != &json!([]))?;
    refuse_if(get("truncation"), "truncation", |v| v != "disabled")?;
    refuse_if(get("top_logprobs"), "top_logprobs", |v| v != &json!(0))?;

    let instructions = string(get("instructions"), "instructions")?;
    let mut messages = Vec::new();
    if let Some(text) = instructions {
        messages.push(json!({"role": "system", "content": text}));
    }
    append_input(get("input"), &mut messages)?;

    let mut native = Map::new();
    native.insert("messages".into(), Value::Array(messages));
    for name in NATIVE_FIELDS {
        if let Some(value) = get(name) {
            native.insert(name.into(), value.clone());
        }
    }
    let max_output_tokens = get("max_output_tokens");
    if let Some(value) = max_output_tokens {
        match value.as_u64() {
            Some(n) if n >= 1 => native.insert("max_tokens".into(), json!(n)),
            _ => return Err(invalid("max_output_tokens", "a positive integer", value)),
        };
    }
    for (name, max) in [("temperature", 2.0), ("top_p", 1.0)] {
        if let Some(value) = get(name) {
            match value.as_f64() {
                Some(x) if (0.0..=max).contains(&x) => native.insert(name.into(), value.clone()),
                _ => return Err(invalid(name, &format!("a number from 0 to {max}"), value)),
            };
        }
    }
    let reasoning = reasoning(get("reasoning"))?;
    if let Some(format) = text_format(get("text"))? {
        native.insert("response_format".into(), format);
    }
    let tools = tools(get("tools"))?;
    if !tools.is_empty() {
        native.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice(get("tool_choice"))? {
        native.insert("tool_choice".into(), choice);
    }
    let metadata = match get("metadata") {
        None => json!({}),
        Some(value @ Value::Object(_)) => value.clone(),
        Some(value) => return Err(invalid("metadata", "an object", value)),
    };
    string(get("user"), "user")?;
    let echo = |name: &str| get(name).cloned().unwrap_or(Value::Null);
    let format = get("text")
        .and_then(|text| text.get("format"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "text"}));
    let echoed = json!({
        "model": model,
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
        "metadata": metadata,
        "parallel_tool_calls": get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
        "reasoning": reasoning,
        "temperature": echo("temperature"),
        "text": {"format": format},
        "tool_choice": get("tool_choice").cloned().unwrap_or(json!("auto")),
        "tools": get("tools").cloned().unwrap_or(json!([])),
        "top_p": echo("top_p"),
        "user": echo("user"),
    });
    let echoed = match echoed {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    Ok((Value::Object(native), Template::new(echoed)))
}

fn invalid(name: &str, expected: &str, got: &Value) -> KilnError {
    let mut shown = got.to_string();
    if shown.len() > 48 {
        shown = format!("{}…", shown.chars().take(48).collect::<String>());
    }
    KilnError::bad_input(format!("'{name}' must be {expected}, not {shown}"))
}

fn refuse_if(
    value: Option<&Value>,
    name: &str,
    unsupported: impl Fn(&Value) -> bool,
) -> Checked<()> {
    match value {
        Some(value) if unsupported(value) => Err(KilnError::bad_input(format!(
            "'{name}' {value} is not supported by Kiln"
        ))),
        _ => Ok(()),
    }
}

fn string<'a>(value: Option<&'a Value>, name: &str) -> Checked<Option<&'a str>> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(invalid(name, "a string", other)),
    }
}

/// `input`: text (one user turn) or message, `function_call` and `function_call_output` items.
fn append_input(input: Option<&Value>, messages: &mut Vec<Value>) -> Checked<()> {
    let items = match input {
        Some(Value::String(text)) if !text.is_empty() => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(other) => return Err(invalid("input", "a non-empty string or array", other)),
        None => return Err(KilnError::bad_input("'input' is required")),
    };
    for (index, item) in items.iter().enumerate() {
        let at = format!("input[{index}]");
        if !item.is_object() {
            return Err(invalid(&at, "an object", item));
        }
        let text_field = |name: &str| -> Checked<String> {
            let value = item.get(name).filter(|v| !v.is_null());
            string(value, &format!("{at}.{name}"))?
                .map(str::to_owned)
                .ok_or_else(|| KilnError::bad_input(format!("'{at}.{name}' is required")))
        };
        match item.get("type").and_then(Value::as_str) {
            None | Some("message") => {
                let role = match text_field("role")?.as_str() {
                    "developer" | "system" => "system",
                    role @ ("user" | "assistant") => role,
                    other => {
                        return Err(KilnError::bad_input(format!(
                        "'{at}.role' is {other:?}; expected user, assistant, system or developer"
                    )))
                    }
                }
                .to_owned();
                let content = text_of(item.get("content"), &format!("{at}.content"))?;
                messages.push(json!({"role": role, "content": content}));
            }
            Some("function_call") => {
                let arguments = item.get("arguments").and_then(Value::as_str);
                let call = json!({
                    "id": text_field("call_id")?,
                    "type": "function",
                    "function": {"name": text_field("name")?, "arguments": arguments.unwrap_or("{}")},
                });
                // Calls made in one turn belong to the assistant message before them.
                match messages.last_mut().filter(|m| m["role"] == "assistant") {
                    Some(last) => match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    },
                    None => messages
                        .push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
                }
            }
            Some("function_call_output") => {
                let content = text_of(item.get("output"), &format!("{at}.output"))?;
                messages.push(
                    json!({"role": "tool", "tool_call_id": text_field("call_id")?, "content": content}),
                );
            }
            // An earlier turn's reasoning: the model does not need it back.
            Some("reasoning") => {}
            Some(other) => {
                return Err(KilnError::bad_input(format!(
                    "'{at}.type' is {other:?}; Kiln serves message, function_call, \
                     function_call_output and reasoning items"
                )))
            }
        }
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(KilnError::bad_input(
            "'input' has no user or assistant turn",
        ));
    }
    Ok(())
}

/// Content as text: a string, or `input_text` / `output_text` / `text` / `refusal` parts.
fn text_of(content: Option<&Value>, at: &str) -> Checked<String> {
    let parts = match content.filter(|v| !v.is_null()) {
        Some(Value::String(text)) => return Ok(text.clone()),
        Some(Value::Array(parts)) => parts,
        Some(other) => return Err(invalid(at, "a string or an array of text parts", other)),
        None => return Err(KilnError::bad_input(format!("'{at}' is required"))),
    };
    let mut text = String::new();
    for (index, part) in parts.iter().enumerate() {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("text");
        let field = match kind {
            "input_text" | "output_text" | "text" => "text",
            "refusal" => "refusal",
            other => {
                return Err(KilnError::bad_input(format!(
                    "'{at}[{index}].type' is {other:?}; only text parts are served"
                )))
            }
        };
        let piece = part.get(field).and_then(Value::as_str).ok_or_else(|| {
            KilnError::bad_input(format!("'{at}[{index}].{field}' must be a string"))
        })?;
        text.push_str(piece);
    }
    Ok(text)
}

/// `reasoning: {effort, summary}`: checked and echoed; the local model reasons as it does.
fn reasoning(value: Option<&Value>) -> Checked<Value> {
    let Some(value) = value else {
        return Ok(json!({"effort": null, "summary": null}));
    };
    if !value.is_object() {
        return Err(invalid("reasoning", "an object", value));
    }
    let pick = |name: &str, allowed: &[&str]| -> Checked<Value> {
        match value.get(name) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(json!(s)),
            Some(other) => Err(invalid(
                &format!("reasoning.{name}"),
                &format!("one of {}", allowed.join(", ")),
                other,
            )),
        }
    };
    Ok(json!({
        "effort": pick("effort", &["minimal", "low", "medium", "high"])?,
        "summary": pick("summary", &["auto", "concise", "detailed"])?,
    }))
}

/// `text.format` → native `response_format` (the bare schema, as JSON mode takes it).
fn text_format(text: Option<&Value>) -> Checked<Option<Value>> {
    let Some(text) = text else { return Ok(None) };
    if !text.is_object() {
        return Err(invalid("text", "an object", text));
    }
    let Some(format) = text.get("format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => {
                Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
            }
            _ => Err(KilnError::bad_input(
                "'text.format.schema' (a JSON Schema object) is required for \"json_schema\"",
            )),
        },
        _ => Err(invalid(
            "text.format.type",
            "\"text\", \"json_object\" or \"json_schema\"",
            format.get("type").unwrap_or(&Value::Null),
        )),
    }
}

/// Function tools (`{type: "function", name, description?, parameters?, strict?}`) in the
/// OpenAI chat form the native route takes.
fn tools(value: Option<&Value>) -> Checked<Vec<Value>> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid("tools", "an array", other)),
    };
    items
        .iter()
        .enumerate()
        .map(|(index, tool)| {
            let kind = tool.get("type").and_then(Value::as_str);
            if kind != Some("function") {
                return Err(KilnError::bad_input(format!(
                    "'tools[{index}].type' is {}; only \"function\" tools are served",
                    kind.map_or("missing".to_owned(), |k| format!("{k:?}"))
                )));
            }
            let name = string(tool.get("name"), &format!("tools[{index}].name"))?
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    KilnError::bad_input(format!("'tools[{index}].name' is required"))
                })?;
            let mut function = json!({"name": name});
            for field in ["description", "parameters"] {
                if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                    function[field] = value.clone();
                }
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

/// `"auto" | "none" | "required" | {type: "function", name}`.
fn tool_choice(value: Option<&Value>) -> Checked<Option<Value>> {
    match value {
        None => Ok(None),
        Some(Value::String(_)) => Ok(value.cloned()),
        Some(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let name = string(choice.get("name"), "tool_choice.name")?
                .ok_or_else(|| KilnError::bad_input("'tool_choice.name' is required"))?;
            Ok(Some(
                json!({"type": "function", "function": {"name": name}}),
            ))
        }
        Some(other) => Err(invalid(
            "tool_choice",
            "\"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": …}",
            other,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(body: Value) -> Value {
        to_native(&body, "@cf/openai/gpt-oss-20b")
            .unwrap_or_else(|e| panic!("{body}: {}", e.message))
            .0
    }

    fn refused(body: Value) -> String {
        match to_native(&body, "m") {
            Ok((native, _)) => panic!("{body} became {native}"),
            Err(error) => error.message,
        }
    }

    #[test]
    fn instructions_and_text_become_a_chat() {
        let body = json!({"input": "Hi", "instructions": "Be brief.", "max_output_tokens": 9,
                          "temperature": 0, "reasoning": {"effort": "low"}});
        assert_eq!(
            native(body),
            json!({"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi"}],
                   "max_tokens": 9, "temperature": 0})
        );
    }

    #[test]
    fn items_become_turns_with_calls_and_results() {
        let body = json!({"input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"c\":1}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
        ]});
        let messages = native(body)["messages"].clone();
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "Use tools."})
        );
        assert_eq!(messages[1], json!({"role": "user", "content": "Weather?"}));
        assert_eq!(messages[2]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(messages[2]["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
    }

    #[test]
    fn formats_and_tools_take_the_native_forms() {
        let body = json!({"input": "x",
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}});
        let native = native(body);
        assert_eq!(
            native["response_format"],
            json!({"type": "json_schema", "json_schema": {"type": "object"}})
        );
        assert_eq!(
            native["tools"],
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            native["tool_choice"],
            json!({"type": "function", "function": {"name": "f"}})
        );
    }

    #[test]
    fn what_kiln_cannot_do_is_refused_by_name() {
        let cases = [
            (
                json!({"input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"input": "x", "messages": []}), "messages"),
            (json!({"input": "x", "background": true}), "background"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "input_image",
            ),
            (
                json!({"input": [{"type": "item_reference", "id": "x"}]}),
                "input[0].type",
            ),
            (json!({"input": ""}), "'input'"),
            (
                json!({"input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
            (json!({"input": "x", "temperature": "hot"}), "temperature"),
            (
                json!({"input": "x", "reasoning": {"effort": "extreme"}}),
                "reasoning.effort",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "json_schema"}}}),
                "text.format.schema",
            ),
            (
                json!({"input": [{"role": "system", "content": "only rules"}]}),
                "no user",
            ),
            (
                json!({"input": [{"role": "robot", "content": "x"}]}),
                "input[0].role",
            ),
            (json!({"instructions": "x"}), "'input' is required"),
        ];
        for (body, named) in cases {
            let message = refused(body.clone());
            assert!(message.contains(named), "{body}: {message}");
        }
    }
}
