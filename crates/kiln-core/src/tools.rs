//! Tool calling: the tools a request offers, the calls a model makes, and the per-template-family
//! syntax of those calls (how they are constrained while sampling and parsed afterwards).

use serde::Serialize;
use serde_json::{json, Map, Value};

/// Keywords whose values are data, not schemas: a `"$ref"` key inside them is not a reference.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];

/// Whether a schema holds a `$ref` (outside data). Walks with a stack: no recursion on a
/// client's data.
fn has_ref(schema: &Value) -> bool {
    let mut stack = vec![schema];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if map.get("$ref").is_some_and(Value::is_string) {
                    return true;
                }
                stack.extend(
                    map.iter()
                        .filter(|(key, _)| !DATA_KEYWORDS.contains(&key.as_str()))
                        .map(|(_, value)| value),
                );
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

/// Rewrites each local `$ref` (`#…`) of a schema that now lives at `at` to point there.
fn relocate_refs(schema: &mut Value, at: &str) {
    let mut stack = vec![schema];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get_mut("$ref") {
                    if let Some(rest) = reference.strip_prefix('#') {
                        *reference = format!("{at}{rest}");
                    }
                }
                stack.extend(
                    map.iter_mut()
                        .filter(|(key, _)| !DATA_KEYWORDS.contains(&key.as_str()))
                        .map(|(_, value)| value),
                );
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

impl ToolSpec {
    /// The OpenAI / Hugging Face shape chat templates expect in `tools`.
    pub fn template_value(&self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), json!(self.name));
        if let Some(description) = &self.description {
            function.insert("description".into(), json!(description));
        }
        function.insert("parameters".into(), self.parameters.clone());
        json!({"type": "function", "function": function})
    }
}

/// A call the model made (or made in an earlier turn).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments object.
    pub arguments: Value,
}

impl Serialize for ToolCall {
    /// The shape chat templates read: `{id, type, function: {name, arguments}}`, arguments an
    /// object (templates apply `tojson` themselves).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
        .serialize(serializer)
    }
}

/// Whether and which tools the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides between answering and calling.
    #[default]
    Auto,
    /// No calls: tools are not shown to the model.
    None,
    /// At least one call, to any tool.
    Required,
    /// One call to this tool.
    Named(String),
}

/// How a chat template's model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// Qwen 2.5, Hermes 2 Pro: `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`.
    Hermes,
    /// Llama 3.1+: a bare `{"name": …, "parameters": {…}}`, optionally after `<|python_tag|>`.
    Llama3Json,
    /// Mistral v3+: `[TOOL_CALLS] [{"name": …, "arguments": {…}}, …]`.
    Mistral,
}

/// The model's answer split into text and tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedOutput {
    pub content: String,
    pub calls: Vec<ToolCall>,
}

impl ToolSyntax {
    /// Markers that models may emit as one special token. Grammars write each as its own
    /// string literal (`"<tool_call>"`) so an engine can also allow that token.
    pub const MARKERS: [&'static str; 4] = [
        "<tool_call>",
        "</tool_call>",
        "[TOOL_CALLS]",
        "<|python_tag|>",
    ];

    /// The syntax a chat template teaches its model, if it teaches one.
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains("<tool_call>") {
            Some(Self::Hermes)
        } else if template.contains("[TOOL_CALLS]") {
            Some(Self::Mistral)
        } else if template.contains("<|python_tag|>") || template.contains("ipython") {
            Some(Self::Llama3Json)
        } else {
            None
        }
    }

    /// What the output starts with when the model calls a tool.
    pub fn triggers(self) -> &'static [&'static str] {
        match self {
            Self::Hermes => &["<tool_call>", "{\"name\""],
            Self::Llama3Json => &["{\"name\"", "<|python_tag|>"],
            Self::Mistral => &["[TOOL_CALLS]"],
        }
    }

    fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3Json => "parameters",
            Self::Hermes | Self::Mistral => "arguments",
        }
    }

    /// A Lark grammar (llguidance's dialect) for `choice` over `tools`: calls only, with
    /// arguments that match each tool's schema; for `Auto`, also free text that does not start
    /// like a call. `None` when nothing needs constraining (`ToolChoice::None`).
    pub fn grammar(self, tools: &[ToolSpec], choice: &ToolChoice) -> Option<String> {
        let offered: Vec<&ToolSpec> = match choice {
            ToolChoice::None => return None,
            ToolChoice::Named(name) => tools.iter().filter(|t| &t.name == name).collect(),
            ToolChoice::Auto | ToolChoice::Required => tools.iter().collect(),
        };
        if offered.is_empty() {
            return None;
        }
        let call_schema = self.call_schema(&offered);
        let call = format!("%json {call_schema}");
        let calls = match (self, choice) {
            (Self::Hermes, ToolChoice::Named(_)) => {
                "\"<tool_call>\" \"\\n\" call \"\\n\" \"</tool_call>\"".to_owned()
            }
            (Self::Hermes, _) => "\"<tool_call>\" \"\\n\" call \"\\n\" \"</tool_call>\" (\"\\n\" \"<tool_call>\" \"\\n\" call \"\\n\" \"</tool_call>\")*".to_owned(),
            (Self::Llama3Json, _) => "call".to_owned(),
            (Self::Mistral, ToolChoice::Named(_)) => {
                "\"[TOOL_CALLS]\" \" [\" call \"]\"".to_owned()
            }
            (Self::Mistral, _) => "\"[TOOL_CALLS]\" \" [\" call (\", \" call)* \"]\"".to_owned(),
        };
        let start = match (self, choice) {
            // Free text may not begin like a call. Small Hermes models often leave out the
            // `<tool_call>` tags; a bare call object is accepted (and constrained) too.
            (Self::Hermes, ToolChoice::Auto) => {
                "start: calls | call | TEXT\nTEXT: /[^<{\\s][\\s\\S]*/\n".to_owned()
            }
            (Self::Llama3Json, ToolChoice::Auto) => {
                "start: calls | TEXT\nTEXT: /[^{\\s][\\s\\S]*/\n".to_owned()
            }
            (Self::Mistral, ToolChoice::Auto) => {
                "start: calls | TEXT\nTEXT: /[^\\[\\s][\\s\\S]*/\n".to_owned()
            }
            _ => "start: calls\n".to_owned(),
        };
        Some(format!("{start}calls: {calls}\ncall: {call}\n"))
    }

    /// `{"name": <one of the tools>, "<arguments key>": <that tool's parameters>}`.
    ///
    /// Parameters with a `$ref` are placed under `$defs` and their local `$ref`s rewritten to
    /// point there: a tool's `#` means its own parameters, not this schema's root. (Without
    /// that, a `$ref` could also reach places of this schema the parameters' checks never saw.)
    pub fn call_schema(self, tools: &[&ToolSpec]) -> Value {
        let mut definitions = Map::new();
        let variants: Vec<Value> = tools
            .iter()
            .enumerate()
            .map(|(index, tool)| {
                let mut parameters = if tool.parameters.is_object() {
                    tool.parameters.clone()
                } else {
                    json!({"type": "object"})
                };
                if let Value::Object(map) = &mut parameters {
                    // Only the document root may name a base URI or a draft.
                    map.retain(|key, _| key != "$id" && key != "$schema");
                }
                if has_ref(&parameters) {
                    let name = format!("tool{index}");
                    let at = format!("#/$defs/{name}");
                    relocate_refs(&mut parameters, &at);
                    definitions.insert(name, parameters);
                    parameters = json!({"$ref": at});
                }
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": tool.name},
                        self.arguments_key(): parameters,
                    },
                    "required": ["name", self.arguments_key()],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut schema = match <[Value; 1]>::try_from(variants) {
            Ok([only]) => only,
            Err(variants) => json!({"anyOf": variants}),
        };
        if let Value::Object(map) = &mut schema {
            if !definitions.is_empty() {
                map.insert("$defs".into(), Value::Object(definitions));
            }
            map.insert(
                "x-guidance".into(),
                json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
            );
        }
        schema
    }

    /// Splits a finished answer into text and calls. Call ids are `call_<n>` plus `id_seed`, so
    /// they are unique within a response.
    pub fn parse(self, text: &str, id_seed: &str) -> ParsedOutput {
        let mut content = String::new();
        let mut calls = Vec::new();
        match self {
            Self::Hermes => {
                let mut rest = text;
                while let Some(start) = rest.find("<tool_call>") {
                    content.push_str(&rest[..start]);
                    let after = &rest[start + "<tool_call>".len()..];
                    let (body, tail) = match after.find("</tool_call>") {
                        Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
                        None => (after, ""),
                    };
                    match self.call_from_json(body.trim()) {
                        Some(call) => calls.push(call),
                        None => content.push_str(&rest[start..rest.len() - tail.len()]),
                    }
                    rest = tail;
                }
                content.push_str(rest);
                // Without tags: the whole answer is one or more call objects.
                if calls.is_empty() {
                    if let Some(found) = self.bare_calls(text) {
                        calls = found;
                        content.clear();
                    }
                }
            }
            Self::Llama3Json => match self.bare_calls(text) {
                Some(found) => calls = found,
                None => content.push_str(text),
            },
            Self::Mistral => match text.trim().strip_prefix("[TOOL_CALLS]") {
                Some(body) => {
                    let values = serde_json::from_str::<Value>(body.trim()).ok();
                    let parsed: Option<Vec<ToolCall>> = match values {
                        Some(Value::Array(items)) => {
                            items.iter().map(|v| self.call_from_value(v)).collect()
                        }
                        Some(object @ Value::Object(_)) => {
                            self.call_from_value(&object).map(|c| vec![c])
                        }
                        _ => None,
                    };
                    match parsed {
                        Some(found) => calls = found,
                        None => content.push_str(text),
                    }
                }
                None => content.push_str(text),
            },
        }
        for (index, call) in calls.iter_mut().enumerate() {
            call.id = format!("call_{id_seed}{index}");
        }
        ParsedOutput {
            content: if calls.is_empty() {
                content
            } else {
                content.trim().to_owned()
            },
            calls,
        }
    }

    /// `{…}`, or several separated by `;` or newlines (after an optional `<|python_tag|>`),
    /// each a call object.
    fn bare_calls(self, text: &str) -> Option<Vec<ToolCall>> {
        let body = text.trim().trim_start_matches("<|python_tag|>").trim();
        let values = split_json_values(body)?;
        let calls: Option<Vec<ToolCall>> = values.iter().map(|v| self.call_from_value(v)).collect();
        calls.filter(|calls| !calls.is_empty())
    }

    fn call_from_json(self, body: &str) -> Option<ToolCall> {
        self.call_from_value(&serde_json::from_str(body).ok()?)
    }

    fn call_from_value(self, value: &Value) -> Option<ToolCall> {
        let name = value.get("name")?.as_str()?.to_owned();
        let arguments = value
            .get(self.arguments_key())
            .or_else(|| value.get("arguments"))
            .or_else(|| value.get("parameters"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        // Some models write the arguments as a JSON string.
        let arguments = match arguments {
            Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            other => other,
        };
        Some(ToolCall {
            id: String::new(),
            name,
            arguments,
        })
    }
}

/// `{…}; {…}` or `{…}\n{…}` → the values, or `None` if anything else is there.
fn split_json_values(text: &str) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    // A loop, not recursion per `;`: the text is a model's output, as long as it likes.
    let mut rest = text;
    loop {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        loop {
            match stream.next() {
                None => return Some(values),
                Some(Ok(value)) => values.push(value),
                Some(Err(_)) => break,
            }
        }
        // Skip one `;` separator and continue after it.
        let offset = stream.byte_offset();
        rest = rest[offset..].trim_start().strip_prefix(';')?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolSpec {
        ToolSpec {
            name: "get_weather".into(),
            description: Some("Weather in a city".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}),
        }
    }

    #[test]
    fn any_number_of_separated_values_splits_without_recursion() {
        let text = vec!["{}"; 200_000].join(";");
        let values = split_json_values(&text).expect("splits");
        assert_eq!(values.len(), 200_000);
        assert_eq!(split_json_values("{}; [1]").map(|v| v.len()), Some(2));
    }

    #[test]
    fn a_tools_refs_keep_meaning_its_own_parameters() {
        let tree = ToolSpec {
            name: "tree".into(),
            description: None,
            parameters: json!({"$id": "https://x/y", "type": "object",
                "$defs": {"leaf": {"type": "integer", "const": {"$ref": "#"}}},
                "properties": {"left": {"$ref": "#"}, "leaf": {"$ref": "#/$defs/leaf"}}}),
        };
        let schema = ToolSyntax::Hermes.call_schema(&[&weather(), &tree]);
        let relocated = &schema["$defs"]["tool1"];
        assert_eq!(
            relocated["properties"]["left"],
            json!({"$ref": "#/$defs/tool1"})
        );
        assert_eq!(
            relocated["properties"]["leaf"],
            json!({"$ref": "#/$defs/tool1/$defs/leaf"})
        );
        // Data is not a reference; the root's `$id` would move what `#` means.
        assert_eq!(relocated["$defs"]["leaf"]["const"], json!({"$ref": "#"}));
        assert!(relocated.get("$id").is_none());
        assert_eq!(
            schema["anyOf"][1]["properties"]["arguments"],
            json!({"$ref": "#/$defs/tool1"})
        );
        // A tool without refs is inlined, as before.
        assert_eq!(
            schema["anyOf"][0]["properties"]["arguments"],
            weather().parameters
        );
        // What the guard checked on the parameters alone holds for the composed schema.
        let limits = crate::limits::SchemaLimits::default();
        let mut composed = schema.clone();
        assert!(crate::schema_guard::guard(&mut composed, &limits, "tools").is_ok());
        let sneaky = ToolSpec {
            name: "sneaky".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"arguments": {"type": "object"}},
                "anyOf": [{"$ref": "#/properties/arguments"}]}),
        };
        let mut alone = sneaky.parameters.clone();
        assert!(crate::schema_guard::guard(&mut alone, &limits, "p").is_ok());
        let mut composed = ToolSyntax::Hermes.call_schema(&[&sneaky]);
        assert!(crate::schema_guard::guard(&mut composed, &limits, "tools").is_ok());
    }

    #[test]
    fn template_families_are_detected() {
        assert_eq!(
            ToolSyntax::detect("…<tool_call>\\n{\"name\"…"),
            Some(ToolSyntax::Hermes)
        );
        assert_eq!(
            ToolSyntax::detect("{{ '[TOOL_CALLS]' }}"),
            Some(ToolSyntax::Mistral)
        );
        assert_eq!(
            ToolSyntax::detect("<|start_header_id|>ipython<|end_header_id|>"),
            Some(ToolSyntax::Llama3Json)
        );
        assert_eq!(ToolSyntax::detect("{{ message.content }}"), None);
    }

    #[test]
    fn hermes_calls_and_text_are_split() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        let parsed = ToolSyntax::Hermes.parse(text, "x");
        assert_eq!(parsed.content, "Let me check.");
        assert_eq!(parsed.calls.len(), 2);
        assert_eq!(parsed.calls[0].name, "get_weather");
        assert_eq!(parsed.calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(parsed.calls[1].arguments, json!({"city": "Rome"}));
        assert_ne!(parsed.calls[0].id, parsed.calls[1].id);
        // Tags left out: a bare call object is still a call.
        let bare = ToolSyntax::Hermes.parse(
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
            "x",
        );
        assert_eq!(bare.calls.len(), 1);
        assert_eq!(bare.content, "");
        // A broken call stays text.
        let broken = ToolSyntax::Hermes.parse("<tool_call>\n{oops\n</tool_call>", "x");
        assert!(broken.calls.is_empty());
        assert_eq!(broken.content, "<tool_call>\n{oops\n</tool_call>");
    }

    #[test]
    fn llama3_and_mistral_calls_are_parsed() {
        let llama = ToolSyntax::Llama3Json.parse(
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            "y",
        );
        assert_eq!(llama.calls.len(), 2);
        assert_eq!(llama.calls[1].arguments, json!({"city": "Oslo"}));
        let plain = ToolSyntax::Llama3Json.parse("Paris is sunny.", "y");
        assert_eq!(
            (plain.content.as_str(), plain.calls.len()),
            ("Paris is sunny.", 0)
        );
        let mistral = ToolSyntax::Mistral.parse(
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}]",
            "z",
        );
        assert_eq!(mistral.calls[0].arguments, json!({"city": "Paris"}));
    }

    #[test]
    fn grammars_follow_the_choice() {
        let tools = [weather()];
        assert!(ToolSyntax::Hermes
            .grammar(&tools, &ToolChoice::None)
            .is_none());
        let auto = ToolSyntax::Hermes
            .grammar(&tools, &ToolChoice::Auto)
            .expect("grammar");
        assert!(auto.starts_with("start: calls | call | TEXT"), "{auto}");
        let required = ToolSyntax::Hermes
            .grammar(&tools, &ToolChoice::Required)
            .expect("grammar");
        assert!(required.starts_with("start: calls\n"), "{required}");
        assert!(required.contains("\"const\":\"get_weather\""), "{required}");
        assert!(ToolSyntax::Hermes
            .grammar(&tools, &ToolChoice::Named("other".into()))
            .is_none());
    }

    #[test]
    fn tool_calls_serialize_for_templates() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "Paris"}),
        };
        assert_eq!(
            serde_json::to_value(&call).expect("serializes"),
            json!({"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}})
        );
    }
}
