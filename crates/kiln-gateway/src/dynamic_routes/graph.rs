//! A dynamic route's elements (spec §4.10): checked when a version is written, walked on every
//! request that names the route. The element shapes are those of Cloudflare's SDK
//! (`{id, type, properties, outputs: {label: {elementId}}}`); the spec's names for the same
//! things (`rate_limit`, `interval`, `condition`) are accepted too.

use std::collections::HashMap;

use kiln_core::{KilnError, KilnResult};
use serde_json::{Map, Value};

use super::condition::{parse_path, Condition};
use crate::RateLimitTechnique;

/// Elements per route version.
pub const MAX_ELEMENTS: usize = 64;
/// Percentage branches of one `percentage` element, besides its `else`.
pub const MAX_PERCENTAGE_BRANCHES: usize = 5;
/// Elements one request may pass through. A stored graph has no cycle, so a walk never visits
/// an element twice; this bounds a walk whatever was stored.
pub const MAX_STEPS: usize = 2 * MAX_ELEMENTS;
/// The compact JSON of a version's elements.
pub const MAX_ELEMENTS_BYTES: usize = 64 * 1024;
const MAX_ID_CHARS: usize = 64;
const MAX_MODEL_CHARS: usize = 256;
/// A model element's `retries`: attempts are `retries + 1`.
pub const MAX_RETRIES: u64 = 5;
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// A rate limit's window: one month, like the longest cache TTL.
pub const MAX_WINDOW_SECS: u64 = 2_592_000;

/// A checked, walkable version of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    elements: Vec<Element>,
    start: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub id: String,
    pub kind: Kind,
}

/// An element and where its outputs lead (indexes into the graph's elements).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Start {
        next: usize,
    },
    Conditional {
        condition: Condition,
        if_true: usize,
        if_false: usize,
    },
    Percentage {
        /// `(percent, element)`, in the order written.
        branches: Vec<(f64, usize)>,
        otherwise: Option<usize>,
    },
    RateLimit {
        rule: RateRule,
        success: usize,
        fallback: usize,
    },
    Model {
        target: ModelTarget,
        success: Option<usize>,
        fallback: Option<usize>,
    },
    End,
}

/// A `rate` element's limit: `limit` requests per `window_secs` for each value of `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRule {
    /// Where the counted value is, e.g. `["metadata", "user_id"]`.
    pub key: Vec<String>,
    pub limit: u64,
    pub window_secs: u64,
    pub technique: RateLimitTechnique,
    /// `limitType: "cost"`: counted as requests, since a request's cost is known only after
    /// the model answered.
    pub cost: bool,
}

/// Where a `model` element sends the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelTarget {
    /// `workers-ai` or `custom-{slug}`.
    pub provider: String,
    pub model: String,
    /// Until the first byte; `None`: the request's own `cf-aig-request-timeout`, if any.
    pub timeout_ms: Option<u64>,
    pub retries: u32,
}

/// Where a walk stopped.
#[derive(Debug, PartialEq)]
pub enum Reached<'g> {
    /// A model to send the request to; on failure the walk goes on at `fallback`.
    Model {
        id: &'g str,
        target: &'g ModelTarget,
        fallback: Option<usize>,
    },
    /// An `end` element. `refused_by` names the rate limit whose `fallback` led here, if one
    /// did on this stretch of the walk.
    End {
        id: &'g str,
        refused_by: Option<&'g str>,
    },
}

/// What a walk needs from outside: chance and rate-limit counters.
pub trait Surroundings {
    /// A number in `[0, 100)`, for percentage splits.
    fn roll(&mut self) -> f64;
    /// Counts one request of `key` against the `rule` of element `element`; `false` when the
    /// limit is used up (nothing is counted then).
    fn admit(&mut self, element: &str, rule: &RateRule, key: &str) -> bool;
}

impl Graph {
    /// Parses and checks a version's `elements`; errors name the element at fault.
    pub fn parse(elements: &Value) -> KilnResult<Self> {
        let Value::Array(list) = elements else {
            return Err(KilnError::bad_input(
                "'elements' must be an array of elements",
            ));
        };
        if list.is_empty() || list.len() > MAX_ELEMENTS {
            return Err(KilnError::bad_input(format!(
                "'elements' must hold 1 to {MAX_ELEMENTS} elements, got {}",
                list.len()
            )));
        }
        if elements.to_string().len() > MAX_ELEMENTS_BYTES {
            return Err(KilnError::bad_input(format!(
                "'elements' must be at most {MAX_ELEMENTS_BYTES} bytes of JSON"
            )));
        }
        let mut index = HashMap::new();
        for (at, element) in list.iter().enumerate() {
            let id = element.get("id").and_then(Value::as_str).unwrap_or("");
            if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
                return Err(KilnError::bad_input(format!(
                    "elements[{at}]: 'id' must be a string of 1 to {MAX_ID_CHARS} characters"
                )));
            }
            if index.insert(id.to_owned(), at).is_some() {
                return Err(KilnError::bad_input(format!(
                    "element {id:?}: another element has the same id"
                )));
            }
        }
        let elements = list
            .iter()
            .map(|element| parse_element(element, &index))
            .collect::<Result<Vec<_>, _>>()
            .map_err(KilnError::bad_input)?;
        let starts: Vec<usize> = (0..elements.len())
            .filter(|&at| matches!(elements[at].kind, Kind::Start { .. }))
            .collect();
        let start = match starts.as_slice() {
            [start] => *start,
            [] => {
                return Err(KilnError::bad_input(
                    "the route has no element of type 'start'",
                ))
            }
            [first, second, ..] => {
                return Err(KilnError::bad_input(format!(
                    "elements {:?} and {:?} are both of type 'start': a route has one",
                    elements[*first].id, elements[*second].id
                )))
            }
        };
        let graph = Graph { elements, start };
        graph.check_acyclic()?;
        Ok(graph)
    }

    pub fn element(&self, at: usize) -> &Element {
        &self.elements[at]
    }

    /// The `start` element, where every walk begins.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Walks from `at` through start, conditional, percentage and rate-limit elements until a
    /// model or an end. `budget` is what is left of the request's [`MAX_STEPS`].
    pub fn advance(
        &self,
        mut at: usize,
        context: &Value,
        surroundings: &mut dyn Surroundings,
        budget: &mut usize,
    ) -> KilnResult<Reached<'_>> {
        let mut refused_by = None;
        loop {
            if *budget == 0 {
                return Err(KilnError::internal(format!(
                    "a dynamic route walked more than {MAX_STEPS} elements"
                )));
            }
            *budget -= 1;
            let element = &self.elements[at];
            at = match &element.kind {
                Kind::Start { next } => *next,
                Kind::Conditional {
                    condition,
                    if_true,
                    if_false,
                } => {
                    if condition.holds(context) {
                        *if_true
                    } else {
                        *if_false
                    }
                }
                Kind::Percentage {
                    branches,
                    otherwise,
                } => pick(branches, *otherwise, surroundings.roll()),
                Kind::RateLimit {
                    rule,
                    success,
                    fallback,
                } => {
                    let key = super::condition::lookup(context, &rule.key)
                        .map_or_else(String::new, Value::to_string);
                    if surroundings.admit(&element.id, rule, &key) {
                        *success
                    } else {
                        refused_by = Some(element.id.as_str());
                        *fallback
                    }
                }
                Kind::Model {
                    target, fallback, ..
                } => {
                    return Ok(Reached::Model {
                        id: &element.id,
                        target,
                        fallback: *fallback,
                    })
                }
                Kind::End => {
                    return Ok(Reached::End {
                        id: &element.id,
                        refused_by,
                    })
                }
            };
        }
    }

    fn successors(&self, at: usize) -> Vec<usize> {
        match &self.elements[at].kind {
            Kind::Start { next } => vec![*next],
            Kind::Conditional {
                if_true, if_false, ..
            } => vec![*if_true, *if_false],
            Kind::Percentage {
                branches,
                otherwise,
            } => branches
                .iter()
                .map(|(_, to)| *to)
                .chain(*otherwise)
                .collect(),
            Kind::RateLimit {
                success, fallback, ..
            } => vec![*success, *fallback],
            Kind::Model {
                success, fallback, ..
            } => success.iter().chain(fallback).copied().collect(),
            Kind::End => Vec::new(),
        }
    }

    /// A cycle would let one request walk forever: refused, naming an element on it.
    fn check_acyclic(&self) -> KilnResult<()> {
        // 0: unseen, 1: on the current path, 2: done.
        let mut state = vec![0u8; self.elements.len()];
        for root in 0..self.elements.len() {
            if state[root] != 0 {
                continue;
            }
            let mut stack = vec![(root, 0usize)];
            state[root] = 1;
            while let Some((at, next)) = stack.pop() {
                let successors = self.successors(at);
                match successors.get(next) {
                    None => state[at] = 2,
                    Some(&to) => {
                        stack.push((at, next + 1));
                        match state[to] {
                            0 => {
                                state[to] = 1;
                                stack.push((to, 0));
                            }
                            1 => {
                                return Err(KilnError::bad_input(format!(
                                    "element {:?}: its outputs lead back to element {:?}, a \
                                     cycle",
                                    self.elements[at].id, self.elements[to].id
                                )))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The branch `roll` (in `[0, 100)`) falls in; past the last percentage, `otherwise` (or the
/// last branch, should the percentages add up to 100 with rounding).
fn pick(branches: &[(f64, usize)], otherwise: Option<usize>, roll: f64) -> usize {
    let mut upto = 0.0;
    for (percent, to) in branches {
        upto += percent;
        if roll < upto {
            return *to;
        }
    }
    otherwise.unwrap_or_else(|| branches.last().map_or(0, |(_, to)| *to))
}

fn parse_element(element: &Value, index: &HashMap<String, usize>) -> Result<Element, String> {
    let id = element["id"].as_str().unwrap_or_default().to_owned();
    let named = |why: String| format!("element {id:?}: {why}");
    let Value::Object(object) = element else {
        return Err(named("must be an object".into()));
    };
    let kind_name = object.get("type").and_then(Value::as_str).unwrap_or("");
    let empty = Map::new();
    let outputs = match object.get("outputs") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(outputs)) => outputs,
        Some(_) => return Err(named("'outputs' must be an object".into())),
    };
    let properties = match object.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(properties)) => properties,
        Some(_) => return Err(named("'properties' must be an object".into())),
    };
    let target = |label: &str| -> Result<Option<usize>, String> {
        let Some(output) = outputs.get(label) else {
            return Ok(None);
        };
        let to = output
            .get("elementId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                named(format!(
                    "output {label:?} must be {{\"elementId\": \"<id>\"}}"
                ))
            })?;
        index.get(to).copied().map(Some).ok_or_else(|| {
            named(format!(
                "output {label:?} points at {to:?}, which is not an element of this route"
            ))
        })
    };
    let required =
        |label: &str| target(label)?.ok_or_else(|| named(format!("output {label:?} is required")));
    let only = |labels: &[&str]| match outputs.keys().find(|key| !labels.contains(&key.as_str())) {
        Some(other) => Err(named(format!(
            "unknown output {other:?} for a {kind_name} element (it has {labels:?})"
        ))),
        None => Ok(()),
    };
    let kind = match kind_name {
        "start" => {
            only(&["next"])?;
            Kind::Start {
                next: required("next")?,
            }
        }
        "conditional" => {
            only(&["true", "false"])?;
            let written = properties
                .get("conditions")
                .or_else(|| properties.get("condition"))
                .ok_or_else(|| named("'properties.conditions' is required".into()))?;
            Kind::Conditional {
                condition: Condition::parse(written).map_err(named)?,
                if_true: required("true")?,
                if_false: required("false")?,
            }
        }
        "percentage" => percentage(outputs, &target).map_err(named)?,
        "rate" | "rate_limit" => {
            only(&["success", "fallback"])?;
            Kind::RateLimit {
                rule: rate_rule(properties).map_err(named)?,
                success: required("success")?,
                fallback: required("fallback")?,
            }
        }
        "model" => {
            only(&["success", "fallback"])?;
            Kind::Model {
                target: model_target(properties).map_err(named)?,
                success: target("success")?,
                fallback: target("fallback")?,
            }
        }
        "end" => {
            only(&[])?;
            Kind::End
        }
        other => {
            return Err(named(format!(
                "unknown type {other:?}: use start, conditional, percentage, rate, model or end"
            )))
        }
    };
    Ok(Element { id, kind })
}

fn percentage(
    outputs: &Map<String, Value>,
    target: &dyn Fn(&str) -> Result<Option<usize>, String>,
) -> Result<Kind, String> {
    let mut branches = Vec::new();
    let mut otherwise = None;
    for label in outputs.keys() {
        let to = target(label)?.unwrap_or_default();
        if label == "else" {
            otherwise = Some(to);
            continue;
        }
        let percent = label
            .strip_suffix('%')
            .and_then(|number| number.trim().parse::<f64>().ok())
            .filter(|percent| *percent > 0.0 && *percent <= 100.0)
            .ok_or_else(|| {
                format!("output {label:?}: percentage outputs are \"<1-100>%\" or \"else\"")
            })?;
        branches.push((percent, to));
    }
    if branches.is_empty() || branches.len() > MAX_PERCENTAGE_BRANCHES {
        return Err(format!(
            "a percentage element has 1 to {MAX_PERCENTAGE_BRANCHES} percentage outputs \
             besides 'else', got {}",
            branches.len()
        ));
    }
    let total: f64 = branches.iter().map(|(percent, _)| percent).sum();
    if total > 100.0 + 1e-9 {
        return Err(format!(
            "the percentages add up to {total}%, more than 100%"
        ));
    }
    if otherwise.is_none() && total < 100.0 - 1e-9 {
        return Err(format!(
            "the percentages add up to {total}%: make them 100% or add an 'else' output"
        ));
    }
    Ok(Kind::Percentage {
        branches,
        otherwise,
    })
}

fn whole(
    properties: &Map<String, Value>,
    name: &str,
    range: (u64, u64),
) -> Result<Option<u64>, String> {
    match properties.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| (range.0..=range.1).contains(n))
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "'properties.{name}' must be a whole number from {} to {}, got {value}",
                    range.0, range.1
                )
            }),
    }
}

fn rate_rule(properties: &Map<String, Value>) -> Result<RateRule, String> {
    let key = properties
        .get("key")
        .and_then(Value::as_str)
        .ok_or("'properties.key' is required, e.g. \"metadata.user_id\"")?;
    let key = parse_path(key).map_err(|why| format!("'properties.key': {why}"))?;
    let limit = whole(properties, "limit", (1, u64::from(u32::MAX)))?
        .ok_or("'properties.limit' is required")?;
    let window = match whole(properties, "window", (1, MAX_WINDOW_SECS))? {
        Some(window) => window,
        None => whole(properties, "interval", (1, MAX_WINDOW_SECS))?
            .ok_or("'properties.window' (seconds) is required")?,
    };
    let cost = match properties.get("limitType").and_then(Value::as_str) {
        None | Some("count") => false,
        Some("cost") => true,
        Some(other) => {
            return Err(format!(
                "'properties.limitType' {other:?}: use count or cost"
            ))
        }
    };
    let technique = match properties.get("technique").and_then(Value::as_str) {
        None | Some("fixed") => RateLimitTechnique::Fixed,
        Some("sliding") => RateLimitTechnique::Sliding,
        Some(other) => {
            return Err(format!(
                "'properties.technique' {other:?}: use fixed or sliding"
            ))
        }
    };
    Ok(RateRule {
        key,
        limit,
        window_secs: window,
        technique,
        cost,
    })
}

fn model_target(properties: &Map<String, Value>) -> Result<ModelTarget, String> {
    let text = |name: &str| {
        properties
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty() && text.chars().count() <= MAX_MODEL_CHARS)
            .ok_or_else(|| {
                format!("'properties.{name}' must be a string of 1 to {MAX_MODEL_CHARS} characters")
            })
    };
    let provider = text("provider")?;
    let reachable = provider == "workers-ai"
        || provider
            .strip_prefix("custom-")
            .is_some_and(|slug| !slug.is_empty() && !slug.contains('/'));
    if !reachable {
        return Err(format!(
            "provider {provider:?} is not served by Kiln: use workers-ai, or register the \
             provider's base URL as a custom provider and name it custom-{{slug}}"
        ));
    }
    Ok(ModelTarget {
        provider: provider.to_owned(),
        model: text("model")?.to_owned(),
        timeout_ms: whole(properties, "timeout", (1, MAX_TIMEOUT_MS))?,
        retries: whole(properties, "retries", (0, MAX_RETRIES))?.unwrap_or(0) as u32,
    })
}
