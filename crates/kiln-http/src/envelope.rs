//! Workers AI envelopes: `{result, success, errors, messages}` for both outcomes.

use std::any::Any;

use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::{ErrorKind, KilnError};
use serde_json::{json, Value};

/// Names the local model that really served a request.
pub const MODEL_HEADER: &str = "x-kiln-model";

/// A [`KilnError`] on its way to the wire, optionally naming the model that produced it.
#[derive(Debug)]
pub struct ApiError {
    pub error: KilnError,
    pub served_by: Option<String>,
}

impl From<KilnError> for ApiError {
    fn from(error: KilnError) -> Self {
        Self {
            error,
            served_by: None,
        }
    }
}

impl ApiError {
    pub fn served_by(mut self, model: &str) -> Self {
        self.served_by = Some(model.to_owned());
        self
    }
}

pub fn error_body(errors: Value) -> Value {
    json!({"result": null, "success": false, "errors": errors, "messages": []})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = self.error.code(), "{}", self.error.message);
        }
        let body = error_body(json!([{"code": self.error.code(), "message": self.error.message}]));
        let mut response = (status, Json(body)).into_response();
        with_retry_after(&mut response, &self.error);
        if let Some(model) = self.served_by.and_then(|m| HeaderValue::from_str(&m).ok()) {
            response.headers_mut().insert(MODEL_HEADER, model);
        }
        response
    }
}

/// `retry-after` for refusals that pass with time (rate limits, the daily allocation).
pub fn with_retry_after(response: &mut Response, error: &KilnError) {
    if let Some(seconds) = error.retry_after_secs {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
}

/// `{"result": …, "success": true, …}`.
pub fn success(result: Value) -> Json<Value> {
    Json(json!({"result": result, "success": true, "errors": [], "messages": []}))
}

pub fn with_model_header(mut response: Response, model: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(model) {
        response.headers_mut().insert(MODEL_HEADER, value);
    }
    response
}

/// Cloudflare's API router answer for unknown paths.
pub async fn route_not_found(uri: Uri) -> Response {
    let errors = json!([
        {"code": 7003, "message": format!("Could not route to {}, perhaps your object identifier is invalid?", uri.path())},
        {"code": ErrorKind::RouteNotFound.code(), "message": ErrorKind::RouteNotFound.default_message()}
    ]);
    (StatusCode::NOT_FOUND, Json(error_body(errors))).into_response()
}

pub async fn method_not_allowed(uri: Uri) -> Response {
    let message = format!("Method not allowed for {}", uri.path());
    ApiError::from(KilnError::new(ErrorKind::MethodNotAllowed, message)).into_response()
}

/// A panic is a bug; the caller still gets an envelope and the server keeps serving.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::from(KilnError::internal(detail)).into_response()
}

/// Largest text/plain body read back from an extractor's rejection.
const REJECTION_BYTES: usize = 4096;

/// axum's extractor rejections (a path segment that is not UTF-8, a query string that does not
/// parse, a missing content type) answer `text/plain`. Every error of Kiln's own routes is an
/// envelope, so these are rewrapped: OpenAI's shape under `/v1` (and `/ai/v1`), Workers AI's
/// elsewhere, keeping the rejection's status and message. Not for relayed upstream answers:
/// the gateway's routes sit outside this layer.
pub async fn rejections_as_envelopes(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let openai = {
        let path = request.uri().path();
        path.starts_with("/v1/") || path.contains("/ai/v1/")
    };
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), REJECTION_BYTES)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::RequestTooLarge,
        StatusCode::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed,
        _ => ErrorKind::BadInput,
    };
    let error = KilnError::new(kind, message);
    let mut wrapped = if openai {
        crate::openai::OpenAiError::from(error).into_response()
    } else {
        ApiError::from(error).into_response()
    };
    *wrapped.status_mut() = status;
    wrapped
}

/// `Path`, refusing a path it cannot decode (a segment that is not UTF-8) with 400 / 5006 in
/// the envelope. For the gateway's routes, which sit outside [`rejections_as_envelopes`]
/// because they relay upstream answers as they are.
pub struct EnvelopePath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for EnvelopePath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| EnvelopePath(value))
            .map_err(|rejection| ApiError::from(KilnError::bad_input(rejection.body_text())))
    }
}
