//! Hostile JSON Schemas (JSON mode, tool parameters): each used to be one small request that
//! killed the process (a stack overflow validating a `$ref` cycle) or grew memory until it was
//! killed. Now each is a 400 / 5006 naming the problem, and the model keeps serving.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::client;
use crate::*;

const MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";

/// The needle for a `$ref` cycle that consumes no input.
const CYCLE: &str = "without consuming input";

/// `/v1/chat/completions`: the status and the OpenAI error's message.
async fn chat(body: &Value) -> (u16, String) {
    let response = client()
        .post(format!("{}/v1/chat/completions", target().base))
        .json(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    (status, message.to_owned())
}

async fn chat_refused(body: Value, needle: &str) {
    let (status, message) = chat(&body).await;
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains(needle),
        "should name {needle:?}: {message}"
    );
}

/// A normal request to the same model, after each attack.
fn normal() -> Value {
    json!({"prompt": "Say hello.", "max_tokens": 4})
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Pick a number"}])
}

/// `{"type": "object", "properties": {"a": … }}`, `levels` deep.
fn nested(levels: usize) -> Value {
    let mut schema = json!({"type": "integer"});
    for _ in 0..levels {
        schema = json!({"type": "object", "properties": {"a": schema}});
    }
    schema
}

fn tool(parameters: Value) -> Value {
    json!({"name": "pick", "description": "Pick a number", "parameters": parameters})
}

#[tokio::test]
async fn the_two_known_killers_are_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let not_self =
        json!({"type": "integer", "not": {"$ref": "#"}, "x-guidance": {"lenient": true}});
    let any_self = json!({"anyOf": [{"$ref": "#"}, {"type": "integer"}]});
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "Pick a number", "max_tokens": 6, "guided_json": not_self}),
    )
    .await;
    assert_refused(status, &body, 5006, CYCLE);
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "Pick a number", "max_tokens": 6,
            "response_format": {"type": "json_schema", "json_schema": any_self}}),
    )
    .await;
    assert_refused(status, &body, 5006, CYCLE);
    // Streaming takes the same path.
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "Pick a number", "max_tokens": 6, "stream": true,
            "response_format": {"type": "json_schema", "json_schema": any_self}}),
    )
    .await;
    assert_refused(status, &body, 5006, CYCLE);
    // OpenAI's surface, bare and in the `{name, schema}` envelope.
    for json_schema in [
        any_self.clone(),
        json!({"name": "n", "strict": true, "schema": not_self}),
    ] {
        chat_refused(
            json!({"model": MODEL, "messages": messages(), "max_tokens": 6,
                "response_format": {"type": "json_schema", "json_schema": json_schema}}),
            CYCLE,
        )
        .await;
    }
    // As a tool's parameters, on both surfaces.
    let (status, body) = post(
        MODEL,
        &json!({"messages": messages(), "max_tokens": 6, "tools": [tool(any_self.clone())]}),
    )
    .await;
    assert_refused(status, &body, 5006, CYCLE);
    chat_refused(
        json!({"model": MODEL, "messages": messages(), "max_tokens": 6,
            "tools": [{"type": "function", "function": tool(not_self)}]}),
        CYCLE,
    )
    .await;
    assert_still_serving(MODEL, &normal()).await;
}

#[tokio::test]
async fn cycles_through_definitions_and_remote_refs_are_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let mutual = json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}, {"type": "null"}]},
        "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"});
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "x", "max_tokens": 6, "guided_json": mutual}),
    )
    .await;
    assert_refused(status, &body, 5006, CYCLE);
    // Nothing is fetched: a port that nothing listens on would hang or fail a fetch.
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "x", "max_tokens": 6,
            "guided_json": {"$ref": "http://127.0.0.1:9/schema.json"}}),
    )
    .await;
    assert_refused(status, &body, 5006, "is not local");
    assert_still_serving(MODEL, &normal()).await;
}

#[tokio::test]
async fn deep_huge_and_many_schemas_are_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "x", "max_tokens": 6, "guided_json": nested(40)}),
    )
    .await;
    assert_refused(status, &body, 5006, "max_depth");
    let huge = json!({"type": "string", "description": "x".repeat(100 * 1024)});
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "x", "max_tokens": 6, "guided_json": huge}),
    )
    .await;
    assert_refused(status, &body, 5006, "max_bytes");
    // A chain of `$ref`s nests definitions inside the compilers: past max_refs it is refused.
    let chain: serde_json::Map<String, Value> = (0..300)
        .map(|i| {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            (
                format!("d{i}"),
                json!({"type": "object", "properties": {"a": next}}),
            )
        })
        .chain([("d300".to_owned(), json!({"type": "integer"}))])
        .collect();
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "x", "max_tokens": 6,
            "guided_json": {"$defs": chain, "$ref": "#/$defs/d0"}}),
    )
    .await;
    assert_refused(status, &body, 5006, "max_refs");
    let many: Vec<Value> = (0..200)
        .map(|i| {
            json!({"name": format!("f{i}"), "description": "A tool",
                "parameters": {"type": "object"}})
        })
        .collect();
    let (status, body) = post(
        MODEL,
        &json!({"messages": messages(), "max_tokens": 6, "tools": many}),
    )
    .await;
    assert_refused(status, &body, 5006, "max_tools");
    chat_refused(
        json!({"model": MODEL, "messages": messages(), "max_tokens": 6,
            "response_format": {"type": "json_schema", "json_schema": nested(40)}}),
        "max_depth",
    )
    .await;
    assert_still_serving(MODEL, &normal()).await;
}

/// A recursive schema that recurses through input is legitimate: it compiles, generates, and
/// the answer is checked, whatever the model writes within `max_tokens`.
#[tokio::test]
async fn a_linked_list_schema_is_still_served() {
    let _serial = crate::one_attack_at_a_time().await;
    let list = json!({"type": "object", "properties": {"value": {"type": "integer"},
        "next": {"$ref": "#"}}, "required": ["value"],
        "x-guidance": {"lenient": true, "whitespace_flexible": true}});
    let (status, body) = post(
        MODEL,
        &json!({"prompt": "A list of two numbers as JSON", "max_tokens": 40,
            "guided_json": list}),
    )
    .await;
    if status == 200 {
        assert!(body["result"]["response"]["value"].is_i64(), "{body}");
    } else {
        // Cut off by max_tokens: Workers AI's answer for that.
        assert_refused(status, &body, 5006, "JSON Mode couldn't be met");
    }
    assert_still_serving(MODEL, &normal()).await;
}
