//! The universal endpoint, `POST /v1/{account}/{gateway}` (spec §4.1): an array of steps, each
//! `{provider, endpoint, headers, query, config}`, tried in order until one answers. The step
//! that answered is named in `cf-aig-step`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use kiln_core::{KilnError, KilnResult};
use kiln_gateway::{RequestOptions, RetryBackoff};
use serde_json::Value;

use super::exchange::Exchange;
use super::{gateway_error, open_exchange, route, upstream, with_ids, GatewayContext, STEP};
use crate::envelope::EnvelopePath;
use crate::offload::{off_runtime_if, INLINE_BYTES};

pub async fn handle(
    State(context): State<Arc<GatewayContext>>,
    EnvelopePath((account, gateway)): EnvelopePath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    answer(&context, &account, &gateway, &headers, body, "universal").await
}

/// Serves the steps, answering with the log and event ids; `request_type` is what the log says
/// (`binding` for the Worker binding's `gateway(id).run`).
pub(super) async fn answer(
    context: &Arc<GatewayContext>,
    account: &str,
    gateway: &str,
    headers: &HeaderMap,
    body: Body,
    request_type: &'static str,
) -> Response<Body> {
    let event_id = headers
        .get(super::EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match serve(context, account, gateway, headers, body, request_type).await {
        Ok((response, log_id)) => with_ids(response, Some(&log_id), event_id.as_deref()),
        Err(error) => with_ids(gateway_error(&error), None, event_id.as_deref()),
    }
}

/// One step as the client wrote it.
struct Step {
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    config: Option<Value>,
}

async fn serve(
    context: &Arc<GatewayContext>,
    account: &str,
    gateway: &str,
    headers: &HeaderMap,
    body: Body,
    request_type: &'static str,
) -> KilnResult<(Response<Body>, String)> {
    let (exchange, request_options) =
        open_exchange(context, account, gateway, headers, request_type).await?;
    let log_id = exchange.log_id.clone();
    let limit = context.app.config.max_body_bytes;
    let bytes = crate::body::read_limited(headers, body, limit).await?;
    // Each step's `query` becomes a body of its own: work that grows with the request.
    let steps = off_runtime_if(bytes.len() > INLINE_BYTES, "reading steps", move || {
        parse_steps(crate::body::parse_json(&bytes)?)
    })
    .await?;
    let response = run_steps(
        &exchange,
        context,
        account,
        headers,
        &request_options,
        steps,
    )
    .await;
    Ok((response, log_id))
}

async fn run_steps(
    exchange: &Exchange,
    context: &Arc<GatewayContext>,
    account: &str,
    request_headers: &HeaderMap,
    request_options: &RequestOptions,
    steps: Vec<Step>,
) -> Response<Body> {
    let last = steps.len() - 1;
    let mut admitted = false;
    let mut failure = None;
    for (index, step) in steps.into_iter().enumerate() {
        let number = index as u32;
        let prepared = prepare(context, account, request_headers, request_options, &step).await;
        let (call, options) = match prepared {
            Ok(prepared) => prepared,
            Err(error) if index < last => {
                tracing::debug!(step = index, "universal step skipped: {}", error.message);
                failure = Some(error);
                continue;
            }
            Err(error) => return gateway_error(&error),
        };
        let mut call = call;
        call.on_behalf_of = exchange.trusted_call();
        let cache = exchange.cache_plan(&call, &options).await;
        if let Some(plan) = cache {
            if let Some(hit) = exchange
                .replay_cached(&call, &options, plan, Some(number))
                .await
            {
                return with_step(hit, number);
            }
        }
        if !admitted {
            if let Err(refused) = exchange.admit(&call, &options).await {
                return refused;
            }
            admitted = true;
        }
        let plan = options.retries(&exchange.gateway.config);
        let sent = match super::stored_keys::attach(exchange, &mut call, request_headers).await {
            Ok(()) => upstream::send(context, &call, plan, options.request_timeout).await,
            Err(error) => Err(error),
        };
        match sent {
            Ok(answer) if answer.status().is_success() || index == last => {
                let relayed = exchange
                    .clone()
                    .relay(call, options, answer, cache, Some(number))
                    .await;
                return with_step(relayed, number);
            }
            Ok(answer) => {
                tracing::debug!(step = index, status = %answer.status(), "universal step failed");
            }
            Err(error) if index == last => {
                let failed = exchange.fail(&call, &options, error, Some(number)).await;
                return with_step(failed, number);
            }
            Err(error) => failure = Some(error),
        }
    }
    // Only reachable when the last step could not even be prepared.
    gateway_error(&failure.unwrap_or_else(|| KilnError::bad_input("no step answered")))
}

/// The step's call and options: its own headers override the request's (spec §4.1).
async fn prepare(
    context: &Arc<GatewayContext>,
    account: &str,
    request_headers: &HeaderMap,
    request_options: &RequestOptions,
    step: &Step,
) -> KilnResult<(route::ProviderCall, RequestOptions)> {
    let mut headers = request_headers.clone();
    for (name, value) in &step.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| KilnError::bad_input(format!("invalid header name {name:?} in a step")))?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            KilnError::bad_input(format!("invalid value for header {name} in a step"))
        })?;
        headers.insert(name, value);
    }
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut options = if step
        .headers
        .iter()
        .any(|(name, _)| name.to_ascii_lowercase().starts_with("cf-"))
    {
        RequestOptions::from_headers(super::header_pairs(&headers))?
    } else {
        request_options.clone()
    };
    if let Some(config) = &step.config {
        apply_config(&mut options, config)?;
    }
    let call = route::resolve_off_runtime(
        &context.app,
        account,
        &step.path,
        None,
        Method::POST,
        &headers,
        step.body.clone(),
    )
    .await?;
    Ok((call, options))
}

/// A step's `config`: `{requestTimeout, maxAttempts, retryDelay, backoff}`.
fn apply_config(options: &mut RequestOptions, config: &Value) -> KilnResult<()> {
    let number = |name: &str, max: u64| -> KilnResult<Option<u64>> {
        match config.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| {
                    KilnError::bad_input(format!("step config '{name}' must be 0–{max}"))
                }),
        }
    };
    if let Some(ms) = number("requestTimeout", u64::from(u32::MAX))? {
        options.request_timeout = Some(Duration::from_millis(ms));
    }
    if let Some(attempts) = number("maxAttempts", 5)? {
        options.max_attempts = Some(attempts.max(1) as u32);
    }
    if let Some(delay) = number("retryDelay", 5000)? {
        options.retry_delay_ms = Some(delay as u32);
    }
    if let Some(backoff) = config.get("backoff").and_then(Value::as_str) {
        options.backoff = Some(match backoff {
            "constant" => RetryBackoff::Constant,
            "linear" => RetryBackoff::Linear,
            "exponential" => RetryBackoff::Exponential,
            _ => {
                return Err(KilnError::bad_input(
                    "step config 'backoff' must be constant, linear or exponential",
                ))
            }
        });
    }
    Ok(())
}

fn parse_steps(input: Value) -> KilnResult<Vec<Step>> {
    let steps = match input {
        Value::Array(steps) => steps,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(KilnError::bad_input(
                "the body must be a step object or an array of steps",
            ))
        }
    };
    if steps.is_empty() {
        return Err(KilnError::bad_input("the array of steps is empty"));
    }
    steps
        .into_iter()
        .enumerate()
        .map(|(index, step)| parse_step(index, step))
        .collect()
}

fn parse_step(index: usize, step: Value) -> KilnResult<Step> {
    let field = |name: &str| {
        step.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| KilnError::bad_input(format!("step {index}: '{name}' is required")))
    };
    let provider = field("provider")?;
    let endpoint = field("endpoint")?.trim_start_matches('/');
    let headers = match step.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(headers)) => headers
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => {
                        return Err(KilnError::bad_input(format!(
                            "step {index}: header {name:?} must be a string"
                        )))
                    }
                };
                Ok((name.clone(), text))
            })
            .collect::<KilnResult<_>>()?,
        Some(_) => {
            return Err(KilnError::bad_input(format!(
                "step {index}: 'headers' must be an object"
            )))
        }
    };
    let query = step
        .get("query")
        .ok_or_else(|| KilnError::bad_input(format!("step {index}: 'query' is required")))?;
    Ok(Step {
        path: format!("{provider}/{endpoint}"),
        headers,
        body: Bytes::from(serde_json::to_vec(query).unwrap_or_default()),
        config: step.get("config").cloned(),
    })
}

fn with_step(mut response: Response<Body>, step: u32) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(&step.to_string()) {
        response.headers_mut().insert(STEP, value);
    }
    response
}
