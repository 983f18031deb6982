//! The `filters` parameter (spec §4.6): `[{key, operator, value}]`, each filter one condition
//! over a log column or its metadata, written for both dialects.

use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::{parse_bool, parse_number, thumbs, Condition, Dialect};
use crate::logs::time::parse_timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Bool,
    Date,
    Feedback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Eq,
    Neq,
    Contains,
    Lt,
    Gt,
}

impl Operator {
    fn name(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Neq => "neq",
            Self::Contains => "contains",
            Self::Lt => "lt",
            Self::Gt => "gt",
        }
    }
}

fn filter_column(key: &str) -> Option<(&'static str, Kind)> {
    Some(match key {
        "id" => ("id", Kind::Text),
        "created_at" => ("created_at", Kind::Date),
        "request_content_type" => ("request_content_type", Kind::Text),
        "response_content_type" => ("response_content_type", Kind::Text),
        "request_type" => ("request_type", Kind::Text),
        "success" => ("success", Kind::Bool),
        "cached" => ("cached", Kind::Bool),
        "provider" => ("provider", Kind::Text),
        "model" => ("model", Kind::Text),
        "model_type" => ("model_type", Kind::Text),
        "cost" => ("cost", Kind::Number),
        "tokens" => ("(tokens_in + tokens_out)", Kind::Number),
        "tokens_in" => ("tokens_in", Kind::Number),
        "tokens_out" => ("tokens_out", Kind::Number),
        "duration" => ("duration", Kind::Number),
        "feedback" => ("feedback", Kind::Feedback),
        "event_id" => ("event_id", Kind::Text),
        "authentication" => ("authentication", Kind::Bool),
        "user_agent" => ("user_agent", Kind::Text),
        // Cloudflare-only notions, answered as a Kiln log would have them: never wholesale
        // billed, never DLP-screened; compatibility mode is the OpenAI-compatible endpoint.
        "wholesale" => ("0", Kind::Bool),
        "dlp_action" => ("NULL", Kind::Text),
        "compatibilityMode" => (COMPATIBILITY_MODE, Kind::Bool),
        _ => return None,
    })
}

/// A boolean is 0 or 1 in SQLite, a type of its own in PostgreSQL, where the flag columns
/// hold 0 and 1 like SQLite's.
const COMPATIBILITY_MODE: &str = "(request_type = 'compat')";

fn column_in(column: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Postgres if column == COMPATIBILITY_MODE => {
            "(CASE WHEN request_type = 'compat' THEN 1 ELSE 0 END)".to_owned()
        }
        _ => column.to_owned(),
    }
}

/// The text a metadata value is compared as: strings as they are, numbers as SQLite prints
/// them, booleans as `true`/`false` (json_each would give 1/0).
const META_TEXT: &str =
    "(CASE m.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(m.atom AS TEXT) END)";

/// The same in PostgreSQL (`#>> '{}'` is a JSON scalar's text), compared byte-wise as SQLite
/// compares text.
const PG_META_TEXT: &str = "((m.value #>> '{}') COLLATE \"C\")";
const PG_META_KEY: &str = "(m.key COLLATE \"C\")";
/// A metadata value as a number, NULL when it is not one.
const PG_META_NUMBER: &str =
    "(CASE WHEN jsonb_typeof(m.value) = 'number' THEN (m.value #>> '{}')::float8 END)";

pub(super) fn filter_condition(filter: &Value) -> Result<Condition, String> {
    let key = filter
        .get("key")
        .and_then(Value::as_str)
        .ok_or("'key' must be a string")?;
    let operator = match filter.get("operator").and_then(Value::as_str) {
        Some("eq") => Operator::Eq,
        Some("neq") => Operator::Neq,
        Some("contains") => Operator::Contains,
        Some("lt") => Operator::Lt,
        Some("gt") => Operator::Gt,
        Some(other) => {
            return Err(format!(
                "unknown operator {other:?} (use eq, neq, contains, lt or gt)"
            ))
        }
        None => return Err("'operator' must be a string".into()),
    };
    let values = match filter.get("value") {
        Some(Value::Array(values)) => values.clone(),
        Some(single) if !single.is_object() => vec![single.clone()],
        _ => return Err("'value' must be an array of values".into()),
    };
    if values.is_empty() {
        return Err("'value' must hold at least one value".into());
    }
    match key {
        "metadata.key" => metadata_condition(false, operator, &values),
        "metadata.value" => metadata_condition(true, operator, &values),
        _ => {
            let (column, kind) =
                filter_column(key).ok_or_else(|| format!("unknown key {key:?}"))?;
            column_condition(column, kind, operator, &values)
        }
    }
}

fn column_condition(
    column: &str,
    kind: Kind,
    operator: Operator,
    values: &[Value],
) -> Result<Condition, String> {
    let allowed = match operator {
        Operator::Eq | Operator::Neq => true,
        Operator::Contains => kind == Kind::Text,
        Operator::Lt | Operator::Gt => kind != Kind::Bool,
    };
    if !allowed {
        return Err(format!(
            "operator {} does not apply to this key",
            operator.name()
        ));
    }
    let mut bound = Vec::with_capacity(values.len());
    for value in values {
        let sql = filter_value(kind, value)?;
        if operator != Operator::Eq && operator != Operator::Neq && sql == Sql::Null {
            return Err("null only works with eq and neq".into());
        }
        bound.push(sql);
    }
    if operator == Operator::Contains {
        for value in &mut bound {
            if let Sql::Text(text) = value {
                *text = text.to_ascii_lowercase();
            }
        }
    }
    let single = |dialect: Dialect| {
        let column = column_in(column, dialect);
        match operator {
            // NULL counts as a value, so `eq null` finds logs without the field.
            Operator::Eq | Operator::Neq => dialect.same_as(&column),
            Operator::Contains => dialect.contains(&column),
            Operator::Lt => format!("{column} < ?"),
            Operator::Gt => format!("{column} > ?"),
        }
    };
    Ok(any_of(single, operator, bound))
}

/// Values of one filter are alternatives; for `neq` a log must differ from all of them, since
/// "differs from any" would match nearly everything.
fn any_of(single: impl Fn(Dialect) -> String, operator: Operator, values: Vec<Sql>) -> Condition {
    let count = values.len();
    Condition::new(values, |dialect| {
        let alternatives = vec![single(dialect); count].join(" OR ");
        if operator == Operator::Neq {
            format!("NOT ({alternatives})")
        } else {
            alternatives
        }
    })
}

fn filter_value(kind: Kind, value: &Value) -> Result<Sql, String> {
    let invalid = || format!("invalid value {value} for this key");
    if value.is_null() {
        return Ok(Sql::Null);
    }
    Ok(match kind {
        Kind::Text => Sql::Text(scalar_text(value).ok_or_else(invalid)?),
        Kind::Number => number(value).ok_or_else(invalid)?,
        Kind::Bool => {
            let flag = match value {
                Value::Bool(flag) => Some(*flag),
                Value::String(text) => parse_bool(text),
                Value::Number(n) => n.as_i64().and_then(|n| parse_bool(&n.to_string())),
                _ => None,
            };
            Sql::Integer(flag.ok_or_else(invalid)?.into())
        }
        Kind::Date => {
            let at = match value {
                Value::String(text) => parse_timestamp(text),
                Value::Number(n) => n.as_i64(),
                _ => None,
            };
            Sql::Integer(at.ok_or_else(invalid)?)
        }
        Kind::Feedback => {
            let raw = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(text) => text.trim().parse().ok(),
                _ => None,
            };
            Sql::Integer(raw.and_then(thumbs).ok_or_else(invalid)?)
        }
    })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<Sql> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(Sql::Integer)
            .or_else(|| n.as_f64().map(Sql::Real)),
        Value::String(text) => parse_number(text).map(Sql::Real),
        _ => None,
    }
}

/// `metadata.key` / `metadata.value` match when any entry of the log's metadata object does.
fn metadata_condition(
    on_value: bool,
    operator: Operator,
    values: &[Value],
) -> Result<Condition, String> {
    let mut alternatives: [Vec<String>; 2] = Default::default();
    let mut bound = Vec::with_capacity(values.len());
    for value in values {
        let text = scalar_text(value).ok_or_else(|| format!("invalid value {value}"))?;
        for dialect in Dialect::ALL {
            let subject = match (dialect, on_value) {
                (Dialect::Sqlite, true) => META_TEXT,
                (Dialect::Sqlite, false) => "m.key",
                (Dialect::Postgres, true) => PG_META_TEXT,
                (Dialect::Postgres, false) => PG_META_KEY,
            };
            let sql = match operator {
                Operator::Eq | Operator::Neq => format!("{subject} = ?"),
                Operator::Contains => dialect.contains(subject),
                Operator::Lt | Operator::Gt => {
                    let op = if operator == Operator::Lt { "<" } else { ">" };
                    match (on_value && compares_as_number(value), dialect) {
                        (true, Dialect::Sqlite) => {
                            format!("(m.type IN ('integer', 'real') AND m.atom {op} ?)")
                        }
                        (true, Dialect::Postgres) => format!("{PG_META_NUMBER} {op} ?"),
                        (false, _) => format!("{subject} {op} ?"),
                    }
                }
            };
            alternatives[dialect.index()].push(sql);
        }
        bound.push(match operator {
            Operator::Eq | Operator::Neq => Sql::Text(text),
            Operator::Contains => Sql::Text(text.to_ascii_lowercase()),
            Operator::Lt | Operator::Gt => match number(value) {
                // Numbers compare as numbers, anything else as text.
                Some(n) if on_value && compares_as_number(value) => n,
                _ => Sql::Text(text),
            },
        });
    }
    Ok(Condition::new(bound, |dialect| {
        let each = match dialect {
            Dialect::Sqlite => "json_each(logs.metadata)",
            Dialect::Postgres => "jsonb_each(logs.metadata::jsonb)",
        };
        let exists = format!(
            "EXISTS (SELECT 1 FROM {each} AS m WHERE {})",
            alternatives[dialect.index()].join(" OR ")
        );
        if operator == Operator::Neq {
            format!("NOT {exists}")
        } else {
            exists
        }
    }))
}

fn compares_as_number(value: &Value) -> bool {
    value.is_number() && number(value).is_some()
}
