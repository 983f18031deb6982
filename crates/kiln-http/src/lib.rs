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
pub mod forward;
mod gateway;
mod json_mode;
mod kiln_pull;
mod kiln_routes;
mod media;
mod metrics;
mod offload;
mod openai;
pub mod openapi;
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
use axum::http::Method;
use axum::routing::post;
use axum::Router;
use kiln_catalog::Catalog;
use kiln_finetune::FinetuneStore;
use kiln_gateway::GatewayStore;
use kiln_scheduler::ModelRegistry;
use kiln_vectorize::VectorStore;

pub use browser::BrowserPolicy;
pub use egress::EgressPolicy;
pub use envelope::{ApiError, MODEL_HEADER};
pub use kiln_routes::{InstallableModel, ModelInstaller};
pub use metrics::install_recorder as install_metrics_recorder;
use openapi::ApiRouter;
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
    /// Installs models from the model store (`POST /kiln/models/pull`); `None` where the
    /// server has no store to write to.
    pub installer: Option<Arc<dyn ModelInstaller>>,
    /// Set when a SIGTERM starts the drain: `GET /readyz` answers 503 from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Sends requests for models served only by other nodes to them (`--postgres-url`
    /// clusters); `None` on a single node.
    pub forwarder: Option<Arc<dyn forward::PeerForwarder>>,
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
/// routes under `/v1` and `…/accounts/{account_id}/ai/v1`. Every route goes through
/// [`openapi::ApiRouter`] with its description: `GET /openapi.json` is built from that record.
pub fn router(state: AppState) -> Router {
    use openapi::{kiln_doc, workers_ai as doc};
    metrics::install_recorder();
    let accounts = ApiRouter::new()
        .post("/ai/run/{*model}", run::run_model, doc::run())
        .get("/ai/run/{*model}", media::rest_upgrade, doc::run_live())
        .get("/ai/usage", platform::usage_routes::usage, doc::usage())
        .get("/tokens", platform::token_routes::list, doc::list_tokens())
        .post(
            "/tokens",
            platform::token_routes::create,
            doc::create_token(),
        )
        .delete(
            "/tokens/{token_id}",
            platform::token_routes::revoke,
            doc::revoke_token(),
        )
        .get(
            "/ai/models/search",
            catalog_routes::search_models,
            doc::search_models(),
        )
        .get(
            "/ai/models/schema",
            catalog_routes::model_schema,
            doc::model_schema(),
        )
        .get(
            "/ai/tasks/search",
            catalog_routes::search_tasks,
            doc::search_tasks(),
        )
        .get(
            "/ai/authors/search",
            catalog_routes::search_authors,
            doc::search_authors(),
        )
        .get("/ai/finetunes", finetunes::list, doc::list_finetunes())
        .post("/ai/finetunes", finetunes::create, doc::create_finetune())
        .get(
            "/ai/finetunes/public",
            finetunes::list_public,
            doc::list_public_finetunes(),
        )
        .route(
            "/ai/finetunes/{finetune}/finetune-assets",
            &[Method::POST],
            // Assets may be up to 300 MB; the multipart reader enforces that limit.
            post(finetunes::upload_asset).layer(DefaultBodyLimit::max(
                kiln_finetune::MAX_ASSET_BYTES as usize + 1024 * 1024,
            )),
            doc::upload_finetune_asset(),
        )
        .merge(gateway::account_routes())
        .nest("/ai/v1", openai::routes())
        .merge(vectorize::account_routes());
    let state = Arc::new(state);
    let require_token =
        axum::middleware::from_fn_with_state(state.clone(), platform::authorize::require_token);
    let api = ApiRouter::new()
        .nest("/accounts/{account_id}", accounts)
        .route_layer(require_token.clone());
    let document = openapi::ServedDocument::new();
    let served = document.clone();
    let inner = ApiRouter::new()
        .nest("/client/v4", api.clone())
        .merge(api)
        .nest("/v1", openai::routes().route_layer(require_token.clone()))
        // llama-server and text-embeddings-inference also answer reranking at the root.
        .merge(
            ApiRouter::new()
                .post("/rerank", openai::rerank::rerank, openai::api_doc::rerank())
                .route_layer(require_token),
        )
        .get("/health", || async { "ok" }, kiln_doc::health())
        .get("/readyz", kiln_routes::ready, kiln_doc::ready())
        .get("/metrics", metrics::render, kiln_doc::metrics())
        .get(
            "/openapi.json",
            move || {
                let served = served.clone();
                async move { served.respond() }
            },
            kiln_doc::openapi(),
        )
        .merge(
            ApiRouter::new()
                .get("/kiln/whoami", kiln_routes::whoami, kiln_doc::whoami())
                .get("/kiln/models", kiln_routes::models, kiln_doc::models())
                .post(
                    "/kiln/models/pull",
                    kiln_routes::pull_model,
                    kiln_doc::pull_model(),
                )
                .post(
                    "/kiln/models/{name}/unload",
                    kiln_routes::unload_model,
                    kiln_doc::unload_model(),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    platform::authorize::require_operator,
                )),
        )
        .merge_described(kiln_console::router(), kiln_doc::console_routes())
        .merge(vectorize::binding_routes(state.clone()))
        .fallback(envelope::route_not_found)
        .method_not_allowed_fallback(envelope::method_not_allowed)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn(envelope::rejections_as_envelopes));
    let (inner, mut routes) = inner.into_parts();
    // The gateway and the batch queue reach the Workers AI routes in-process through `inner`.
    batch::spawn_runner(state.clone(), inner.clone());
    let browser = state.config.browser.clone();
    let binding_account: Arc<str> = Arc::from(state.binding_account.as_str());
    let (gateway_routes, gateway_docs) = gateway::routes(state, inner.clone()).into_parts();
    routes.extend(gateway_docs);
    document.set_routes(routes);
    let app = inner
        .merge(gateway_routes)
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
