//! Kiln's own routes (not part of any Workers AI or OpenAI surface).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::envelope::success;
use crate::SharedState;

/// `GET /kiln/models`: every installed model, whether it is loaded and the memory it holds, and
/// the residency policy (what `ollama ps` shows).
pub async fn models(State(state): State<SharedState>) -> Response {
    let loaded = state.registry.loaded();
    let models: Vec<Value> = state
        .registry
        .available()
        .into_iter()
        .map(|(name, task)| {
            json!({
                "task": task.name(),
                "loaded": loaded.contains_key(&name),
                "memory_bytes": loaded.get(&name),
                "name": name,
            })
        })
        .collect();
    let policy = state.registry.policy();
    success(json!({
        "models": models,
        "memory_budget_bytes": policy.memory_budget_bytes,
        "memory_used_bytes": loaded.values().sum::<u64>(),
        "keep_alive_secs": policy.keep_alive.map(|keep_alive| keep_alive.as_secs()),
    }))
    .into_response()
}
