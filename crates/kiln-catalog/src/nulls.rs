//! An explicit `null` means "not set", as the Workers AI API takes it: integrations send
//! `"stop": null`, `"seed": null`, `"tools": null` on every call, and nested ones such as a
//! message's `"name": null`. The served schemas say so (optional properties also allow `null`),
//! and inputs lose those nulls before validation, so handlers never see them.
//!
//! Only nulls the schema declares optional go: a property the schema types as nullable keeps its
//! `null` (an assistant message's `content: null` means something), and nothing inside free-form
//! values (a JSON schema in `response_format`, tool parameters) is touched.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use crate::entry::CatalogEntry;
use crate::schema::{batch_enabled, SchemaKind};

/// Each input schema built once: requests walk it.
static INPUT_SCHEMAS: LazyLock<HashMap<(SchemaKind, bool), Value>> = LazyLock::new(|| {
    let mut table = HashMap::new();
    for kind in SchemaKind::ALL {
        for batch in [false, true] {
            table.insert((kind, batch), kind.input_schema(batch));
        }
    }
    table
});

/// Removes the `null`s that mean "absent" from `input` for `entry`'s schema: every top-level
/// one, and nested ones where the schema declares the property optional and not nullable.
pub fn drop_null_fields(entry: &CatalogEntry, input: &mut Value) {
    let Value::Object(fields) = input else {
        return;
    };
    fields.retain(|_, value| !value.is_null());
    if let Some(schema) = INPUT_SCHEMAS.get(&(entry.schema, batch_enabled(entry))) {
        drop_optional_nulls(schema, input, 0);
    }
}

/// Deep enough for every served schema; bounds the walk on hostile nesting.
const MAX_DEPTH: usize = 16;

fn drop_optional_nulls(schema: &Value, value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let branches = branches(schema);
    match value {
        Value::Object(fields) => {
            for branch in &branches {
                let Some(properties) = branch.get("properties").and_then(Value::as_object) else {
                    continue;
                };
                let required = required_of(branch);
                for (name, property) in properties {
                    let Some(field) = fields.get_mut(name) else {
                        continue;
                    };
                    if field.is_null() {
                        if !required.contains(&name.as_str()) && !allows_null(property) {
                            fields.remove(name);
                        }
                    } else {
                        drop_optional_nulls(property, field, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) => {
            for branch in &branches {
                if let Some(item_schema) = branch.get("items") {
                    for item in items.iter_mut() {
                        drop_optional_nulls(item_schema, item, depth + 1);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The schema itself and each alternative it lists (`oneOf`, `anyOf`, `allOf`), flattened.
fn branches(schema: &Value) -> Vec<&Value> {
    let mut found = vec![schema];
    for keyword in ["oneOf", "anyOf", "allOf"] {
        if let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) {
            for alternative in alternatives {
                found.extend(branches(alternative));
            }
        }
    }
    found
}

fn required_of(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether the schema itself accepts `null` (so a `null` there is a value, not an absence).
fn allows_null(schema: &Value) -> bool {
    let typed_null = match schema.get("type") {
        Some(Value::String(kind)) => kind == "null",
        Some(Value::Array(kinds)) => kinds.iter().any(|kind| kind == "null"),
        _ => false,
    };
    typed_null
        || ["oneOf", "anyOf"].iter().any(|keyword| {
            schema
                .get(keyword)
                .and_then(Value::as_array)
                .is_some_and(|alternatives| alternatives.iter().any(allows_null))
        })
}

/// The schema as served: every optional, non-nullable property also takes `null`, at every
/// depth, since `null` there is accepted as absent.
pub fn with_nullable_optionals(schema: &Value) -> Value {
    let mut served = schema.clone();
    mark_nullable(&mut served, 0);
    served
}

fn mark_nullable(schema: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Value::Object(map) = schema else {
        return;
    };
    let required: Vec<String> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            mark_nullable(property, depth + 1);
            if !required.contains(name) && !allows_null(property) {
                *property = nullable(std::mem::take(property));
            }
        }
    }
    if let Some(items) = map.get_mut("items") {
        mark_nullable(items, depth + 1);
    }
    for keyword in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(alternatives)) = map.get_mut(keyword) {
            for alternative in alternatives {
                mark_nullable(alternative, depth + 1);
            }
        }
    }
}

/// `type: T` becomes `type: [T, "null"]` where that keeps the schema's meaning (no `enum` or
/// `const` to refuse the null); otherwise the property becomes `anyOf: [it, {type: null}]`.
fn nullable(mut property: Value) -> Value {
    let Value::Object(map) = &mut property else {
        return property;
    };
    let constrained = map.contains_key("enum") || map.contains_key("const");
    match map.get("type").cloned() {
        Some(Value::String(kind)) if !constrained => {
            map.insert("type".into(), json!([kind, "null"]));
            property
        }
        Some(Value::Array(mut kinds)) if !constrained => {
            kinds.push(json!("null"));
            map.insert("type".into(), Value::Array(kinds));
            property
        }
        _ => {
            let mut wrapped = Map::new();
            // Descriptions stay at the top, where schema readers look for them.
            if let Some(description) = map.get("description").cloned() {
                wrapped.insert("description".into(), description);
            }
            wrapped.insert("anyOf".into(), json!([property, {"type": "null"}]));
            Value::Object(wrapped)
        }
    }
}

#[cfg(test)]
#[path = "nulls_tests.rs"]
mod tests;
