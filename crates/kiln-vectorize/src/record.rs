//! Vectors as clients send them: NDJSON lines (REST) or `{"vectors":[...]}` (binding wire), and
//! the per-vector rules of spec §5.1. The dimension check needs the index, so it happens in
//! `insert`/`upsert`.
//!
//! A write is bounded while it is parsed, never after: parsing stops at the vector after the
//! count limit or once the parsed vectors take more memory than allowed, and no single vector's
//! JSON longer than [`MAX_VECTOR_JSON_BYTES`] is parsed at all (a JSON tree can take 30 times
//! the bytes of its text).

use kiln_core::limits::VectorizeLimits;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub const MAX_ID_BYTES: usize = 64;
pub const MAX_NAMESPACE_BYTES: usize = 64;
/// 10 KiB of compact JSON.
pub const MAX_METADATA_BYTES: usize = 10 * 1024;
/// The longest JSON text of one vector (an NDJSON line or an element of `vectors`): 1536
/// values at full precision and 10 KiB of metadata fit many times over.
pub const MAX_VECTOR_JSON_BYTES: usize = 1024 * 1024;

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

/// The bounds of one insert or upsert, from `[limits.vectorize]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLimits {
    /// Most vectors (`max_vectors_per_write`).
    pub max_vectors: usize,
    /// Most memory the parsed vectors may take (`max_write_bytes`).
    pub max_bytes: usize,
}

impl From<&VectorizeLimits> for WriteLimits {
    fn from(limits: &VectorizeLimits) -> Self {
        Self {
            max_vectors: limits.max_vectors_per_write,
            max_bytes: limits.max_write_bytes,
        }
    }
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self::from(&VectorizeLimits::default())
    }
}

/// The vectors parsed so far, refusing the one over either bound.
struct Collector {
    limits: WriteLimits,
    records: Vec<VectorRecord>,
    bytes: usize,
}

impl Collector {
    fn new(limits: WriteLimits) -> Self {
        Self {
            limits,
            records: Vec::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, record: VectorRecord) -> KilnResult<()> {
        if self.records.len() >= self.limits.max_vectors {
            return Err(KilnError::bad_input(format!(
                "more than {} vectors in one insert or upsert; the limit is \
                 limits.vectorize.max_vectors_per_write",
                self.limits.max_vectors
            )));
        }
        self.bytes = self.bytes.saturating_add(record_bytes(&record));
        if self.bytes > self.limits.max_bytes {
            return Err(KilnError::new(
                ErrorKind::RequestTooLarge,
                format!(
                    "the vectors of this write take more than {} bytes in memory (after {} \
                     vectors); the limit is limits.vectorize.max_write_bytes",
                    self.limits.max_bytes,
                    self.records.len() + 1
                ),
            ));
        }
        self.records.push(record);
        Ok(())
    }
}

/// About what a parsed vector holds in memory: its values, strings, and the metadata tree.
fn record_bytes(record: &VectorRecord) -> usize {
    std::mem::size_of::<VectorRecord>()
        + record.id.len()
        + record.values.len() * std::mem::size_of::<f32>()
        + record.namespace.as_ref().map_or(0, String::len)
        + record.metadata.as_ref().map_or(0, map_bytes)
}

fn map_bytes(map: &Map<String, Value>) -> usize {
    // A map entry: the key's String and heap bytes, the value, and the tree node's share.
    map.iter()
        .map(|(key, value)| std::mem::size_of::<String>() + key.len() + 16 + value_bytes(value))
        .sum()
}

fn value_bytes(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(value_bytes).sum(),
            Value::Object(map) => map_bytes(map),
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        }
}

/// One vector's JSON text, refused unparsed when it is longer than any valid vector needs.
fn parse_vector_text(text: &[u8]) -> Result<VectorRecord, String> {
    if text.len() > MAX_VECTOR_JSON_BYTES {
        return Err(format!(
            "{} bytes of JSON; one vector may have at most {MAX_VECTOR_JSON_BYTES}",
            text.len()
        ));
    }
    serde_json::from_slice::<Value>(text)
        .map_err(|error| format!("not valid JSON ({error})"))
        .and_then(|value| vector_from_json(&value))
}

/// One vector per line; blank lines are ignored. A bad line is an error naming its (1-based)
/// line number, or is skipped with [`Unparsable::Discard`].
pub fn parse_ndjson(
    body: &[u8],
    unparsable: Unparsable,
    limits: WriteLimits,
) -> KilnResult<Vec<VectorRecord>> {
    let mut collector = Collector::new(limits);
    for (index, line) in body.split(|byte| *byte == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match (parse_vector_text(line), unparsable) {
            (Ok(record), _) => collector.push(record)?,
            (Err(_), Unparsable::Discard) => {}
            (Err(reason), Unparsable::Error) => {
                return Err(KilnError::bad_input(format!(
                    "line {}: {reason}",
                    index + 1
                )));
            }
        }
    }
    Ok(collector.records)
}

/// The vectors of an insert or upsert body: `{"vectors":[...]}` or a bare array of vectors
/// (what the Worker binding sends), else NDJSON. The JSON forms are read element by element
/// from the text, never as one tree.
pub fn parse_vectors(
    body: &[u8],
    unparsable: Unparsable,
    limits: WriteLimits,
) -> KilnResult<Vec<VectorRecord>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(KilnError::bad_input("the body holds no vectors"));
    }
    match json_vector_list(body) {
        Some(Ok(list)) => parse_vector_list(list.get(), limits),
        Some(Err(error)) => Err(error),
        None => parse_ndjson(body, unparsable, limits),
    }
}

/// The array of the JSON forms, if the body is one: `None` when the body is not one JSON
/// value (NDJSON of several lines) or is an object without `vectors` (one NDJSON line).
fn json_vector_list(body: &[u8]) -> Option<KilnResult<&RawValue>> {
    #[derive(serde::Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow, default)]
        vectors: Option<&'a RawValue>,
    }
    let whole: &RawValue = serde_json::from_slice(body).ok()?;
    let text = whole.get().trim_start();
    if text.starts_with('[') {
        return Some(Ok(whole));
    }
    if !text.starts_with('{') {
        return None;
    }
    let vectors = serde_json::from_str::<Wrapped<'_>>(text).ok()?.vectors?;
    if vectors.get().trim_start().starts_with('[') {
        Some(Ok(vectors))
    } else {
        Some(Err(KilnError::bad_input(
            "vectors is required and must be an array",
        )))
    }
}

/// The elements of a JSON array of vectors, each validated as it is reached; stops at the first
/// bad one or at a bound.
fn parse_vector_list(list: &str, limits: WriteLimits) -> KilnResult<Vec<VectorRecord>> {
    struct Elements<'c> {
        collector: &'c mut Collector,
        failure: &'c mut Option<KilnError>,
    }
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = ();
        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an array of vectors")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0usize;
            while let Some(element) = seq.next_element::<&'de RawValue>()? {
                let pushed = parse_vector_text(element.get().as_bytes())
                    .map_err(|reason| KilnError::bad_input(format!("vectors[{index}]: {reason}")))
                    .and_then(|record| self.collector.push(record));
                if let Err(error) = pushed {
                    *self.failure = Some(error);
                    return Err(de::Error::custom("stopped"));
                }
                index += 1;
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Elements<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_seq(self)
        }
    }
    let mut collector = Collector::new(limits);
    let mut failure = None;
    let mut deserializer = serde_json::Deserializer::from_str(list);
    let parsed = Elements {
        collector: &mut collector,
        failure: &mut failure,
    }
    .deserialize(&mut deserializer);
    if let Some(error) = failure {
        return Err(error);
    }
    // The text was checked to be JSON already; this is only a safety net.
    parsed.map_err(|error| KilnError::bad_input(format!("vectors: {error}")))?;
    Ok(collector.records)
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
        let records = parse_ndjson(body, Unparsable::Error, WriteLimits::default()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].values, vec![1.0, 2.0]);
        assert_eq!(records[0].metadata.as_ref().unwrap()["url"], "/x");
        assert_eq!(records[1].namespace.as_deref(), Some("ns"));
    }

    #[test]
    fn bad_line_names_its_number_or_is_discarded() {
        let body = b"{\"id\":\"a\",\"values\":[1]}\n{\"id\":\"b\",\"values\":\"x\"}\nnot json\n";
        let error = parse_ndjson(body, Unparsable::Error, WriteLimits::default()).unwrap_err();
        assert!(
            error.message.contains("line 2: values"),
            "{}",
            error.message
        );
        let kept = parse_ndjson(body, Unparsable::Discard, WriteLimits::default()).unwrap();
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

    fn parse(body: &str) -> KilnResult<Vec<VectorRecord>> {
        parse_vectors(body.as_bytes(), Unparsable::Error, WriteLimits::default())
    }

    #[test]
    fn json_wire_forms() {
        let wrapped = json!({"vectors": [{"id": "a", "values": {"0": 0.5, "1": 1.5}}]});
        assert_eq!(
            parse(&wrapped.to_string()).unwrap()[0].values,
            vec![0.5, 1.5]
        );
        let bare = json!([{"id": "a", "values": [1]}, {"id": 2, "values": [1]}]);
        let error = parse(&bare.to_string()).unwrap_err();
        assert!(error.message.contains("vectors[1]: id must be a string"));
        let error = parse(r#"{"vectors": 5}"#).unwrap_err();
        assert!(
            error.message.contains("must be an array"),
            "{}",
            error.message
        );
        // One object without `vectors` is one NDJSON line; several lines are NDJSON.
        assert_eq!(parse(r#"{"id": "a", "values": [1]}"#).unwrap().len(), 1);
        let lines = "{\"id\":\"a\",\"values\":[1]}\n{\"id\":\"b\",\"values\":[2]}\n";
        assert_eq!(parse(lines).unwrap().len(), 2);
        assert!(parse(" \n ").unwrap_err().message.contains("no vectors"));
    }

    fn tiny_lines(count: usize) -> String {
        (0..count)
            .map(|n| format!("{{\"id\":\"{n}\",\"values\":[1]}}\n"))
            .collect()
    }

    #[test]
    fn the_vector_count_is_checked_while_parsing() {
        let limits = WriteLimits {
            max_vectors: 10,
            ..WriteLimits::default()
        };
        let body = tiny_lines(10);
        assert_eq!(
            parse_ndjson(body.as_bytes(), Unparsable::Error, limits)
                .unwrap()
                .len(),
            10
        );
        // Everything after the eleventh line is never looked at: a broken tail is not reported.
        let over = format!(
            "{}{{\"id\":\"x\",\"values\":[1]}}\nnot json\n",
            tiny_lines(10)
        );
        for unparsable in [Unparsable::Error, Unparsable::Discard] {
            let error = parse_ndjson(over.as_bytes(), unparsable, limits).unwrap_err();
            assert_eq!((error.status(), error.code()), (400, 5006));
            assert!(
                error
                    .message
                    .contains("limits.vectorize.max_vectors_per_write"),
                "{}",
                error.message
            );
        }
        let list: Vec<Value> = (0..11)
            .map(|n| json!({"id": n.to_string(), "values": [1]}))
            .collect();
        let valid = json!({"vectors": list}).to_string();
        let error = parse_vectors(valid.as_bytes(), Unparsable::Error, limits).unwrap_err();
        assert!(
            error.message.contains("max_vectors_per_write"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_hundred_megabytes_of_tiny_lines_stops_at_the_cap() {
        let line = "{\"id\":\"a\",\"values\":[1]}\n";
        let body = line.repeat(100 * 1024 * 1024 / line.len());
        let started = std::time::Instant::now();
        let error =
            parse_ndjson(body.as_bytes(), Unparsable::Error, WriteLimits::default()).unwrap_err();
        assert!(error.message.contains("max_vectors_per_write"));
        // Only the first 5001 lines were parsed.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn what_a_write_takes_in_memory_is_bounded() {
        // Metadata of tiny array elements: 10 KiB of text, about 32 bytes each in memory.
        let metadata = json!({"a": vec![0; 4000]});
        let line = json!({"id": "a", "values": [1], "metadata": metadata}).to_string() + "\n";
        let limits = WriteLimits {
            max_vectors: 5000,
            max_bytes: 1024 * 1024,
        };
        let error =
            parse_ndjson(line.repeat(20).as_bytes(), Unparsable::Error, limits).unwrap_err();
        assert_eq!((error.status(), error.code()), (413, 3006));
        assert!(
            error.message.contains("limits.vectorize.max_write_bytes"),
            "{}",
            error.message
        );
        assert_eq!(
            parse_ndjson(line.repeat(2).as_bytes(), Unparsable::Error, limits)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn one_huge_vector_is_refused_unparsed() {
        let zeros = vec!["0"; MAX_VECTOR_JSON_BYTES / 2].join(",");
        let line = format!("{{\"id\":\"a\",\"values\":[1],\"metadata\":{{\"a\":[{zeros}]}}}}");
        let error = parse(&line).unwrap_err();
        assert!(error.message.contains("line 1:"), "{}", error.message);
        assert!(
            error.message.contains("at most 1048576"),
            "{}",
            error.message
        );
        let error = parse(&format!("[{line}]")).unwrap_err();
        assert!(error.message.contains("vectors[0]:"), "{}", error.message);
        let kept = parse_ndjson(
            format!("{line}\n{{\"id\":\"b\",\"values\":[1]}}").as_bytes(),
            Unparsable::Discard,
            WriteLimits::default(),
        )
        .unwrap();
        assert_eq!(kept.len(), 1);
    }

    proptest! {
        #[test]
        fn ndjson_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_vectors(&body, Unparsable::Error, WriteLimits::default());
            let _ = parse_vectors(&body, Unparsable::Discard, WriteLimits::default());
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
            let records = parse_ndjson(body.as_bytes(), Unparsable::Error, WriteLimits::default()).unwrap();
            prop_assert_eq!(records.len(), ids.len());
            prop_assert_eq!(records[0].values[0], value);
        }

        #[test]
        fn discard_keeps_exactly_the_valid_lines(lines in proptest::collection::vec(
            prop_oneof![Just("{\"id\":\"ok\",\"values\":[1]}"), Just("{\"id\":1}"), Just("[")], 0..30)
        ) {
            let body = lines.join("\n");
            let kept = parse_ndjson(body.as_bytes(), Unparsable::Discard, WriteLimits::default()).unwrap();
            let valid = lines.iter().filter(|line| line.contains("ok")).count();
            prop_assert_eq!(kept.len(), valid);
        }
    }
}
