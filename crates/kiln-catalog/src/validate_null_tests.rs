//! `null` for every optional top-level field of every served input schema behaves as absent,
//! generated from the schemas themselves rather than listed by hand (issue #17).

use serde_json::{Map, Value};

use super::{drop_null_fields, validate_input};
use crate::{Catalog, SchemaKind};

/// `(property, required)` of each object branch of a schema (a `oneOf` or the whole).
fn optional_properties(schema: &Value) -> Vec<String> {
    let branches: Vec<&Value> = match schema.get("oneOf").and_then(Value::as_array) {
        Some(branches) => branches.iter().collect(),
        None => vec![schema],
    };
    let mut optional = Vec::new();
    for branch in branches {
        let Some(properties) = branch.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let required: Vec<&str> = branch
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in properties.keys() {
            if !required.contains(&name.as_str()) && !optional.contains(name) {
                optional.push(name.clone());
            }
        }
    }
    optional
}

#[test]
fn null_for_any_optional_field_of_any_schema_is_absent() {
    let catalog = Catalog::builtin();
    let mut checked = 0;
    let mut refused_without_dropping = 0;
    for kind in SchemaKind::ALL {
        let Some(entry) = catalog.entries().iter().find(|e| e.schema == kind) else {
            continue;
        };
        for field in optional_properties(&kind.input_schema(false)) {
            let named = format!("'/{field}'");
            let mut input = Value::Object(Map::from_iter([(field.clone(), Value::Null)]));
            if let Err(error) = validate_input(entry, &input) {
                refused_without_dropping += usize::from(error.message.contains(&named));
            }
            drop_null_fields(&mut input);
            if let Err(error) = validate_input(entry, &input) {
                assert!(
                    !error.message.contains(&named),
                    "{kind:?} {field}: {}",
                    error.message
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} optional fields found");
    assert!(
        refused_without_dropping > 0,
        "the check would not notice a refused null"
    );
}

#[test]
fn nulls_inside_batch_items_are_absent_too() {
    let mut input: Value = serde_json::json!({
        "requests": [{"prompt": "hi", "stop": null, "seed": null}],
        "stop": null,
    });
    drop_null_fields(&mut input);
    assert_eq!(input, serde_json::json!({"requests": [{"prompt": "hi"}]}));
}
