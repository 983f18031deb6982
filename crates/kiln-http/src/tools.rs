//! Tool calling on both APIs: `tools` in either wire form, `tool_choice`, earlier turns' calls,
//! and holding back streamed text that turns out to be a call.

use kiln_core::limits::SchemaLimits;
use kiln_core::schema_guard::{self, SchemaSize};
use kiln_core::{
    GenerationRequest, KilnError, KilnResult, OutputConstraint, ParsedOutput, ToolCall, ToolChoice,
    ToolSpec, ToolSyntax,
};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

/// `tools`: the legacy `{name, description, parameters}` or OpenAI's
/// `{type: "function", function: {name, description, parameters}}`. Every tool's `parameters`
/// passes the schema guard, and all of them together stay within one schema's limits: they are
/// compiled into one grammar.
pub fn parse_tools(value: Option<&Value>, limits: &SchemaLimits) -> KilnResult<Vec<ToolSpec>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(KilnError::bad_input("'tools' must be an array")),
    };
    if items.len() > limits.max_tools {
        return Err(KilnError::bad_input(format!(
            "'tools' has {} tools, more than {} ([limits.schema] max_tools)",
            items.len(),
            limits.max_tools
        )));
    }
    let mut tools = parse_tool_items(items)?;
    let mut total = SchemaSize::default();
    for (index, tool) in tools.iter_mut().enumerate() {
        let field = format!("tools[{index}].parameters");
        let size = schema_guard::guard(&mut tool.parameters, limits, &field)?;
        total.bytes += size.bytes;
        total.refs += size.refs;
        total.subschemas += size.subschemas;
    }
    let over = [
        (total.bytes, limits.max_bytes, "bytes", "max_bytes"),
        (total.refs, limits.max_refs, "'$ref's", "max_refs"),
        (
            total.subschemas,
            limits.max_subschemas,
            "subschemas",
            "max_subschemas",
        ),
    ]
    .into_iter()
    .find(|(used, max, _, _)| used > max);
    if let Some((used, max, what, setting)) = over {
        return Err(KilnError::bad_input(format!(
            "the parameters of all 'tools' together have {used} {what}, more than {max} \
             ([limits.schema] {setting})"
        )));
    }
    Ok(tools)
}

fn parse_tool_items(items: &[Value]) -> KilnResult<Vec<ToolSpec>> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let function = match item.get("type").and_then(Value::as_str) {
                Some("function") => item.get("function").ok_or_else(|| {
                    KilnError::bad_input(format!("'tools[{index}].function' is required"))
                })?,
                Some(other) => {
                    return Err(KilnError::bad_input(format!(
                        "'tools[{index}].type' is {other:?}; only \"function\" tools are supported"
                    )))
                }
                None => item,
            };
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    KilnError::bad_input(format!("'tools[{index}]' needs a function name"))
                })?;
            let parameters = match function.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(KilnError::bad_input(format!(
                        "'tools[{index}].parameters' must be a JSON Schema object"
                    )))
                }
            };
            Ok(ToolSpec {
                name: name.to_owned(),
                description: function
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters,
            })
        })
        .collect()
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"` (also `"any"`), or
/// `{type: "function", function: {name}}`.
pub fn parse_tool_choice(value: Option<&Value>) -> KilnResult<ToolChoice> {
    match value {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" | "any" => Ok(ToolChoice::Required),
            other => Err(KilnError::bad_input(format!(
                "'tool_choice' is {other:?}; use \"auto\", \"none\", \"required\" or a function"
            ))),
        },
        Some(object) => object
            .get("function")
            .and_then(|f| f.get("name"))
            .or_else(|| object.get("name"))
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Named(name.to_owned()))
            .ok_or_else(|| {
                KilnError::bad_input(
                    "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": …}}",
                )
            }),
    }
}

/// An assistant turn's `tool_calls`: `[{name, arguments}]` (Workers AI) or
/// `[{id, type, function: {name, arguments}}]` (OpenAI, arguments as a JSON string).
pub fn parse_message_calls(value: Option<&Value>) -> Result<Vec<ToolCall>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("'tool_calls' must be an array".to_owned()),
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let function = item.get("function").unwrap_or(item);
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("'tool_calls[{index}]' has no function name"))?;
            let arguments = match function.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(text)) => {
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
                }
                Some(other) => other.clone(),
            };
            Ok(ToolCall {
                id: item
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                name: name.to_owned(),
                arguments,
            })
        })
        .collect()
}

/// Shows `tools` to the model and constrains its output to `choice`. Returns the syntax to
/// parse the answer with, or `None` when no call can come (no tools, or `tool_choice: none`).
pub fn prepare(
    request: &mut GenerationRequest,
    tools: Vec<ToolSpec>,
    choice: ToolChoice,
    syntax: Option<ToolSyntax>,
    local_model: &str,
) -> KilnResult<Option<ToolSyntax>> {
    if tools.is_empty() || choice == ToolChoice::None {
        return Ok(None);
    }
    let syntax = syntax.ok_or_else(|| {
        KilnError::bad_input(format!(
            "the local model {local_model} has no tool support in its chat template; serve \
             this id with a model that has one (e.g. qwen2.5-coder-0.5b-instruct)"
        ))
    })?;
    if let ToolChoice::Named(name) = &choice {
        if !tools.iter().any(|tool| &tool.name == name) {
            return Err(KilnError::bad_input(format!(
                "'tool_choice' names {name:?}, which is not in 'tools'"
            )));
        }
    }
    if request.constraint.is_some() {
        return Err(KilnError::bad_input(
            "'response_format' and 'tools' cannot be used together",
        ));
    }
    request.constraint = syntax.grammar(&tools, &choice).map(OutputConstraint::Lark);
    request.tools = tools;
    Ok(Some(syntax))
}

/// A short random part for call ids, so ids are unique across responses.
pub fn call_id_seed() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 8)
}

/// Streams text through until it is clear whether the answer is a call: text that could still
/// become the call syntax's opening is held; once the answer opens a call, everything is held
/// for [`CallDetector::finish`].
pub struct CallDetector {
    syntax: ToolSyntax,
    text: String,
    /// Bytes of `text` already released as content.
    released: usize,
    state: Detection,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Detection {
    Undecided,
    Text,
    Calls,
}

impl CallDetector {
    pub fn new(syntax: ToolSyntax) -> Self {
        Self {
            syntax,
            text: String::new(),
            released: 0,
            state: Detection::Undecided,
        }
    }

    /// Adds a piece; returns the text that may be sent now (possibly empty).
    pub fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        if self.state == Detection::Undecided {
            let triggers = self.syntax.triggers();
            let so_far = self.text.trim_start();
            if triggers.iter().any(|t| so_far.starts_with(t)) {
                self.state = Detection::Calls;
            } else if !triggers.iter().any(|t| t.starts_with(so_far)) {
                self.state = Detection::Text;
            }
        }
        match self.state {
            Detection::Text => self.release(),
            Detection::Undecided | Detection::Calls => String::new(),
        }
    }

    /// The end: text not yet sent, and the calls.
    pub fn finish(mut self, id_seed: &str) -> ParsedOutput {
        match self.state {
            Detection::Calls => self.syntax.parse(&self.text, id_seed),
            Detection::Undecided | Detection::Text => ParsedOutput {
                content: self.release(),
                calls: Vec::new(),
            },
        }
    }

    fn release(&mut self) -> String {
        let fresh = self.text[self.released..].to_owned();
        self.released = self.text.len();
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tool_forms_parse_to_the_same_spec() {
        let parameters = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let limits = SchemaLimits::default();
        let legacy = parse_tools(
            Some(&json!([{"name": "get_weather",
            "description": "Weather", "parameters": parameters}])),
            &limits,
        )
        .expect("legacy form");
        let openai = parse_tools(
            Some(&json!([{"type": "function", "function":
            {"name": "get_weather", "description": "Weather", "parameters": parameters}}])),
            &limits,
        )
        .expect("OpenAI form");
        assert_eq!(legacy, openai);
        assert!(parse_tools(Some(&json!([{"type": "custom"}])), &limits).is_err());
        assert!(parse_tools(Some(&json!([{"description": "no name"}])), &limits).is_err());
    }

    #[test]
    fn tool_schemas_are_guarded() {
        let limits = SchemaLimits {
            max_tools: 3,
            max_bytes: 400,
            ..SchemaLimits::default()
        };
        let tool = |parameters: Value| json!({"name": "f", "parameters": parameters});
        let refused = |tools: Value, needle: &str| {
            let error = parse_tools(Some(&tools), &limits).expect_err("refused");
            assert!(error.message.contains(needle), "{}", error.message);
        };
        let small = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        refused(Value::Array(vec![tool(small.clone()); 4]), "max_tools");
        refused(
            json!([tool(json!({"anyOf": [{"$ref": "#"}, {"type": "integer"}]}))]),
            "'tools[0].parameters' refers to itself without consuming input",
        );
        refused(
            json!([tool(small.clone()), tool(json!({"not": {"$ref": "#"}}))]),
            "'tools[1].parameters'",
        );
        // Each under max_bytes, together over it: they become one grammar.
        let padded = json!({"type": "object", "description": "x".repeat(150)});
        assert!(parse_tools(Some(&json!([tool(padded.clone())])), &limits).is_ok());
        refused(
            Value::Array(vec![tool(padded.clone()); 3]),
            "all 'tools' together",
        );
        // Client guidance options are removed.
        let tools = parse_tools(
            Some(&json!([tool(
                json!({"type": "object", "x-guidance": {"lenient": true}})
            )])),
            &limits,
        )
        .expect("accepted");
        assert_eq!(tools[0].parameters, json!({"type": "object"}));
    }

    #[test]
    fn tool_choice_forms() {
        assert_eq!(parse_tool_choice(None).unwrap(), ToolChoice::Auto);
        assert_eq!(
            parse_tool_choice(Some(&json!("none"))).unwrap(),
            ToolChoice::None
        );
        assert_eq!(
            parse_tool_choice(Some(&json!("required"))).unwrap(),
            ToolChoice::Required
        );
        assert_eq!(
            parse_tool_choice(Some(
                &json!({"type": "function", "function": {"name": "f"}})
            ))
            .unwrap(),
            ToolChoice::Named("f".into())
        );
        assert!(parse_tool_choice(Some(&json!("sometimes"))).is_err());
    }

    #[test]
    fn openai_arguments_strings_become_objects() {
        let calls = parse_message_calls(Some(&json!([{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])))
        .expect("parses");
        assert_eq!(calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(calls[0].id, "call_1");
    }

    #[test]
    fn however_the_text_is_split_the_detector_returns_all_of_it() {
        let texts = [
            "Paris is sunny.",
            "<tool", // held, then released at the end
            "{not a call}",
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
        ];
        for text in texts {
            for split in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
                let mut detector = CallDetector::new(ToolSyntax::Hermes);
                let mut released = detector.push(&text[..split]);
                released.push_str(&detector.push(&text[split..]));
                let parsed = detector.finish("s");
                released.push_str(&parsed.content);
                if parsed.calls.is_empty() {
                    assert_eq!(released, text, "split at {split}");
                } else {
                    assert_eq!(released, "", "a call leaks no text (split at {split})");
                }
            }
        }
    }

    #[test]
    fn the_detector_holds_calls_and_releases_text() {
        let mut text = CallDetector::new(ToolSyntax::Hermes);
        assert_eq!(text.push("Par"), "Par");
        assert_eq!(text.push("is"), "is");
        assert!(text.finish("s").calls.is_empty());

        let mut call = CallDetector::new(ToolSyntax::Hermes);
        for piece in [
            "<tool",
            "_call>\n{\"name\": \"f\", ",
            "\"arguments\": {}}\n</tool_call>",
        ] {
            assert_eq!(call.push(piece), "");
        }
        let parsed = call.finish("s");
        assert_eq!(parsed.calls.len(), 1);
        assert_eq!(parsed.content, "");

        // Held text that never became a call is released at the end.
        let mut short = CallDetector::new(ToolSyntax::Hermes);
        assert_eq!(short.push("<tool"), "");
        assert_eq!(short.finish("s").content, "<tool");
    }
}
