//! HTTP transport: the Workers AI REST surface. Parses and validates requests, hands them to the
//! scheduler, and writes envelopes and SSE. Knows nothing about engines.

mod auth;
mod batch;
mod body;
mod browser;
mod catalog_routes;
mod classification;
pub mod egress;
mod embeddings;
mod envelope;
mod finetunes;
mod gateway;
mod json_mode;
mod kiln_routes;
mod media;
mod metrics;
mod offload;
mod openai;
mod paging;
pub mod platform;
mod request_metrics;
mod run;
mod text_generation;
mod tools;
mod vectorize;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use gateway::{admin, datasets, logs};
use kiln_catalog::Catalog;
use kiln_finetune::FinetuneStore;
use kiln_gateway::GatewayStore;
use kiln_scheduler::ModelRegistry;
use kiln_vectorize::VectorStore;

pub use browser::BrowserPolicy;
pub use egress::EgressPolicy;
pub use envelope::{ApiError, MODEL_HEADER};
pub use metrics::install_recorder as install_metrics_recorder;
pub use request_metrics::TOTAL_MS_HEADER;

/// Transport limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Larger bodies get 413 / 3006 before they are parsed.
    pub max_body_bytes: usize,
    /// Wall-clock limit for a whole request, queueing included: 408 / 3007.
    pub request_timeout: Duration,
    /// Bounds on inputs that drive work or memory (`[limits.*]` in kiln.toml).
    pub limits: Arc<kiln_core::InputLimits>,
    /// Which addresses provider calls may reach.
    pub egress: Arc<egress::EgressPolicy>,
    /// Which `Host`s and `Origin`s browsers may send.
    pub browser: Arc<browser::BrowserPolicy>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(300),
            limits: Arc::default(),
            egress: Arc::default(),
            browser: Arc::default(),
        }
    }
}

/// Everything a handler needs; shared by all requests.
pub struct AppState {
    pub registry: Arc<ModelRegistry>,
    pub catalog: &'static Catalog,
    pub config: HttpConfig,
    /// Every account's LoRA fine-tunes.
    pub finetunes: Arc<FinetuneStore>,
    /// Every account's AI Gateway objects.
    pub gateways: Arc<GatewayStore>,
    /// Every account's Vectorize indexes.
    pub vectors: Arc<VectorStore>,
    /// The account that Worker binding requests (`/run`, `/ai-gateway/run`) belong to.
    pub binding_account: String,
    /// Where clients reach Kiln, for the URLs it hands out.
    pub public_url: PublicUrl,
    /// Accounts, tokens, rate limits and neurons.
    pub platform: Arc<platform::Platform>,
    /// Queued `?queueRequest=true` batches.
    pub batches: Arc<kiln_batch::BatchQueue>,
}

pub type SharedState = Arc<AppState>;

/// The base of URLs Kiln hands out (the gateway binding's `getUrl`).
#[derive(Debug, Clone)]
pub enum PublicUrl {
    /// `--public-url`: used as given, whatever the request's headers say.
    Configured(String),
    /// The listening address, used when the request names no usable host.
    Listening(String),
}

impl PublicUrl {
    pub fn base(&self) -> &str {
        match self {
            PublicUrl::Configured(base) | PublicUrl::Listening(base) => base,
        }
    }
}

/// The Workers AI REST routes, under both `/client/v4/accounts/…` (what SDKs call with
/// `https://api.cloudflare.com/client/v4` as base) and `/accounts/…`, and the OpenAI-compatible
/// routes under `/v1` and `…/accounts/{account_id}/ai/v1`.
pub fn router(state: AppState) -> Router {
    metrics::install_recorder();
    let accounts = Router::new()
        .route(
            "/ai/run/{*model}",
            post(run::run_model).get(media::rest_upgrade),
        )
        .route("/ai/usage", get(platform::usage_routes::usage))
        .route("/ai/models/search", get(catalog_routes::search_models))
        .route("/ai/models/schema", get(catalog_routes::model_schema))
        .route("/ai/tasks/search", get(catalog_routes::search_tasks))
        .route("/ai/authors/search", get(catalog_routes::search_authors))
        .route(
            "/ai/finetunes",
            get(finetunes::list).post(finetunes::create),
        )
        .route("/ai/finetunes/public", get(finetunes::list_public))
        .route(
            "/ai/finetunes/{finetune}/finetune-assets",
            // Assets may be up to 300 MB; the multipart reader enforces that limit.
            post(finetunes::upload_asset).layer(DefaultBodyLimit::max(
                kiln_finetune::MAX_ASSET_BYTES as usize + 1024 * 1024,
            )),
        )
        .route("/ai-gateway/gateways", get(admin::list).post(admin::create))
        .route(
            "/ai-gateway/gateways/{gateway}",
            get(admin::get).put(admin::update).delete(admin::delete),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/logs",
            get(logs::list).delete(logs::delete),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/logs/{id}",
            get(logs::get).patch(logs::patch),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/logs/{id}/{part}",
            get(logs::stored_body_of),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/analytics",
            get(logs::analytics),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/url/{provider}",
            get(admin::url),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/datasets",
            get(datasets::list).post(datasets::create),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/datasets/{id}",
            get(datasets::get)
                .put(datasets::update)
                .delete(datasets::delete),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/evaluations",
            get(datasets::list_evaluations).post(datasets::create_evaluation),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/evaluations/{id}",
            get(datasets::get_evaluation).delete(datasets::delete_evaluation),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/routes",
            get(gateway::dynamic_routes::list).post(gateway::dynamic_routes::create),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/routes/{id}",
            get(gateway::dynamic_routes::get)
                .patch(gateway::dynamic_routes::update)
                .delete(gateway::dynamic_routes::delete),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/routes/{id}/versions",
            get(gateway::dynamic_routes::list_versions)
                .post(gateway::dynamic_routes::create_version),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/routes/{id}/versions/{version}",
            get(gateway::dynamic_routes::get_version),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/routes/{id}/deployments",
            get(gateway::dynamic_routes::list_deployments)
                .post(gateway::dynamic_routes::create_deployment),
        )
        .route("/ai-gateway/evaluation-types", get(datasets::list_types))
        .route(
            "/ai-gateway/billing/credit-balance",
            get(gateway::billing::credit_balance),
        )
        .route(
            "/ai-gateway/billing/invoice-history",
            get(gateway::billing::invoice_history),
        )
        .route(
            "/ai-gateway/billing/invoice-preview",
            get(gateway::billing::invoice_preview),
        )
        .route(
            "/ai-gateway/billing/usage-history",
            get(gateway::billing::usage_history),
        )
        .route("/ai-gateway/billing/topup", post(gateway::billing::topup))
        .route(
            "/ai-gateway/billing/topup/status",
            post(gateway::billing::topup_status),
        )
        .route(
            "/ai-gateway/billing/topup/config",
            get(gateway::billing::topup_config)
                .post(gateway::billing::create_topup_config)
                .delete(gateway::billing::delete_topup_config),
        )
        .route(
            "/ai-gateway/billing/spending-limit",
            get(gateway::billing::spending_limit)
                .post(gateway::billing::set_spending_limit)
                .delete(gateway::billing::delete_spending_limit),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/provider_configs",
            get(gateway::stored_keys::list).post(gateway::stored_keys::create),
        )
        .route(
            "/ai-gateway/gateways/{gateway}/provider_configs/{id}",
            axum::routing::delete(gateway::stored_keys::delete),
        )
        .route(
            "/ai-gateway/custom-providers",
            get(admin::list_providers).post(admin::create_provider),
        )
        .route(
            "/ai-gateway/custom-providers/{id}",
            get(admin::get_provider)
                .put(admin::update_provider)
                .patch(admin::update_provider)
                .delete(admin::delete_provider),
        )
        .nest("/ai/v1", openai::routes())
        .merge(vectorize::account_routes());
    let state = Arc::new(state);
    let require_token =
        axum::middleware::from_fn_with_state(state.clone(), platform::authorize::require_token);
    let api = Router::new()
        .nest("/accounts/{account_id}", accounts)
        .route_layer(require_token.clone());
    let inner = Router::new()
        .nest("/client/v4", api.clone())
        .merge(api)
        .nest("/v1", openai::routes().route_layer(require_token.clone()))
        // llama-server and text-embeddings-inference also answer reranking at the root.
        .merge(
            Router::new()
                .route("/rerank", post(openai::rerank::rerank))
                .route_layer(require_token),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics::render))
        .route("/kiln/models", get(kiln_routes::models))
        .merge(vectorize::binding_routes(state.clone()))
        .fallback(envelope::route_not_found)
        .method_not_allowed_fallback(envelope::method_not_allowed)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn(envelope::rejections_as_envelopes));
    // The gateway and the batch queue reach the Workers AI routes in-process through `inner`.
    batch::spawn_runner(state.clone(), inner.clone());
    let browser = state.config.browser.clone();
    let binding_account: Arc<str> = Arc::from(state.binding_account.as_str());
    let app = inner
        .clone()
        .merge(gateway::routes(state, inner))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            envelope::panic_response,
        ))
        .layer(axum::middleware::from_fn_with_state(
            browser,
            browser::guard,
        ))
        .layer(axum::middleware::from_fn(request_metrics::record))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    // `cf-aig-gateway-id` and `x-kiln-vectorize-index` change the URI, so they wrap the router
    // instead of running after it.
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(
                gateway::header_route::route_by_header,
            ))
            .layer(axum::middleware::from_fn_with_state(
                binding_account,
                vectorize::route_by_header,
            ))
            .service(app),
    )
}
