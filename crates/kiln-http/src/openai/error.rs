//! OpenAI's error body, `{"error":{"message","type","param","code"}}`, for the `/v1` routes.
//!
//! Statuses come from `kiln_core::error::ERROR_TABLE` through the error's kind. The one
//! exception is an unknown model: Workers AI answers 400 / 5007, OpenAI answers 404
//! `model_not_found`, and the SDKs branch on that status (`NotFoundError`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::{ErrorKind, KilnError};
use serde_json::json;

use crate::MODEL_HEADER;

/// A [`KilnError`] on its way to an OpenAI client, with the request field it is about.
#[derive(Debug)]
pub struct OpenAiError {
    pub error: KilnError,
    /// The offending request field (`"messages"`, `"temperature"`), as OpenAI's `param`.
    pub param: Option<String>,
    /// The local model that produced the error, for `x-kiln-model`.
    pub served_by: Option<String>,
}

impl From<KilnError> for OpenAiError {
    fn from(error: KilnError) -> Self {
        Self {
            error,
            param: None,
            served_by: None,
        }
    }
}

impl OpenAiError {
    /// A 400 about one request field; `message` should name the field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            error: KilnError::new(ErrorKind::BadInput, message),
            param: Some(param.to_owned()),
            served_by: None,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        let message = format!(
            "The model `{model}` does not exist or no installed local model serves it; \
             GET /v1/models lists what this server serves"
        );
        Self {
            error: KilnError::new(ErrorKind::NoSuchModel, message),
            param: Some("model".to_owned()),
            served_by: None,
        }
    }

    pub fn served_by(mut self, model: &str) -> Self {
        self.served_by = Some(model.to_owned());
        self
    }

    pub fn status(&self) -> StatusCode {
        let status = match self.error.kind {
            ErrorKind::NoSuchModel => 404,
            kind => kind.status(),
        };
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// OpenAI's `type` and `code` for this kind of error.
    fn type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self.error.kind {
            ErrorKind::NoSuchModel => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::InvalidModelId => ("invalid_request_error", Some("invalid_model")),
            ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
            ErrorKind::Authentication => ("authentication_error", Some("invalid_api_key")),
            ErrorKind::Forbidden => ("permission_error", Some("insufficient_permissions")),
            ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::OutOfCapacity => ("rate_limit_error", Some("capacity_exceeded")),
            ErrorKind::AccountLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::Timeout | ErrorKind::Aborted => ("timeout_error", Some("timeout")),
            ErrorKind::RouteNotFound => ("invalid_request_error", Some("unknown_url")),
            ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
            ErrorKind::Conflict => ("invalid_request_error", Some("conflict")),
            ErrorKind::GatewayUnauthorized => ("authentication_error", Some("unauthorized")),
            ErrorKind::GatewayRateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::UpstreamTimeout => ("timeout_error", Some("upstream_timeout")),
            ErrorKind::EgressRefused => ("permission_error", Some("egress_refused")),
            ErrorKind::GatewayLoop => ("invalid_request_error", Some("gateway_loop")),
            ErrorKind::Internal | ErrorKind::UpstreamFailed => ("server_error", None),
            ErrorKind::Draining => ("server_error", Some("shutting_down")),
            ErrorKind::LimiterUnavailable => ("server_error", Some("rate_limits_unavailable")),
            ErrorKind::StorageUnavailable => ("server_error", Some("storage_unavailable")),
            ErrorKind::NodeUnavailable => ("server_error", Some("node_unavailable")),
            ErrorKind::InvalidProvider
            | ErrorKind::BadInput
            | ErrorKind::InvalidData
            | ErrorKind::IncompleteRequest
            | ErrorKind::LoraUnsupported
            | ErrorKind::InvalidFinetune
            | ErrorKind::MethodNotAllowed => ("invalid_request_error", None),
        }
    }

    /// The `error` object, also sent as an SSE event when a stream fails midway.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.type_and_code();
        // Workers AI's prefixes mean nothing to an OpenAI client.
        let message = self
            .error
            .message
            .trim_start_matches("AiError: ")
            .trim_start_matches("Bad input: ");
        json!({"error": {"message": message, "type": kind, "param": self.param, "code": code}})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.error.code(), "{}", self.error.message);
        }
        let mut response = (status, Json(self.body())).into_response();
        crate::envelope::with_retry_after(&mut response, &self.error);
        if let Some(model) = self.served_by.and_then(|m| HeaderValue::from_str(&m).ok()) {
            response.headers_mut().insert(MODEL_HEADER, model);
        }
        response
    }
}

/// Unknown paths under `/v1` and `…/ai/v1`.
pub async fn route_not_found(uri: axum::http::Uri) -> Response {
    let message = format!("Unknown request URL: {}", uri.path());
    OpenAiError::from(KilnError::new(ErrorKind::RouteNotFound, message)).into_response()
}

pub async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    let message = format!("Method not allowed for {}", uri.path());
    OpenAiError::from(KilnError::new(ErrorKind::MethodNotAllowed, message)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_error_table_except_unknown_models() {
        assert_eq!(OpenAiError::invalid("n", "bad").status(), 400);
        assert_eq!(OpenAiError::model_not_found("x").status(), 404);
        let capacity = OpenAiError::from(KilnError::capacity());
        assert_eq!(capacity.status(), ErrorKind::OutOfCapacity.status());
        assert_eq!(capacity.body()["error"]["type"], "rate_limit_error");
        let too_large = OpenAiError::from(KilnError::new(ErrorKind::RequestTooLarge, "big"));
        assert_eq!(too_large.status(), 413);
    }

    #[test]
    fn body_has_openai_shape_without_workers_prefixes() {
        let error = OpenAiError::from(KilnError::bad_input("prompt is too long"));
        let body = error.body();
        assert_eq!(body["error"]["message"], "prompt is too long");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["param"].is_null());
        assert!(body["error"]["code"].is_null());
        let missing = OpenAiError::model_not_found("gpt-9");
        assert_eq!(missing.body()["error"]["code"], "model_not_found");
        assert_eq!(missing.body()["error"]["param"], "model");
    }
}
