//! Hostile JSON Schemas: what a client's schema (JSON mode, tool `parameters`) must satisfy
//! before anything compiles or validates with it.
//!
//! Both compilers that see a client's schema (jsonschema for the final check, llguidance for
//! sampling) recurse on the schema and, through `$ref`, on themselves. A schema that refers to
//! itself without consuming input (`{"anyOf": [{"$ref": "#"}, …]}`, `{"not": {"$ref": "#"}}`)
//! makes validation recurse forever: a stack overflow that aborts the process, or memory that
//! grows until the process is killed. So every check here walks the client's data with an
//! explicit stack, never by recursion, and refuses:
//! - schemas over [`SchemaLimits`] (serialized bytes, nesting depth, `$ref`s, subschemas);
//! - `$ref`s that are not local JSON pointers (nothing is ever fetched), and keywords that would
//!   move what a local `$ref` means (`$id` below the top, `$dynamicRef`, `$recursiveRef`);
//! - `$ref` cycles that can be followed without consuming input.
//!
//! `x-guidance` (llguidance's compile options, including `lenient`) is Kiln's to set: every
//! such key is removed, at any depth.

use std::collections::HashMap;
use std::io;

use serde_json::{Map, Value};

use crate::limits::SchemaLimits;
use crate::{KilnError, KilnResult};

/// llguidance's options key; only Kiln sets it (at the top, see JSON mode's constraint).
pub const GUIDANCE_KEY: &str = "x-guidance";

/// Stack for the threads that compile and validate with a client's schema. The guard bounds
/// their recursion; this leaves a wide margin over that bound (a thread's stack is reserved,
/// not committed, so the size costs address space only).
pub const COMPILER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Runs `work` on its own thread with [`COMPILER_STACK_BYTES`] of stack, and waits for it.
/// `what` names the work in the error should the thread not start or panic.
pub fn on_large_stack<T: Send>(what: &str, work: impl FnOnce() -> T + Send) -> KilnResult<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("kiln-schema".to_owned())
            .stack_size(COMPILER_STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|e| KilnError::internal(format!("{what}: cannot start a thread: {e}")))?
            .join()
            .map_err(|_| KilnError::internal(format!("{what} failed")))
    })
}

/// What a schema held, for callers that sum several schemas (tools).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaSize {
    /// Serialized size in bytes.
    pub bytes: usize,
    /// `$ref` keywords.
    pub refs: usize,
    /// Subschemas (every schema object or boolean reachable as a schema).
    pub subschemas: usize,
}

/// Checks `schema` against `limits` and the rules above, and strips `x-guidance` from it.
/// `field` names the request field in errors (400 / 5006).
pub fn guard(schema: &mut Value, limits: &SchemaLimits, field: &str) -> KilnResult<SchemaSize> {
    check_depth(schema, limits.max_depth, field)?;
    strip_guidance(schema);
    let bytes = serialized_len(schema, limits.max_bytes).ok_or_else(|| {
        KilnError::bad_input(format!(
            "'{field}' is over {} bytes ([limits.schema] max_bytes)",
            limits.max_bytes
        ))
    })?;
    let (refs, subschemas) = check_references(schema, limits, field)?;
    Ok(SchemaSize {
        bytes,
        refs,
        subschemas,
    })
}

/// Nesting of objects and arrays, without recursing: the schema may be far deeper than any
/// stack.
fn check_depth(schema: &Value, max_depth: usize, field: &str) -> KilnResult<()> {
    let mut stack = vec![(schema, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(map) => Box::new(map.values()),
            Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        if depth > max_depth {
            return Err(KilnError::bad_input(format!(
                "'{field}' nests objects and arrays deeper than {max_depth} levels \
                 ([limits.schema] max_depth)"
            )));
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// Removes every `x-guidance` key, so no client option (`lenient`, whitespace, separators)
/// reaches llguidance. `retain` keeps key order (with serde_json's `preserve_order`, which
/// llguidance turns on, `remove` would not), and property order is the output's order.
fn strip_guidance(schema: &mut Value) {
    let mut stack = vec![schema];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                map.retain(|key, _| key != GUIDANCE_KEY);
                stack.extend(map.values_mut());
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
}

/// The serialized size, or `None` once it passes `max` (serialization stops there). Called
/// after [`check_depth`], so serde's recursion is bounded.
fn serialized_len(schema: &Value, max: usize) -> Option<usize> {
    struct Counter {
        bytes: usize,
        max: usize,
    }
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.max {
                return Err(io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, max };
    serde_json::to_writer(&mut counter, schema).ok()?;
    Some(counter.bytes)
}

/// How the instance relates to a subschema's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// The same instance (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`,
    /// `dependentSchemas`, `$ref`): a cycle of these recurses forever.
    Same,
    /// A part of the instance (`properties`, `items`, …): recursion ends with the instance.
    Part,
    /// Not applied where it sits (`$defs`, `definitions`), only through a `$ref`.
    Stored,
}

/// Keywords whose subschemas apply to the instance itself.
const SAME_ONE: [&str; 4] = ["not", "if", "then", "else"];
const SAME_LIST: [&str; 3] = ["allOf", "anyOf", "oneOf"];
const SAME_MAP: [&str; 2] = ["dependentSchemas", "dependencies"];
/// Keywords whose subschemas apply to parts of the instance.
const PART_ONE: [&str; 9] = [
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contentSchema",
    "prefixItems",
];
const PART_MAP: [&str; 2] = ["properties", "patternProperties"];
const STORED_MAP: [&str; 2] = ["$defs", "definitions"];
/// Keywords that change what a `$ref` resolves against, or resolve at run time.
const MOVING: [&str; 4] = [
    "$dynamicRef",
    "$recursiveRef",
    "$dynamicAnchor",
    "$recursiveAnchor",
];

/// One subschema found by the walk.
struct Node<'a> {
    value: &'a Value,
    /// Subschemas applied to the same instance: `(node, the $ref that leads there, if any)`.
    same: Vec<(usize, Option<&'a str>)>,
}

/// Resolves every `$ref`, counts refs and subschemas, and refuses a cycle of [`Edge::Same`]
/// edges. Nodes are keyed by address: each is a distinct place in the one document.
fn check_references(
    root: &Value,
    limits: &SchemaLimits,
    field: &str,
) -> KilnResult<(usize, usize)> {
    let refuse = |why: String| KilnError::bad_input(format!("'{field}' {why}"));
    let old_draft = uses_old_draft(root);
    let mut nodes: Vec<Node> = Vec::new();
    let mut ids: HashMap<*const Value, usize> = HashMap::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut refs = 0usize;
    // The document root is node 0.
    intern(root, &mut nodes, &mut ids, &mut pending);
    while let Some(id) = pending.pop() {
        let Value::Object(map) = nodes[id].value else {
            continue;
        };
        if id != 0 && (map.contains_key("$id") || map.contains_key("$schema")) {
            return Err(refuse(
                "sets '$id' or '$schema' below the top level, which is not supported".to_owned(),
            ));
        }
        if id != 0 && old_draft && map.get("id").is_some_and(Value::is_string) {
            return Err(refuse(
                "sets 'id' below the top level, which is not supported".to_owned(),
            ));
        }
        if let Some(keyword) = MOVING.iter().find(|k| map.contains_key(**k)) {
            return Err(refuse(format!(
                "uses '{keyword}', which is not supported; use '$ref' to a local definition"
            )));
        }
        let mut same = Vec::new();
        for (edge, value) in subschemas(map) {
            let child = intern(value, &mut nodes, &mut ids, &mut pending);
            if edge == Edge::Same {
                same.push((child, None));
            }
        }
        if let Some(reference) = map.get("$ref") {
            let reference = reference
                .as_str()
                .ok_or_else(|| refuse("has a '$ref' that is not a string".to_owned()))?;
            refs += 1;
            if refs > limits.max_refs {
                return Err(refuse(format!(
                    "has more than {} '$ref's ([limits.schema] max_refs)",
                    limits.max_refs
                )));
            }
            let target = resolve(root, reference).map_err(|why| {
                refuse(format!(
                    "has '$ref': {:?}, which {why}",
                    truncate(reference)
                ))
            })?;
            let child = intern(target, &mut nodes, &mut ids, &mut pending);
            same.push((child, Some(reference)));
        }
        nodes[id].same = same;
        if nodes.len() > limits.max_subschemas {
            return Err(refuse(format!(
                "has more than {} subschemas ([limits.schema] max_subschemas)",
                limits.max_subschemas
            )));
        }
    }
    if let Some(reference) = same_instance_cycle(&nodes) {
        return Err(refuse(format!(
            "refers to itself without consuming input ('$ref': {:?} loops back through \
             keywords such as anyOf, allOf, oneOf, not or $ref, which would recurse forever); \
             a recursive schema must recurse through properties or items",
            truncate(reference)
        )));
    }
    // Without a cycle, `$ref`s still multiply: `a: anyOf [$ref b, allOf [$ref b]]`, `b: …`
    // doubles the subschemas one value is checked against at each link.
    if same_instance_expansion(&nodes) > limits.max_subschemas {
        return Err(refuse(format!(
            "applies more than {} subschemas to one value once its '$ref's are followed \
             ([limits.schema] max_subschemas)",
            limits.max_subschemas
        )));
    }
    Ok((refs, nodes.len()))
}

/// The most subschemas that apply to one value, `$ref`s followed: per node, itself plus what
/// its same-instance edges expand to. Those edges form no cycle (checked first), so this is
/// exact; it saturates rather than overflows. Iterative post-order.
fn same_instance_expansion(nodes: &[Node<'_>]) -> usize {
    let mut expansion: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut most = 0;
    for start in 0..nodes.len() {
        let mut stack = vec![start];
        while let Some(&node) = stack.last() {
            if expansion[node].is_some() {
                stack.pop();
                continue;
            }
            let pending: Vec<usize> = (nodes[node].same.iter())
                .map(|&(child, _)| child)
                .filter(|&child| expansion[child].is_none())
                .collect();
            if pending.is_empty() {
                let total = (nodes[node].same.iter())
                    .filter_map(|&(child, _)| expansion[child])
                    .fold(1usize, usize::saturating_add);
                expansion[node] = Some(total);
                most = most.max(total);
                stack.pop();
            } else {
                stack.extend(pending);
            }
        }
    }
    most
}

/// Whether validating `instance` against `schema` (already guarded) stays within `budget`
/// steps: each step is one subschema applied to one value, counted along every path the way a
/// validator may walk them (`anyOf` branches that descend into the same value each count).
/// Recursion through input can still multiply per level of the instance, so the finished
/// output is measured before it is validated. Overestimates (every `patternProperties` and
/// `additionalProperties` schema is counted against every member).
pub fn validation_within(schema: &Value, instance: &Value, budget: usize) -> bool {
    static KEY: Value = Value::Null;
    let mut work = vec![(schema, instance)];
    let mut steps = 0usize;
    while let Some((subschema, value)) = work.pop() {
        steps += 1;
        if steps > budget {
            return false;
        }
        let Value::Object(map) = subschema else {
            continue;
        };
        let members = || value.as_object().into_iter().flat_map(Map::values);
        let elements: &[Value] = value.as_array().map_or(&[], Vec::as_slice);
        for (key, child) in map {
            let key = key.as_str();
            let schemas = || match child {
                Value::Array(list) => list.as_slice(),
                Value::Object(_) | Value::Bool(_) => std::slice::from_ref(child),
                _ => &[],
            };
            match key {
                "$ref" => {
                    if let Some(target) = child.as_str().and_then(|r| resolve(schema, r).ok()) {
                        work.push((target, value));
                    }
                }
                _ if SAME_ONE.contains(&key) || SAME_LIST.contains(&key) => {
                    work.extend(schemas().iter().map(|s| (s, value)));
                }
                _ if SAME_MAP.contains(&key) => {
                    if let Value::Object(entries) = child {
                        work.extend(entries.values().map(|s| (s, value)));
                    }
                }
                "properties" => {
                    if let (Value::Object(entries), Value::Object(object)) = (child, value) {
                        for (name, s) in entries {
                            if let Some(member) = object.get(name) {
                                work.push((s, member));
                            }
                        }
                    }
                }
                "patternProperties" => {
                    if let Value::Object(entries) = child {
                        for s in entries.values() {
                            work.extend(members().map(|member| (s, member)));
                        }
                    }
                }
                "additionalProperties" | "unevaluatedProperties" => {
                    work.extend(members().map(|member| (child, member)));
                }
                "propertyNames" => work.extend(members().map(|_| (child, &KEY))),
                "items" | "prefixItems" if child.is_array() => {
                    work.extend(schemas().iter().zip(elements));
                }
                "items" | "additionalItems" | "unevaluatedItems" | "contains" => {
                    work.extend(elements.iter().map(|element| (child, element)));
                }
                _ => {}
            }
            // Queued work counts too: one value can queue a subschema per member.
            if steps + work.len() > budget {
                return false;
            }
        }
    }
    true
}

/// The node for `value`, added (and queued for a walk) the first time it is seen.
fn intern<'a>(
    value: &'a Value,
    nodes: &mut Vec<Node<'a>>,
    ids: &mut HashMap<*const Value, usize>,
    pending: &mut Vec<usize>,
) -> usize {
    *ids.entry(value as *const Value).or_insert_with(|| {
        nodes.push(Node {
            value,
            same: Vec::new(),
        });
        pending.push(nodes.len() - 1);
        nodes.len() - 1
    })
}

/// The subschemas directly under a schema object, by how they apply.
fn subschemas(map: &Map<String, Value>) -> Vec<(Edge, &Value)> {
    let mut found = Vec::new();
    for (key, value) in map {
        let key = key.as_str();
        let edge = if SAME_ONE.contains(&key) || SAME_LIST.contains(&key) || SAME_MAP.contains(&key)
        {
            Edge::Same
        } else if PART_ONE.contains(&key) || PART_MAP.contains(&key) {
            Edge::Part
        } else if STORED_MAP.contains(&key) {
            Edge::Stored
        } else {
            continue;
        };
        let is_map =
            SAME_MAP.contains(&key) || PART_MAP.contains(&key) || STORED_MAP.contains(&key);
        match value {
            Value::Object(entries) if is_map => {
                // `dependencies` also takes arrays of names; only schemas are followed.
                found.extend(
                    entries
                        .values()
                        .filter(|v| v.is_object() || v.is_boolean())
                        .map(|v| (edge, v)),
                );
            }
            Value::Object(_) | Value::Bool(_) if !is_map => found.push((edge, value)),
            // `items` as a list (older drafts), `prefixItems`, `allOf`/`anyOf`/`oneOf`.
            Value::Array(items) if !is_map => found.extend(
                items
                    .iter()
                    .filter(|v| v.is_object() || v.is_boolean())
                    .map(|v| (edge, v)),
            ),
            _ => {}
        }
    }
    found
}

/// Whether the document declares draft 3 or 4, where `id` (not `$id`) moves the base URI.
fn uses_old_draft(root: &Value) -> bool {
    root.get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("draft-03") || s.contains("draft-04"))
}

/// A local `$ref`'s target: `#` or `#/json/pointer` (percent-encoded as a URI fragment). Why
/// not, otherwise.
fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, &'static str> {
    let Some(fragment) = reference.strip_prefix('#') else {
        return Err("is not local (only '#' and '#/…' pointers are resolved; nothing is fetched)");
    };
    let fragment = percent_decode(fragment).ok_or("is not a valid URI fragment")?;
    if fragment.is_empty() {
        return Ok(root);
    }
    let Some(pointer) = fragment.strip_prefix('/') else {
        return Err("names an anchor (only '#' and '#/…' pointers are resolved)");
    };
    let mut target = root;
    for token in pointer.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        target = match target {
            Value::Object(map) => map.get(&token),
            Value::Array(items) if token == "0" || !token.starts_with('0') => {
                token.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        }
        .ok_or("does not resolve within the schema")?;
    }
    Ok(target)
}

/// `%XX` escapes decoded; `None` if they do not make UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A cycle of same-instance edges, named by a `$ref` on it (every such cycle has one: without
/// `$ref` edges only lead deeper into the document). Iterative depth-first search.
fn same_instance_cycle<'a>(nodes: &[Node<'a>]) -> Option<&'a str> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; nodes.len()];
    // (node, next edge to follow, the $ref of the edge that led here).
    let mut stack: Vec<(usize, usize, Option<&'a str>)> = Vec::new();
    for start in 0..nodes.len() {
        if marks[start] != Mark::New {
            continue;
        }
        marks[start] = Mark::Open;
        stack.push((start, 0, None));
        while let Some(top) = stack.last_mut() {
            let (node, next) = (top.0, top.1);
            let Some(&(child, reference)) = nodes[node].same.get(next) else {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match marks[child] {
                Mark::New => {
                    marks[child] = Mark::Open;
                    stack.push((child, 0, reference));
                }
                Mark::Open => {
                    // The cycle is the stack from `child` up, plus this edge.
                    let from = stack.iter().position(|entry| entry.0 == child).unwrap_or(0);
                    let on_cycle = stack[from + 1..].iter().find_map(|entry| entry.2);
                    return reference.or(on_cycle).or(Some("#"));
                }
                Mark::Done => {}
            }
        }
    }
    None
}

/// A client's string, cut for an error message.
fn truncate(text: &str) -> String {
    const MAX: usize = 80;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn check(mut schema: Value) -> KilnResult<Value> {
        guard(&mut schema, &SchemaLimits::default(), "guided_json").map(|_| schema)
    }

    fn refused(schema: Value, needle: &str) {
        let Err(error) = check(schema.clone()) else {
            panic!("accepted, expected {needle:?}");
        };
        assert!(
            error.message.contains(needle),
            "{schema}: {} lacks {needle:?}",
            error.message
        );
        assert!(error.message.contains("'guided_json'"), "{}", error.message);
    }

    /// `{"type": "object", "properties": {"a": … {"type": "integer"}}}`, `levels` deep.
    fn nested(levels: usize) -> Value {
        let mut schema = json!({"type": "integer"});
        for _ in 0..levels {
            schema = json!({"type": "object", "properties": {"a": schema}});
        }
        schema
    }

    #[test]
    fn each_limit_is_named() {
        // Each property level is two JSON levels: the schema object and `properties`.
        assert!(check(nested(15)).is_ok());
        refused(nested(16), "max_depth");
        // Far deeper than the limit (the guard does not recurse; `Value`'s clone and drop,
        // used by this test, do, so not deeper than a test thread's stack allows).
        let mut deep = json!(1);
        for _ in 0..1000 {
            deep = Value::Array(vec![deep]);
        }
        refused(json!({"enum": [deep]}), "max_depth");
        let big = "x".repeat(SchemaLimits::default().max_bytes);
        refused(json!({"type": "string", "description": big}), "max_bytes");
        let defs: Map<String, Value> = (0..200)
            .map(|i| (format!("d{i}"), json!({"type": "integer"})))
            .collect();
        let refs: Vec<Value> = (0..200)
            .map(|i| json!({"$ref": format!("#/$defs/d{i}")}))
            .collect();
        refused(json!({"$defs": defs, "anyOf": refs}), "max_refs");
        let many: Vec<Value> = (0..5000).map(|_| json!(true)).collect();
        refused(json!({"anyOf": many}), "max_subschemas");
    }

    #[test]
    fn cycles_that_consume_no_input_are_refused() {
        let needle = "refers to itself without consuming input";
        // The two known process-killers.
        refused(json!({"type": "integer", "not": {"$ref": "#"}}), needle);
        refused(
            json!({"anyOf": [{"$ref": "#"}, {"type": "integer"}]}),
            needle,
        );
        refused(json!({"$ref": "#"}), needle);
        refused(json!({"allOf": [{"$ref": "#"}]}), needle);
        refused(json!({"if": {"$ref": "#"}, "then": true}), needle);
        // Through `$defs`, `definitions`, and JSON pointers into other places.
        refused(
            json!({"$defs": {"a": {"oneOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}},
                   "$ref": "#/$defs/a"}),
            needle,
        );
        refused(
            json!({"definitions": {"a": {"not": {"$ref": "#/definitions/a"}}},
                   "properties": {"x": {"$ref": "#/definitions/a"}}}),
            needle,
        );
        // Mutual: a → b → a.
        refused(
            json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]},
                             "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
                   "$ref": "#/$defs/a"}),
            needle,
        );
        // A pointer to a subschema that refers back up, and percent-encoded pointers.
        refused(
            json!({"anyOf": [{"anyOf": [{"$ref": "#/anyOf/0"}]}]}),
            needle,
        );
        refused(
            json!({"$defs": {"a b": {"anyOf": [{"$ref": "#/$defs/a%20b"}]}}, "$ref": "#/$defs/a%20b"}),
            needle,
        );
        // A cycle in an unused definition is still refused: compilers may compile it.
        refused(
            json!({"$defs": {"loop": {"$ref": "#/$defs/loop"}}, "type": "integer"}),
            needle,
        );
    }

    /// `d<i>: anyOf [$ref d<i+1>, allOf [$ref d<i+1>]]`: tiny, acyclic, and 2^n subschemas
    /// for one value (2^20 took a validator 45 s and 6.7 GB).
    fn doubling(n: usize) -> Value {
        let mut defs: Map<String, Value> = (0..n)
            .map(|i| {
                let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
                let doubled = json!({"anyOf": [next, {"allOf": [next]}]});
                (format!("d{i}"), doubled)
            })
            .collect();
        defs.insert(format!("d{n}"), json!({"type": "string"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    #[test]
    fn references_that_multiply_are_refused() {
        assert!(check(doubling(8)).is_ok());
        refused(doubling(20), "once its '$ref's are followed");
    }

    #[test]
    fn validation_work_is_measured_before_validating() {
        // Each level checks the same member twice: 2^depth steps for a nested answer.
        let twice = json!({"anyOf": [
            {"type": "object", "properties": {"a": {"$ref": "#"}}},
            {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["b"]},
        ]});
        assert!(check(twice.clone()).is_ok());
        let mut answer = json!(1);
        for _ in 0..40 {
            answer = json!({"a": answer});
        }
        assert!(!validation_within(&twice, &answer, 250_000));
        let mut shallow = json!(1);
        for _ in 0..5 {
            shallow = json!({"a": shallow});
        }
        assert!(validation_within(&twice, &shallow, 250_000));
        // A plain linked list is linear in the answer.
        let list = json!({"type": "object", "properties": {"next": {"$ref": "#"}}});
        let mut long = json!({});
        for _ in 0..120 {
            long = json!({"next": long});
        }
        assert!(validation_within(&list, &long, 1000));
    }

    #[test]
    fn recursion_through_input_is_accepted() {
        let linked_list = json!({"type": "object", "properties": {"next": {"$ref": "#"}}});
        assert_eq!(check(linked_list.clone()).expect("accepted"), linked_list);
        let tree = json!({
            "$defs": {"node": {"type": "object", "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            }}},
            "anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}],
        });
        assert!(check(tree).is_ok());
        // The same definition used twice is a DAG, not a cycle.
        let shared = json!({"$defs": {"n": {"type": "integer"}},
            "allOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/n"}]});
        assert!(check(shared).is_ok());
        // A property named like a keyword is a name, not a keyword.
        let names = json!({"type": "object", "properties": {"$ref": {"type": "string"},
            "anyOf": {"type": "string"}, "not": {"type": "integer"}}});
        assert!(check(names).is_ok());
    }

    #[test]
    fn references_must_be_local_pointers() {
        for reference in [
            "http://example.com/schema.json",
            "https://example.com/s#/$defs/a",
            "file:///etc/passwd",
            "other.json#/a",
        ] {
            refused(json!({"$ref": reference}), "is not local");
        }
        refused(json!({"$ref": "#/$defs/missing"}), "does not resolve");
        refused(json!({"$ref": "#anchor"}), "names an anchor");
        refused(json!({"$ref": 7}), "not a string");
        refused(
            json!({"properties": {"a": {"$id": "http://x/y", "anyOf": [{"$ref": "#"}]}}}),
            "'$id'",
        );
        refused(json!({"$dynamicRef": "#meta"}), "'$dynamicRef'");
        refused(
            json!({"$schema": "http://json-schema.org/draft-04/schema#",
                   "properties": {"a": {"id": "s", "anyOf": [{"$ref": "#"}]}}}),
            "'id'",
        );
        // A top-level `$id` is fine; so is a property called `id`.
        assert!(
            check(json!({"$id": "https://example.com/s", "type": "object",
            "properties": {"id": {"type": "string"}}}))
            .is_ok()
        );
    }

    #[test]
    fn x_guidance_is_stripped_at_every_depth() {
        let schema = json!({
            "x-guidance": {"lenient": true},
            "type": "object",
            "properties": {
                "a": {"type": "integer", "x-guidance": {"lenient": true}},
                "b": {"anyOf": [{"x-guidance": {"whitespace_flexible": true}}]},
            },
            "z": [{"x-guidance": 1}],
        });
        let cleaned = check(schema.clone()).expect("accepted");
        assert!(!cleaned.to_string().contains(GUIDANCE_KEY), "{cleaned}");
        // Order is kept: llguidance writes properties in schema order.
        let keys: Vec<&String> = cleaned.as_object().expect("object").keys().collect();
        let expected: Vec<&String> = (schema.as_object().expect("object").keys())
            .filter(|key| *key != GUIDANCE_KEY)
            .collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn the_large_stack_runs_work_and_reports_panics() {
        assert_eq!(on_large_stack("sum", || 2 + 2).expect("ran"), 4);
        let error = on_large_stack("exploding", || -> u8 { panic!("boom") }).expect_err("panic");
        assert!(error.message.contains("exploding"), "{}", error.message);
    }

    /// Random schemas built from keywords that nest, refer and combine.
    fn schemas() -> impl Strategy<Value = Value> {
        let reference = prop_oneof![
            Just("#".to_owned()),
            Just("#/$defs/a".to_owned()),
            Just("#/$defs/b".to_owned()),
            Just("#/properties/p".to_owned()),
            Just("#/anyOf/0".to_owned()),
            Just("#/items".to_owned()),
            Just("http://example.com/x".to_owned()),
            "#[a-z/~0-9%]{0,12}",
        ];
        let leaf = prop_oneof![
            Just(json!({"type": "integer"})),
            Just(json!(true)),
            Just(json!({"x-guidance": {"lenient": true}})),
            reference.prop_map(|r| json!({"$ref": r})),
        ];
        leaf.prop_recursive(12, 256, 4, |inner| {
            let key = prop_oneof![
                Just("not"),
                Just("anyOf"),
                Just("allOf"),
                Just("oneOf"),
                Just("items"),
                Just("properties"),
                Just("$defs"),
                Just("if"),
                Just("additionalProperties"),
            ];
            (key, prop::collection::vec(inner, 1..4)).prop_map(|(key, children)| {
                let value = match key {
                    "anyOf" | "allOf" | "oneOf" => Value::Array(children),
                    "properties" => json!({"p": children[0], "q": children.last()}),
                    "$defs" => json!({"a": children[0], "b": children.last()}),
                    _ => children[0].clone(),
                };
                json!({key: value, "type": "object"})
            })
        })
    }

    proptest! {
        #[test]
        fn random_schemas_never_panic_and_stay_quick(schema in schemas(), max_depth in 1usize..40) {
            let limits = SchemaLimits { max_depth, ..SchemaLimits::default() };
            let mut schema = schema;
            let started = Instant::now();
            if guard(&mut schema, &limits, "schema").is_ok() {
                prop_assert!(!schema.to_string().contains(GUIDANCE_KEY));
            }
            prop_assert!(started.elapsed() < Duration::from_millis(200));
        }
    }
}
