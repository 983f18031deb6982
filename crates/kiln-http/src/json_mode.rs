//! JSON mode: `response_format` in both the Workers AI and the OpenAI shape, the constraint the
//! engine enforces while sampling, and the check of the finished text against the schema.

use std::sync::Arc;

use kiln_core::{ErrorKind, KilnError, KilnResult, OutputConstraint};
use serde_json::{json, Map, Value};

/// What Workers AI answers when the output could not be made to match (spec §3.1.4).
pub const UNMET: &str = "JSON Mode couldn't be met";

/// A request's structured-output contract.
#[derive(Debug)]
pub struct JsonMode {
    schema: Value,
    validator: jsonschema::Validator,
}

impl JsonMode {
    /// Native input: `response_format` (the bare schema, or OpenAI's `{name, schema, strict}`
    /// envelope) or `guided_json` (a bare schema, as llama-4-scout takes it).
    pub fn from_native(input: &Value) -> KilnResult<Option<Arc<Self>>> {
        if let Some(schema) = input.get("guided_json").filter(|v| !v.is_null()) {
            return Self::new(schema.clone(), "guided_json").map(Some);
        }
        match input.get("response_format") {
            None | Some(Value::Null) => Ok(None),
            Some(format) => Self::from_response_format(format, "response_format"),
        }
    }

    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": …}`; `field` names the
    /// field in errors.
    pub fn from_response_format(format: &Value, field: &str) -> KilnResult<Option<Arc<Self>>> {
        let object = format
            .as_object()
            .ok_or_else(|| KilnError::bad_input(format!("'{field}' must be an object")))?;
        let schema = object.get("json_schema").filter(|v| !v.is_null());
        match object.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => {
                let schema = schema.map_or_else(|| json!({"type": "object"}), unwrap_envelope);
                Self::new(schema, field).map(Some)
            }
            Some("json_schema") => {
                let schema = schema.ok_or_else(|| {
                    KilnError::bad_input(format!(
                        "'{field}.json_schema' is required when '{field}.type' is \"json_schema\""
                    ))
                })?;
                Self::new(unwrap_envelope(schema), field).map(Some)
            }
            other => Err(KilnError::bad_input(format!(
                "'{field}.type' must be \"text\", \"json_object\" or \"json_schema\", not {}",
                other.map_or_else(|| "missing".to_owned(), |t| format!("{t:?}"))
            ))),
        }
    }

    fn new(schema: Value, field: &str) -> KilnResult<Arc<Self>> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(KilnError::bad_input(format!(
                "'{field}' must hold a JSON Schema object"
            )));
        }
        let validator = jsonschema::validator_for(&schema).map_err(|error| {
            KilnError::bad_input(format!("'{field}' is not a valid JSON Schema: {error}"))
        })?;
        Ok(Arc::new(Self { schema, validator }))
    }

    /// What the engine enforces: the schema, with JSON laid out as `{"a": 1, "b": [2, 3]}`.
    /// Fixed separators keep a small model from filling `max_tokens` with whitespace.
    pub fn constraint(&self) -> OutputConstraint {
        let mut schema = self.schema.clone();
        if let Value::Object(map) = &mut schema {
            map.entry("x-guidance").or_insert_with(|| {
                json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
            });
        }
        OutputConstraint::JsonSchema(schema)
    }

    /// The finished text as JSON, if it parses and validates.
    pub fn check(&self, text: &str) -> KilnResult<Value> {
        let value: Value = serde_json::from_str(text.trim()).map_err(|error| {
            KilnError::new(
                ErrorKind::BadInput,
                format!("{UNMET}: the output is not JSON ({error})"),
            )
        })?;
        if let Some(error) = self.validator.iter_errors(&value).next() {
            return Err(KilnError::new(
                ErrorKind::BadInput,
                format!("{UNMET}: the output does not match the schema ({error})"),
            ));
        }
        Ok(value)
    }
}

/// OpenAI's `{name, description?, schema?, strict?}` around a schema (no `schema`: any JSON),
/// or the bare schema itself.
fn unwrap_envelope(value: &Value) -> Value {
    match value.as_object() {
        Some(object) if is_envelope(object) => {
            object.get("schema").cloned().unwrap_or_else(|| json!({}))
        }
        _ => value.clone(),
    }
}

/// An envelope has a `name` or a `schema` object, and nothing at its top level that only a
/// schema would have.
fn is_envelope(object: &Map<String, Value>) -> bool {
    const SCHEMA_KEYWORDS: [&str; 6] = ["type", "properties", "$ref", "anyOf", "oneOf", "enum"];
    let wrapped = object.contains_key("name") || object.get("schema").is_some_and(Value::is_object);
    wrapped && !SCHEMA_KEYWORDS.iter().any(|k| object.contains_key(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(format: Value) -> Value {
        let mode = JsonMode::from_response_format(&format, "response_format")
            .expect("accepted")
            .expect("JSON mode");
        mode.schema.clone()
    }

    #[test]
    fn bare_schema_and_openai_envelope_give_the_same_schema() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let bare = schema_of(json!({"type": "json_schema", "json_schema": schema}));
        let wrapped = schema_of(json!({"type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": true}}));
        assert_eq!(bare, schema);
        assert_eq!(wrapped, schema);
        // An envelope without a schema allows any JSON.
        assert_eq!(
            schema_of(json!({"type": "json_schema", "json_schema": {"name": "any"}})),
            json!({})
        );
        // A bare schema with a property called "schema" is not an envelope.
        let tricky = json!({"type": "object", "properties": {"schema": {"type": "string"}}});
        assert_eq!(
            schema_of(json!({"type": "json_schema", "json_schema": tricky})),
            tricky
        );
    }

    #[test]
    fn json_object_means_any_object_and_text_means_none() {
        assert_eq!(
            schema_of(json!({"type": "json_object"})),
            json!({"type": "object"})
        );
        assert!(
            JsonMode::from_response_format(&json!({"type": "text"}), "response_format")
                .expect("accepted")
                .is_none()
        );
    }

    #[test]
    fn bad_formats_are_named() {
        for (format, expected) in [
            (json!({"type": "xml"}), "'response_format.type'"),
            (
                json!({"type": "json_schema"}),
                "'response_format.json_schema' is required",
            ),
            (json!("json"), "must be an object"),
            (
                json!({"type": "json_schema", "json_schema": {"type": 12}}),
                "not a valid JSON Schema",
            ),
        ] {
            let error =
                JsonMode::from_response_format(&format, "response_format").expect_err("refused");
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }

    #[test]
    fn check_parses_and_validates() {
        let mode = JsonMode::from_response_format(
            &json!({"type": "json_schema", "json_schema": {"type": "object",
                "properties": {"n": {"type": "integer", "maximum": 3}}, "required": ["n"]}}),
            "response_format",
        )
        .expect("accepted")
        .expect("JSON mode");
        assert_eq!(mode.check(" {\"n\": 2}\n").expect("valid"), json!({"n": 2}));
        for bad in ["{\"n\": 2", "{\"n\": 9}", "{}"] {
            let error = mode.check(bad).expect_err("unmet");
            assert!(error.message.starts_with(UNMET), "{}", error.message);
        }
    }
}
