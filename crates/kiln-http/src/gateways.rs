//! `/accounts/{account_id}/ai-gateway/gateways`: the gateway objects of spec §4.12.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::KilnResult;
use kiln_gateway::Gateway;
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::{body, SharedState};

fn answer(result: KilnResult<Value>) -> Response {
    match result {
        Ok(value) => success(value).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

fn authorized(headers: &HeaderMap) -> KilnResult<()> {
    crate::auth::check(crate::auth::bearer_token(headers).as_deref())
}

pub async fn list(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Response {
    answer(authorized(&headers).and_then(|()| {
        let gateways = state.gateways.list(&account)?;
        Ok(json!(gateways
            .iter()
            .map(Gateway::to_json)
            .collect::<Vec<_>>()))
    }))
}

pub async fn create(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: axum::body::Body,
) -> Response {
    let created = async {
        authorized(&headers)?;
        let input = body::read_json(&headers, request_body, state.config.max_body_bytes).await?;
        Ok(state.gateways.create(&account, &input)?.to_json())
    };
    answer(created.await)
}

pub async fn get(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(
        authorized(&headers).and_then(|()| Ok(state.gateways.get(&account, &gateway)?.to_json())),
    )
}

pub async fn update(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: axum::body::Body,
) -> Response {
    let updated = async {
        authorized(&headers)?;
        let input = body::read_json(&headers, request_body, state.config.max_body_bytes).await?;
        Ok(state.gateways.update(&account, &gateway, &input)?.to_json())
    };
    answer(updated.await)
}

pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(
        authorized(&headers)
            .and_then(|()| Ok(state.gateways.delete(&account, &gateway)?.to_json())),
    )
}
