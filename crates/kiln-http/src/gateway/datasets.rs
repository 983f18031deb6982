//! Datasets, evaluations and evaluation types (spec §4.7), under
//! `/accounts/{account_id}/ai-gateway/`. Storage and the evaluators are `kiln_gateway`'s; like
//! the rest of the management API, every call runs on the blocking pool.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::{KilnError, KilnResult};
use kiln_gateway::Dataset;
use serde_json::Value;

use super::admin::{stored, with_json_body};
use crate::paging::{paged, Unasked};
use crate::SharedState;

type Pairs = Query<Vec<(String, String)>>;

/// `GET …/ai-gateway/evaluation-types`: the cost, speed and human-feedback evaluators.
pub async fn list_types(State(state): State<SharedState>, Query(pairs): Pairs) -> Response {
    paged(
        "listing evaluation types",
        &pairs,
        Unasked::DefaultPage,
        move || Ok(state.gateways.evaluation_types()),
    )
    .await
}

/// `GET …/gateways/{gateway}/datasets?page=&per_page=&name=&enable=`.
pub async fn list(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Response {
    let wanted = match Wanted::from_pairs(&pairs, "enable") {
        Ok(wanted) => wanted,
        Err(error) => return crate::envelope::ApiError::from(error).into_response(),
    };
    paged(
        "listing datasets",
        &pairs,
        Unasked::DefaultPage,
        move || {
            let datasets = state.gateways.list_datasets(&account, &gateway)?;
            Ok(datasets
                .iter()
                .map(Dataset::to_json)
                .filter(|dataset| wanted.keeps(dataset))
                .collect())
        },
    )
    .await
}

pub async fn create(
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
        "dataset creation",
        move |input| {
            Ok(gateways
                .create_dataset(&account, &gateway, input)?
                .to_json())
        },
    )
    .await
}

pub async fn get(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
) -> Response {
    stored("reading a dataset", move || {
        Ok(state
            .gateways
            .get_dataset(&account, &gateway, &id)?
            .to_json())
    })
    .await
}

pub async fn update(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "dataset update",
        move |input| {
            let dataset = gateways.update_dataset(&account, &gateway, &id, input)?;
            Ok(dataset.to_json())
        },
    )
    .await
}

pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
) -> Response {
    stored("dataset deletion", move || {
        Ok(state
            .gateways
            .delete_dataset(&account, &gateway, &id)?
            .to_json())
    })
    .await
}

/// `GET …/gateways/{gateway}/evaluations?page=&per_page=&name=&processed=`.
pub async fn list_evaluations(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Response {
    let wanted = match Wanted::from_pairs(&pairs, "processed") {
        Ok(wanted) => wanted,
        Err(error) => return crate::envelope::ApiError::from(error).into_response(),
    };
    paged(
        "listing evaluations",
        &pairs,
        Unasked::DefaultPage,
        move || {
            let evaluations = state.gateways.list_evaluations(&account, &gateway)?;
            Ok(evaluations
                .into_iter()
                .filter(|evaluation| wanted.keeps(evaluation))
                .collect())
        },
    )
    .await
}

/// `POST …/gateways/{gateway}/evaluations {name, dataset_ids, evaluation_type_ids}`: evaluated
/// at once over the logs answered before it.
pub async fn create_evaluation(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(&state, &headers, request_body, "evaluation", move |input| {
        gateways.create_evaluation(&account, &gateway, input)
    })
    .await
}

pub async fn get_evaluation(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
) -> Response {
    stored("reading an evaluation", move || {
        state.gateways.get_evaluation(&account, &gateway, &id)
    })
    .await
}

pub async fn delete_evaluation(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
) -> Response {
    stored("evaluation deletion", move || {
        state.gateways.delete_evaluation(&account, &gateway, &id)
    })
    .await
}

/// The list filters Cloudflare's SDKs send: `name` (exact) and one boolean field.
struct Wanted {
    name: Option<String>,
    flag: Option<(&'static str, bool)>,
}

impl Wanted {
    fn from_pairs(pairs: &[(String, String)], flag: &'static str) -> KilnResult<Self> {
        let last = |key: &str| {
            pairs
                .iter()
                .rev()
                .find(|(name, value)| name == key && !value.is_empty())
                .map(|(_, value)| value.clone())
        };
        let flag = match last(flag).as_deref() {
            None => None,
            Some("true") => Some((flag, true)),
            Some("false") => Some((flag, false)),
            Some(other) => {
                return Err(KilnError::bad_input(format!(
                    "'{flag}' must be true or false, got {other:?}"
                )))
            }
        };
        Ok(Self {
            name: last("name"),
            flag,
        })
    }

    fn keeps(&self, item: &Value) -> bool {
        self.name.as_deref().is_none_or(|name| item["name"] == name)
            && self
                .flag
                .is_none_or(|(field, wanted)| item[field] == Value::Bool(wanted))
    }
}
