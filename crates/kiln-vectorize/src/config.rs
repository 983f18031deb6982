//! Index definitions: names, dimensions, metrics and presets (spec §5.1, §5.2, §5.7).

use kiln_core::{KilnError, KilnResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::metric::Metric;

pub const MAX_INDEX_NAME_BYTES: usize = 64;
pub const MAX_DIMENSIONS: usize = 1536;
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
pub const MAX_INDEXES_PER_ACCOUNT: usize = 50_000;

/// Presets map an embedding model to its output size; the sources do not state the metric, so
/// cosine (what these models are trained for) is assumed (spec §9).
const PRESETS: &[(&str, usize)] = &[
    ("@cf/baai/bge-small-en-v1.5", 384),
    ("@cf/baai/bge-base-en-v1.5", 768),
    ("@cf/baai/bge-large-en-v1.5", 1024),
    ("openai/text-embedding-ada-002", 1536),
    ("cohere/embed-multilingual-v2.0", 768),
];

/// What `config.json` in an index directory holds; immutable after creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexConfig {
    pub name: String,
    pub description: String,
    pub dimensions: usize,
    pub metric: String,
    pub created_on: String,
    pub modified_on: String,
}

impl IndexConfig {
    /// Validates a create body: `{name, description?, config: {dimensions, metric} | {preset}}`.
    pub fn from_create_body(body: &Value, now: &str) -> KilnResult<Self> {
        let object = body
            .as_object()
            .ok_or_else(|| KilnError::bad_input("the index definition must be a JSON object"))?;
        let name = object
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| KilnError::bad_input("name is required and must be a string"))?;
        validate_index_name(name)?;
        let description = match object.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) if text.len() <= MAX_DESCRIPTION_BYTES => text.clone(),
            Some(Value::String(_)) => {
                return Err(KilnError::bad_input(format!(
                    "description must be at most {MAX_DESCRIPTION_BYTES} bytes"
                )))
            }
            Some(_) => return Err(KilnError::bad_input("description must be a string")),
        };
        let config = object
            .get("config")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                KilnError::bad_input("config is required: {dimensions, metric} or {preset}")
            })?;
        let (dimensions, metric) = if let Some(preset) = config.get("preset") {
            let preset = preset
                .as_str()
                .ok_or_else(|| KilnError::bad_input("config.preset must be a string"))?;
            let dimensions = PRESETS
                .iter()
                .find(|(known, _)| *known == preset)
                .map(|(_, dims)| *dims)
                .ok_or_else(|| {
                    let known: Vec<&str> = PRESETS.iter().map(|(name, _)| *name).collect();
                    KilnError::bad_input(format!(
                        "config.preset {preset:?} is not one of {}",
                        known.join(", ")
                    ))
                })?;
            (dimensions, Metric::Cosine)
        } else {
            let dimensions = config
                .get("dimensions")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    KilnError::bad_input("config.dimensions is required and must be an integer")
                })?;
            if dimensions == 0 || dimensions > MAX_DIMENSIONS as u64 {
                return Err(KilnError::bad_input(format!(
                    "config.dimensions must be between 1 and {MAX_DIMENSIONS} (got {dimensions})"
                )));
            }
            let metric = config
                .get("metric")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    KilnError::bad_input(
                        "config.metric is required: cosine, euclidean or dot-product",
                    )
                })?;
            (dimensions as usize, Metric::parse(metric)?)
        };
        Ok(Self {
            name: name.to_owned(),
            description,
            dimensions,
            metric: metric.as_str().to_owned(),
            created_on: now.to_owned(),
            modified_on: now.to_owned(),
        })
    }

    pub fn metric(&self) -> KilnResult<Metric> {
        Metric::parse(&self.metric)
    }

    /// The REST index object.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "config": {"dimensions": self.dimensions, "metric": self.metric},
            "created_on": self.created_on,
            "modified_on": self.modified_on,
        })
    }
}

/// Cloudflare asks for lower-case letters, digits and dashes; underscores are accepted too
/// (they are harmless in a directory name). The first character must be a letter or digit so
/// that a name can never be `.`/`..` or look like an option.
pub fn validate_index_name(name: &str) -> KilnResult<()> {
    if name.is_empty() || name.len() > MAX_INDEX_NAME_BYTES {
        return Err(KilnError::bad_input(format!(
            "index name must be 1 to {MAX_INDEX_NAME_BYTES} bytes (got {})",
            name.len()
        )));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !starts_well || !name.chars().all(allowed) {
        return Err(KilnError::bad_input(format!(
            "index name {name:?} must start with a lower-case letter or digit and contain only \
             lower-case letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

/// Accounts become directory names, so only characters that are safe there are accepted.
pub fn validate_account(account: &str) -> KilnResult<()> {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if account.is_empty() || account.len() > 128 || !account.chars().all(safe) {
        return Err(KilnError::bad_input(format!(
            "account id {account:?} must be 1 to 128 characters of letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_with_dimensions_and_metric() {
        let body = json!({"name": "docs", "config": {"dimensions": 3, "metric": "euclidean"}});
        let config = IndexConfig::from_create_body(&body, "t").unwrap();
        assert_eq!(
            (config.dimensions, config.metric.as_str()),
            (3, "euclidean")
        );
        assert_eq!(config.to_json()["description"], "");
    }

    #[test]
    fn create_body_with_preset() {
        let body = json!({"name": "docs", "config": {"preset": "@cf/baai/bge-base-en-v1.5"}});
        let config = IndexConfig::from_create_body(&body, "t").unwrap();
        assert_eq!((config.dimensions, config.metric.as_str()), (768, "cosine"));
    }

    #[test]
    fn bad_create_bodies_name_the_field() {
        let cases = [
            (
                json!({"config": {"dimensions": 3, "metric": "cosine"}}),
                "name",
            ),
            (
                json!({"name": "Docs", "config": {"dimensions": 3, "metric": "cosine"}}),
                "index name",
            ),
            (
                json!({"name": "a".repeat(65), "config": {"dimensions": 3, "metric": "cosine"}}),
                "64 bytes",
            ),
            (
                json!({"name": "docs", "config": {"dimensions": 1537, "metric": "cosine"}}),
                "config.dimensions",
            ),
            (
                json!({"name": "docs", "config": {"dimensions": 0, "metric": "cosine"}}),
                "config.dimensions",
            ),
            (
                json!({"name": "docs", "config": {"dimensions": 3, "metric": "manhattan"}}),
                "config.metric",
            ),
            (
                json!({"name": "docs", "config": {"preset": "nope"}}),
                "config.preset",
            ),
            (json!({"name": "docs"}), "config"),
        ];
        for (body, field) in cases {
            let error = IndexConfig::from_create_body(&body, "t").unwrap_err();
            assert!(error.message.contains(field), "{body}: {}", error.message);
        }
    }

    #[test]
    fn index_names() {
        assert!(validate_index_name("my-index_2").is_ok());
        for bad in ["", "-x", "_x", "UPPER", "a.b", "a/b", "..", "ünï"] {
            assert!(validate_index_name(bad).is_err(), "{bad}");
        }
    }
}
