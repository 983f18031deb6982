//! The query string of `GET`/`DELETE …/logs` (spec §4.6), turned into SQL conditions whose
//! values are always bound, never spliced into the text.
//!
//! Each condition is written for both databases at once ([`Dialect`]): they differ in a few
//! functions (`instr`/`strpos`, `IS`/`IS NOT DISTINCT FROM`, `json_each`/`jsonb_each`) and in
//! where NULLs sort, so that a query returns the same logs, in the same order, on either.

use kiln_core::{KilnError, KilnResult};
use rusqlite::types::Value as Sql;
use serde_json::Value;

use super::time::parse_timestamp;

mod filters;

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

/// The SQL a condition is written in. Both use `?` for each bound value, in order; the
/// PostgreSQL backend numbers them when it runs the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    const ALL: [Dialect; 2] = [Dialect::Sqlite, Dialect::Postgres];

    /// `subject` (lower-cased) contains the bound needle.
    fn contains(self, subject: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr(lower({subject}), ?) > 0"),
            Dialect::Postgres => format!("strpos(lower({subject}), ?) > 0"),
        }
    }

    /// Equality that holds between two NULLs, so `eq null` finds logs without the field.
    fn same_as(self, subject: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{subject} IS ?"),
            Dialect::Postgres => format!("{subject} IS NOT DISTINCT FROM ?"),
        }
    }

    fn index(self) -> usize {
        match self {
            Dialect::Sqlite => 0,
            Dialect::Postgres => 1,
        }
    }
}

/// One SQL boolean expression over `logs` in each dialect, with a `?` for each of `values`,
/// in order.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    sql: [String; 2],
    values: Vec<Sql>,
}

impl Condition {
    fn new(values: Vec<Sql>, sql: impl Fn(Dialect) -> String) -> Condition {
        Condition {
            sql: Dialect::ALL.map(sql),
            values,
        }
    }
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
                self.push_same(format!("{name} = ?"), vec![Sql::Integer(flag.into())]);
            }
            "feedback" => {
                let feedback = value
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(thumbs)
                    .ok_or_else(|| bad(name, "0 (thumbs down) or 1 (thumbs up)", value))?;
                self.push_same("feedback = ?".into(), vec![Sql::Integer(feedback)]);
            }
            "start_date" | "end_date" => {
                let at = parse_timestamp(value)
                    .ok_or_else(|| bad(name, "an RFC 3339 date-time", value))?;
                let op = if name == "start_date" { ">=" } else { "<=" };
                self.push_same(format!("created_at {op} ?"), vec![Sql::Integer(at)]);
            }
            "model"
            | "model_type"
            | "provider"
            | "request_content_type"
            | "response_content_type" => {
                self.push_same(format!("{name} = ?"), vec![Sql::Text(value.to_owned())]);
            }
            "search" => {
                let needle = Sql::Text(value.to_ascii_lowercase());
                let columns = ["id", "model", "provider", "path", "coalesce(metadata, '')"];
                let condition = Condition::new(vec![needle; columns.len()], |dialect| {
                    columns
                        .iter()
                        .map(|column| dialect.contains(column))
                        .collect::<Vec<_>>()
                        .join(" OR ")
                });
                self.conditions.push(condition);
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
                    let condition = filters::filter_condition(filter)
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
                self.push_same(format!("{column} {op} ?"), vec![Sql::Real(number)]);
            }
        }
        Ok(())
    }

    /// A condition written the same in both dialects.
    fn push_same(&mut self, sql: String, values: Vec<Sql>) {
        self.conditions
            .push(Condition::new(values, |_| sql.clone()));
    }

    /// `AND (…)` for each condition, ready to follow `account = ? AND gateway = ?`, plus
    /// the values to bind after account and gateway.
    pub(crate) fn where_tail_in(&self, dialect: Dialect) -> (String, Vec<Sql>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        for condition in &self.conditions {
            sql.push_str(" AND (");
            sql.push_str(&condition.sql[dialect.index()]);
            sql.push(')');
            values.extend(condition.values.iter().cloned());
        }
        (sql, values)
    }

    pub(crate) fn order_sql(&self) -> String {
        self.order_sql_in(Dialect::Sqlite)
    }

    pub(crate) fn order_sql_in(&self, dialect: Dialect) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        // SQLite sorts NULLs first; PostgreSQL is told to do the same.
        let nulls = match (dialect, self.descending) {
            (Dialect::Sqlite, _) => "",
            (Dialect::Postgres, false) => " NULLS FIRST",
            (Dialect::Postgres, true) => " NULLS LAST",
        };
        // `id` (a ULID) breaks ties so pages never overlap or skip logs.
        format!(
            "{} {direction}{nulls}, id {direction}",
            self.order_by.column()
        )
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
