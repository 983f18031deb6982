//! The bodies of `…/ai/run/{model}`: the catalog's per-family input and output JSON Schemas
//! (the ones `GET …/ai/models/schema` serves and requests are validated against), reused as
//! components. OpenAPI 3.1 schemas are JSON Schema 2020-12, so they go in unchanged.

use kiln_catalog::SchemaKind;
use serde_json::{json, Map, Value};

use super::schema_ref;

fn input_name(kind: SchemaKind) -> String {
    format!("RunInput.{kind:?}")
}

fn output_name(kind: SchemaKind) -> String {
    format!("RunOutput.{kind:?}")
}

/// Outputs sent as raw bytes with their own content type instead of an envelope.
fn is_binary(output: &Value) -> bool {
    output.get("format") == Some(&json!("binary"))
}

/// `RunInput.<Family>` and `RunOutput.<Family>` for every schema family.
pub fn component_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    for kind in SchemaKind::ALL {
        // With the Async Batch branch where the family has one; null accepted for optionals,
        // as validation accepts it.
        let mut input = kiln_catalog::with_nullable_optionals(&kind.input_schema(true));
        drop_raw_body_branches(&mut input);
        schemas.insert(input_name(kind), input);
        schemas.insert(output_name(kind), kind.output_schema());
    }
    schemas
}

/// Removes the catalog's raw-body alternative (`{type: string, format: binary}`, for
/// `--data-binary @file`) from `oneOf`/`anyOf` lists: these schemas describe the JSON body,
/// and the raw body is its own media type (`application/octet-stream`) in the document.
fn drop_raw_body_branches(schema: &mut Value) {
    let raw = json!({"type": "string", "format": "binary"});
    match schema {
        Value::Object(map) => {
            for key in ["oneOf", "anyOf"] {
                if let Some(Value::Array(branches)) = map.get_mut(key) {
                    branches.retain(|branch| *branch != raw);
                }
            }
            map.values_mut().for_each(drop_raw_body_branches);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_raw_body_branches),
        _ => {}
    }
}

/// `anyOf`, not `oneOf`: families overlap (chat-completions models take text-generation
/// input; Clef takes any object), so an input valid for two would fail a `oneOf`.
pub fn run_request_body() -> Value {
    let inputs: Vec<Value> = SchemaKind::ALL
        .iter()
        .map(|kind| schema_ref(&input_name(*kind)))
        .collect();
    json!({
        "required": false,
        "description": "The model's input: one of the catalog's input schemas (the model's own \
                        is at `GET …/ai/models/schema?model=`). Audio and image models also take \
                        the raw bytes.",
        "content": {
            "application/json": {"schema": {"anyOf": inputs}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        }
    })
}

/// The 200 of a run: an envelope around one of the outputs, an event stream (`stream: true`),
/// or raw audio or image bytes.
pub fn run_success() -> Value {
    let outputs: Vec<Value> = SchemaKind::ALL
        .iter()
        .filter(|kind| !is_binary(&kind.output_schema()))
        .map(|kind| schema_ref(&output_name(*kind)))
        .collect();
    json!({
        "description": "The model's answer. JSON answers are in the envelope; `stream: true` \
                        answers are server-sent events ending in `data: [DONE]`; speech and \
                        image models answer with the bytes. `x-kiln-model` names the local \
                        model that served it.",
        "content": {
            "application/json": {"schema": super::success_envelope(json!({"anyOf": outputs}))},
            "text/event-stream": {"schema": super::schema_ref("SseEvent")},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        }
    })
}
