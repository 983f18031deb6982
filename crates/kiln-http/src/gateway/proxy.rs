//! `/v1/{account}/{gateway}/{provider}/…`: one request to one provider.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use kiln_core::KilnResult;

use super::{gateway_error, open_exchange, route, upstream, with_ids, GatewayContext};
use crate::envelope::EnvelopePath;

pub async fn handle(
    State(context): State<Arc<GatewayContext>>,
    EnvelopePath((account, gateway, path)): EnvelopePath<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let request = GatewayRequest {
        account: &account,
        gateway: &gateway,
        path: &path,
        method,
        uri: &uri,
        headers: &headers,
        request_type: None,
    };
    answer(&context, request, body).await
}

/// A request to one provider through one gateway.
pub struct GatewayRequest<'a> {
    pub account: &'a str,
    pub gateway: &'a str,
    /// After the gateway: `{provider}/…`.
    pub path: &'a str,
    pub method: Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// Overrides the type the path implies (the Worker binding's requests are `binding`).
    pub request_type: Option<&'static str>,
}

/// Serves `request`, answering with its log and event ids.
pub async fn answer(
    context: &Arc<GatewayContext>,
    request: GatewayRequest<'_>,
    body: Body,
) -> Response<Body> {
    let event_id = request
        .headers
        .get(super::EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match serve(context, request, body).await {
        Ok((response, log_id)) => with_ids(response, Some(&log_id), event_id.as_deref()),
        Err(error) => with_ids(gateway_error(&error), None, event_id.as_deref()),
    }
}

async fn serve(
    context: &Arc<GatewayContext>,
    request: GatewayRequest<'_>,
    body: Body,
) -> KilnResult<(Response<Body>, String)> {
    let GatewayRequest {
        account,
        gateway,
        path,
        method,
        uri,
        headers,
        request_type,
    } = request;
    let request_type = request_type.unwrap_or(match path.split('/').next() {
        Some("workers-ai") => "workers-ai",
        Some("compat") => "compat",
        _ => "provider",
    });
    let (exchange, options) =
        open_exchange(context, account, gateway, headers, request_type).await?;
    let log_id = exchange.log_id.clone();
    let limit = context.app.config.max_body_bytes;
    let body = crate::body::read_limited(headers, body, limit).await?;
    let mut call = route::resolve_off_runtime(
        &context.app,
        account,
        path,
        uri.query(),
        method,
        headers,
        body,
    )
    .await?;
    call.on_behalf_of = exchange.trusted_call();
    if call.provider == super::dynamic_routes::PROVIDER {
        let response = super::dynamic_routes::serve(context, &exchange, options, call, headers);
        return Ok((response.await, log_id));
    }
    let cache = exchange.cache_plan(&call, &options).await;
    if let Some(plan) = cache {
        if let Some(hit) = exchange.replay_cached(&call, &options, plan, None).await {
            return Ok((hit, log_id));
        }
    }
    if let Err(refused) = exchange.admit(&call, &options).await {
        return Ok((refused, log_id));
    }
    let plan = options.retries(&exchange.gateway.config);
    let sent = match super::stored_keys::attach(&exchange, &mut call, headers).await {
        Ok(()) => upstream::send(context, &call, plan, options.request_timeout).await,
        Err(error) => Err(error),
    };
    let response = match sent {
        Ok(upstream) => exchange.relay(call, options, upstream, cache, None).await,
        Err(error) => exchange.fail(&call, &options, error, None).await,
    };
    Ok((response, log_id))
}
