//! The Worker AI binding's wire protocol (spec §2.3, §11): what `env.AI.run` sends to its
//! fetcher. `POST /run?version=3` runs a model; `POST /ai-gateway/run?version=3` runs it through
//! the gateway named in `options.gateway`, by the same code as `/v1/{account}/{gateway}/…`.
//!
//! Binding requests carry no account: they belong to the server's binding account
//! (`--binding-account`). The binding returns JSON answers parsed, so success is the bare
//! `result` with content type exactly `application/json`; streams and binary outputs pass
//! through; errors are `{internalCode, name, description, message}`. The rest of the protocol
//! (`env.AI.models()`, `env.AI.gateway(id)`'s helpers) is in `binding_api`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use axum::response::IntoResponse;
use axum::Json;
use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::proxy::{self, GatewayRequest};
use super::GatewayContext;
use crate::offload::{off_runtime_if, INLINE_BYTES};

/// `cf-ai-req-id`: becomes `env.AI.lastRequestId`.
const REQUEST_ID: &str = "cf-ai-req-id";

pub async fn run(
    State(context): State<Arc<GatewayContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let answered = async {
        let (model, call) = read_call(&context, &headers, body).await?;
        let account = &context.app.binding_account;
        // `{queueRequest: true}` queues a batch (spec §1.6), as `?queueRequest=true` does.
        let queued = call.options.get("queueRequest").and_then(Value::as_bool) == Some(true);
        let query = if queued { "?queueRequest=true" } else { "" };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/accounts/{account}/ai/run/{model}{query}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(call.inputs))
            .map_err(|e| KilnError::bad_input(format!("invalid model id: {e}")))?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(crate::platform::TrustedCall {
                account: account.clone(),
                rate_limited: true,
            });
        copy_extra_headers(&headers, request.headers_mut());
        let response = context.inner.clone().oneshot(request).await;
        Ok::<_, KilnError>(response.unwrap_or_else(|never| match never {}))
    };
    match answered.await {
        Ok(response) => binding_answer(response).await,
        Err(error) => binding_error(&error),
    }
}

pub async fn gateway_run(
    State(context): State<Arc<GatewayContext>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let answered = async {
        let (model, call) = read_call(&context, &headers, body).await?;
        let gateway = call
            .options
            .get("gateway")
            .and_then(Value::as_object)
            .ok_or_else(|| KilnError::bad_input("options.gateway is required"))?;
        let id = gateway
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| KilnError::bad_input("options.gateway.id is required"))?
            .to_owned();
        let mut proxied = HeaderMap::new();
        proxied.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        copy_extra_headers(&headers, &mut proxied);
        for (name, value) in gateway_headers(gateway) {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                KilnError::bad_input(format!(
                    "options.gateway: {name} is not a valid header value"
                ))
            })?;
            proxied.insert(HeaderName::from_static(name), value);
        }
        let account = context.app.binding_account.clone();
        let path = format!("workers-ai/{model}");
        let uri: Uri = "/ai-gateway/run".parse().unwrap_or_default();
        let request = GatewayRequest {
            account: &account,
            gateway: &id,
            path: &path,
            method: Method::POST,
            uri: &uri,
            headers: &proxied,
            request_type: Some("binding"),
        };
        Ok::<_, KilnError>(proxy::answer(&context, request, Body::from(call.inputs)).await)
    };
    match answered.await {
        Ok(response) => binding_answer(response).await,
        Err(error) => binding_error(&error),
    }
}

struct BindingCall {
    inputs: Bytes,
    options: Map<String, Value>,
}

/// The model from `cf-consn-model-id` (without a `prefix:`), and `{inputs, options}`.
async fn read_call(
    context: &GatewayContext,
    headers: &HeaderMap,
    body: Body,
) -> KilnResult<(String, BindingCall)> {
    let model = headers
        .get("cf-consn-model-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| id.rsplit_once(':').map_or(id, |(_, model)| model))
        .filter(|model| !model.is_empty())
        .ok_or_else(|| KilnError::bad_input("the cf-consn-model-id header names no model"))?
        .to_owned();
    let limit = context.app.config.max_body_bytes;
    let bytes = crate::body::read_limited(headers, body, limit).await?;
    // Parsing, then writing `inputs` back out, grows with the body.
    let call = off_runtime_if(
        bytes.len() > INLINE_BYTES,
        "reading a binding call",
        move || split_call(&crate::body::parse_json(&bytes)?),
    )
    .await?;
    Ok((model, call))
}

/// `{inputs, options}` → the inputs as the native route takes them, and the options.
fn split_call(body: &Value) -> KilnResult<BindingCall> {
    let mut inputs = body
        .get("inputs")
        .cloned()
        .ok_or_else(|| KilnError::bad_input("the body has no 'inputs'"))?;
    let options = body
        .get("options")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // The native route reads `rejectIfBusy` from the input's options.
    if let Some(reject) = options.get("rejectIfBusy") {
        if let Value::Object(object) = &mut inputs {
            object.insert("options".into(), json!({"rejectIfBusy": reject}));
        }
    }
    let inputs = Bytes::from(serde_json::to_vec(&inputs).unwrap_or_default());
    Ok(BindingCall { inputs, options })
}

/// `GatewayOptions` (spec §2.1) as the `cf-aig-*` headers they stand for.
fn gateway_headers(gateway: &Map<String, Value>) -> Vec<(&'static str, String)> {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let retries = gateway.get("retries");
    let retry = |name: &str| retries.and_then(|r| r.get(name));
    let fields = [
        ("cf-aig-cache-key", gateway.get("cacheKey")),
        ("cf-aig-cache-ttl", gateway.get("cacheTtl")),
        ("cf-aig-skip-cache", gateway.get("skipCache")),
        ("cf-aig-collect-log", gateway.get("collectLog")),
        ("cf-aig-event-id", gateway.get("eventId")),
        ("cf-aig-request-timeout", gateway.get("requestTimeoutMs")),
        ("cf-aig-metadata", gateway.get("metadata")),
        ("cf-aig-max-attempts", retry("maxAttempts")),
        ("cf-aig-retry-delay", retry("retryDelayMs")),
        ("cf-aig-backoff", retry("backoff")),
    ];
    fields
        .into_iter()
        .filter_map(|(name, value)| Some((name, text(value.filter(|v| !v.is_null())?))))
        .collect()
}

/// `extraHeaders` arrive as plain headers; the session affinity one matters to Kiln.
fn copy_extra_headers(from: &HeaderMap, to: &mut HeaderMap) {
    if let Some(value) = from.get("x-session-affinity") {
        to.insert("x-session-affinity", value.clone());
    }
}

/// Kiln's envelope → what the binding expects.
async fn binding_answer(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let request_id = ulid::Ulid::new().to_string();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        parts.headers.insert(REQUEST_ID, value);
    }
    if !json {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return binding_error(&KilnError::internal("the answer could not be read"));
    };
    let success = parts.status.is_success();
    // Kiln's own answer, but one as large as its input (embeddings of many texts, say).
    let unwrapped = off_runtime_if(
        bytes.len() > INLINE_BYTES,
        "unwrapping an answer",
        move || Ok(unwrap_envelope(&bytes, success)),
    );
    let answer = match unwrapped.await {
        Ok(answer) => answer,
        Err(error) => return binding_error(&error),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    // Exactly `application/json`: with a charset the binding would hand the Worker a stream.
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(answer))
}

/// The envelope's `result` on success, else its first error as the binding's error object.
fn unwrap_envelope(bytes: &[u8], success: bool) -> String {
    let envelope: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let answer = if success {
        envelope.get("result").cloned().unwrap_or(envelope)
    } else {
        let error = envelope
            .get("errors")
            .or_else(|| envelope.get("error"))
            .and_then(|errors| errors.get(0))
            .cloned()
            .unwrap_or_default();
        let message = error["message"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned();
        error_body(error["code"].as_u64().unwrap_or(5000), &message)
    };
    answer.to_string()
}

fn error_body(code: u64, message: &str) -> Value {
    json!({
        "internalCode": code,
        "name": "InferenceUpstreamError",
        "description": message,
        "message": message,
    })
}

fn binding_error(error: &KilnError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        Json(error_body(u64::from(error.code()), &error.message)),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
