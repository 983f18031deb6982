//! Dynamic routes (spec §4.10): the management API under
//! `/accounts/{account_id}/ai-gateway/gateways/{gateway}/routes`, and running a route for a
//! compat request whose body names `model: "dynamic/<route name>"`.
//!
//! Answers are the Workers AI envelope. Cloudflare's SDK reads some answers elsewhere (lists
//! under `data: {routes|versions|deployments, page, per_page, order_by, order_by_direction}`,
//! a rename under `route`), so those carry both.
//!
//! A run walks the deployed version from its `start` (`kiln_gateway::dynamic_routes::Graph`):
//! the first model that answers with a success is relayed and logged like any gateway answer,
//! named by `cf-aig-provider`, `cf-aig-model` and `cf-aig-step` (0 for the first model tried,
//! 1 for the next fallback, …). A failed model without a `fallback` output is answered as it
//! failed. Runs are not cached: a route's choice depends on more than the body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::time::unix_millis;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use kiln_gateway::dynamic_routes::{ModelTarget, Reached, MAX_STEPS};
use kiln_gateway::RequestOptions;
use serde_json::{json, Map, Value};

use super::admin::{stored, with_json_body};
use super::exchange::Exchange;
use super::route::{ProviderCall, Target};
use super::{route, upstream, GatewayContext, STEP};
use crate::envelope::ApiError;
use crate::offload::{off_runtime, off_runtime_if, INLINE_BYTES};
use crate::paging::{Paging, Unasked};
use crate::{body, SharedState};

/// The provider half of `model: "dynamic/<route name>"`.
pub const PROVIDER: &str = "dynamic";
pub const MODEL_HEADER: &str = "cf-aig-model";
pub const PROVIDER_HEADER: &str = "cf-aig-provider";

type Pairs = Query<Vec<(String, String)>>;
type RoutePath = Path<(String, String, String)>;

/// `GET …/routes?page=&per_page=&order_by_direction=`: oldest first unless asked otherwise.
pub async fn list(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Pairs,
) -> Response {
    listed(
        "listing dynamic routes",
        &pairs,
        "routes",
        "asc",
        move || state.gateways.list_dynamic_routes(&account, &gateway),
    )
    .await
}

/// `POST …/routes {name, elements}`: the route with its first version, deployed.
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
        "route creation",
        move |input| gateways.create_dynamic_route(&account, &gateway, input),
    )
    .await
}

pub async fn get(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
) -> Response {
    stored("reading a dynamic route", move || {
        state.gateways.get_dynamic_route(&account, &gateway, &id)
    })
    .await
}

/// `PATCH …/routes/{id} {name}`: the SDK reads the renamed route under `route`.
pub async fn update(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let bytes = match body::read_limited(&headers, request_body, state.config.max_body_bytes).await
    {
        Ok(bytes) => bytes,
        Err(error) => return ApiError::from(error).into_response(),
    };
    off_runtime("route update", move || {
        let input = body::parse_json(&bytes)?;
        let route = state
            .gateways
            .rename_dynamic_route(&account, &gateway, &id, &input)?;
        Ok(Json(json!({
            "result": route.clone(),
            "route": route,
            "success": true,
            "errors": [],
            "messages": [],
        }))
        .into_response())
    })
    .await
    .unwrap_or_else(|error| ApiError::from(error).into_response())
}

pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
) -> Response {
    stored("route deletion", move || {
        state.gateways.delete_dynamic_route(&account, &gateway, &id)
    })
    .await
}

/// `GET …/routes/{id}/versions`: newest first unless asked otherwise.
pub async fn list_versions(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
    Query(pairs): Pairs,
) -> Response {
    listed(
        "listing route versions",
        &pairs,
        "versions",
        "desc",
        move || state.gateways.list_route_versions(&account, &gateway, &id),
    )
    .await
}

/// `POST …/routes/{id}/versions {elements, comment}`: runs once deployed.
pub async fn create_version(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "route version",
        move |input| gateways.create_route_version(&account, &gateway, &id, input),
    )
    .await
}

pub async fn get_version(
    State(state): State<SharedState>,
    Path((account, gateway, id, version)): Path<(String, String, String, String)>,
) -> Response {
    stored("reading a route version", move || {
        state
            .gateways
            .get_route_version(&account, &gateway, &id, &version)
    })
    .await
}

/// `GET …/routes/{id}/deployments`: newest first unless asked otherwise.
pub async fn list_deployments(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
    Query(pairs): Pairs,
) -> Response {
    listed(
        "listing route deployments",
        &pairs,
        "deployments",
        "desc",
        move || {
            state
                .gateways
                .list_route_deployments(&account, &gateway, &id)
        },
    )
    .await
}

/// `POST …/routes/{id}/deployments {version_id, comment}`.
pub async fn create_deployment(
    State(state): State<SharedState>,
    Path((account, gateway, id)): RoutePath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "route deployment",
        move |input| gateways.create_route_deployment(&account, &gateway, &id, input),
    )
    .await
}

/// A page of what `call` lists (oldest first), in `default` order unless `order_by_direction`
/// says otherwise: the envelope with `result_info`, and the SDK's `data`.
async fn listed(
    what: &'static str,
    pairs: &[(String, String)],
    field: &'static str,
    default: &'static str,
    call: impl FnOnce() -> KilnResult<Vec<Value>> + Send + 'static,
) -> Response {
    let asked = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    };
    let direction = match asked("order_by_direction").unwrap_or(default) {
        "asc" => "asc",
        "desc" => "desc",
        other => {
            return refuse(format!(
                "'order_by_direction' must be asc or desc, got {other:?}"
            ))
        }
    };
    if let Some(other) = asked("order_by").filter(|by| *by != "created_at") {
        return refuse(format!("'order_by' must be created_at, got {other:?}"));
    }
    let paging = match Paging::from_pairs(pairs, Unasked::DefaultPage) {
        Ok(paging) => paging,
        Err(error) => return ApiError::from(error).into_response(),
    };
    off_runtime(what, move || {
        let mut items = call()?;
        if direction == "desc" {
            items.reverse();
        }
        Ok(page_answer(paging, field, direction, items))
    })
    .await
    .unwrap_or_else(|error| ApiError::from(error).into_response())
}

fn refuse(message: String) -> Response {
    ApiError::from(KilnError::bad_input(message)).into_response()
}

fn page_answer(paging: Paging, field: &str, direction: &str, items: Vec<Value>) -> Response {
    let total_count = items.len();
    let per_page = paging.per_page.unwrap_or(total_count.max(1));
    let start = paging.page.saturating_sub(1).saturating_mul(per_page);
    let page: Vec<Value> = items.into_iter().skip(start).take(per_page).collect();
    let mut data = Map::new();
    data.insert(field.to_owned(), Value::from(page.clone()));
    data.insert("page".into(), json!(paging.page));
    data.insert("per_page".into(), json!(per_page));
    data.insert("order_by".into(), json!("created_at"));
    data.insert("order_by_direction".into(), json!(direction));
    Json(json!({
        "result_info": {
            "page": paging.page,
            "per_page": per_page,
            "count": page.len(),
            "total_count": total_count,
        },
        "result": page,
        "data": data,
        "success": true,
        "errors": [],
        "messages": [],
    }))
    .into_response()
}

/// `compat/{endpoint}` with `model: "dynamic/<name>"`: marks the call for [`serve`]. The
/// target is Workers AI with the body as sent, so a path that does not run routes (the
/// universal endpoint) answers that no such model exists.
pub(super) fn hand_over(call: &mut ProviderCall, account: &str, endpoint: &str, name: &str) {
    call.provider = PROVIDER.to_owned();
    call.model = name.to_owned();
    call.target = Target::Local(format!("/accounts/{account}/ai/v1/{endpoint}"));
}

/// Runs the route `call` names (see the module's documentation); every answer, failures
/// included, is logged.
pub(super) async fn serve(
    context: &Arc<GatewayContext>,
    exchange: &Exchange,
    options: RequestOptions,
    call: ProviderCall,
    headers: &HeaderMap,
) -> Response<Body> {
    match run(context, exchange, &options, &call, headers).await {
        Ok(response) => response,
        Err(error) => exchange.fail(&call, &options, error, None).await,
    }
}

async fn run(
    context: &Arc<GatewayContext>,
    exchange: &Exchange,
    options: &RequestOptions,
    call: &ProviderCall,
    headers: &HeaderMap,
) -> KilnResult<Response<Body>> {
    let (gateways, account, gateway, name) = (
        context.app.gateways.clone(),
        exchange.account.clone(),
        exchange.gateway.id.clone(),
        call.model.clone(),
    );
    let route = off_runtime("reading a dynamic route", move || {
        gateways.runnable_route(&account, &gateway, &name)
    })
    .await?;
    if let Err(refused) = exchange.admit(call, options).await {
        return Ok(refused);
    }
    let sent = call.body.clone();
    let request = off_runtime_if(sent.len() > INLINE_BYTES, "reading the body", move || {
        body::parse_json(&sent)
    })
    .await?;
    let metadata = options.metadata.clone().unwrap_or_default();
    let walked = json!({"metadata": metadata, "body": request});
    let endpoint = call.path.strip_prefix("compat/").unwrap_or(&call.path);
    let graph = &route.graph;
    // Shared by the nodes of a cluster with Redis; in this process's memory otherwise.
    let mut surroundings = context.app.gateways.route_surroundings(
        &exchange.account,
        &exchange.gateway.id,
        &route.route_id,
        unix_millis(),
    );
    let mut budget = MAX_STEPS;
    let mut at = graph.start();
    let mut step = 0u32;
    let mut failures = Vec::new();
    loop {
        let (id, target, fallback) =
            match graph.advance(at, &walked, &mut surroundings, &mut budget)? {
                Reached::Model {
                    id,
                    target,
                    fallback,
                } => (id, target, fallback),
                Reached::End { id, refused_by } => {
                    return Err(ended(&route.name, id, refused_by, &failures))
                }
            };
        let prepared = prepare(
            context,
            exchange,
            headers,
            &walked["body"],
            endpoint,
            target,
        )
        .await;
        let outcome = match &prepared {
            Ok(model_call) => send(context, exchange, options, model_call, target).await,
            Err(error) => Err(error.clone()),
        };
        let named = format!("{}/{}", target.provider, target.model);
        let failed = match &outcome {
            Ok(answer) if answer.status().is_success() => None,
            Ok(answer) => Some(format!("{named} answered {}", answer.status())),
            Err(error) => Some(format!("{named}: {}", error.message)),
        };
        if let (Some(why), Some(next)) = (failed, fallback) {
            tracing::debug!(route = %route.name, element = id, "dynamic route model failed: {why}");
            failures.push(why);
            at = next;
            step += 1;
            continue;
        }
        // A call that could not even be made, with no fallback: the request's own failure.
        let model_call = prepared?;
        let response = match outcome {
            Ok(answer) => {
                exchange
                    .clone()
                    .relay(model_call, options.clone(), answer, None, Some(step))
                    .await
            }
            Err(error) => exchange.fail(&model_call, options, error, Some(step)).await,
        };
        return Ok(with_route_headers(response, target, step));
    }
}

/// The call a model element makes: the request's body with the element's model, resolved
/// like a compat request for `{provider}/{model}`, with a stored key if the gateway has one.
async fn prepare(
    context: &Arc<GatewayContext>,
    exchange: &Exchange,
    headers: &HeaderMap,
    request: &Value,
    endpoint: &str,
    target: &ModelTarget,
) -> KilnResult<ProviderCall> {
    let mut request = request.clone();
    request["model"] = json!(format!("{}/{}", target.provider, target.model));
    let bytes = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
    let mut call = route::resolve_off_runtime(
        &context.app,
        &exchange.account,
        &format!("compat/{endpoint}"),
        None,
        Method::POST,
        headers,
        bytes,
    )
    .await?;
    call.on_behalf_of = exchange.trusted_call();
    super::stored_keys::attach(exchange, &mut call, headers).await?;
    Ok(call)
}

/// Sends a model element's call with its `retries` and first-byte `timeout`.
async fn send(
    context: &Arc<GatewayContext>,
    exchange: &Exchange,
    options: &RequestOptions,
    call: &ProviderCall,
    target: &ModelTarget,
) -> KilnResult<Response<Body>> {
    let mut plan = options.retries(&exchange.gateway.config);
    plan.attempts = target.retries + 1;
    let timeout = target
        .timeout_ms
        .map(Duration::from_millis)
        .or(options.request_timeout);
    upstream::send(context, call, plan, timeout).await
}

/// Why a walk that reached `end` has no answer.
fn ended(route: &str, end: &str, refused_by: Option<&str>, failures: &[String]) -> KilnError {
    if let Some(limit) = refused_by {
        return KilnError::new(
            ErrorKind::GatewayRateLimited,
            format!(
                "Rate limited: dynamic route {route:?}, element {limit:?}: the limit is used up"
            ),
        );
    }
    if !failures.is_empty() {
        return KilnError::new(
            ErrorKind::UpstreamFailed,
            format!(
                "dynamic route {route:?}: no model answered ({}); the route ended at {end:?}",
                failures.join("; ")
            ),
        );
    }
    KilnError::bad_input(format!(
        "dynamic route {route:?} ended at element {end:?} without choosing a model"
    ))
}

fn with_route_headers(
    mut response: Response<Body>,
    target: &ModelTarget,
    step: u32,
) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [
        (MODEL_HEADER, target.model.clone()),
        (PROVIDER_HEADER, target.provider.clone()),
        (STEP, step.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}
