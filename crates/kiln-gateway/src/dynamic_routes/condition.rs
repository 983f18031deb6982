//! The Mongo-style conditions of `conditional` elements (spec §4.10), e.g.
//! `{"metadata.plan": {"$eq": "free"}}` or `{"$or": [{"body.stream": true}, …]}`, evaluated
//! against `{metadata: <cf-aig-metadata>, body: <request body>}`.
//!
//! Operators: `$eq $ne $in $nin $gt $gte $lt $lte`, a bare value meaning `$eq`, `$and`/`$or`
//! over lists of conditions, and several keys in one object meaning all of them. As in MongoDB,
//! `$ne` and `$nin` hold for a missing field and every other operator does not.

use std::cmp::Ordering;

use serde_json::Value;

/// Nesting of `$and`/`$or`.
pub const MAX_DEPTH: usize = 8;
/// The compact JSON of one condition.
pub const MAX_BYTES: usize = 4096;
/// Values of one `$in`/`$nin`.
pub const MAX_LIST: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Field {
        path: Vec<String>,
        op: Op,
        value: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    Nin,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Condition {
    /// Parses a written condition; the error says what is wrong with it.
    pub fn parse(written: &Value) -> Result<Self, String> {
        if written.to_string().len() > MAX_BYTES {
            return Err(format!(
                "the condition is longer than {MAX_BYTES} bytes of JSON"
            ));
        }
        parse(written, 0)
    }

    /// Whether the condition holds for `context`.
    pub fn holds(&self, context: &Value) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.holds(context)),
            Condition::Any(any) => any.iter().any(|c| c.holds(context)),
            Condition::Field { path, op, value } => test(lookup(context, path), *op, value),
        }
    }
}

/// A dotted field path: `metadata.<key>` or `body.<field>[.<field>…]`.
pub fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if parts.len() < 2 || parts.iter().any(String::is_empty) {
        return Err(format!(
            "field {path:?}: write metadata.<key> or body.<field>, e.g. \"metadata.plan\""
        ));
    }
    if parts[0] != "metadata" && parts[0] != "body" {
        return Err(format!(
            "field {path:?}: fields start with metadata. (the cf-aig-metadata header) or body."
        ));
    }
    Ok(parts)
}

/// The value at `path` in `context`, if there is one.
pub fn lookup<'v>(context: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(context, |value, part| value.as_object()?.get(part))
}

fn parse(written: &Value, depth: usize) -> Result<Condition, String> {
    if depth > MAX_DEPTH {
        return Err(format!("conditions nest deeper than {MAX_DEPTH} levels"));
    }
    let Value::Object(entries) = written else {
        return Err(format!("a condition must be an object, got {written}"));
    };
    let mut all = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        match key.as_str() {
            "$and" | "$or" => {
                let list = value
                    .as_array()
                    .filter(|list| !list.is_empty())
                    .ok_or_else(|| format!("{key} must be a non-empty array of conditions"))?;
                let parsed = list
                    .iter()
                    .map(|c| parse(c, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$and" {
                    Condition::All(parsed)
                } else {
                    Condition::Any(parsed)
                });
            }
            _ if key.starts_with('$') => {
                return Err(format!(
                    "unknown operator {key:?} where a field or $and/$or goes"
                ))
            }
            _ => {
                let path = parse_path(key)?;
                match value {
                    Value::Object(tests) if tests.keys().all(|k| k.starts_with('$')) => {
                        if tests.is_empty() {
                            return Err(format!("field {key:?}: the operator object is empty"));
                        }
                        for (op, operand) in tests {
                            let op = operator(key, op, operand)?;
                            all.push(Condition::Field {
                                path: path.clone(),
                                op,
                                value: operand.clone(),
                            });
                        }
                    }
                    Value::Object(_) | Value::Array(_) => {
                        return Err(format!(
                            "field {key:?}: compare with a string, number, boolean or null, or \
                             an object of operators such as {{\"$eq\": …}}"
                        ))
                    }
                    scalar => all.push(Condition::Field {
                        path,
                        op: Op::Eq,
                        value: scalar.clone(),
                    }),
                }
            }
        }
    }
    Ok(match all.len() {
        1 => all.pop().unwrap_or(Condition::All(Vec::new())),
        _ => Condition::All(all),
    })
}

fn operator(field: &str, name: &str, operand: &Value) -> Result<Op, String> {
    let op = match name {
        "$eq" => Op::Eq,
        "$ne" => Op::Ne,
        "$in" => Op::In,
        "$nin" => Op::Nin,
        "$gt" => Op::Gt,
        "$gte" => Op::Gte,
        "$lt" => Op::Lt,
        "$lte" => Op::Lte,
        other => {
            return Err(format!(
                "field {field:?}: unknown operator {other:?} (use $eq, $ne, $in, $nin, $gt, \
                 $gte, $lt or $lte)"
            ))
        }
    };
    let scalar = |value: &Value| !value.is_object() && !value.is_array();
    let fits = match op {
        Op::Eq | Op::Ne => scalar(operand),
        Op::In | Op::Nin => operand
            .as_array()
            .is_some_and(|list| list.len() <= MAX_LIST && list.iter().all(scalar)),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => operand.is_number() || operand.is_string(),
    };
    if fits {
        Ok(op)
    } else {
        Err(format!(
            "field {field:?}: {name} takes {}, got {operand}",
            match op {
                Op::Eq | Op::Ne => "a string, number, boolean or null",
                Op::In | Op::Nin => "an array of at most 100 strings, numbers or booleans",
                _ => "a number or a string",
            }
        ))
    }
}

fn test(found: Option<&Value>, op: Op, operand: &Value) -> bool {
    let equal = |value: &Value| found.is_some_and(|found| same(found, value));
    let list = || operand.as_array().map(Vec::as_slice).unwrap_or_default();
    let order = || found.and_then(|found| compare(found, operand));
    match op {
        Op::Eq => equal(operand),
        Op::Ne => !equal(operand),
        Op::In => list().iter().any(equal),
        Op::Nin => !list().iter().any(equal),
        Op::Gt => order() == Some(Ordering::Greater),
        Op::Gte => matches!(order(), Some(Ordering::Greater | Ordering::Equal)),
        Op::Lt => order() == Some(Ordering::Less),
        Op::Lte => matches!(order(), Some(Ordering::Less | Ordering::Equal)),
    }
}

/// Equal values; numbers by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Numbers with numbers, strings with strings; anything else is not ordered.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}
