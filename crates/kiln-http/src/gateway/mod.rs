//! AI Gateway (spec §4): requests to `/v1/{account}/{gateway}/…` and the universal endpoint,
//! plus the management API (`admin`, `logs`).
//!
//! A request's way: [`proxy::handle`] or [`universal::handle`] resolves the gateway, its
//! `cf-aig-*` options and authentication; [`route::resolve`] names the provider; an
//! [`exchange::Exchange`] then tries the cache, the rate limit, the provider
//! ([`upstream::send`], with retries), and relays the answer while logging it.

pub mod admin;
mod admin_doc;
mod api_doc;
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
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Json, Router};
use kiln_core::time::unix_millis;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use kiln_gateway::RequestOptions;
use serde_json::json;

use crate::offload::off_runtime;
use crate::openapi::ApiRouter;
use crate::SharedState;
use admin_doc as doc;
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
pub fn routes(app: SharedState, inner: Router) -> ApiRouter {
    let binding_access = axum::middleware::from_fn_with_state(
        app.clone(),
        crate::platform::authorize::binding_access,
    );
    let context = GatewayContext {
        http: app.config.egress.client(),
        app,
        inner,
    };
    // The proxy relays whatever method the client used; these are the ones providers take.
    let relayed = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let gateway = ApiRouter::new()
        .post(
            "/v1/{account_id}/{gateway_id}",
            universal::handle,
            api_doc::universal(),
        )
        // `…/{gateway}/`: the universal URL as the binding's `getUrl()` writes it.
        .post(
            "/v1/{account_id}/{gateway_id}/",
            universal::handle,
            api_doc::universal_slash(),
        )
        .route(
            "/v1/{account_id}/{gateway_id}/{*path}",
            &relayed,
            any(proxy::handle),
            api_doc::proxy(),
        );
    // The Worker AI binding (spec §2.3, §11); see docs/worker-binding.md.
    let binding = ApiRouter::new()
        .post("/run", binding::run, api_doc::binding_run())
        .get(
            "/run",
            crate::media::binding_upgrade,
            api_doc::binding_live(),
        )
        .post(
            "/ai-gateway/run",
            binding::gateway_run,
            api_doc::binding_gateway_run(),
        )
        .get(
            "/ai-api/models/search",
            binding_api::models,
            api_doc::binding_models(),
        )
        .get(
            "/ai-gateway/gateways/{gateway}/url/{provider}",
            binding_api::gateway_url,
            api_doc::binding_gateway_url(),
        )
        .get(
            "/ai-gateway/gateways/{gateway}/logs/{id}",
            binding_api::get_log,
            api_doc::binding_get_log(),
        )
        .patch(
            "/ai-gateway/gateways/{gateway}/logs/{id}",
            binding_api::patch_log,
            api_doc::binding_patch_log(),
        )
        .post(
            "/ai-gateway/universal/run/{gateway}",
            binding_api::universal,
            api_doc::binding_universal(),
        )
        .route_layer(binding_access);
    gateway.merge(binding).with_state(Arc::new(context))
}

/// The management routes, relative to `/accounts/{account_id}`.
pub fn account_routes() -> ApiRouter<SharedState> {
    let gateway = "/ai-gateway/gateways/{gateway}";
    let route = "/ai-gateway/gateways/{gateway}/routes/{id}";
    let billing = "/ai-gateway/billing";
    ApiRouter::new()
        .get("/ai-gateway/gateways", admin::list, doc::list_gateways())
        .post("/ai-gateway/gateways", admin::create, doc::create_gateway())
        .get(gateway, admin::get, doc::get_gateway())
        .put(gateway, admin::update, doc::update_gateway())
        .delete(gateway, admin::delete, doc::delete_gateway())
        .get(&format!("{gateway}/logs"), logs::list, doc::list_logs())
        .delete(&format!("{gateway}/logs"), logs::delete, doc::delete_logs())
        .get(&format!("{gateway}/logs/{{id}}"), logs::get, doc::get_log())
        .patch(
            &format!("{gateway}/logs/{{id}}"),
            logs::patch,
            doc::patch_log(),
        )
        .get(
            &format!("{gateway}/logs/{{id}}/{{part}}"),
            logs::stored_body_of,
            doc::log_body(),
        )
        .get(
            &format!("{gateway}/analytics"),
            logs::analytics,
            doc::analytics(),
        )
        .get(
            &format!("{gateway}/url/{{provider}}"),
            admin::url,
            doc::provider_url(),
        )
        .get(
            &format!("{gateway}/datasets"),
            datasets::list,
            doc::list_datasets(),
        )
        .post(
            &format!("{gateway}/datasets"),
            datasets::create,
            doc::create_dataset(),
        )
        .get(
            &format!("{gateway}/datasets/{{id}}"),
            datasets::get,
            doc::get_dataset(),
        )
        .put(
            &format!("{gateway}/datasets/{{id}}"),
            datasets::update,
            doc::update_dataset(),
        )
        .delete(
            &format!("{gateway}/datasets/{{id}}"),
            datasets::delete,
            doc::delete_dataset(),
        )
        .get(
            &format!("{gateway}/evaluations"),
            datasets::list_evaluations,
            doc::list_evaluations(),
        )
        .post(
            &format!("{gateway}/evaluations"),
            datasets::create_evaluation,
            doc::create_evaluation(),
        )
        .get(
            &format!("{gateway}/evaluations/{{id}}"),
            datasets::get_evaluation,
            doc::get_evaluation(),
        )
        .delete(
            &format!("{gateway}/evaluations/{{id}}"),
            datasets::delete_evaluation,
            doc::delete_evaluation(),
        )
        .get(
            &format!("{gateway}/routes"),
            dynamic_routes::list,
            doc::list_routes(),
        )
        .post(
            &format!("{gateway}/routes"),
            dynamic_routes::create,
            doc::create_route(),
        )
        .get(route, dynamic_routes::get, doc::get_route())
        .patch(route, dynamic_routes::update, doc::update_route())
        .delete(route, dynamic_routes::delete, doc::delete_route())
        .get(
            &format!("{route}/versions"),
            dynamic_routes::list_versions,
            doc::list_versions(),
        )
        .post(
            &format!("{route}/versions"),
            dynamic_routes::create_version,
            doc::create_version(),
        )
        .get(
            &format!("{route}/versions/{{version}}"),
            dynamic_routes::get_version,
            doc::get_version(),
        )
        .get(
            &format!("{route}/deployments"),
            dynamic_routes::list_deployments,
            doc::list_deployments(),
        )
        .post(
            &format!("{route}/deployments"),
            dynamic_routes::create_deployment,
            doc::create_deployment(),
        )
        .get(
            "/ai-gateway/evaluation-types",
            datasets::list_types,
            doc::evaluation_types(),
        )
        .get(
            &format!("{billing}/credit-balance"),
            billing::credit_balance,
            doc::billing("Credit balance"),
        )
        .get(
            &format!("{billing}/invoice-history"),
            billing::invoice_history,
            doc::billing("Invoice history"),
        )
        .get(
            &format!("{billing}/invoice-preview"),
            billing::invoice_preview,
            doc::billing("Invoice preview"),
        )
        .get(
            &format!("{billing}/usage-history"),
            billing::usage_history,
            doc::billing("Usage history"),
        )
        .post(
            &format!("{billing}/topup"),
            billing::topup,
            doc::billing_with("Top up credits", "`{amount}`."),
        )
        .post(
            &format!("{billing}/topup/status"),
            billing::topup_status,
            doc::billing_with("A top-up's status", "`{id}`."),
        )
        .get(
            &format!("{billing}/topup/config"),
            billing::topup_config,
            doc::billing("Automatic top-up settings"),
        )
        .post(
            &format!("{billing}/topup/config"),
            billing::create_topup_config,
            doc::billing_with("Set automatic top-up", "`{amount, threshold}`."),
        )
        .delete(
            &format!("{billing}/topup/config"),
            billing::delete_topup_config,
            doc::billing("Remove automatic top-up"),
        )
        .get(
            &format!("{billing}/spending-limit"),
            billing::spending_limit,
            doc::billing("Spending limit"),
        )
        .post(
            &format!("{billing}/spending-limit"),
            billing::set_spending_limit,
            doc::billing_with("Set the spending limit", "`{amount, period?}`."),
        )
        .delete(
            &format!("{billing}/spending-limit"),
            billing::delete_spending_limit,
            doc::billing("Remove the spending limit"),
        )
        .get(
            &format!("{gateway}/provider_configs"),
            stored_keys::list,
            doc::list_stored_keys(),
        )
        .post(
            &format!("{gateway}/provider_configs"),
            stored_keys::create,
            doc::create_stored_key(),
        )
        .delete(
            &format!("{gateway}/provider_configs/{{id}}"),
            stored_keys::delete,
            doc::delete_stored_key(),
        )
        .get(
            "/ai-gateway/custom-providers",
            admin::list_providers,
            doc::list_providers(),
        )
        .post(
            "/ai-gateway/custom-providers",
            admin::create_provider,
            doc::create_provider(),
        )
        .get(
            "/ai-gateway/custom-providers/{id}",
            admin::get_provider,
            doc::get_provider(),
        )
        .put(
            "/ai-gateway/custom-providers/{id}",
            admin::update_provider,
            doc::update_provider(),
        )
        .patch(
            "/ai-gateway/custom-providers/{id}",
            admin::update_provider,
            doc::update_provider(),
        )
        .delete(
            "/ai-gateway/custom-providers/{id}",
            admin::delete_provider,
            doc::delete_provider(),
        )
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
