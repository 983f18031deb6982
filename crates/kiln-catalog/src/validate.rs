//! Input validation against the served schemas, with messages worded as Workers AI words
//! them (spec §1.3): `AiError: Bad input: Error: Type mismatch of '/prompt', ...`.
//!
//! Top-level `oneOf` schemas (Prompt | Messages | Async Batch ...) are not validated as a
//! whole: the branch is chosen by which required keys the input has, so the message names the
//! field that is actually wrong instead of reporting that no branch matched.

use std::collections::HashMap;
use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use kiln_core::KilnError;
use serde_json::{json, Map, Value};

use crate::entry::CatalogEntry;
use crate::schema::{batch_enabled, SchemaKind};

/// Enough to name every wrong field of a typical request without echoing a huge one back.
const MAX_MESSAGES: usize = 8;
/// Longest rendering of an offending value inside a message.
const MAX_VALUE_CHARS: usize = 48;

struct Branch {
    required: Vec<String>,
    is_object: bool,
    /// `{requests:[...]}`: each item is validated as a single input.
    batch: bool,
    validator: Validator,
}

enum CompiledInput {
    Whole(Validator),
    Branches(Vec<Branch>),
}

type CompiledTable = HashMap<(SchemaKind, bool), Result<CompiledInput, String>>;

/// Every schema compiled once, on first use.
static COMPILED: LazyLock<CompiledTable> = LazyLock::new(|| {
    let mut table = HashMap::new();
    for kind in SchemaKind::ALL {
        for batch in [false, true] {
            table.insert((kind, batch), compile_input(&kind.input_schema(batch)));
        }
    }
    table
});

/// Checks `input` against the model's input schema. Errors are `BadInput` (5006).
pub fn validate_input(entry: &CatalogEntry, input: &Value) -> Result<(), KilnError> {
    let compiled = match COMPILED.get(&(entry.schema, batch_enabled(entry))) {
        Some(Ok(compiled)) => compiled,
        Some(Err(error)) => return Err(KilnError::internal(format!("input schema: {error}"))),
        None => return Err(KilnError::internal("input schema missing")),
    };
    let mut messages = Vec::new();
    match compiled {
        CompiledInput::Whole(validator) => collect(validator, input, "", &mut messages),
        CompiledInput::Branches(branches) => {
            let branches: Vec<&Branch> = branches.iter().collect();
            check_branches(&branches, input, "", &mut messages);
        }
    }
    if messages.is_empty() {
        return Ok(());
    }
    messages.truncate(MAX_MESSAGES);
    Err(KilnError::bad_input(format!(
        "Error: {}",
        messages.join(", ")
    )))
}

/// Compiles a schema as the validator will use it (draft 2020-12).
pub fn compile_schema(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::new(schema).map_err(|error| error.to_string())
}

fn compile_input(schema: &Value) -> Result<CompiledInput, String> {
    let Some(Value::Array(branches)) = schema.get("oneOf") else {
        return compile_schema(schema).map(CompiledInput::Whole);
    };
    branches
        .iter()
        .map(|branch| {
            let required: Vec<String> = branch
                .get("required")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let batch = required == ["requests"];
            let mut checked = branch.clone();
            if batch {
                // Items are checked one by one through the other branches.
                if let Some(items) = checked.pointer_mut("/properties/requests/items") {
                    *items = json!({"type": "object"});
                }
            }
            Ok(Branch {
                is_object: branch.get("type").and_then(Value::as_str) == Some("object"),
                batch,
                required,
                validator: compile_schema(&checked)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(CompiledInput::Branches)
}

fn check_branches(branches: &[&Branch], instance: &Value, prefix: &str, out: &mut Vec<String>) {
    let Value::Object(map) = instance else {
        // A raw body (binary string) or a wrong top-level type.
        if branches
            .iter()
            .any(|b| !b.is_object && b.validator.is_valid(instance))
        {
            return;
        }
        if let Some(branch) = branches.iter().find(|b| b.is_object).or(branches.first()) {
            collect(&branch.validator, instance, prefix, out);
        }
        return;
    };
    let candidates: Vec<&Branch> = branches
        .iter()
        .copied()
        .filter(|b| b.is_object && b.required.iter().all(|key| map.contains_key(key)))
        .collect();
    if candidates.is_empty() {
        out.push(no_branch_message(branches, map, prefix));
        return;
    }
    // Several candidates (e.g. both `prompt` and `messages`): any one that passes will do.
    let mut first_failure: Option<Vec<String>> = None;
    for branch in candidates {
        let mut messages = Vec::new();
        check_branch(branch, branches, instance, prefix, &mut messages);
        if messages.is_empty() {
            return;
        }
        first_failure.get_or_insert(messages);
    }
    out.extend(first_failure.unwrap_or_default());
}

fn check_branch(
    branch: &Branch,
    all: &[&Branch],
    instance: &Value,
    prefix: &str,
    out: &mut Vec<String>,
) {
    collect(&branch.validator, instance, prefix, out);
    if !branch.batch || !out.is_empty() {
        return;
    }
    let singles: Vec<&Branch> = all.iter().copied().filter(|b| !b.batch).collect();
    let requests = instance.get("requests").and_then(Value::as_array);
    for (index, item) in requests.into_iter().flatten().enumerate() {
        if out.len() >= MAX_MESSAGES {
            return;
        }
        check_branches(&singles, item, &format!("{prefix}/requests/{index}"), out);
    }
}

/// `oneOf at '/' not met, 0 matches: required properties at '/' are 'prompt', ...`
fn no_branch_message(branches: &[&Branch], map: &Map<String, Value>, prefix: &str) -> String {
    let at = display_path(prefix, "");
    let reasons: Vec<String> = branches
        .iter()
        .filter(|b| b.is_object)
        .map(|branch| {
            let missing: Vec<String> = branch
                .required
                .iter()
                .filter(|key| !map.contains_key(*key))
                .map(|key| format!("'{key}'"))
                .collect();
            format!("required properties at '{at}' are {}", missing.join(", "))
        })
        .collect();
    format!("oneOf at '{at}' not met, 0 matches: {}", reasons.join(", "))
}

fn collect(validator: &Validator, instance: &Value, prefix: &str, out: &mut Vec<String>) {
    for error in validator.iter_errors(instance).take(MAX_MESSAGES) {
        out.push(describe(&error, prefix));
    }
}

fn describe(error: &ValidationError<'_>, prefix: &str) -> String {
    let at = display_path(prefix, error.instance_path.as_str());
    let value = short(&error.instance);
    match &error.kind {
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(single) => single.to_string(),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join("', '"),
            };
            format!(
                "Type mismatch of '{at}', '{}' not in '{expected}'",
                json_type(&error.instance)
            )
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            format!("required properties at '{at}' are '{name}'")
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("Value {value} at '{at}' is less than the minimum of {limit}")
        }
        ValidationErrorKind::Maximum { limit } => {
            format!("Value {value} at '{at}' is greater than the maximum of {limit}")
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("Value {value} at '{at}' must be greater than {limit}")
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("Value {value} at '{at}' must be less than {limit}")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("String at '{at}' is shorter than the minimum length of {limit}")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("String at '{at}' is longer than the maximum length of {limit}")
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("Array at '{at}' has fewer than the minimum of {limit} items")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("Array at '{at}' has more than the maximum of {limit} items")
        }
        ValidationErrorKind::Enum { options } => {
            let allowed = match options {
                Value::Array(options) => options.iter().map(short).collect::<Vec<_>>().join(", "),
                other => short(other),
            };
            format!("Value {value} at '{at}' is not one of {allowed}")
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("Value {value} at '{at}' must be {}", short(expected_value))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("String {value} at '{at}' does not match pattern '{pattern}'")
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let base = if at == "/" { "" } else { at.as_str() };
            // Sorted: the order must not depend on how serde_json orders objects.
            let mut names: Vec<String> = unexpected
                .iter()
                .map(|name| format!("{base}/{name}"))
                .collect();
            names.sort();
            format!(
                "Additional or unevaluated properties '{}' at '{at}' not allowed",
                names.join(", ")
            )
        }
        ValidationErrorKind::OneOfNotValid { context } => {
            format!(
                "oneOf at '{at}' not met, 0 matches: {}",
                describe_context(context, prefix)
            )
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            format!("oneOf at '{at}' not met, more than one match")
        }
        ValidationErrorKind::AnyOf { context } => {
            format!(
                "anyOf at '{at}' not met: {}",
                describe_context(context, prefix)
            )
        }
        _ => format!("'{at}': {}", error.masked()),
    }
}

fn describe_context(context: &[Vec<ValidationError<'static>>], prefix: &str) -> String {
    context
        .iter()
        .flatten()
        .take(MAX_MESSAGES)
        .map(|error| describe(error, prefix))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JSON pointer for messages: the root is `/`.
fn display_path(prefix: &str, location: &str) -> String {
    let path = format!("{prefix}{location}");
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Compact JSON, cut to [`MAX_VALUE_CHARS`] characters.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_VALUE_CHARS {
        return text;
    }
    let cut: String = text.chars().take(MAX_VALUE_CHARS).collect();
    format!("{cut}...")
}
