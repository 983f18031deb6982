//! The query of `GET /ai/models/search` (spec §1.5).
//!
//! Query strings carry every value as text, and clients write booleans as `true`, `1` or
//! `false`, so numbers and booleans are accepted both as JSON values and as strings.

use serde::{de, Deserialize, Deserializer};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SearchQuery {
    pub author: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub hide_experimental: Option<bool>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub include_deprecated: Option<bool>,
    pub search: Option<String>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub source: Option<u32>,
    pub task: Option<String>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub page: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub per_page: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrText {
    Bool(bool),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    match Option::<BoolOrText>::deserialize(deserializer)? {
        None => Ok(None),
        Some(BoolOrText::Bool(value)) => Ok(Some(value)),
        Some(BoolOrText::Text(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!(
                "expected a boolean, got {text:?}"
            ))),
        },
    }
}

/// Values beyond `u32::MAX` saturate: a page that far out is simply empty.
fn lenient_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let number = match Option::<NumberOrText>::deserialize(deserializer)? {
        None => return Ok(None),
        Some(NumberOrText::Number(number)) => number,
        Some(NumberOrText::Text(text)) if text.trim().is_empty() => return Ok(None),
        Some(NumberOrText::Text(text)) => text.trim().parse::<u64>().map_err(|_| {
            de::Error::custom(format!("expected a non-negative integer, got {text:?}"))
        })?,
    };
    Ok(Some(u32::try_from(number).unwrap_or(u32::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_strings_and_json_values() {
        let query: SearchQuery = serde_json::from_value(json!({
            "hide_experimental": "1", "include_deprecated": true, "page": "3", "per_page": 20,
            "source": "", "task": "Text Generation"
        }))
        .expect("lenient query");
        assert_eq!(query.hide_experimental, Some(true));
        assert_eq!(query.include_deprecated, Some(true));
        assert_eq!(
            (query.page, query.per_page, query.source),
            (Some(3), Some(20), None)
        );
        let huge: SearchQuery =
            serde_json::from_value(json!({"page": "99999999999"})).expect("saturates");
        assert_eq!(huge.page, Some(u32::MAX));
    }

    #[test]
    fn rejects_garbage() {
        assert!(serde_json::from_value::<SearchQuery>(json!({"page": "two"})).is_err());
        assert!(serde_json::from_value::<SearchQuery>(json!({"page": -1})).is_err());
        assert!(
            serde_json::from_value::<SearchQuery>(json!({"hide_experimental": "maybe"})).is_err()
        );
    }
}
