//! A media request's JSON body, parsed without expanding its byte arrays.
//!
//! Workers AI sends audio and images inside JSON as arrays of byte values. Parsed into
//! `serde_json::Value`s, every byte of a 16 MiB upload would cost a 32-byte value (and twice
//! that while the array grows): hundreds of megabytes per request. Here `audio` and `image`
//! arrays are read element by element into bytes and kept as base64 text, 1.33 bytes per byte,
//! which the catalog schemas (`["array", "string"]`) and `bytes_field` accept alike.

use std::fmt;

use base64::Engine;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Top-level fields whose arrays are byte arrays.
const BYTE_FIELDS: [&str; 2] = ["audio", "image"];

/// Parses a JSON object body; `None` when it is not one (the caller treats it as binary or
/// refuses it).
pub fn parse_media_json(bytes: &[u8]) -> Option<Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = de::Deserializer::deserialize_map(&mut deserializer, TopLevel).ok()?;
    deserializer.end().ok()?;
    Some(value)
}

struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if BYTE_FIELDS.contains(&key.as_str()) {
                map.next_value_seed(CompactBytes)?
            } else {
                map.next_value::<Value>()?
            };
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A field's value, with an array of byte values turned into base64 text as it is read.
struct CompactBytes;

impl<'de> DeserializeSeed<'de> for CompactBytes {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CompactBytes {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut bytes = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            match item.as_u64().and_then(|b| u8::try_from(b).ok()) {
                Some(byte) => bytes.push(byte),
                None => {
                    // Not a byte array: kept as JSON values, for validation to name the problem.
                    let mut items: Vec<Value> = bytes.into_iter().map(Value::from).collect();
                    items.push(item);
                    while let Some(item) = seq.next_element::<Value>()? {
                        items.push(item);
                    }
                    return Ok(Value::Array(items));
                }
            }
        }
        if bytes.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        Ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn byte_arrays_become_base64_and_everything_else_is_unchanged() {
        let body = json!({"audio": [82, 73, 70, 70], "language": "en", "n": [1, 2],
            "image": [], "nested": {"image": [1]}});
        let parsed = parse_media_json(body.to_string().as_bytes()).expect("object");
        assert_eq!(parsed["audio"], json!("UklGRg=="));
        assert_eq!(parsed["image"], json!([]));
        assert_eq!(parsed["language"], json!("en"));
        assert_eq!(parsed["n"], json!([1, 2]));
        assert_eq!(parsed["nested"], json!({"image": [1]}));
    }

    #[test]
    fn arrays_that_are_not_bytes_stay_arrays() {
        for audio in [
            json!([1, 256, 2]),
            json!([1, "x"]),
            json!([-1]),
            json!([1.5]),
        ] {
            let body = json!({ "audio": audio.clone() });
            let parsed = parse_media_json(body.to_string().as_bytes()).expect("object");
            assert_eq!(parsed["audio"], audio);
        }
    }

    #[test]
    fn the_parse_agrees_with_serde_json_on_what_is_json() {
        for text in [
            "[1,2]",
            "\"x\"",
            "{\"audio\":[1,2}",
            "{} x",
            "{\"a\":1,}",
            "{\"a\":1}",
        ] {
            let ours = parse_media_json(text.as_bytes()).is_some();
            let theirs = serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object());
            assert_eq!(ours, theirs, "{text}");
        }
    }
}
