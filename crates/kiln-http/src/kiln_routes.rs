//! Kiln's own routes (not part of any Workers AI or OpenAI surface): the model store and what
//! is loaded, as `ollama ps` / `ollama pull` show them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_core::{KilnError, KilnResult};
use serde::Serialize;
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::SharedState;

/// A model the store can install (built-in manifests), as the models page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct InstallableModel {
    pub name: String,
    /// The Workers AI task it serves, when Kiln serves its format.
    pub task: Option<String>,
    pub description: String,
    /// Pinned size of its files.
    pub size_bytes: u64,
    pub installed: bool,
    /// Installed and served by default (`kiln serve` with no `--models`).
    pub default: bool,
}

/// Installs models into the store the server reads. Implemented by the binary, which owns the
/// model store; the registry finds the installed model on its next refresh.
pub trait ModelInstaller: Send + Sync + 'static {
    fn installable(&self) -> Vec<InstallableModel>;

    /// Fetches and verifies `name` (blocking). `progress(done_bytes, total_bytes)` is called as
    /// files arrive.
    fn install(&self, name: &str, progress: &(dyn Fn(u64, u64) + Sync)) -> KilnResult<()>;
}

/// `GET /kiln/models`: every installed model, whether it is loaded and the memory it holds, the
/// ids aliased to it (`serves`) and whether it also answers the other catalog ids of its task
/// (`task_default`), the residency policy (what `ollama ps` shows) and what the store can install.
pub async fn models(State(state): State<SharedState>) -> Response {
    let loaded = state.registry.loaded();
    let aliases = state.registry.aliases();
    let models: Vec<Value> = state
        .registry
        .available()
        .into_iter()
        .map(|(name, task)| {
            let mut serves: Vec<&str> = aliases
                .iter()
                .filter(|(_, target)| *target == name)
                .map(|(id, _)| id.as_str())
                .collect();
            serves.sort_unstable();
            json!({
                "task": task.name(),
                "loaded": loaded.contains_key(&name),
                "memory_bytes": loaded.get(&name),
                "serves": serves,
                "task_default": state.registry.is_task_default(&name),
                "name": name,
            })
        })
        .collect();
    let policy = state.registry.policy();
    let installable = state
        .installer
        .as_ref()
        .map(|installer| installer.installable())
        .unwrap_or_default();
    success(json!({
        "models": models,
        "installable": installable,
        "memory_budget_bytes": policy.memory_budget_bytes,
        "memory_used_bytes": loaded.values().sum::<u64>(),
        "keep_alive_secs": policy.keep_alive.map(|keep_alive| keep_alive.as_secs()),
    }))
    .into_response()
}

/// `POST /kiln/models/pull` with `{"name": "…"}`: installs a model from the store's sources and
/// streams progress as server-sent events (`{"status":"pulling","completed":…,"total":…}`, then
/// `{"status":"success","name":…}` or `{"status":"error","errors":[…]}`).
pub async fn pull_model(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match crate::kiln_pull::start(state, &headers, body).await {
        Ok(stream) => stream,
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `POST /kiln/models/{name}/unload`: drops a loaded model from memory now (it loads again on
/// its next request).
pub async fn unload_model(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    let unload = || -> KilnResult<Response> {
        if !state
            .registry
            .available()
            .iter()
            .any(|(installed, _)| *installed == name)
        {
            return Err(KilnError::no_such_model(&name));
        }
        let unloaded = state.registry.unload(&name);
        Ok(success(json!({"name": name, "unloaded": unloaded})).into_response())
    };
    unload().unwrap_or_else(|error| ApiError::from(error).into_response())
}

pub(crate) fn installer(state: &SharedState) -> KilnResult<Arc<dyn ModelInstaller>> {
    state
        .installer
        .clone()
        .ok_or_else(|| KilnError::internal("this server has no model store to install into"))
}

/// `GET /kiln/whoami`: the account this caller acts for and what it may do (the console's
/// first call: which account's gateways, indexes and usage to show).
pub async fn whoami(
    State(state): State<SharedState>,
    Extension(caller): Extension<crate::platform::Caller>,
) -> Response {
    let scopes: Vec<&str> = match &caller.scopes {
        Some(scopes) => scopes.iter().map(|scope| scope.as_str()).collect(),
        None => kiln_accounts::Scope::ALL
            .iter()
            .map(|scope| scope.as_str())
            .collect(),
    };
    success(json!({
        "account_id": caller.account,
        "auth": if state.platform.is_open() { "open" } else { "tokens" },
        "scopes": scopes,
    }))
    .into_response()
}

/// `GET /readyz`: whether to send this server new requests. 200 once it listens (models are
/// loaded before it does), 503 / 3050 from the moment a SIGTERM starts its drain, so a load
/// balancer stops routing to it while it finishes what it holds.
pub async fn ready(State(state): State<SharedState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        let error = KilnError::new(
            kiln_core::ErrorKind::Draining,
            kiln_core::ErrorKind::Draining.default_message(),
        );
        return ApiError::from(error).into_response();
    }
    success(json!({"ready": true})).into_response()
}
