//! Metadata indexes and filters (spec §5.5, §5.6).
//!
//! A vector's *indexed properties* are taken when the vector is written: for each metadata
//! index that exists then, the value at the (dotted) property path, if it has the index's type.
//! Strings keep only their first 64 bytes (cut at a UTF-8 boundary). Filters are evaluated only
//! against these values, which gives Vectorize's rules for free: a vector written before an
//! index existed is not in it, and string comparisons see the truncated value. String operands
//! are truncated the same way, so `$eq` on a long string compares its first 64 bytes.
//!
//! `$eq: null` matches vectors that have no indexed value for the property, and `$ne`/`$nin`
//! match them too (they are "not equal"). Range operators never match a missing value or a
//! value of another type.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use kiln_core::{KilnError, KilnResult};
use serde_json::{Map, Value};

pub const MAX_FILTER_BYTES: usize = 2048;
pub const MAX_FILTER_KEY_CHARS: usize = 512;
pub const INDEXED_STRING_BYTES: usize = 64;
pub const MAX_METADATA_INDEXES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataIndexType {
    String,
    Number,
    Boolean,
}

impl MetadataIndexType {
    pub fn parse(name: &str) -> KilnResult<Self> {
        match name {
            "string" => Ok(Self::String),
            "number" => Ok(Self::Number),
            "boolean" => Ok(Self::Boolean),
            other => Err(KilnError::bad_input(format!(
                "indexType must be one of string, number, boolean (got {other:?})"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }
}

/// A value as a metadata index holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexedValue {
    String(String),
    Number(f64),
    Boolean(bool),
}

impl IndexedValue {
    pub fn to_json(&self) -> Value {
        match self {
            Self::String(text) => Value::String(text.clone()),
            Self::Number(number) => {
                serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
            }
            Self::Boolean(flag) => Value::Bool(*flag),
        }
    }

    /// Ordering within one type; `None` across types (they never compare).
    fn compare(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Self::String(a), Self::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Self::Number(a), Self::Number(b)) => a.partial_cmp(b),
            (Self::Boolean(a), Self::Boolean(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// The indexed properties of one vector, in metadata-index creation order.
pub type IndexedProperties = Vec<(String, IndexedValue)>;

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a char boundary.
pub fn truncate_utf8(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The value at a dotted path (`pandas.nice` → `metadata["pandas"]["nice"]`).
pub fn lookup_path<'a>(metadata: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut current = metadata.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// What a metadata index of `index_type` records for this metadata, if anything.
pub fn indexed_value(
    metadata: &Map<String, Value>,
    property: &str,
    index_type: MetadataIndexType,
) -> Option<IndexedValue> {
    match (lookup_path(metadata, property)?, index_type) {
        (Value::String(text), MetadataIndexType::String) => Some(IndexedValue::String(
            truncate_utf8(text, INDEXED_STRING_BYTES).to_owned(),
        )),
        (Value::Number(number), MetadataIndexType::Number) => {
            number.as_f64().map(IndexedValue::Number)
        }
        (Value::Bool(flag), MetadataIndexType::Boolean) => Some(IndexedValue::Boolean(*flag)),
        _ => None,
    }
}

/// The indexed properties for a vector written while `indexes` exist.
pub fn indexed_properties(
    metadata: Option<&Map<String, Value>>,
    indexes: &[(String, MetadataIndexType)],
) -> IndexedProperties {
    let Some(metadata) = metadata else {
        return Vec::new();
    };
    indexes
        .iter()
        .filter_map(|(property, index_type)| {
            indexed_value(metadata, property, *index_type).map(|value| (property.clone(), value))
        })
        .collect()
}

/// An operand of `$eq`/`$ne`/`$in`/`$nin`: `None` is JSON null.
type Operand = Option<IndexedValue>;

#[derive(Debug, Clone)]
enum Condition {
    Equal(Operand),
    NotEqual(Operand),
    In(Vec<Operand>),
    NotIn(Vec<Operand>),
    Range {
        lower: Option<(IndexedValue, bool)>,
        upper: Option<(IndexedValue, bool)>,
    },
}

/// A parsed filter: an implicit AND of one condition per property.
#[derive(Debug, Clone)]
pub struct Filter {
    clauses: Vec<(String, Condition)>,
}

impl Filter {
    /// Parses and checks a filter against the index's metadata indexes (only indexed
    /// properties can be filtered).
    pub fn parse(
        filter: &Value,
        indexes: &BTreeMap<String, MetadataIndexType>,
    ) -> KilnResult<Self> {
        let object = match filter {
            Value::Object(object) if !object.is_empty() => object,
            _ => {
                return Err(KilnError::bad_input(
                    "filter must be a non-empty JSON object",
                ))
            }
        };
        let size = serde_json::to_vec(filter).map_or(usize::MAX, |bytes| bytes.len());
        if size >= MAX_FILTER_BYTES {
            return Err(KilnError::bad_input(format!(
                "filter must be less than {MAX_FILTER_BYTES} bytes of compact JSON (got {size})"
            )));
        }
        let mut clauses = Vec::with_capacity(object.len());
        for (key, value) in object {
            validate_filter_key(key)?;
            if !indexes.contains_key(key) {
                return Err(KilnError::bad_input(format!(
                    "filter.{key}: property {key:?} has no metadata index; only indexed \
                     properties can be filtered (create one with metadata_index/create)"
                )));
            }
            let condition = parse_condition(key, value)
                .map_err(|reason| KilnError::bad_input(format!("filter.{key}: {reason}")))?;
            clauses.push((key.clone(), condition));
        }
        Ok(Self { clauses })
    }

    pub fn matches(&self, properties: &[(String, IndexedValue)]) -> bool {
        self.clauses.iter().all(|(property, condition)| {
            let value = properties
                .iter()
                .find(|(name, _)| name == property)
                .map(|(_, value)| value);
            condition_holds(condition, value)
        })
    }
}

fn validate_filter_key(key: &str) -> KilnResult<()> {
    let reason = if key.is_empty() {
        Some("keys must not be empty")
    } else if key.chars().count() > MAX_FILTER_KEY_CHARS {
        Some("keys must be at most 512 characters")
    } else if key.contains('"') {
        Some("keys must not contain '\"'")
    } else if key.starts_with('$') {
        Some("keys must not start with '$'")
    } else if key.split('.').any(str::is_empty) {
        Some("'.' may only separate non-empty nested keys")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KilnError::bad_input(format!(
            "filter key {key:?}: {reason}"
        ))),
        None => Ok(()),
    }
}

fn parse_condition(key: &str, value: &Value) -> Result<Condition, String> {
    let operators = match value {
        Value::Object(operators) => operators,
        Value::Array(_) => return Err("an array is not a value; use {\"$in\": [...]}".into()),
        scalar => return Ok(Condition::Equal(parse_operand(scalar)?)),
    };
    if operators.is_empty() {
        return Err("an operator object must not be empty".into());
    }
    let mut lower = None;
    let mut upper = None;
    let mut single = None;
    for (operator, operand) in operators {
        match operator.as_str() {
            "$eq" => single = Some(Condition::Equal(parse_operand(operand)?)),
            "$ne" => single = Some(Condition::NotEqual(parse_operand(operand)?)),
            "$in" => single = Some(Condition::In(parse_operand_list(operand)?)),
            "$nin" => single = Some(Condition::NotIn(parse_operand_list(operand)?)),
            "$gt" | "$gte" if lower.is_none() => {
                lower = Some((parse_range_bound(operator, operand)?, operator == "$gte"))
            }
            "$lt" | "$lte" if upper.is_none() => {
                upper = Some((parse_range_bound(operator, operand)?, operator == "$lte"))
            }
            "$gt" | "$gte" | "$lt" | "$lte" => {
                return Err(
                    "only one lower ($gt/$gte) and one upper ($lt/$lte) bound per key".into(),
                )
            }
            other if other.starts_with('$') => {
                return Err(format!(
                    "unknown operator {other:?}; use $eq, $ne, $in, $nin, $lt, $lte, $gt, $gte"
                ))
            }
            other => {
                return Err(format!(
                    "nested objects are not filters; address nested fields as \"{key}.{other}\""
                ))
            }
        }
    }
    let ranged = lower.is_some() || upper.is_some();
    match single {
        Some(_) if operators.len() > 1 || ranged => Err(
            "operators cannot be combined, except one upper bound ($lt/$lte) with one lower \
             bound ($gt/$gte)"
                .into(),
        ),
        Some(condition) => Ok(condition),
        None => Ok(Condition::Range { lower, upper }),
    }
}

fn parse_operand(value: &Value) -> Result<Operand, String> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(flag) => Ok(Some(IndexedValue::Boolean(*flag))),
        Value::Number(number) => number
            .as_f64()
            .map(|number| Some(IndexedValue::Number(number)))
            .ok_or_else(|| "numbers must fit a float64".into()),
        Value::String(text) => Ok(Some(IndexedValue::String(
            truncate_utf8(text, INDEXED_STRING_BYTES).to_owned(),
        ))),
        _ => Err("$eq/$ne values must be a string, number, boolean or null".into()),
    }
}

fn parse_operand_list(value: &Value) -> Result<Vec<Operand>, String> {
    value
        .as_array()
        .ok_or("$in/$nin take an array of strings, numbers, booleans or nulls")?
        .iter()
        .map(parse_operand)
        .collect()
}

fn parse_range_bound(operator: &str, value: &Value) -> Result<IndexedValue, String> {
    match parse_operand(value) {
        Ok(Some(bound @ (IndexedValue::String(_) | IndexedValue::Number(_)))) => Ok(bound),
        _ => Err(format!("{operator} takes a string or a number")),
    }
}

fn equals(value: Option<&IndexedValue>, operand: &Operand) -> bool {
    match (value, operand) {
        (None, None) => true,
        (Some(value), Some(operand)) => value.compare(operand) == Some(Ordering::Equal),
        _ => false,
    }
}

fn condition_holds(condition: &Condition, value: Option<&IndexedValue>) -> bool {
    match condition {
        Condition::Equal(operand) => equals(value, operand),
        Condition::NotEqual(operand) => !equals(value, operand),
        Condition::In(operands) => operands.iter().any(|operand| equals(value, operand)),
        Condition::NotIn(operands) => !operands.iter().any(|operand| equals(value, operand)),
        Condition::Range { lower, upper } => {
            let Some(value) = value else {
                return false;
            };
            let above = lower.as_ref().is_none_or(|(bound, inclusive)| {
                matches!(
                    (value.compare(bound), inclusive),
                    (Some(Ordering::Greater), _) | (Some(Ordering::Equal), true)
                )
            });
            let below = upper.as_ref().is_none_or(|(bound, inclusive)| {
                matches!(
                    (value.compare(bound), inclusive),
                    (Some(Ordering::Less), _) | (Some(Ordering::Equal), true)
                )
            });
            above && below
        }
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
