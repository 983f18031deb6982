//! Query options (spec §5.4) as both the REST body and the binding's wire body carry them.

use kiln_core::{KilnError, KilnResult};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::record::{parse_values, validate_id, validate_namespace};

pub const DEFAULT_TOP_K: usize = 5;
pub const MAX_TOP_K: usize = 100;
/// With `returnValues` or `returnMetadata: "all"`. Sources disagree (20 vs 50, spec §9); 50 is
/// the newer figure and accepts every client written for 20.
pub const MAX_TOP_K_WITH_VALUES_OR_METADATA: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnMetadata {
    None,
    Indexed,
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub vector: Option<Vec<f32>>,
    pub vector_id: Option<String>,
    pub top_k: usize,
    pub return_values: bool,
    pub return_metadata: ReturnMetadata,
    pub namespace: Option<String>,
    pub filter: Option<Value>,
}

impl Query {
    /// A query by vector.
    pub fn by_vector(vector: Vec<f32>) -> Self {
        Self {
            vector: Some(vector),
            vector_id: None,
            top_k: DEFAULT_TOP_K,
            return_values: false,
            return_metadata: ReturnMetadata::None,
            namespace: None,
            filter: None,
        }
    }

    /// A query from the raw JSON body when it has the common shape — an object whose `vector`
    /// (if any) is a non-empty array of numbers within the float32 range — parsing the numbers
    /// straight into floats instead of building a JSON tree of them first (a 384-float query is
    /// mostly numbers). `None` for any other body: the caller then parses it as JSON and uses
    /// [`Self::from_json`], which gives the same answer for the bodies this accepts and the
    /// precise error for the others.
    pub fn from_plain_json(bytes: &[u8]) -> Option<KilnResult<Query>> {
        let plain: PlainQuery = serde_json::from_slice(bytes).ok()?;
        let vector = match plain.vector {
            None => None,
            Some(wide) => {
                if wide.is_empty() {
                    return None;
                }
                let narrow: Vec<f32> = wide.iter().map(|value| *value as f32).collect();
                if !narrow.iter().all(|value| value.is_finite()) {
                    return None;
                }
                Some(narrow)
            }
        };
        Some(Self::from_parts(&plain.rest, vector))
    }

    /// `{vector | vectorId, topK?, returnValues?, returnMetadata?, namespace?, filter?}`.
    pub fn from_json(body: &Value) -> KilnResult<Query> {
        let object = body
            .as_object()
            .ok_or_else(|| KilnError::bad_input("the query must be a JSON object"))?;
        let vector = match object.get("vector") {
            None | Some(Value::Null) => None,
            Some(Value::Object(_)) if !looks_like_float32_array(&object["vector"]) => {
                return Err(KilnError::bad_input(
                    "vector must be an array of numbers; pass the embedding itself (for example \
                     data[0] of an embeddings response), not the whole response object",
                ))
            }
            Some(values) => Some(
                parse_values(values)
                    .map_err(|reason| KilnError::bad_input(format!("vector {reason}")))?,
            ),
        };
        Self::from_parts(object, vector)
    }

    /// Everything but parsing `vector` (which `object`'s `vector` field is not read for).
    fn from_parts(object: &Map<String, Value>, vector: Option<Vec<f32>>) -> KilnResult<Query> {
        let vector_id = match object.get("vectorId") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => {
                validate_id(id)
                    .map_err(|reason| KilnError::bad_input(format!("vectorId: {reason}")))?;
                Some(id.clone())
            }
            Some(_) => return Err(KilnError::bad_input("vectorId must be a string")),
        };
        match (&vector, &vector_id) {
            (None, None) => {
                return Err(KilnError::bad_input(
                    "vector is required (or vectorId to query by a stored vector)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(KilnError::bad_input(
                    "give either vector or vectorId, not both",
                ))
            }
            _ => {}
        }
        let top_k = match object.get("topK") {
            None | Some(Value::Null) => DEFAULT_TOP_K,
            Some(value) => match value.as_u64() {
                Some(top_k @ 1..) => usize::try_from(top_k).unwrap_or(usize::MAX),
                _ => return Err(KilnError::bad_input("topK must be a positive integer")),
            },
        };
        let return_values = match object.get("returnValues") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => return Err(KilnError::bad_input("returnValues must be a boolean")),
        };
        let return_metadata = match object.get("returnMetadata") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => ReturnMetadata::None,
            Some(Value::Bool(true)) => ReturnMetadata::All,
            Some(Value::String(mode)) => match mode.as_str() {
                "none" => ReturnMetadata::None,
                "indexed" => ReturnMetadata::Indexed,
                "all" => ReturnMetadata::All,
                other => {
                    return Err(KilnError::bad_input(format!(
                        "returnMetadata must be \"none\", \"indexed\" or \"all\" (got {other:?})"
                    )))
                }
            },
            Some(_) => {
                return Err(KilnError::bad_input(
                    "returnMetadata must be \"none\", \"indexed\", \"all\" or a boolean",
                ))
            }
        };
        let namespace = match object.get("namespace") {
            None | Some(Value::Null) => None,
            Some(Value::String(namespace)) => {
                validate_namespace(namespace).map_err(KilnError::bad_input)?;
                Some(namespace.clone())
            }
            Some(_) => return Err(KilnError::bad_input("namespace must be a string")),
        };
        let filter = match object.get("filter") {
            None | Some(Value::Null) => None,
            Some(filter) => Some(filter.clone()),
        };
        let query = Query {
            vector,
            vector_id,
            top_k,
            return_values,
            return_metadata,
            namespace,
            filter,
        };
        query.check_top_k()?;
        Ok(query)
    }

    /// topK ≤ 100, and ≤ 50 when values or all metadata come back.
    pub fn check_top_k(&self) -> KilnResult<()> {
        let heavy = self.return_values || self.return_metadata == ReturnMetadata::All;
        let limit = if heavy {
            MAX_TOP_K_WITH_VALUES_OR_METADATA
        } else {
            MAX_TOP_K
        };
        if self.top_k == 0 || self.top_k > limit {
            let why = if heavy {
                " with returnValues or returnMetadata \"all\""
            } else {
                ""
            };
            return Err(KilnError::bad_input(format!(
                "topK must be between 1 and {limit}{why} (got {})",
                self.top_k
            )));
        }
        Ok(())
    }
}

/// A query body as [`Query::from_plain_json`] reads it: `vector` as numbers (a `null` one as
/// absent), every other field as JSON.
struct PlainQuery {
    vector: Option<Vec<f64>>,
    rest: Map<String, Value>,
}

impl<'de> Deserialize<'de> for PlainQuery {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = PlainQuery;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a query object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PlainQuery, A::Error> {
                let mut query = PlainQuery {
                    vector: None,
                    rest: Map::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "vector" {
                        // Like JSON objects, the last of repeated keys counts.
                        query.vector = map.next_value::<Option<Vec<f64>>>()?;
                    } else {
                        let value = map.next_value::<Value>()?;
                        query.rest.insert(key, value);
                    }
                }
                Ok(query)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

/// A `Float32Array` under `JSON.stringify` is `{"0": …, "1": …}`; anything else that is an
/// object (an embeddings response, say) is a mistake worth naming.
fn looks_like_float32_array(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|entries| !entries.is_empty() && entries.contains_key("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let query = Query::from_json(&json!({"vector": [1, 2]})).unwrap();
        assert_eq!(query.top_k, 5);
        assert!(!query.return_values);
        assert_eq!(query.return_metadata, ReturnMetadata::None);
        assert_eq!(query, Query::by_vector(vec![1.0, 2.0]));
    }

    #[test]
    fn return_metadata_forms() {
        for (given, expected) in [
            (json!(true), ReturnMetadata::All),
            (json!(false), ReturnMetadata::None),
            (json!("indexed"), ReturnMetadata::Indexed),
            (json!("all"), ReturnMetadata::All),
            (json!("none"), ReturnMetadata::None),
        ] {
            let query = Query::from_json(&json!({"vector": [1], "returnMetadata": given})).unwrap();
            assert_eq!(query.return_metadata, expected);
        }
        assert!(Query::from_json(&json!({"vector": [1], "returnMetadata": "some"})).is_err());
    }

    #[test]
    fn top_k_limits() {
        assert!(Query::from_json(&json!({"vector": [1], "topK": 100})).is_ok());
        let error = Query::from_json(&json!({"vector": [1], "topK": 101})).unwrap_err();
        assert!(error.message.contains("topK must be between 1 and 100"));
        assert!(
            Query::from_json(&json!({"vector": [1], "topK": 50, "returnValues": true})).is_ok()
        );
        let error = Query::from_json(&json!({"vector": [1], "topK": 51, "returnMetadata": "all"}))
            .unwrap_err();
        assert!(
            error.message.contains("50 with returnValues"),
            "{}",
            error.message
        );
        assert!(Query::from_json(
            &json!({"vector": [1], "topK": 100, "returnMetadata": "indexed"})
        )
        .is_ok());
        assert!(Query::from_json(&json!({"vector": [1], "topK": 0})).is_err());
        assert!(Query::from_json(&json!({"vector": [1], "topK": -1})).is_err());
    }

    #[test]
    fn the_plain_path_agrees_with_the_json_path() {
        let bodies = [
            json!({"vector": [1, 2.5, -3e-3]}),
            json!({"vector": [0.1, 0.2], "topK": 7, "returnValues": true, "returnMetadata": "indexed", "namespace": "n", "filter": {"a": {"$eq": 1}}}),
            json!({"vectorId": "a", "topK": 3}),
            json!({"vector": null, "vectorId": "a"}),
            json!({"vector": [1], "topK": 0}),
            json!({"vector": [1], "vectorId": "a"}),
            json!({"vector": [1], "returnMetadata": "some"}),
            json!({"vector": [1], "topK": 51, "returnValues": true}),
            json!({}),
        ];
        for body in bodies {
            let bytes = serde_json::to_vec(&body).unwrap();
            let plain = Query::from_plain_json(&bytes).expect("plain shape");
            let reference = Query::from_json(&body);
            match (plain, reference) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
                (Err(a), Err(b)) => assert_eq!(a.message, b.message, "{body}"),
                (a, b) => panic!("{body}: {a:?} vs {b:?}"),
            }
        }
        // Repeated keys: the last counts, as when parsing to JSON first.
        let repeated = br#"{"vector": [1], "vector": [2, 3]}"#;
        let plain = Query::from_plain_json(repeated).unwrap().unwrap();
        let value: Value = serde_json::from_slice(repeated).unwrap();
        assert_eq!(plain, Query::from_json(&value).unwrap());
        // Other shapes are left to the JSON path (and its precise errors).
        for other in [
            &br#"{"vector": {"0": 1, "1": 2}}"#[..],
            br#"{"vector": []}"#,
            br#"{"vector": ["a"]}"#,
            br#"{"vector": [1e39]}"#,
            br#"[1, 2]"#,
            br#"{"vector": [1"#,
            b"",
        ] {
            assert!(
                Query::from_plain_json(other).is_none(),
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn vector_forms_and_mistakes() {
        let by_id = Query::from_json(&json!({"vectorId": "a"})).unwrap();
        assert_eq!(by_id.vector_id.as_deref(), Some("a"));
        let typed = Query::from_json(&json!({"vector": {"0": 1, "1": 2}})).unwrap();
        assert_eq!(typed.vector, Some(vec![1.0, 2.0]));
        let whole = json!({"vector": {"shape": [1, 2], "data": [[1, 2]]}});
        let error = Query::from_json(&whole).unwrap_err();
        assert!(error.message.contains("not the whole response"));
        assert!(Query::from_json(&json!({}))
            .unwrap_err()
            .message
            .contains("vector is required"));
        assert!(Query::from_json(&json!({"vector": [1], "vectorId": "a"})).is_err());
        assert!(Query::from_json(&json!({"vector": ["a"]}))
            .unwrap_err()
            .message
            .contains("vector [0]"));
    }
}
