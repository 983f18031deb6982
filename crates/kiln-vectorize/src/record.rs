//! Vectors as clients send them: NDJSON lines (REST) or `{"vectors":[...]}` (binding wire), and
//! the per-vector rules of spec §5.1. The dimension check needs the index, so it happens in
//! `insert`/`upsert`.

use kiln_core::{KilnError, KilnResult};
use serde_json::{Map, Value};

pub const MAX_ID_BYTES: usize = 64;
pub const MAX_NAMESPACE_BYTES: usize = 64;
/// 10 KiB of compact JSON.
pub const MAX_METADATA_BYTES: usize = 10 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct VectorRecord {
    pub id: String,
    pub values: Vec<f32>,
    pub namespace: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

/// What to do with an NDJSON line that is not a valid vector (`unparsable-behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unparsable {
    Error,
    Discard,
}

/// One vector per line; blank lines are ignored. A bad line is an error naming its (1-based)
/// line number, or is skipped with [`Unparsable::Discard`].
pub fn parse_ndjson(body: &[u8], unparsable: Unparsable) -> KilnResult<Vec<VectorRecord>> {
    let mut records = Vec::new();
    for (index, line) in body.split(|byte| *byte == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Value>(line)
            .map_err(|error| format!("not valid JSON ({error})"))
            .and_then(|value| vector_from_json(&value));
        match (parsed, unparsable) {
            (Ok(record), _) => records.push(record),
            (Err(_), Unparsable::Discard) => {}
            (Err(reason), Unparsable::Error) => {
                return Err(KilnError::bad_input(format!(
                    "line {}: {reason}",
                    index + 1
                )))
            }
        }
    }
    Ok(records)
}

/// `{"vectors":[...]}` (what the Worker binding sends as JSON) or a bare array of vectors.
pub fn parse_json_vectors(body: &Value) -> KilnResult<Vec<VectorRecord>> {
    let items = match body {
        Value::Array(items) => items,
        Value::Object(object) => object
            .get("vectors")
            .and_then(Value::as_array)
            .ok_or_else(|| KilnError::bad_input("vectors is required and must be an array"))?,
        _ => {
            return Err(KilnError::bad_input(
                "the body must be {\"vectors\": [...]} or an array of vectors",
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            vector_from_json(item)
                .map_err(|reason| KilnError::bad_input(format!("vectors[{index}]: {reason}")))
        })
        .collect()
}

/// Validates one vector object; the error is a reason without a location, which the caller
/// adds (a line number or an array index).
pub fn vector_from_json(value: &Value) -> Result<VectorRecord, String> {
    let object = value
        .as_object()
        .ok_or("a vector must be a JSON object with id and values")?;
    let id = match object.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => return Err("id must be a string".into()),
        None => return Err("id is required".into()),
    };
    validate_id(&id)?;
    let values = match object.get("values") {
        Some(values) => parse_values(values).map_err(|reason| format!("values {reason}"))?,
        None => return Err("values is required".into()),
    };
    let namespace = match object.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(namespace)) => {
            validate_namespace(namespace)?;
            Some(namespace.clone())
        }
        Some(_) => return Err("namespace must be a string".into()),
    };
    let metadata = match object.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(metadata)) => {
            validate_metadata(metadata)?;
            Some(metadata.clone())
        }
        Some(_) => return Err("metadata must be a JSON object".into()),
    };
    Ok(VectorRecord {
        id,
        values,
        namespace,
        metadata,
    })
}

pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!(
            "id must be 1 to {MAX_ID_BYTES} bytes (got {} bytes)",
            id.len()
        ));
    }
    Ok(())
}

pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() > MAX_NAMESPACE_BYTES {
        return Err(format!(
            "namespace must be at most {MAX_NAMESPACE_BYTES} bytes (got {} bytes)",
            namespace.len()
        ));
    }
    Ok(())
}

/// Values may be an array of numbers, or the object a JavaScript `Float32Array` becomes
/// under `JSON.stringify` (`{"0": 0.1, "1": 0.2}`).
pub fn parse_values(values: &Value) -> Result<Vec<f32>, String> {
    let numbers: Vec<&Value> = match values {
        Value::Array(items) => items.iter().collect(),
        Value::Object(entries) => (0..entries.len())
            .map(|position| {
                entries
                    .get(&position.to_string())
                    .ok_or_else(|| format!("must be an array of numbers (no element {position})"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("must be an array of numbers".into()),
    };
    if numbers.is_empty() {
        return Err("must not be empty".into());
    }
    numbers
        .into_iter()
        .enumerate()
        .map(|(position, number)| {
            let wide = number
                .as_f64()
                .ok_or_else(|| format!("[{position}] must be a number"))?;
            let narrow = wide as f32;
            if narrow.is_finite() {
                Ok(narrow)
            } else {
                Err(format!("[{position}] is out of the float32 range"))
            }
        })
        .collect()
}

/// Keys non-empty, without `.` or `"`, not starting with `$`, at every depth; at most 10 KiB of
/// compact JSON in all.
pub fn validate_metadata(metadata: &Map<String, Value>) -> Result<(), String> {
    validate_metadata_keys(metadata, "metadata")?;
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_METADATA_BYTES {
        return Err(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes of JSON (got {size})"
        ));
    }
    Ok(())
}

fn validate_metadata_keys(object: &Map<String, Value>, path: &str) -> Result<(), String> {
    for (key, value) in object {
        if key.is_empty() {
            return Err(format!("{path}: keys must not be empty"));
        }
        if key.contains('.') || key.contains('"') || key.starts_with('$') {
            return Err(format!(
                "{path}.{key}: keys must not contain '.' or '\"' nor start with '$'"
            ));
        }
        if let Value::Object(nested) = value {
            validate_metadata_keys(nested, &format!("{path}.{key}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn parses_lines_and_skips_blank_ones() {
        let body = b"{\"id\":\"a\",\"values\":[1,2],\"metadata\":{\"url\":\"/x\"}}\n\n{\"id\":\"b\",\"values\":[3,4],\"namespace\":\"ns\"}\r\n";
        let records = parse_ndjson(body, Unparsable::Error).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].values, vec![1.0, 2.0]);
        assert_eq!(records[0].metadata.as_ref().unwrap()["url"], "/x");
        assert_eq!(records[1].namespace.as_deref(), Some("ns"));
    }

    #[test]
    fn bad_line_names_its_number_or_is_discarded() {
        let body = b"{\"id\":\"a\",\"values\":[1]}\n{\"id\":\"b\",\"values\":\"x\"}\nnot json\n";
        let error = parse_ndjson(body, Unparsable::Error).unwrap_err();
        assert!(
            error.message.contains("line 2: values"),
            "{}",
            error.message
        );
        let kept = parse_ndjson(body, Unparsable::Discard).unwrap();
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn vector_rules() {
        let long = "x".repeat(65);
        let cases = [
            (json!({"values": [1]}), "id is required"),
            (
                json!({"id": long, "values": [1]}),
                "id must be 1 to 64 bytes",
            ),
            (json!({"id": "a"}), "values is required"),
            (json!({"id": "a", "values": []}), "values must not be empty"),
            (
                json!({"id": "a", "values": [1, "2"]}),
                "values [1] must be a number",
            ),
            (json!({"id": "a", "values": [1e300]}), "float32"),
            (
                json!({"id": "a", "values": [1], "namespace": long}),
                "namespace must be at most 64",
            ),
            (
                json!({"id": "a", "values": [1], "metadata": {"a.b": 1}}),
                "metadata.a.b",
            ),
            (
                json!({"id": "a", "values": [1], "metadata": {"$a": 1}}),
                "must not contain",
            ),
            (
                json!({"id": "a", "values": [1], "metadata": {"a": {"\"q": 1}}}),
                "metadata.a",
            ),
            (
                json!({"id": "a", "values": [1], "metadata": {"": 1}}),
                "must not be empty",
            ),
            (
                json!({"id": "a", "values": [1], "metadata": {"big": "x".repeat(10_300)}}),
                "10240",
            ),
            (
                json!({"id": "a", "values": [1], "metadata": [1]}),
                "metadata must be a JSON object",
            ),
        ];
        for (value, expected) in cases {
            let reason = vector_from_json(&value).unwrap_err();
            assert!(reason.contains(expected), "{value}: {reason}");
        }
    }

    #[test]
    fn json_wire_forms() {
        let wrapped = json!({"vectors": [{"id": "a", "values": {"0": 0.5, "1": 1.5}}]});
        assert_eq!(
            parse_json_vectors(&wrapped).unwrap()[0].values,
            vec![0.5, 1.5]
        );
        let bare = json!([{"id": "a", "values": [1]}, {"id": 2, "values": [1]}]);
        let error = parse_json_vectors(&bare).unwrap_err();
        assert!(error.message.contains("vectors[1]: id must be a string"));
    }

    proptest! {
        #[test]
        fn ndjson_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_ndjson(&body, Unparsable::Error);
            let _ = parse_ndjson(&body, Unparsable::Discard);
        }

        #[test]
        fn ndjson_round_trips_valid_vectors(
            ids in proptest::collection::vec("[a-z0-9]{1,64}", 1..20),
            value in -1e6f32..1e6f32,
        ) {
            let body: String = ids
                .iter()
                .map(|id| format!("{}\n", json!({"id": id, "values": [value, 1.0]})))
                .collect();
            let records = parse_ndjson(body.as_bytes(), Unparsable::Error).unwrap();
            prop_assert_eq!(records.len(), ids.len());
            prop_assert_eq!(records[0].values[0], value);
        }

        #[test]
        fn discard_keeps_exactly_the_valid_lines(lines in proptest::collection::vec(
            prop_oneof![Just("{\"id\":\"ok\",\"values\":[1]}"), Just("{\"id\":1}"), Just("[")], 0..30)
        ) {
            let body = lines.join("\n");
            let kept = parse_ndjson(body.as_bytes(), Unparsable::Discard).unwrap();
            let valid = lines.iter().filter(|line| line.contains("ok")).count();
            prop_assert_eq!(kept.len(), valid);
        }
    }
}
