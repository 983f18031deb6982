//! JSON mode on the real Qwen2.5-Coder-0.5B: every output parses and validates, on both APIs,
//! streamed and not; schemas that cannot be enforced or met get clear errors.

mod common;

use common::*;
use futures::future::join_all;
use serde_json::{json, Value};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

/// Nested objects, arrays, enums, bounded numbers, required fields. Every object is closed and
/// every value bounded: an open object lets the model add properties until `max_tokens` cuts the
/// JSON short (which is a 5006, tested below), and sampling at 0.8 sometimes does.
fn schemas() -> Vec<(&'static str, Value)> {
    let name = json!({"type": "string", "maxLength": 40});
    vec![
        (
            "Describe a fictional person.",
            json!({"type": "object", "properties": {
                "person": {"type": "object", "properties": {
                    "name": name, "age": {"type": "integer", "minimum": 0, "maximum": 150},
                    "address": {"type": "object", "properties": {"city": name}, "required": ["city"], "additionalProperties": false}
                }, "required": ["name", "age", "address"], "additionalProperties": false}
            }, "required": ["person"], "additionalProperties": false}),
        ),
        (
            "List some colors of the rainbow.",
            json!({"type": "object", "properties": {
                "colors": {"type": "array", "items": name, "minItems": 2, "maxItems": 4}
            }, "required": ["colors"], "additionalProperties": false}),
        ),
        (
            "What is the sentiment of: 'I love this phone'?",
            json!({"type": "object", "properties": {
                "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1}
            }, "required": ["sentiment", "confidence"], "additionalProperties": false}),
        ),
        (
            "Give today's weather in Paris.",
            json!({"type": "object", "properties": {
                "temperature_c": {"type": "number", "minimum": -50, "maximum": 60},
                "humidity": {"type": "integer", "minimum": 0, "maximum": 100},
                "wind_kmh": {"type": "integer", "exclusiveMinimum": 0, "maximum": 200}
            }, "required": ["temperature_c", "humidity", "wind_kmh"], "additionalProperties": false}),
        ),
        (
            "Recommend a book.",
            json!({"type": "object", "properties": {
                "title": name, "author": name, "year": {"type": "integer", "minimum": 1450, "maximum": 2030},
                "genres": {"type": "array", "items": name, "maxItems": 3}
            }, "required": ["title", "author", "year"], "additionalProperties": false}),
        ),
    ]
}

fn messages(prompt: &str) -> Value {
    json!([
        {"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": prompt}
    ])
}

fn assert_valid(schema: &Value, value: &Value, how: &str) {
    let validator = jsonschema::validator_for(schema).expect("test schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{how}: {value} fails {schema}: {errors:?}"
    );
}

/// Concatenated `response` pieces of a native stream, or the error event's message.
fn native_stream_text(body: &str) -> Result<String, String> {
    let mut text = String::new();
    for data in sse_data(body) {
        if data == "[DONE]" {
            break;
        }
        let event: Value = serde_json::from_str(&data).expect("event JSON");
        if let Some(errors) = event.get("errors") {
            return Err(errors.to_string());
        }
        text.push_str(event["response"].as_str().expect("response piece"));
    }
    Ok(text)
}

fn openai_stream_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .take_while(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str::<Value>(data).expect("chunk JSON"))
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// One schema through every path: native (two seeds, and streamed) and OpenAI (bare schema,
/// envelope, and streamed).
async fn every_path(prompt: &'static str, schema: Value) {
    let native = run_url(QWEN);
    let format = json!({"type": "json_schema", "json_schema": schema});
    for seed in [1, 2] {
        let body = json!({"messages": messages(prompt), "response_format": format,
            "temperature": 0.8, "seed": seed, "max_tokens": 200});
        let (status, _, body) = post_json(&native, &body).await;
        assert_eq!(status, 200, "{body}");
        let response = &body["result"]["response"];
        assert!(
            response.is_object(),
            "native response is the parsed object: {body}"
        );
        assert_valid(&schema, response, &format!("native seed {seed}"));
    }
    let body = json!({"messages": messages(prompt), "response_format": format,
        "temperature": 0, "max_tokens": 200, "stream": true});
    let (status, _, text) = post_text(&native, &body).await;
    assert_eq!(status, 200, "{text}");
    let streamed = native_stream_text(&text).expect("no error event");
    assert_valid(
        &schema,
        &serde_json::from_str(&streamed).expect("streamed JSON"),
        "native stream",
    );

    let chat = url("/v1/chat/completions");
    let envelope = json!({"type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": true}});
    for response_format in [format.clone(), envelope] {
        let body = json!({"model": QWEN, "messages": messages(prompt),
            "response_format": response_format, "temperature": 0, "max_tokens": 200});
        let (status, _, body) = post_json(&chat, &body).await;
        assert_eq!(status, 200, "{body}");
        let content = body["choices"][0]["message"]["content"]
            .as_str()
            .expect("content text");
        assert_valid(
            &schema,
            &serde_json::from_str(content).expect("content JSON"),
            "openai",
        );
    }
    let body = json!({"model": QWEN, "messages": messages(prompt), "response_format": format,
        "temperature": 0, "max_tokens": 200, "stream": true});
    let (status, _, text) = post_text(&chat, &body).await;
    assert_eq!(status, 200, "{text}");
    let streamed = openai_stream_text(&text);
    assert_valid(
        &schema,
        &serde_json::from_str(&streamed).expect("streamed JSON"),
        "openai stream",
    );
}

#[tokio::test]
async fn every_output_parses_and_validates_on_both_apis() {
    kiln_store::ensure_for_tests(QWEN);
    join_all(
        schemas()
            .into_iter()
            .map(|(prompt, schema)| every_path(prompt, schema)),
    )
    .await;
}

#[tokio::test]
async fn json_object_gives_an_object() {
    kiln_store::ensure_for_tests(QWEN);
    // No schema bounds the strings, so the prompt asks for a short object.
    let body = json!({"messages": messages("Give a cat's name and age as a JSON object with the keys name and age."),
        "response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 200});
    let (status, _, body) = run(QWEN, &body).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["response"].is_object(), "{body}");
}

#[tokio::test]
async fn a_schema_that_cannot_be_met_within_max_tokens_says_so() {
    kiln_store::ensure_for_tests(QWEN);
    let schema = json!({"type": "array", "items": {"type": "integer"}, "minItems": 50});
    let request = json!({"messages": messages("Count to fifty."), "max_tokens": 8,
        "response_format": {"type": "json_schema", "json_schema": schema}});
    let (status, _, body) = run(QWEN, &request).await;
    assert_eq!(status, 400, "{body}");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 5006);
    assert!(message.contains("JSON Mode couldn't be met"), "{message}");

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let (status, _, text) = post_text(&run_url(QWEN), &streaming).await;
    assert_eq!(status, 200, "the stream starts before the failure is known");
    let error = native_stream_text(&text).expect_err("an error event ends the stream");
    assert!(error.contains("JSON Mode couldn't be met"), "{error}");
}

#[tokio::test]
async fn schema_features_that_cannot_be_enforced_are_named() {
    kiln_store::ensure_for_tests(QWEN);
    let schema = json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}});
    let request =
        json!({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": schema}});
    let (status, _, body) = run(QWEN, &request).await;
    assert_eq!(status, 400, "{body}");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 5006);
    assert!(
        message.contains("if") && message.contains("then"),
        "{message}"
    );

    let (status, _, body) = post_json(
        &url("/v1/chat/completions"),
        &json!({"model": QWEN, "messages": messages("x"),
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("if")),
        "{body}"
    );
}
