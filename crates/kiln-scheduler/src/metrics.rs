//! Serving metrics through the `metrics` facade, labelled by model. Without an installed
//! recorder (the binary installs a Prometheus one) every call is a no-op.

use std::time::Duration;

use kiln_core::Usage;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// One model's metric handles, registered once so the hot loop does no label lookups.
pub struct ModelMetrics {
    queue_depth: Gauge,
    batch_size: Histogram,
    time_to_first_token: Histogram,
    inter_token_latency: Histogram,
    queue_time: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cached_prompt_tokens: Counter,
}

impl ModelMetrics {
    pub fn new(model: &str) -> Self {
        let model = model.to_owned();
        Self {
            queue_depth: gauge!("kiln_queue_depth", "model" => model.clone()),
            batch_size: histogram!("kiln_batch_size", "model" => model.clone()),
            time_to_first_token: histogram!(
                "kiln_time_to_first_token_seconds",
                "model" => model.clone()
            ),
            inter_token_latency: histogram!(
                "kiln_inter_token_latency_seconds",
                "model" => model.clone()
            ),
            queue_time: histogram!("kiln_queue_time_seconds", "model" => model.clone()),
            prompt_tokens: counter!("kiln_prompt_tokens_total", "model" => model.clone()),
            completion_tokens: counter!("kiln_completion_tokens_total", "model" => model.clone()),
            cached_prompt_tokens: counter!("kiln_cached_prompt_tokens_total", "model" => model),
        }
    }

    /// Requests waiting for a free slot.
    pub fn queue_depth(&self, waiting: usize) {
        self.queue_depth.set(waiting as f64);
    }

    /// Sequences that shared one forward pass.
    pub fn batch_size(&self, sequences: usize) {
        self.batch_size.record(sequences as f64);
    }

    /// From admission into a slot to the first streamed text.
    pub fn time_to_first_token(&self, elapsed: Duration) {
        self.time_to_first_token.record(elapsed.as_secs_f64());
    }

    pub fn inter_token_latency(&self, elapsed: Duration) {
        self.inter_token_latency.record(elapsed.as_secs_f64());
    }

    /// From submission to admission into a slot.
    pub fn queue_time(&self, elapsed: Duration) {
        self.queue_time.record(elapsed.as_secs_f64());
    }

    pub fn usage(&self, usage: &Usage) {
        self.prompt_tokens.increment(u64::from(usage.prompt_tokens));
        self.completion_tokens
            .increment(u64::from(usage.completion_tokens));
        self.cached_prompt_tokens
            .increment(u64::from(usage.cached_tokens));
    }
}

/// A model became resident, holding about `memory_bytes`.
pub fn model_loaded(model: &str, memory_bytes: u64) {
    let model = model.to_owned();
    gauge!("kiln_model_loaded", "model" => model.clone()).set(1.0);
    gauge!("kiln_model_memory_bytes", "model" => model.clone()).set(memory_bytes as f64);
    counter!("kiln_model_loads_total", "model" => model).increment(1);
}

/// A model left memory (`reason`: `idle` or `memory_budget`).
pub fn model_unloaded(model: &str, reason: &'static str) {
    let model = model.to_owned();
    gauge!("kiln_model_loaded", "model" => model.clone()).set(0.0);
    gauge!("kiln_model_memory_bytes", "model" => model.clone()).set(0.0);
    counter!("kiln_model_unloads_total", "model" => model, "reason" => reason).increment(1);
}

/// An engine panicked while serving a request (the request failed; the worker carried on).
pub fn engine_panicked(model: &str) {
    counter!("kiln_engine_panics_total", "model" => model.to_owned()).increment(1);
}
