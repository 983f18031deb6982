//! `GET /v1/models` and `GET /v1/models/{model}`: every id this server answers to.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::route;
use crate::SharedState;

/// Local models have no publication date; they are listed as created when the server started
/// answering, which stays stable for the life of the process.
fn created() -> u64 {
    static STARTED: OnceLock<u64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
    })
}

/// Catalog ids are owned by their author (`@cf/meta/…` → `meta`); local names and aliases by Kiln.
fn owned_by(id: &str) -> &str {
    id.strip_prefix('@')
        .and_then(|rest| rest.split('/').nth(1))
        .filter(|author| !author.is_empty())
        .unwrap_or("kiln")
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": created(), "owned_by": owned_by(id)})
}

/// Local model names, aliases, and catalog ids that resolve to a loaded model, each once.
fn served_ids(state: &SharedState) -> Vec<String> {
    let mut ids: BTreeMap<String, ()> = BTreeMap::new();
    for (name, _) in state.registry.available() {
        ids.insert(name, ());
    }
    for (alias, _) in state.registry.aliases() {
        if state.registry.resolve(&alias, None).is_some() {
            ids.insert(alias, ());
        }
    }
    for entry in state.catalog.entries() {
        if state
            .registry
            .resolve(&entry.name, Some(entry.task))
            .is_some()
        {
            ids.insert(entry.name.clone(), ());
        }
    }
    ids.into_keys().collect()
}

pub async fn list_models(State(state): State<SharedState>) -> Response {
    let data: Vec<Value> = served_ids(&state)
        .iter()
        .map(|id| model_object(id))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn retrieve_model(
    State(state): State<SharedState>,
    Path(params): Path<BTreeMap<String, String>>,
) -> Response {
    let model = params
        .get("model")
        .map_or("", |m| m.trim_start_matches('/'));
    match route(&state, model) {
        Ok(_) => Json(model_object(model)).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::owned_by;

    #[test]
    fn catalog_authors_own_their_ids() {
        assert_eq!(owned_by("@cf/meta/llama-3.1-8b-instruct"), "meta");
        assert_eq!(owned_by("@hf/thebloke/x"), "thebloke");
        assert_eq!(owned_by("smollm2-135m-instruct"), "kiln");
    }
}
