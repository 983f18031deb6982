//! The logs API (spec §4.6), feedback (§4.7) and analytics (§4.8), under
//! `/accounts/{account_id}/ai-gateway/gateways/{gateway}/`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::KilnResult;
use kiln_gateway::{BodyPart, LogQuery};
use serde_json::{json, Value};

use super::admin::{stored, with_json_body};
use crate::envelope::ApiError;
use crate::offload::off_runtime;
use crate::paging::ResultInfo;
use crate::SharedState;

type Pairs = Query<Vec<(String, String)>>;

/// USD per neuron (spec §7: $0.011 per 1,000 neurons).
const USD_PER_NEURON: f64 = 0.000_011;

// Each call waits for the log writer, then queries SQLite: all of it on the blocking pool.

pub async fn list(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Response {
    let listed = off_runtime("listing logs", move || {
        let query = LogQuery::from_pairs(&pairs)?;
        let page = state.gateways.list_logs(&account, &gateway, &query)?;
        let info = ResultInfo {
            page: page.page,
            per_page: page.per_page,
            count: page.count,
            total_count: page.total_count,
        };
        Ok(info.envelope(Value::Array(page.items)))
    });
    listed
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// `DELETE …/logs?filters=…&limit=…&order_by=…`.
pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Response {
    stored("deleting logs", move || {
        let limit = pairs
            .iter()
            .find(|(name, _)| name == "limit")
            .map(|(_, value)| {
                value.parse::<u64>().map_err(|_| {
                    kiln_core::KilnError::bad_input(format!(
                        "'limit' must be a number, not {value:?}"
                    ))
                })
            })
            .transpose()?;
        let query = LogQuery::from_pairs(&pairs)?;
        let deleted = state
            .gateways
            .delete_logs(&account, &gateway, &query, limit)?;
        Ok(json!({"deleted": deleted}))
    })
    .await
}

pub async fn get(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
) -> Response {
    stored("reading a log", move || {
        state.gateways.get_log(&account, &gateway, &id)
    })
    .await
}

/// `PATCH …/logs/{id}`: `{feedback, score, metadata}`.
pub async fn patch(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    request_body: axum::body::Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "log feedback",
        move |input| gateways.patch_log(&account, &gateway, &id, input),
    )
    .await
}

/// `GET …/logs/{id}/request` and `…/logs/{id}/response`.
pub async fn stored_body_of(
    State(state): State<SharedState>,
    Path((account, gateway, id, part)): Path<(String, String, String, String)>,
) -> Response {
    let part = match part.as_str() {
        "request" => BodyPart::Request,
        "response" => BodyPart::Response,
        _ => {
            let error = kiln_core::KilnError::new(
                kiln_core::ErrorKind::RouteNotFound,
                format!("no log body {part:?}: use request or response"),
            );
            return ApiError::from(error).into_response();
        }
    };
    stored("reading a log body", move || {
        stored_body(&state, &account, &gateway, &id, part)
    })
    .await
}

/// A stored body (up to 10 MB) as the envelope's `result`: JSON as JSON, anything else as text.
fn stored_body(
    state: &SharedState,
    account: &str,
    gateway: &str,
    id: &str,
    part: BodyPart,
) -> KilnResult<Value> {
    let (_, bytes) = state.gateways.log_body(account, gateway, id, part)?;
    Ok(serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

/// `GET …/analytics?start=…&end=…&interval=minute|hour|day&group_by=model|provider|none`.
pub async fn analytics(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Response {
    stored("analytics", move || {
        let mut report = state.gateways.analytics(&account, &gateway, &pairs)?;
        add_neurons(&mut report["totals"]);
        if let Some(series) = report.get_mut("series").and_then(Value::as_array_mut) {
            series.iter_mut().for_each(add_neurons);
        }
        Ok(report)
    })
    .await
}

/// Neurons are Workers AI's unit of cost: the same estimate in the unit its bills use.
fn add_neurons(row: &mut Value) {
    if let Some(cost) = row.get("cost").and_then(Value::as_f64) {
        row["neurons"] = json!(cost / USD_PER_NEURON);
    }
}
