//! Query execution: which vectors are candidates, how they are searched, and the result shape.
//!
//! Namespace restricts first, then the filter, then topK (spec §5.4). The strategy:
//! - no namespace or filter: the ANN graph when there is one, else exact search;
//! - a namespace or filter: the candidates are listed first (a namespace is a lookup, a filter
//!   one check per vector). Few candidates (≤ [`EXACT_SEARCH_WORK`] / dimensions) are searched
//!   exactly, which is both correct and fast; many go through the graph's filtered search, and
//!   if that finds fewer than topK (or fewer than there are candidates), exact search over the
//!   candidates answers instead — never a short list.
//!
//! Every returned score is exact (recomputed in f64 from the stored vector); the graph only
//! chooses candidates, by approximate (bfloat16) distances: it proposes 2 × topK, the exact
//! best topK of them are returned. `returnValues: true` over-fetches more candidates (and
//! searches wider), which is what "high-precision scoring" buys in Vectorize.

use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::{json, Map, Value};

use crate::filter::{Filter, IndexedValue};
use crate::query::{Query, ReturnMetadata};
use crate::state::{IndexState, StoredVector};

/// Candidate count × dimensions up to which exact search over candidates is used (≈ 10,000
/// candidates of 384 dimensions: a few milliseconds).
pub const EXACT_SEARCH_WORK: usize = 4_000_000;

struct Scored {
    slot: u32,
    score: f32,
}

pub fn run_query(state: &IndexState, query: &Query, ann_min_vectors: usize) -> KilnResult<Value> {
    query.check_top_k()?;
    let target: Vec<f32> = match (&query.vector, &query.vector_id) {
        (Some(vector), _) => vector.clone(),
        (None, Some(id)) => state
            .by_id(id)
            .map(|vector| vector.values.clone())
            .ok_or_else(|| {
                KilnError::new(
                    ErrorKind::NotFound,
                    format!("vectorId {id:?} is not in the index"),
                )
            })?,
        (None, None) => return Err(KilnError::bad_input("vector is required")),
    };
    if target.len() != state.dimensions {
        return Err(KilnError::bad_input(format!(
            "vector has {} dimensions but the index has {}",
            target.len(),
            state.dimensions
        )));
    }
    let filter = match &query.filter {
        Some(filter) => Some(Filter::parse(filter, &state.metadata_index_map())?),
        None => None,
    };
    // The graph orders by approximate (bfloat16) distances: twice topK candidates, rescored
    // exactly, recover the exact order of the best; more for "high precision" values.
    let fetch = if query.return_values {
        (query.top_k * 4).max(100)
    } else {
        query.top_k * 2
    };
    let graph = state
        .ann
        .as_ref()
        .filter(|_| state.vector_count() >= ann_min_vectors);
    let restricted = query.namespace.is_some() || filter.is_some();
    let slots: Vec<u32> = match (graph, restricted) {
        (Some(graph), false) => graph
            .search(&target, query.top_k, fetch)
            .into_iter()
            .map(|key| key as u32)
            .collect(),
        (None, false) => state.ids.values().copied().collect(),
        (_, true) => {
            let candidates = candidates(state, query.namespace.as_deref(), filter.as_ref());
            let exact_limit = EXACT_SEARCH_WORK / state.dimensions.max(1);
            match graph {
                Some(graph) if candidates.len() > exact_limit => {
                    let mut allowed = vec![false; state.slots.len()];
                    candidates
                        .iter()
                        .for_each(|slot| allowed[*slot as usize] = true);
                    let found: Vec<u32> = graph
                        .filtered_search(&target, query.top_k, fetch, |key| {
                            allowed.get(key as usize).copied().unwrap_or(false)
                        })
                        .into_iter()
                        .map(|key| key as u32)
                        .collect();
                    if found.len() < query.top_k.min(candidates.len()) {
                        candidates
                    } else {
                        found
                    }
                }
                _ => candidates,
            }
        }
    };
    let best = top_k_exact(state, &target, &slots, query.top_k);
    let matches: Vec<Value> = best
        .iter()
        .filter_map(|scored| {
            state
                .vector(scored.slot)
                .map(|vector| render_match(vector, scored.score, query, state))
        })
        .collect();
    Ok(json!({"count": matches.len(), "matches": matches}))
}

/// Slots in the namespace (if any) that pass the filter (if any).
fn candidates(state: &IndexState, namespace: Option<&str>, filter: Option<&Filter>) -> Vec<u32> {
    let passes = |slot: &u32| {
        filter.is_none_or(|filter| {
            state
                .vector(*slot)
                .is_some_and(|vector| filter.matches(&vector.indexed))
        })
    };
    match namespace {
        Some(namespace) => state
            .namespaces
            .get(namespace)
            .map(|members| members.iter().copied().filter(passes).collect())
            .unwrap_or_default(),
        None => state.ids.values().copied().filter(passes).collect(),
    }
}

/// Exact scores for `slots`, the best `top_k` first (ties broken by id for stable answers).
fn top_k_exact(state: &IndexState, target: &[f32], slots: &[u32], top_k: usize) -> Vec<Scored> {
    let metric = state.metric;
    if slots.len() <= 1024 {
        // Scattered vectors (graph candidates): request them all before reading any.
        for slot in slots {
            if let Some(entry) = state.slots.get(*slot as usize) {
                crate::kernels::prefetch(std::slice::from_ref(entry), 2);
            }
        }
        for slot in slots {
            if let Some(vector) = state.vector(*slot) {
                crate::kernels::prefetch(&vector.values, 24);
            }
        }
    }
    let mut scored: Vec<Scored> = slots
        .iter()
        .filter_map(|slot| {
            state.vector(*slot).map(|vector| Scored {
                slot: *slot,
                score: metric.score(target, &vector.values),
            })
        })
        .collect();
    let order = |a: &Scored, b: &Scored| {
        metric.best_first(a.score, b.score).then_with(|| {
            let id = |scored: &Scored| state.vector(scored.slot).map(|vector| vector.id.as_str());
            id(a).cmp(&id(b))
        })
    };
    if scored.len() > top_k {
        scored.select_nth_unstable_by(top_k, order);
        scored.truncate(top_k);
    }
    scored.sort_by(order);
    scored
}

fn render_match(vector: &StoredVector, score: f32, query: &Query, state: &IndexState) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), Value::String(vector.id.clone()));
    object.insert("score".into(), json_number(score));
    if query.return_values {
        object.insert(
            "values".into(),
            Value::Array(vector.values.iter().copied().map(json_number).collect()),
        );
    }
    let metadata = match query.return_metadata {
        ReturnMetadata::None => None,
        ReturnMetadata::All => vector.metadata.clone(),
        ReturnMetadata::Indexed => indexed_metadata(vector, state),
    };
    if let Some(metadata) = metadata {
        object.insert("metadata".into(), Value::Object(metadata));
    }
    if let Some(namespace) = &vector.namespace {
        object.insert("namespace".into(), Value::String(namespace.clone()));
    }
    Value::Object(object)
}

/// Only the properties that metadata indexes hold, as they hold them (strings cut to 64
/// bytes), nested back into objects for dotted names.
fn indexed_metadata(vector: &StoredVector, state: &IndexState) -> Option<Map<String, Value>> {
    let current = |name: &str| {
        state
            .metadata_indexes
            .iter()
            .any(|(property, _)| property == name)
    };
    let mut root = Map::new();
    for (property, value) in vector.indexed.iter().filter(|(name, _)| current(name)) {
        insert_dotted(&mut root, property, value);
    }
    (!root.is_empty()).then_some(root)
}

fn insert_dotted(root: &mut Map<String, Value>, property: &str, value: &IndexedValue) {
    let mut segments: Vec<&str> = property.split('.').collect();
    let Some(leaf) = segments.pop() else {
        return;
    };
    let mut object = root;
    for segment in segments {
        let entry = object
            .entry(segment.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        object = next;
    }
    object.insert(leaf.to_owned(), value.to_json());
}

/// `[{id, values, metadata?, namespace?}]` for the ids that exist, in the order asked.
pub fn get_by_ids(state: &IndexState, ids: &[String]) -> Vec<Value> {
    ids.iter()
        .filter_map(|id| state.by_id(id))
        .map(|vector| {
            let mut object = Map::new();
            object.insert("id".into(), Value::String(vector.id.clone()));
            object.insert(
                "values".into(),
                Value::Array(vector.values.iter().copied().map(json_number).collect()),
            );
            if let Some(metadata) = &vector.metadata {
                object.insert("metadata".into(), Value::Object(metadata.clone()));
            }
            if let Some(namespace) = &vector.namespace {
                object.insert("namespace".into(), Value::String(namespace.clone()));
            }
            Value::Object(object)
        })
        .collect()
}

/// An f32 as the shortest decimal that reads back as the same f32 (`0.6`, not the
/// `0.6000000238418579` that widening to f64 would print).
fn json_number(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}
