//! The Worker AI binding's wire protocol (spec §2.3, §11): what `env.AI.run` sends to its
//! fetcher. `POST /run?version=3` runs a model; `POST /ai-gateway/run?version=3` runs it through
//! the gateway named in `options.gateway`, by the same code as `/v1/{account}/{gateway}/…`.
//!
//! Binding requests carry no account: they belong to the server's binding account
//! (`--binding-account`). The binding returns JSON answers parsed, so success is the bare
//! `result` with content type exactly `application/json`; streams and binary outputs pass
//! through; errors are `{internalCode, name, description, message}`. An input that is a stream
//! (`{body, contentType}`, audio say) arrives as the raw body, the other inputs in
//! `?userInputs=`. The rest of the protocol
//! (`env.AI.models()`, `env.AI.gateway(id)`'s helpers) is in `binding_api`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri,
};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use kiln_core::{KilnError, KilnResult, Task};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::proxy::{self, GatewayRequest};
use super::GatewayContext;
use crate::offload::{off_runtime_if, INLINE_BYTES};

/// `cf-ai-req-id`: becomes `env.AI.lastRequestId`.
const REQUEST_ID: &str = "cf-ai-req-id";

pub async fn run(
    State(context): State<Arc<GatewayContext>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let answered = async {
        let (model, call) = match stream_inputs(&uri)? {
            Some(inputs) => read_stream_call(&context, &headers, inputs, body).await?,
            None => read_call(&context, &headers, body).await?,
        };
        // `extraHeaders: {"cf-aig-gateway-id": …}` sends the call through that gateway, as the
        // header does on `/ai/run`.
        if let Some(id) = super::header_route::gateway_id(&headers)? {
            return via_gateway(&context, &headers, &model, call, &id, None).await;
        }
        let account = &context.app.binding_account;
        // `{queueRequest: true}` queues a batch (spec §1.6), as `?queueRequest=true` does.
        let queued = call.options.get("queueRequest").and_then(Value::as_bool) == Some(true);
        let query = if queued { "?queueRequest=true" } else { "" };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("/accounts/{account}/ai/run/{model}{query}"))
            .header(header::CONTENT_TYPE, call.content_type)
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
        let gateway = gateway.clone();
        via_gateway(&context, &headers, &model, call, &id, Some(&gateway)).await
    };
    match answered.await {
        Ok(response) => binding_answer(response).await,
        Err(error) => binding_error(&error),
    }
}

/// Runs `call` through gateway `id` of the binding account, by the code `/v1/{account}/{id}/…`
/// runs; `options.gateway`'s settings, when given, become its `cf-aig-*` headers.
async fn via_gateway(
    context: &Arc<GatewayContext>,
    headers: &HeaderMap,
    model: &str,
    call: BindingCall,
    id: &str,
    gateway: Option<&Map<String, Value>>,
) -> KilnResult<Response<Body>> {
    let mut proxied = HeaderMap::new();
    proxied.insert(header::CONTENT_TYPE, call.content_type);
    copy_extra_headers(headers, &mut proxied);
    // The call's own `cf-aig-*` headers (its `extraHeaders`), then `options.gateway`'s.
    for (name, value) in headers {
        if name.as_str().starts_with("cf-aig-") {
            proxied.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in gateway.map(gateway_headers).unwrap_or_default() {
        let value = HeaderValue::from_str(&value).map_err(|_| {
            KilnError::bad_input(format!(
                "options.gateway: {name} is not a valid header value"
            ))
        })?;
        proxied.insert(HeaderName::from_static(name), value);
    }
    proxied.remove(super::header_route::GATEWAY_ID_HEADER);
    let account = context.app.binding_account.clone();
    let path = format!("workers-ai/{model}");
    let uri: Uri = "/ai-gateway/run".parse().unwrap_or_default();
    let request = GatewayRequest {
        account: &account,
        gateway: id,
        path: &path,
        method: Method::POST,
        uri: &uri,
        headers: &proxied,
        request_type: Some("binding"),
    };
    Ok(proxy::answer(context, request, Body::from(call.inputs)).await)
}

struct BindingCall {
    inputs: Bytes,
    /// Of `inputs` as the native route gets them.
    content_type: HeaderValue,
    options: Map<String, Value>,
}

/// The model from `cf-consn-model-id` (without a `prefix:`).
fn model_of(headers: &HeaderMap) -> KilnResult<String> {
    headers
        .get("cf-consn-model-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| id.rsplit_once(':').map_or(id, |(_, model)| model))
        .filter(|model| !model.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| KilnError::bad_input("the cf-consn-model-id header names no model"))
}

/// The model and `{inputs, options}`.
async fn read_call(
    context: &GatewayContext,
    headers: &HeaderMap,
    body: Body,
) -> KilnResult<(String, BindingCall)> {
    let model = model_of(headers)?;
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
    Ok(BindingCall {
        inputs,
        content_type: HeaderValue::from_static("application/json"),
        options,
    })
}

/// `?userInputs=<JSON>`: the other inputs of a call whose input held a stream (`{body,
/// contentType}`, spec §2.3); `None` for a plain JSON call.
fn stream_inputs(uri: &Uri) -> KilnResult<Option<Map<String, Value>>> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let Some((_, text)) =
        url::form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "userInputs")
    else {
        return Ok(None);
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(inputs)) => Ok(Some(inputs)),
        _ => Err(KilnError::bad_input("userInputs must be a JSON object")),
    }
}

/// A stream call: the body is the stream, with its content type. The binding does not say
/// which input held it, so it goes where the model's task reads its file (`audio`, `image`),
/// base64-encoded next to the other inputs; with no other inputs the body goes to the native
/// route as it stands, like a `--data-binary` upload.
async fn read_stream_call(
    context: &GatewayContext,
    headers: &HeaderMap,
    mut inputs: Map<String, Value>,
    body: Body,
) -> KilnResult<(String, BindingCall)> {
    let model = model_of(headers)?;
    let limit = context.app.config.max_body_bytes;
    let bytes = crate::body::read_limited(headers, body, limit).await?;
    if inputs.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let call = BindingCall {
            inputs: bytes,
            content_type,
            options: Map::new(),
        };
        return Ok((model, call));
    }
    let field = context
        .app
        .catalog
        .get(&model)
        .and_then(|entry| file_input(entry.task))
        .ok_or_else(|| {
            KilnError::bad_input(format!(
                "{model} takes no audio or image input that a stream could be"
            ))
        })?;
    let encoded = off_runtime_if(
        bytes.len() > INLINE_BYTES,
        "encoding a stream input",
        move || {
            let file = base64::engine::general_purpose::STANDARD.encode(&bytes);
            inputs.insert(field.into(), Value::String(file));
            serde_json::to_vec(&inputs)
                .map(Bytes::from)
                .map_err(|e| KilnError::internal(format!("encoding the inputs: {e}")))
        },
    )
    .await?;
    let call = BindingCall {
        inputs: encoded,
        content_type: HeaderValue::from_static("application/json"),
        options: Map::new(),
    };
    Ok((model, call))
}

/// The input that holds a task's file.
fn file_input(task: Task) -> Option<&'static str> {
    match task {
        Task::SpeechRecognition | Task::VoiceActivityDetection => Some("audio"),
        Task::ImageClassification
        | Task::ImageToText
        | Task::ObjectDetection
        | Task::TextToImage => Some("image"),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_inputs_mark_a_stream_call() {
        let inputs = |uri: &str| stream_inputs(&uri.parse().expect("uri"));
        assert_eq!(inputs("/run?version=3").expect("plain"), None);
        let other = inputs("/run?version=3&userInputs=%7B%22language%22%3A%22en%22%7D")
            .expect("stream")
            .expect("inputs");
        assert_eq!(other.get("language"), Some(&json!("en")));
        assert_eq!(
            inputs("/run?userInputs=%7B%7D").expect("stream"),
            Some(Map::new())
        );
        assert!(inputs("/run?userInputs=%5B1%5D").is_err());
        assert_eq!(file_input(Task::SpeechRecognition), Some("audio"));
        assert_eq!(file_input(Task::TextGeneration), None);
    }
}
