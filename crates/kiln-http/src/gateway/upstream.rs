//! Sending a provider call: in-process to Kiln's own router, or over HTTP to a custom provider,
//! with the gateway's retries and first-byte timeout (spec §4.10).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use kiln_core::{ErrorKind, KilnError, KilnResult};
use kiln_gateway::RetryPlan;
use tower::ServiceExt;

use super::route::{ProviderCall, Target};
use super::GatewayContext;

/// Sends `call`, retrying transport failures, timeouts, 429s and 5xx answers per `plan`. The
/// last attempt's answer is returned whatever its status.
pub async fn send(
    context: &GatewayContext,
    call: &ProviderCall,
    plan: RetryPlan,
    first_byte_timeout: Option<Duration>,
) -> KilnResult<Response<Body>> {
    let mut last_error = None;
    for attempt in 1..=plan.attempts {
        if attempt > 1 {
            tokio::time::sleep(plan.delay_before(attempt - 1)).await;
        }
        let sent = send_once(context, call);
        let outcome = match first_byte_timeout {
            Some(limit) => tokio::time::timeout(limit, sent).await.unwrap_or_else(|_| {
                Err(KilnError::new(
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "{} sent no response within {} ms (cf-aig-request-timeout)",
                        call.provider,
                        limit.as_millis()
                    ),
                ))
            }),
            None => sent.await,
        };
        match outcome {
            Ok(response) if attempt == plan.attempts || !retryable(response.status()) => {
                return Ok(response)
            }
            Ok(response) => {
                last_error = Some(KilnError::new(
                    ErrorKind::UpstreamFailed,
                    format!("{} answered {}", call.provider, response.status()),
                ));
            }
            // The policy will refuse the next attempt too.
            Err(error) if error.kind == ErrorKind::EgressRefused => return Err(error),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| KilnError::internal("no attempt was made")))
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

async fn send_once(context: &GatewayContext, call: &ProviderCall) -> KilnResult<Response<Body>> {
    match &call.target {
        Target::Local(path) => {
            let mut request = Request::builder()
                .method(call.method.clone())
                .uri(path)
                .body(Body::from(call.body.clone()))
                .map_err(|e| KilnError::bad_input(format!("invalid provider path: {e}")))?;
            *request.headers_mut() = call.headers.clone();
            if let Some(trusted) = &call.on_behalf_of {
                request.extensions_mut().insert(trusted.clone());
            }
            let response = context.inner.clone().oneshot(request).await;
            Ok(response.unwrap_or_else(|never| match never {}))
        }
        Target::Remote(url) => {
            let egress = &context.app.config.egress;
            let url = egress.check_url(url)?;
            let mut headers = call.headers.clone();
            let hops = egress.next_hops(
                headers
                    .get(crate::egress::HOPS_HEADER)
                    .and_then(|v| v.to_str().ok()),
            )?;
            if let Ok(hops) = HeaderValue::from_str(&hops) {
                headers.insert(crate::egress::HOPS_HEADER, hops);
            }
            drop_kiln_credentials(context, &mut headers);
            let response = context
                .http
                .request(call.method.clone(), url)
                .headers(headers)
                .body(call.body.clone())
                .send()
                .await
                .map_err(|error| match crate::egress::refusal_in(&error) {
                    Some(refused) => KilnError::from(refused),
                    None => KilnError::new(
                        ErrorKind::UpstreamFailed,
                        format!("{} could not be reached: {error}", call.provider),
                    ),
                })?;
            let mut builder = Response::builder().status(response.status());
            if let Some(headers) = builder.headers_mut() {
                *headers = response.headers().clone();
                headers.remove(axum::http::header::CONTENT_LENGTH);
                headers.remove(axum::http::header::TRANSFER_ENCODING);
                drop_kiln_headers(headers);
            }
            builder
                .body(Body::from_stream(response.bytes_stream()))
                .map_err(|e| KilnError::internal(format!("provider response: {e}")))
        }
    }
}

/// A caller's Kiln token authenticates them to Kiln only: it never leaves for a provider (a
/// provider key in `authorization` that is not one of this server's tokens passes).
fn drop_kiln_credentials(context: &GatewayContext, headers: &mut HeaderMap) {
    for name in ["authorization", "x-auth-key"] {
        let is_kiln = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|value| is_kiln_token(context, value));
        if is_kiln {
            headers.remove(name);
        }
    }
}

/// Whether a credential header's value (`Bearer <secret>` or the bare secret) is one of this
/// server's API tokens.
pub(super) fn is_kiln_token(context: &GatewayContext, value: &str) -> bool {
    let value = value.trim();
    let secret = value
        .split_once(' ')
        .map_or(value, |(_, secret)| secret)
        .trim();
    context.app.platform.accounts.authenticate(secret).is_some()
}

/// `x-kiln-*` answer headers are Kiln's own (metrics label requests by `x-kiln-model`): a
/// provider cannot set them, so no upstream can grow Kiln's metric label sets.
fn drop_kiln_headers(headers: &mut HeaderMap) {
    let kiln_headers: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-kiln-"))
        .cloned()
        .collect();
    for name in kiln_headers {
        headers.remove(name);
    }
}
