//! Prometheus exposition: one process-wide `metrics` recorder, rendered by `GET /metrics`.
//!
//! Every crate records through the `metrics` facade (`metrics::counter!` etc.); installing the
//! recorder here makes the engine's and the scheduler's metrics appear next to the HTTP ones.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for every `*_seconds` histogram: from a fast decode step to a long
/// generation, so that TTFT, inter-token latency and whole requests share one scale.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for `kiln_batch_size`: the sequence counts a continuous-batching step can hold.
pub const BATCH_SIZE_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// The Prometheus text format version Prometheus scrapers negotiate.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4";

/// Histograms are kept as raw samples until rendered; upkeep folds them into buckets so that an
/// unscraped server does not grow without bound.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

pub const REQUESTS_TOTAL: &str = "kiln_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "kiln_request_duration_seconds";
pub const MODEL_REQUESTS_TOTAL: &str = "kiln_model_requests_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder unless already done. Call it before anything
/// registers metric handles (models register theirs when they load): handles made before
/// installation stay bound to the no-op recorder.
pub fn install_recorder() {
    handle();
}

/// The process-wide handle, installing the global recorder on first use. Several servers in one
/// process (tests) share it. If another recorder was installed first, Kiln's metrics go there and
/// `/metrics` serves only what this (then unused) recorder sees, which is logged once.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty: {error}");
        }
        describe();
        spawn_upkeep(handle.clone());
        handle
    })
}

fn builder() -> PrometheusBuilder {
    // Both bucket lists are constant and non-empty, the only thing these calls check; should that
    // ever change, histograms fall back to the exporter's summaries rather than failing startup.
    with_buckets().unwrap_or_else(|error| {
        tracing::warn!("metrics buckets rejected, histograms become summaries: {error}");
        PrometheusBuilder::new()
    })
}

fn with_buckets() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)?
        .set_buckets_for_metric(Matcher::Full("kiln_batch_size".into()), &BATCH_SIZE_BUCKETS)
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "HTTP requests by matched route template and status code"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request duration by matched route template, until the body is fully sent"
    );
    metrics::describe_counter!(
        MODEL_REQUESTS_TOTAL,
        "Requests answered by a local model, by model and status code"
    );
}

/// A plain thread rather than a task: servers come and go with their runtimes, the recorder stays.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("kiln-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!("cannot start the metrics upkeep thread: {error}");
    }
}

/// `GET /metrics`: the Prometheus text exposition of every metric recorded in this process.
pub async fn render() -> Response {
    // Rendering grows with the number of series (routes × statuses × models, histograms).
    let rendered = crate::offload::off_runtime("rendering metrics", || Ok(handle().render()));
    let mut response = match rendered.await {
        Ok(text) => text.into_response(),
        Err(error) => return crate::envelope::ApiError::from(error).into_response(),
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
    response
}
