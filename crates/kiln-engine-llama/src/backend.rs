//! The process-wide llama.cpp backend.

use std::sync::OnceLock;

use kiln_core::{KilnError, KilnResult};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

/// llama.cpp allows one backend per process and frees global state when it is dropped, so it lives
/// in a static for the rest of the process.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The shared backend, initialized on first use.
pub(crate) fn backend() -> KilnResult<&'static LlamaBackend> {
    BACKEND
        .get_or_init(|| {
            // llama.cpp prints every load step to stderr; route it to tracing (where it can be
            // filtered at debug level) instead of interleaving it with the server's own logs.
            send_logs_to_tracing(LogOptions::default());
            LlamaBackend::init().map_err(|error| error.to_string())
        })
        .as_ref()
        .map_err(|error| KilnError::internal(format!("llama.cpp backend failed to start: {error}")))
}
