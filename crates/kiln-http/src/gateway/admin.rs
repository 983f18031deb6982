//! The management API of spec §4.12: gateway objects and custom providers.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::KilnResult;
use kiln_gateway::Gateway;
use serde::Serialize;
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::{body, SharedState};

pub(super) fn answer(result: KilnResult<Value>) -> Response {
    match result {
        Ok(value) => success(value).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A management call with a JSON body: read the body, run `call`, answer. (The platform
/// middleware has checked the token's account and scope before any handler runs.)
pub(super) async fn with_json_body<T: Serialize>(
    state: &SharedState,
    headers: &HeaderMap,
    request_body: Body,
    call: impl FnOnce(&Value) -> KilnResult<T>,
) -> Response {
    let answered = async {
        let input = body::read_json(headers, request_body, state.config.max_body_bytes).await?;
        Ok(serde_json::to_value(call(&input)?).unwrap_or_default())
    };
    answer(answered.await)
}

pub async fn list(State(state): State<SharedState>, Path(account): Path<String>) -> Response {
    answer(
        state
            .gateways
            .list(&account)
            .map(|gateways| json!(gateways.iter().map(Gateway::to_json).collect::<Vec<_>>())),
    )
}

pub async fn create(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    with_json_body(&state, &headers, request_body, |input| {
        Ok(state.gateways.create(&account, input)?.to_json())
    })
    .await
}

pub async fn get(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
) -> Response {
    answer(state.gateways.get(&account, &gateway).map(|g| g.to_json()))
}

pub async fn update(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    with_json_body(&state, &headers, request_body, |input| {
        Ok(state.gateways.update(&account, &gateway, input)?.to_json())
    })
    .await
}

pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
) -> Response {
    answer(
        state
            .gateways
            .delete(&account, &gateway)
            .map(|g| g.to_json()),
    )
}

// Custom providers: `/accounts/{account_id}/ai-gateway/custom-providers[/{id}]`.

pub async fn list_providers(
    State(state): State<SharedState>,
    Path(account): Path<String>,
) -> Response {
    answer(
        state
            .gateways
            .list_providers(&account)
            .map(|providers| serde_json::to_value(providers).unwrap_or_default()),
    )
}

pub async fn create_provider(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    with_json_body(&state, &headers, request_body, |input| {
        state.gateways.create_provider(&account, input)
    })
    .await
}

pub async fn get_provider(
    State(state): State<SharedState>,
    Path((account, id)): Path<(String, String)>,
) -> Response {
    answer(
        state
            .gateways
            .get_provider(&account, &id)
            .map(|provider| serde_json::to_value(provider).unwrap_or_default()),
    )
}

pub async fn update_provider(
    State(state): State<SharedState>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    with_json_body(&state, &headers, request_body, |input| {
        state.gateways.update_provider(&account, &id, input)
    })
    .await
}

pub async fn delete_provider(
    State(state): State<SharedState>,
    Path((account, id)): Path<(String, String)>,
) -> Response {
    answer(
        state
            .gateways
            .delete_provider(&account, &id)
            .map(|provider| json!({"id": provider.id})),
    )
}
