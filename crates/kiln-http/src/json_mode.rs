//! JSON mode: `response_format` in both the Workers AI and the OpenAI shape, the constraint the
//! engine enforces while sampling, and the check of the finished text against the schema.

use std::sync::Arc;

use kiln_core::limits::SchemaLimits;
use kiln_core::schema_guard::{self, GUIDANCE_KEY};
use kiln_core::{ErrorKind, KilnError, KilnResult, OutputConstraint};
use serde_json::{json, Map, Value};

/// What Workers AI answers when the output could not be made to match (spec §3.1.4).
pub const UNMET: &str = "JSON Mode couldn't be met";

/// Most (subschema, value) pairs one check may visit; ~0.1 s in a debug build.
const VALIDATION_BUDGET: usize = 250_000;

/// A request's structured-output contract.
#[derive(Debug)]
pub struct JsonMode {
    schema: Value,
    validator: jsonschema::Validator,
}

impl JsonMode {
    /// Native input: `response_format` (the bare schema, or OpenAI's `{name, schema, strict}`
    /// envelope) or `guided_json` (a bare schema, as llama-4-scout takes it).
    pub fn from_native(input: &Value, limits: &SchemaLimits) -> KilnResult<Option<Arc<Self>>> {
        if let Some(schema) = input.get("guided_json").filter(|v| !v.is_null()) {
            return Self::new(schema.clone(), "guided_json", limits).map(Some);
        }
        match input.get("response_format") {
            None | Some(Value::Null) => Ok(None),
            Some(format) => Self::from_response_format(format, "response_format", limits),
        }
    }

    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": …}`; `field` names the
    /// field in errors.
    pub fn from_response_format(
        format: &Value,
        field: &str,
        limits: &SchemaLimits,
    ) -> KilnResult<Option<Arc<Self>>> {
        let object = format
            .as_object()
            .ok_or_else(|| KilnError::bad_input(format!("'{field}' must be an object")))?;
        let schema = object.get("json_schema").filter(|v| !v.is_null());
        match object.get("type").and_then(Value::as_str) {
            Some("text") => Ok(None),
            Some("json_object") => {
                let schema = schema.map_or_else(|| json!({"type": "object"}), unwrap_envelope);
                Self::new(schema, field, limits).map(Some)
            }
            Some("json_schema") => {
                let schema = schema.ok_or_else(|| {
                    KilnError::bad_input(format!(
                        "'{field}.json_schema' is required when '{field}.type' is \"json_schema\""
                    ))
                })?;
                Self::new(unwrap_envelope(schema), field, limits).map(Some)
            }
            other => Err(KilnError::bad_input(format!(
                "'{field}.type' must be \"text\", \"json_object\" or \"json_schema\", not {}",
                other.map_or_else(|| "missing".to_owned(), |t| format!("{t:?}"))
            ))),
        }
    }

    /// Checks the client's schema against `limits` (see [`schema_guard`]) before anything
    /// compiles it, then compiles the validator on a thread with a known, large stack.
    fn new(mut schema: Value, field: &str, limits: &SchemaLimits) -> KilnResult<Arc<Self>> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(KilnError::bad_input(format!(
                "'{field}' must hold a JSON Schema object"
            )));
        }
        schema_guard::guard(&mut schema, limits, field)?;
        let compiled =
            schema_guard::on_large_stack("compiling the JSON schema", || compile(&schema))?;
        let validator = compiled.map_err(|error| {
            KilnError::bad_input(format!(
                "'{field}' is not a valid JSON Schema: {}",
                first_line(&error)
            ))
        })?;
        Ok(Arc::new(Self { schema, validator }))
    }

    /// What the engine enforces: the schema, with JSON laid out as `{"a": 1, "b": [2, 3]}`.
    /// Fixed separators keep a small model from filling `max_tokens` with whitespace.
    pub fn constraint(&self) -> OutputConstraint {
        let mut schema = self.schema.clone();
        if let Value::Object(map) = &mut schema {
            // The client's own `x-guidance` was stripped by the guard; these are Kiln's.
            map.insert(
                GUIDANCE_KEY.to_owned(),
                json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
            );
        }
        OutputConstraint::JsonSchema(schema)
    }

    /// The finished text as JSON, if it parses and validates. Runs on a thread with a known,
    /// large stack: validation recurses on the schema and the output together.
    pub fn check(&self, text: &str) -> KilnResult<Value> {
        schema_guard::on_large_stack("checking the output against the schema", || {
            self.check_here(text)
        })?
    }

    fn check_here(&self, text: &str) -> KilnResult<Value> {
        let value: Value = serde_json::from_str(text.trim()).map_err(|error| {
            KilnError::new(
                ErrorKind::BadInput,
                format!("{UNMET}: the output is not JSON ({error})"),
            )
        })?;
        // Recursion through input can multiply the work per level of the answer: measured
        // first, so validation is bounded whatever the answer.
        if !schema_guard::validation_within(&self.schema, &value, VALIDATION_BUDGET) {
            return Err(KilnError::new(
                ErrorKind::BadInput,
                format!(
                    "{UNMET}: checking the output against the schema would take more than \
                     {VALIDATION_BUDGET} steps"
                ),
            ));
        }
        if let Some(error) = self.validator.iter_errors(&value).next() {
            return Err(KilnError::new(
                ErrorKind::BadInput,
                format!(
                    "{UNMET}: the output does not match the schema ({})",
                    first_line(&error.to_string())
                ),
            ));
        }
        Ok(value)
    }
}

/// The validator: local `$ref`s only (the retriever refuses every URI, whatever features the
/// crate was built with), and regular expressions with bounded size and backtracking.
fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_retriever(NoFetch)
        .with_pattern_options(
            jsonschema::PatternOptions::fancy_regex()
                .backtrack_limit(100_000)
                .size_limit(256 * 1024)
                .dfa_size_limit(256 * 1024),
        )
        .build(schema)
        .map_err(|error| error.to_string())
}

/// Never fetches: a schema from a client must not make Kiln open connections or files.
struct NoFetch;

impl jsonschema::Retrieve for NoFetch {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri} is not fetched: only local references ('#/…') are resolved").into())
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
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
        let mode =
            JsonMode::from_response_format(&format, "response_format", &SchemaLimits::default())
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
        assert!(JsonMode::from_response_format(
            &json!({"type": "text"}),
            "response_format",
            &SchemaLimits::default()
        )
        .expect("accepted")
        .is_none());
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
            let error = JsonMode::from_response_format(
                &format,
                "response_format",
                &SchemaLimits::default(),
            )
            .expect_err("refused");
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }

    fn native(input: Value) -> KilnResult<Option<Arc<JsonMode>>> {
        JsonMode::from_native(&input, &SchemaLimits::default())
    }

    /// The two requests that used to kill the process: compiling them was fine, validating
    /// the model's answer recursed forever (`not` → `$ref: "#"` → `not` …: a stack overflow on
    /// the runtime thread; `anyOf` → `$ref: "#"`: each level lazily compiled again, memory
    /// without bound). Now refused before anything compiles, as a 400 naming the cycle.
    #[test]
    fn self_referencing_schemas_are_refused_before_compiling() {
        for input in [
            json!({"guided_json": {"type": "integer", "not": {"$ref": "#"},
                "x-guidance": {"lenient": true}}}),
            json!({"response_format": {"type": "json_schema",
                "json_schema": {"anyOf": [{"$ref": "#"}, {"type": "integer"}]}}}),
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "n",
                "schema": {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}},
                    "$ref": "#/$defs/a"}}}}),
        ] {
            let error = native(input).expect_err("refused");
            assert_eq!(error.kind, ErrorKind::BadInput);
            assert!(
                error.message.contains("without consuming input"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn recursive_schemas_that_consume_input_compile_and_check() {
        let mode = native(json!({"guided_json": {"type": "object",
            "properties": {"v": {"type": "integer"}, "next": {"$ref": "#"}}}}))
        .expect("accepted")
        .expect("JSON mode");
        // As deep as serde_json parses (128), on the schema thread.
        let mut text = "{\"v\": 1}".to_owned();
        for _ in 0..120 {
            text = format!("{{\"next\": {text}}}");
        }
        assert!(mode.check(&text).is_ok());
        assert!(mode.check("{\"next\": {\"v\": \"x\"}}").is_err());
    }

    #[test]
    fn client_guidance_options_never_reach_the_engine() {
        let mode = native(json!({"guided_json": {"type": "object",
            "x-guidance": {"lenient": true, "whitespace_flexible": true},
            "properties": {"a": {"type": "integer", "x-guidance": {"lenient": true}}}}}))
        .expect("accepted")
        .expect("JSON mode");
        let OutputConstraint::JsonSchema(schema) = mode.constraint() else {
            panic!("a JSON schema constraint");
        };
        assert_eq!(
            schema[GUIDANCE_KEY],
            json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
        );
        assert!(schema["properties"]["a"].get(GUIDANCE_KEY).is_none());
        assert!(!schema.to_string().contains("lenient"));
    }

    #[test]
    fn limits_and_remote_refs_are_refused() {
        let limits = SchemaLimits {
            max_depth: 4,
            max_bytes: 200,
            ..SchemaLimits::default()
        };
        let deep = json!({"guided_json": {"type": "object", "properties": {"a":
            {"type": "object", "properties": {"b": {"type": "integer"}}}}}});
        let error = JsonMode::from_native(&deep, &limits).expect_err("too deep");
        assert!(error.message.contains("max_depth"), "{}", error.message);
        let big = json!({"guided_json": {"type": "string", "description": "x".repeat(300)}});
        let error = JsonMode::from_native(&big, &limits).expect_err("too big");
        assert!(error.message.contains("max_bytes"), "{}", error.message);
        // Refused by the guard; and jsonschema's retriever would refuse it too.
        let remote = json!({"guided_json": {"$ref": "http://127.0.0.1:9/schema.json"}});
        let error = native(remote).expect_err("remote");
        assert!(error.message.contains("is not local"), "{}", error.message);
        let fetched = compile(&json!({"$ref": "http://127.0.0.1:9/schema.json"}));
        assert!(fetched.is_err());
    }

    /// A random schema of nesting, combining and referring keywords, `depth` levels deep.
    fn random_schema(rng: &mut rand::rngs::StdRng, depth: usize) -> Value {
        use rand::Rng;
        const REFS: [&str; 7] = [
            "#",
            "#/anyOf/0",
            "#/properties/p",
            "#/$defs/a",
            "#/$defs/a/not",
            "#/items",
            "#/allOf/1",
        ];
        if depth == 0 || rng.random_range(0..4) == 0 {
            return match rng.random_range(0..4) {
                0 => json!({"type": "integer"}),
                1 => json!(true),
                2 => json!({"type": "string", "pattern": "^(a+)+$"}),
                _ => json!({"$ref": REFS[rng.random_range(0..REFS.len())]}),
            };
        }
        let mut child = || random_schema(rng, depth - 1);
        let (a, b) = (child(), child());
        let keys = [
            "not",
            "anyOf",
            "allOf",
            "items",
            "properties",
            "$defs",
            "if",
        ];
        let key = keys[rng.random_range(0..keys.len())];
        let value = match key {
            "anyOf" | "allOf" => json!([a, b]),
            "properties" => json!({"p": a, "q": b}),
            "$defs" => json!({"a": a, "b": b}),
            _ => a,
        };
        json!({key: value, "type": ["object", "array", "integer"]})
    }

    /// Whatever the guard lets through compiles and validates within a budget, on any answer:
    /// the guard and the compilers agree on what is bounded.
    #[test]
    fn random_schemas_compile_and_check_within_budget() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let answers = [
            "1",
            "{}",
            "[]",
            "{\"p\": {\"p\": [1]}}",
            "[[[]]]",
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaa!\"",
        ];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..400 {
            let schema = random_schema(&mut rng, 5);
            let started = std::time::Instant::now();
            match native(json!({"guided_json": schema.clone()})) {
                Ok(Some(mode)) => {
                    accepted += 1;
                    for answer in answers {
                        let _ = mode.check(answer);
                    }
                }
                Ok(None) => unreachable!("guided_json is JSON mode"),
                Err(_) => refused += 1,
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{schema}"
            );
        }
        assert!(
            accepted > 20 && refused > 20,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn check_parses_and_validates() {
        let mode = JsonMode::from_response_format(
            &json!({"type": "json_schema", "json_schema": {"type": "object",
                "properties": {"n": {"type": "integer", "maximum": 3}}, "required": ["n"]}}),
            "response_format",
            &SchemaLimits::default(),
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
