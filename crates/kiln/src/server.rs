//! Starting and stopping the HTTP server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use kiln_accounts::{AccountStore, Clock, SystemClock};
use kiln_batch::BatchQueue;
use kiln_catalog::Catalog;
use kiln_finetune::FinetuneStore;
use kiln_gateway::{GatewayStore, WriterLimits};
use kiln_http::platform::Platform;
use kiln_http::{AppState, HttpConfig};
use kiln_scheduler::ModelRegistry;
use kiln_store::Progress;
use kiln_vectorize::{StoreOptions, VectorStore};
use tokio::sync::oneshot;

use crate::{models, ServeConfig};

/// A server running in the background; dropping it shuts it down.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// What the operator must hear at start-up: the server accepts requests without an API
    /// token, or every token is revoked and it accepts none.
    pub loud_notice: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    draining: Arc<AtomicBool>,
    drain_grace: Duration,
    request_timeout: Duration,
}

impl RunningServer {
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// A graceful stop (SIGTERM): readiness fails at once, the listener closes after the
    /// drain grace, and requests in flight get up to the request timeout to finish. Whether
    /// they all did.
    pub async fn drain(mut self) -> bool {
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(grace_secs = self.drain_grace.as_secs(), "draining");
        tokio::time::sleep(self.drain_grace).await;
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let finished = tokio::time::timeout(self.request_timeout, &mut self.task)
            .await
            .is_ok();
        if !finished {
            tracing::warn!("requests still running after the request timeout: stopping anyway");
        }
        finished
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Fetches and loads the configured models, binds, and serves in a background task.
pub async fn start(config: ServeConfig, progress: Progress) -> anyhow::Result<RunningServer> {
    start_with_clock(config, progress, Arc::new(SystemClock)).await
}

/// [`start`] with the clock that rate limits and daily allocations read (tests move it).
pub async fn start_with_clock(
    config: ServeConfig,
    progress: Progress,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<RunningServer> {
    // Before the models load: their workers register metric handles with the recorder.
    kiln_http::install_metrics_recorder();
    let loader_config = config.clone();
    let registry = tokio::task::spawn_blocking(move || {
        let installed = models::ensure_models(&loader_config, progress)?;
        models::load_registry(&loader_config, &installed)
    })
    .await
    .context("model loading thread failed")??;
    let registry = Arc::new(registry);
    spawn_idle_sweeper(&registry);
    let limits = config.limits();
    let finetunes = Arc::new(
        FinetuneStore::open_db(config.finetune_store(), limits.lora.clone())
            .map_err(|error| anyhow::anyhow!("{}", error.message))?,
    );
    let gateway_db = config.gateway_store();
    tracing::info!("AI Gateway: {}", gateway_db.describe());
    let gateways = Arc::new(
        GatewayStore::open_db(
            gateway_db,
            WriterLimits {
                cache_bytes: config.gateway_cache_bytes(),
                ..WriterLimits::default()
            },
        )
        .map_err(|error| anyhow::anyhow!("{}", error.message))?,
    );
    let vectors = Arc::new(
        VectorStore::open_with_options(
            &config.vectorize_dir(),
            StoreOptions::with_limits(&limits.vectorize),
        )
        .map_err(|error| anyhow::anyhow!("{}", error.message))?,
    );
    let bus = match &config.nats_url {
        Some(url) => Some(join_vectorize_log(url, &config, &vectors).await?),
        None => None,
    };
    let accounts_db = config.accounts_store()?;
    tracing::info!("accounts, tokens and usage: {}", accounts_db.describe());
    let accounts = Arc::new(
        AccountStore::open_db(accounts_db, clock.clone())
            .map_err(|error| anyhow::anyhow!("{}", error.message))?,
    );
    let mut platform = Platform::new(accounts, clock, config.platform_settings())
        .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    if let Some(redis) = config.redis_limits()? {
        // A node may start before Redis: until it answers, rate-limited requests get 503.
        if let Err(error) = redis.ping() {
            tracing::warn!("rate limits: {}: {error}", redis.describe());
        }
        platform.limiter = kiln_accounts::RateLimiter::with_redis(platform.clock.clone(), redis);
        tracing::info!(
            "rate limits: windows shared in {}",
            platform.limiter.backend()
        );
    }
    let platform = Arc::new(platform);
    let loud_notice = match platform.startup_notice() {
        (true, notice) => {
            tracing::warn!("{notice}");
            Some(notice)
        }
        (false, notice) => {
            tracing::info!("{notice}");
            None
        }
    };
    let batches = Arc::new(
        BatchQueue::open_db(&config.batch_store()?, limits.batch.clone())
            .map_err(|error| anyhow::anyhow!("{}", error.message))?,
    );
    let listener = tokio::net::TcpListener::bind(config.listen_addr())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr()))?;
    let addr = listener.local_addr()?;
    let public_url = config.public_url(addr)?;
    let egress = config.egress_policy(own_addresses(addr))?;
    let browser = config.browser_policy(&public_url)?;
    let draining = Arc::new(AtomicBool::new(false));
    let forwarder = match crate::cluster::directory_backend(&config, bus.as_ref()) {
        Some(backend) => Some(crate::cluster::join(
            &config,
            backend,
            addr,
            registry.clone(),
            draining.clone(),
        )?),
        None => None,
    };
    let state = AppState {
        public_url,
        platform,
        batches,
        vectors,
        gateways,
        binding_account: config.binding_account(),
        finetunes,
        registry,
        installer: Some(Arc::new(crate::model_installer::StoreInstaller::new(
            &config,
        ))),
        draining: draining.clone(),
        forwarder,
        catalog: Catalog::builtin(),
        config: HttpConfig {
            max_body_bytes: config.max_body_bytes(),
            request_timeout: config.request_timeout(),
            limits: Arc::new(config.limits()),
            egress: Arc::new(egress),
            browser: Arc::new(browser),
        },
    };
    let (shutdown, stopped) = oneshot::channel::<()>();
    let app = kiln_http::router(state);
    let task = tokio::spawn(async move {
        // Peer addresses: the Worker binding routes answer only local callers in tokens mode.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(error) = served.await {
            tracing::error!("server error: {error}");
        }
    });
    Ok(RunningServer {
        addr,
        loud_notice,
        shutdown: Some(shutdown),
        task,
        draining,
        drain_grace: config.drain_grace(),
        request_timeout: config.request_timeout(),
    })
}

/// The addresses this server answers on: provider calls must not come back to them. Every
/// interface's when it listens on all of them.
fn own_addresses(listening: SocketAddr) -> Vec<std::net::IpAddr> {
    if !listening.ip().is_unspecified() {
        return vec![listening.ip()];
    }
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces.iter().map(|i| i.ip()).collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot list this machine's addresses for the egress policy");
            Vec::new()
        }
    }
}

/// Once a second, for as long as the server lives: unloads models past their keep-alive and
/// looks at the installed models again when `REFRESH_EVERY` has passed (pulled ones become
/// servable, removed ones are unloaded).
fn spawn_idle_sweeper(registry: &Arc<ModelRegistry>) {
    let registry: Weak<ModelRegistry> = Arc::downgrade(registry);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticks.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.unload_idle();
            // Reads the model store (files): off the async threads.
            let _ = tokio::task::spawn_blocking(move || registry.refresh_periodically()).await;
        }
    });
}

/// Connects to NATS and shares `vectors` through its stream; returns the connection for the
/// node directory. Replaying the stream blocks until this node has caught up.
async fn join_vectorize_log(
    url: &str,
    config: &ServeConfig,
    vectors: &Arc<VectorStore>,
) -> anyhow::Result<Arc<kiln_nats::Bus>> {
    let options = config.vectorize_log_options();
    let stream = options.stream.clone();
    let (url, shared) = (url.to_owned(), vectors.clone());
    let (bus, log) = tokio::task::spawn_blocking(move || {
        let bus = Arc::new(kiln_nats::Bus::connect(&url)?);
        let log = kiln_nats::VectorizeLog::start(bus.clone(), options, &shared)?;
        Ok::<_, kiln_core::KilnError>((bus, log))
    })
    .await
    .context("vectorize log thread failed")?
    .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    tracing::info!(
        "vectorize: indexes shared through NATS stream {stream} (applied up to {})",
        log.applied()
    );
    Ok(bus)
}
