//! Generated from the schemas themselves rather than listed by hand (issue #17): `null` for
//! every optional property, at any depth, behaves as absent, and the served schema says so.

use serde_json::{json, Map, Value};

use super::{allows_null, branches, drop_null_fields, required_of, with_nullable_optionals};
use crate::schema::batch_enabled;
use crate::{compile_schema, validate_input, Catalog, SchemaKind};

enum Step {
    Key(String),
    Index,
}

/// Paths to every optional, non-nullable property of `schema` (arrays entered at item 0).
fn optional_paths(schema: &Value, prefix: &mut Vec<Step>, out: &mut Vec<String>, depth: usize) {
    if depth > 6 {
        return;
    }
    for branch in branches(schema) {
        if let Some(properties) = branch.get("properties").and_then(Value::as_object) {
            let required = required_of(branch);
            for (name, property) in properties {
                prefix.push(Step::Key(name.clone()));
                if !required.contains(&name.as_str()) && !allows_null(property) {
                    let path = pointer(prefix);
                    if !out.contains(&path) {
                        out.push(path);
                    }
                }
                optional_paths(property, prefix, out, depth + 1);
                prefix.pop();
            }
        }
        if let Some(items) = branch.get("items") {
            prefix.push(Step::Index);
            optional_paths(items, prefix, out, depth + 1);
            prefix.pop();
        }
    }
}

fn pointer(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|step| match step {
            Step::Key(name) => format!("/{name}"),
            Step::Index => "/0".to_owned(),
        })
        .collect()
}

/// The smallest input holding `null` at `path`: objects and one-item arrays on the way.
fn null_at(path: &str) -> Value {
    let mut steps: Vec<&str> = path.split('/').skip(1).collect();
    let mut value = Value::Null;
    while let Some(step) = steps.pop() {
        value = if step == "0" {
            Value::Array(vec![value])
        } else {
            Value::Object(Map::from_iter([(step.to_owned(), value)]))
        };
    }
    value
}

#[test]
fn null_for_any_optional_property_at_any_depth_is_absent() {
    let catalog = Catalog::builtin();
    let (mut checked, mut nested, mut refused_without_dropping) = (0, 0, 0);
    for kind in SchemaKind::ALL {
        let Some(entry) = catalog.entries().iter().find(|e| e.schema == kind) else {
            continue;
        };
        let schema = kind.input_schema(batch_enabled(entry));
        let mut paths = Vec::new();
        optional_paths(&schema, &mut Vec::new(), &mut paths, 0);
        for path in paths {
            let quoted = format!("'{path}'");
            let mut input = null_at(&path);
            if let Err(error) = validate_input(entry, &input) {
                refused_without_dropping += usize::from(error.message.contains(&quoted));
            }
            drop_null_fields(entry, &mut input);
            assert_eq!(input.pointer(&path), None, "{kind:?} {path}: {input}");
            if let Err(error) = validate_input(entry, &input) {
                assert!(
                    !error.message.contains(&quoted),
                    "{kind:?} {path}: {}",
                    error.message
                );
            }
            checked += 1;
            nested += usize::from(path.matches('/').count() > 1);
        }
    }
    assert!(checked > 100, "only {checked} optional properties found");
    assert!(
        nested > 30,
        "only {nested} nested optional properties found"
    );
    assert!(
        refused_without_dropping > 0,
        "the check would not notice a refused null"
    );
}

#[test]
fn the_served_schema_accepts_null_wherever_it_is_dropped() {
    let catalog = Catalog::builtin();
    let mut checked = 0;
    for kind in SchemaKind::ALL {
        let Some(entry) = catalog.entries().iter().find(|e| e.schema == kind) else {
            continue;
        };
        let schema = kind.input_schema(batch_enabled(entry));
        let served = with_nullable_optionals(&schema);
        let validator = compile_schema(&served).expect("the served schema compiles");
        let mut paths = Vec::new();
        optional_paths(&schema, &mut Vec::new(), &mut paths, 0);
        for path in paths {
            let input = null_at(&path);
            // The null itself is never the complaint (other fields may be missing).
            let complaints: Vec<String> = validator
                .iter_errors(&input)
                .filter(|error| error.instance_path.to_string() == path)
                .map(|error| error.to_string())
                .collect();
            assert!(complaints.is_empty(), "{kind:?} {path}: {complaints:?}");
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn nullable_properties_and_free_form_values_keep_their_nulls() {
    let catalog = Catalog::builtin();
    let entry = catalog
        .entries()
        .iter()
        .find(|e| e.schema == SchemaKind::TextGeneration)
        .expect("a text generation model");
    let mut input = json!({
        "messages": [
            {"role": "user", "content": "hi", "name": null},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]}
        ],
        "response_format": {"type": "json_schema", "json_schema": {
            "type": "object", "properties": {"a": {"default": null}}
        }},
        "stop": null,
    });
    drop_null_fields(entry, &mut input);
    assert_eq!(input.pointer("/messages/0/name"), None);
    assert_eq!(input.pointer("/messages/1/content"), Some(&Value::Null));
    assert_eq!(
        input.pointer("/response_format/json_schema/properties/a/default"),
        Some(&Value::Null)
    );
    assert_eq!(input.get("stop"), None);
}

#[test]
fn nulls_inside_batch_items_are_absent_too() {
    let catalog = Catalog::builtin();
    let entry = catalog
        .entries()
        .iter()
        .find(|e| e.schema == SchemaKind::TextGeneration && batch_enabled(e))
        .expect("a batch-enabled text generation model");
    let mut input = json!({
        "requests": [{"prompt": "hi", "stop": null, "seed": null}],
        "stop": null,
    });
    drop_null_fields(entry, &mut input);
    assert_eq!(input, json!({"requests": [{"prompt": "hi"}]}));
}
