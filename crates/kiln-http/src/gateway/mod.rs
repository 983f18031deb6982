//! AI Gateway (spec §4): requests to `/v1/{account}/{gateway}/…` and the universal endpoint,
//! plus the management API (`admin`, `logs`).
//!
//! A request's way: [`proxy::handle`] or [`universal::handle`] resolves the gateway, its
//! `cf-aig-*` options and authentication; [`route::resolve`] names the provider; an
//! [`exchange::Exchange`] then tries the cache, the rate limit, the provider
//! ([`upstream::send`], with retries), and relays the answer while logging it.

pub mod admin;
pub mod billing;
mod binding;
mod binding_api;
pub mod datasets;
pub mod dynamic_routes;
mod exchange;
pub mod header_route;
pub mod logs;
mod proxy;
mod route;
pub mod stored_keys;
mod universal;
mod upstream;
mod usage;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use axum::{Json, Router};
use kiln_core::time::unix_millis;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use kiln_gateway::RequestOptions;
use serde_json::json;

use crate::offload::off_runtime;
use crate::SharedState;
use exchange::Exchange;

pub const LOG_ID: &str = "cf-aig-log-id";
pub const EVENT_ID: &str = "cf-aig-event-id";
pub const STEP: &str = "cf-aig-step";

/// What gateway handlers share.
pub struct GatewayContext {
    pub app: SharedState,
    /// Kiln's own routes, which serve the `workers-ai` provider in-process.
    pub inner: Router,
    /// For custom providers: addresses checked by the egress policy, no redirects.
    pub http: reqwest::Client,
}

/// `/v1/{account}/{gateway}` (universal) and `/v1/{account}/{gateway}/{provider}/…`.
pub fn routes(app: SharedState, inner: Router) -> Router {
    let binding_access = axum::middleware::from_fn_with_state(
        app.clone(),
        crate::platform::authorize::binding_access,
    );
    let context = GatewayContext {
        http: app.config.egress.client(),
        app,
        inner,
    };
    let gateway = Router::new()
        .route("/v1/{account_id}/{gateway_id}", post(universal::handle))
        // `…/{gateway}/`: the universal URL as the binding's `getUrl()` writes it.
        .route("/v1/{account_id}/{gateway_id}/", post(universal::handle))
        .route("/v1/{account_id}/{gateway_id}/{*path}", any(proxy::handle));
    // The Worker AI binding (spec §2.3, §11); see docs/worker-binding.md.
    let binding = Router::new()
        .route(
            "/run",
            post(binding::run).get(crate::media::binding_upgrade),
        )
        .route("/ai-gateway/run", post(binding::gateway_run))
        .route("/ai-api/models/search", get(binding_api::models))
        .route(
            "/ai-gateway/gateways/{gateway}/url/{provider}",
            get(binding_api::gateway_url),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/logs/{id}",
            get(binding_api::get_log).patch(binding_api::patch_log),
        )
        .route(
            "/ai-gateway/universal/run/{gateway}",
            post(binding_api::universal),
        )
        .route_layer(binding_access);
    gateway.merge(binding).with_state(Arc::new(context))
}

/// Gateway errors: Cloudflare's gateway answers with an `error` array (spec §4.14); `errors`
/// is there too, so clients written for the Workers AI envelope read it as well.
pub fn gateway_error(error: &KilnError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let detail = json!([{"code": error.code(), "message": error.message}]);
    let body = json!({
        "success": false,
        "result": [],
        "messages": [],
        "error": detail,
        "errors": detail,
    });
    (status, Json(body)).into_response()
}

/// Everything checked before the provider is known: the gateway exists, the `cf-aig-*`
/// headers parse, and an authenticated gateway got its token.
async fn open_exchange(
    context: &Arc<GatewayContext>,
    account: &str,
    gateway_id: &str,
    headers: &HeaderMap,
    request_type: &'static str,
) -> KilnResult<(Exchange, RequestOptions)> {
    let started = Instant::now();
    context.app.config.egress.check_incoming_hops(
        headers
            .get(crate::egress::HOPS_HEADER)
            .and_then(|v| v.to_str().ok()),
    )?;
    // From memory after the gateway's first request; that first one reads SQLite.
    let gateway = match context.app.gateways.resolved(account, gateway_id) {
        Some(gateway) => gateway,
        None => {
            let (gateways, account, id) = (
                context.app.gateways.clone(),
                account.to_owned(),
                gateway_id.to_owned(),
            );
            off_runtime("reading a gateway", move || gateways.resolve(&account, &id)).await?
        }
    };
    let options = RequestOptions::from_headers(header_pairs(headers))?;
    // The Worker binding's requests come from the account's own runtime: pre-authenticated
    // (spec §4.2).
    let authenticated = request_type == "binding"
        || match &options.authorization {
            Some(token) => context.app.platform.may_run_gateway(account, token),
            None => false,
        };
    if gateway.config.authentication && !authenticated {
        return Err(KilnError::new(
            ErrorKind::GatewayUnauthorized,
            "Unauthorized: this gateway needs cf-aig-authorization: Bearer <token>",
        ));
    }
    billing::enforce_spending_limit(&context.app, account).await?;
    let text_header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let exchange = Exchange {
        context: context.clone(),
        account: account.to_owned(),
        gateway,
        log_id: ulid::Ulid::new().to_string(),
        started,
        created_at_ms: unix_millis(),
        request_type,
        request_content_type: text_header(header::CONTENT_TYPE),
        user_agent: text_header(header::USER_AGENT),
        authenticated,
    };
    Ok((exchange, options))
}

fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("cf-"))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
}

/// The ids every gateway answer carries, failed ones included.
fn with_ids(
    mut response: Response<Body>,
    log_id: Option<&str>,
    event_id: Option<&str>,
) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in [(LOG_ID, log_id), (EVENT_ID, event_id)] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, value);
        }
    }
    response
}
