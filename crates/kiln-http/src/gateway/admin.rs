//! The management API of spec §4.12: gateway objects and custom providers.
//!
//! Every call here reads or writes SQLite (`synchronous = FULL`, and the logs API first waits
//! for the log writer), so each runs on the blocking pool, envelope serialization included.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::KilnResult;
use kiln_gateway::Gateway;
use serde::Serialize;
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::offload::off_runtime;
use crate::paging::{paged, Unasked};
use crate::{body, SharedState};

/// Runs a storage call on the blocking pool and answers with its result in the envelope.
pub(super) async fn stored<T: Serialize>(
    what: &'static str,
    call: impl FnOnce() -> KilnResult<T> + Send + 'static,
) -> Response {
    let answered = off_runtime(what, move || {
        let value = serde_json::to_value(call()?).unwrap_or_default();
        Ok(success(value).into_response())
    });
    answered
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// A management call with a JSON body: read the body, then parse it and run `call` on the
/// blocking pool. (The platform middleware has checked the token's account and scope before any
/// handler runs.)
pub(super) async fn with_json_body<T: Serialize>(
    state: &SharedState,
    headers: &HeaderMap,
    request_body: Body,
    what: &'static str,
    call: impl FnOnce(&Value) -> KilnResult<T> + Send + 'static,
) -> Response {
    match body::read_limited(headers, request_body, state.config.max_body_bytes).await {
        Ok(bytes) => stored(what, move || call(&body::parse_json(&bytes)?)).await,
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET …/ai-gateway/gateways/{gateway}/url/{provider}`: the URL to call a provider through the
/// gateway, as a string (spec §4.12); `universal` is the universal endpoint's.
pub async fn url(
    State(state): State<SharedState>,
    Path((account, gateway, provider)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let base = super::binding_api::public_base(&headers, &state.public_url);
    stored("reading a gateway", move || {
        state.gateways.get(&account, &gateway)?;
        Ok(super::binding_api::provider_url(
            &base, &account, &gateway, &provider,
        ))
    })
    .await
}

/// `GET …/ai-gateway/gateways?page=&per_page=`.
pub async fn list(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    paged(
        "listing gateways",
        &pairs,
        Unasked::DefaultPage,
        move || {
            let gateways = state.gateways.list(&account)?;
            Ok(gateways.iter().map(Gateway::to_json).collect())
        },
    )
    .await
}

pub async fn create(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "gateway creation",
        move |input| Ok(gateways.create(&account, input)?.to_json()),
    )
    .await
}

pub async fn get(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
) -> Response {
    stored("reading a gateway", move || {
        Ok(state.gateways.get(&account, &gateway)?.to_json())
    })
    .await
}

pub async fn update(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "gateway update",
        move |input| Ok(gateways.update(&account, &gateway, input)?.to_json()),
    )
    .await
}

pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
) -> Response {
    stored("gateway deletion", move || {
        Ok(state.gateways.delete(&account, &gateway)?.to_json())
    })
    .await
}

// Custom providers: `/accounts/{account_id}/ai-gateway/custom-providers[/{id}]`.

/// `GET …/ai-gateway/custom-providers?page=&per_page=`.
pub async fn list_providers(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    paged(
        "listing custom providers",
        &pairs,
        Unasked::DefaultPage,
        move || {
            let providers = state.gateways.list_providers(&account)?;
            Ok(providers
                .iter()
                .map(|provider| serde_json::to_value(provider).unwrap_or_default())
                .collect())
        },
    )
    .await
}

pub async fn create_provider(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "custom provider creation",
        move |input| gateways.create_provider(&account, input),
    )
    .await
}

pub async fn get_provider(
    State(state): State<SharedState>,
    Path((account, id)): Path<(String, String)>,
) -> Response {
    stored("reading a custom provider", move || {
        state.gateways.get_provider(&account, &id)
    })
    .await
}

pub async fn update_provider(
    State(state): State<SharedState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "custom provider update",
        move |input| gateways.update_provider(&account, &id, input),
    )
    .await
}

pub async fn delete_provider(
    State(state): State<SharedState>,
    Path((account, id)): Path<(String, String)>,
) -> Response {
    stored("custom provider deletion", move || {
        let provider = state.gateways.delete_provider(&account, &id)?;
        Ok(json!({"id": provider.id}))
    })
    .await
}
