//! `/v1/{account}/{gateway}/{provider}/…`: one request to one provider.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Response, Uri};
use kiln_core::KilnResult;

use super::{gateway_error, open_exchange, route, upstream, with_ids, GatewayContext};

pub async fn handle(
    State(context): State<Arc<GatewayContext>>,
    Path((account, gateway, path)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let event_id = headers
        .get(super::EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match serve(
        &context, &account, &gateway, &path, method, &uri, &headers, body,
    )
    .await
    {
        Ok((response, log_id)) => with_ids(response, Some(&log_id), event_id.as_deref()),
        Err(error) => with_ids(gateway_error(&error), None, event_id.as_deref()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    context: &Arc<GatewayContext>,
    account: &str,
    gateway: &str,
    path: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> KilnResult<(Response<Body>, String)> {
    let request_type = match path.split('/').next() {
        Some("workers-ai") => "workers-ai",
        Some("compat") => "compat",
        _ => "provider",
    };
    let (exchange, options) =
        open_exchange(context, account, gateway, headers, request_type).await?;
    let log_id = exchange.log_id.clone();
    let limit = context.app.config.max_body_bytes;
    let body = crate::body::read_limited(headers, body, limit).await?;
    let call = route::resolve(
        &context.app,
        account,
        path,
        uri.query(),
        method,
        headers,
        body,
    )?;
    let cache = exchange.cache_plan(&call, &options);
    if let Some(plan) = cache {
        if let Some(hit) = exchange.replay_cached(&call, &options, plan, None).await {
            return Ok((hit, log_id));
        }
    }
    if let Err(refused) = exchange.admit(&call, &options).await {
        return Ok((refused, log_id));
    }
    let plan = options.retries(&exchange.gateway.config);
    let response = match upstream::send(context, &call, plan, options.request_timeout).await {
        Ok(upstream) => exchange.relay(call, options, upstream, cache, None).await,
        Err(error) => exchange.fail(&call, &options, error, None).await,
    };
    Ok((response, log_id))
}
