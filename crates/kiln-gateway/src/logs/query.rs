//! The query string of `GET`/`DELETE …/logs` (spec §4.6), turned into SQL conditions whose
//! values are always bound, never spliced into the text.

use kiln_core::{KilnError, KilnResult};
use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::time::parse_timestamp;

pub const DEFAULT_PER_PAGE: u64 = 20;
pub const MAX_PER_PAGE: u64 = 50;

/// The columns a listing (or a limited delete) may be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    CreatedAt,
    Provider,
    Model,
    ModelType,
    Success,
    Cached,
    Cost,
    Tokens,
    TokensIn,
    TokensOut,
    Duration,
    Feedback,
}

impl OrderBy {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "created_at" => Self::CreatedAt,
            "provider" => Self::Provider,
            "model" => Self::Model,
            "model_type" => Self::ModelType,
            "success" => Self::Success,
            "cached" => Self::Cached,
            "cost" => Self::Cost,
            "tokens" | "total_tokens" => Self::Tokens,
            "tokens_in" => Self::TokensIn,
            "tokens_out" => Self::TokensOut,
            "duration" => Self::Duration,
            "feedback" => Self::Feedback,
            _ => return None,
        })
    }

    pub(crate) fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::ModelType => "model_type",
            Self::Success => "success",
            Self::Cached => "cached",
            Self::Cost => "cost",
            Self::Tokens => "(tokens_in + tokens_out)",
            Self::TokensIn => "tokens_in",
            Self::TokensOut => "tokens_out",
            Self::Duration => "duration",
            Self::Feedback => "feedback",
        }
    }
}

/// A parsed logs query: pagination, order and the conditions every matching log meets.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    pub page: u64,
    pub per_page: u64,
    pub order_by: OrderBy,
    pub descending: bool,
    conditions: Vec<Condition>,
}

/// One SQL boolean expression over `logs`, with a `?` for each of `values`, in order.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    sql: String,
    values: Vec<Sql>,
}

impl Default for LogQuery {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            order_by: OrderBy::CreatedAt,
            descending: true,
            conditions: Vec::new(),
        }
    }
}

impl LogQuery {
    /// Parses URL query pairs. Parameters Kiln does not know (`meta_info`, …) are ignored, as
    /// are empty values, which forms send for fields left blank.
    pub fn from_pairs(pairs: &[(String, String)]) -> KilnResult<LogQuery> {
        let mut query = LogQuery::default();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            query.apply(name, value)?;
        }
        Ok(query)
    }

    fn apply(&mut self, name: &str, value: &str) -> KilnResult<()> {
        match name {
            "page" => {
                self.page = parse_count(value)
                    .filter(|page| *page >= 1)
                    .ok_or_else(|| bad(name, "a whole number of at least 1", value))?;
            }
            "per_page" => {
                self.per_page = parse_count(value)
                    .filter(|n| (1..=MAX_PER_PAGE).contains(n))
                    .ok_or_else(|| bad(name, "a whole number from 1 to 50", value))?;
            }
            "order_by" => {
                self.order_by = OrderBy::parse(value)
                    .ok_or_else(|| bad(name, "a log field such as created_at", value))?;
            }
            "order_by_direction" | "direction" => {
                self.descending = match value.to_ascii_lowercase().as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => return Err(bad(name, "asc or desc", value)),
                };
            }
            "cached" | "success" => {
                let flag = parse_bool(value).ok_or_else(|| bad(name, "true or false", value))?;
                self.push(format!("{name} = ?"), vec![Sql::Integer(flag.into())]);
            }
            "feedback" => {
                let feedback = value
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(thumbs)
                    .ok_or_else(|| bad(name, "0 (thumbs down) or 1 (thumbs up)", value))?;
                self.push("feedback = ?".into(), vec![Sql::Integer(feedback)]);
            }
            "start_date" | "end_date" => {
                let at = parse_timestamp(value)
                    .ok_or_else(|| bad(name, "an RFC 3339 date-time", value))?;
                let op = if name == "start_date" { ">=" } else { "<=" };
                self.push(format!("created_at {op} ?"), vec![Sql::Integer(at)]);
            }
            "model"
            | "model_type"
            | "provider"
            | "request_content_type"
            | "response_content_type" => {
                self.push(format!("{name} = ?"), vec![Sql::Text(value.to_owned())]);
            }
            "search" => {
                let needle = Sql::Text(value.to_ascii_lowercase());
                let columns = ["id", "model", "provider", "path", "coalesce(metadata, '')"];
                let sql = columns
                    .iter()
                    .map(|column| format!("instr(lower({column}), ?) > 0"))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                self.push(sql, vec![needle; columns.len()]);
            }
            "filters" => {
                let filters: Value = serde_json::from_str(value)
                    .map_err(|e| KilnError::bad_input(format!("filters: invalid JSON: {e}")))?;
                let Value::Array(filters) = filters else {
                    return Err(KilnError::bad_input(
                        "filters: expected a JSON array of {key, operator, value}",
                    ));
                };
                for (index, filter) in filters.iter().enumerate() {
                    let condition = filter_condition(filter)
                        .map_err(|e| KilnError::bad_input(format!("filters[{index}]: {e}")))?;
                    self.conditions.push(condition);
                }
            }
            _ => {
                let Some((bound, field)) = name.split_once('_') else {
                    return Ok(());
                };
                let column = match field {
                    "cost" => "cost",
                    "duration" => "duration",
                    "tokens_in" => "tokens_in",
                    "tokens_out" => "tokens_out",
                    "total_tokens" => "(tokens_in + tokens_out)",
                    _ => return Ok(()),
                };
                let op = match bound {
                    "min" => ">=",
                    "max" => "<=",
                    _ => return Ok(()),
                };
                let number = parse_number(value).ok_or_else(|| bad(name, "a number", value))?;
                self.push(format!("{column} {op} ?"), vec![Sql::Real(number)]);
            }
        }
        Ok(())
    }

    fn push(&mut self, sql: String, values: Vec<Sql>) {
        self.conditions.push(Condition { sql, values });
    }

    /// `AND (…)` for each condition, ready to follow `account = ? AND gateway = ?`, plus
    /// the values to bind after account and gateway.
    pub(crate) fn where_tail(&self) -> (String, Vec<Sql>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        for condition in &self.conditions {
            sql.push_str(" AND (");
            sql.push_str(&condition.sql);
            sql.push(')');
            values.extend(condition.values.iter().cloned());
        }
        (sql, values)
    }

    pub(crate) fn order_sql(&self) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        // `id` (a ULID) breaks ties so pages never overlap or skip logs.
        format!("{} {direction}, id {direction}", self.order_by.column())
    }
}

fn bad(name: &str, expected: &str, value: &str) -> KilnError {
    KilnError::bad_input(format!("{name}: expected {expected}, got {value:?}"))
}

fn parse_count(value: &str) -> Option<u64> {
    value.trim().parse::<u64>().ok()
}

fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// The public API speaks of feedback as 0 (thumbs down) and 1 (thumbs up); logs store -1/1.
fn thumbs(value: i64) -> Option<i64> {
    match value {
        0 | -1 => Some(-1),
        1 => Some(1),
        _ => None,
    }
}

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
        "compatibilityMode" => ("(request_type = 'compat')", Kind::Bool),
        _ => return None,
    })
}

/// The text a metadata value is compared as: strings as they are, numbers as SQLite prints
/// them, booleans as `true`/`false` (json_each would give 1/0).
const META_TEXT: &str =
    "(CASE m.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(m.atom AS TEXT) END)";

fn filter_condition(filter: &Value) -> Result<Condition, String> {
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
    let single = match operator {
        // `IS` treats NULL as a value, so `eq null` finds logs without the field.
        Operator::Eq | Operator::Neq => format!("{column} IS ?"),
        Operator::Contains => {
            for value in &mut bound {
                if let Sql::Text(text) = value {
                    *text = text.to_ascii_lowercase();
                }
            }
            format!("instr(lower({column}), ?) > 0")
        }
        Operator::Lt => format!("{column} < ?"),
        Operator::Gt => format!("{column} > ?"),
    };
    Ok(any_of(&single, operator, bound))
}

/// Values of one filter are alternatives; for `neq` a log must differ from all of them, since
/// "differs from any" would match nearly everything.
fn any_of(single: &str, operator: Operator, values: Vec<Sql>) -> Condition {
    let alternatives = vec![single; values.len()].join(" OR ");
    let sql = if operator == Operator::Neq {
        format!("NOT ({alternatives})")
    } else {
        alternatives
    };
    Condition { sql, values }
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
    let mut alternatives = Vec::with_capacity(values.len());
    let mut bound = Vec::with_capacity(values.len());
    for value in values {
        let text = scalar_text(value).ok_or_else(|| format!("invalid value {value}"))?;
        let subject = if on_value { META_TEXT } else { "m.key" };
        let (sql, bind) = match operator {
            Operator::Eq | Operator::Neq => (format!("{subject} = ?"), Sql::Text(text)),
            Operator::Contains => (
                format!("instr(lower({subject}), ?) > 0"),
                Sql::Text(text.to_ascii_lowercase()),
            ),
            Operator::Lt | Operator::Gt => {
                let op = if operator == Operator::Lt { "<" } else { ">" };
                // Numbers compare as numbers, anything else as text.
                match (on_value, number(value)) {
                    (true, Some(n)) if value.is_number() => (
                        format!("(m.type IN ('integer', 'real') AND m.atom {op} ?)"),
                        n,
                    ),
                    _ => (format!("{subject} {op} ?"), Sql::Text(text)),
                }
            }
        };
        alternatives.push(sql);
        bound.push(bind);
    }
    let exists = format!(
        "EXISTS (SELECT 1 FROM json_each(logs.metadata) AS m WHERE {})",
        alternatives.join(" OR ")
    );
    let sql = if operator == Operator::Neq {
        format!("NOT {exists}")
    } else {
        exists
    };
    Ok(Condition { sql, values: bound })
}
