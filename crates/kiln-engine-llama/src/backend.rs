//! The process-wide llama.cpp backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard};

use kiln_core::{KilnError, KilnResult};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::{send_logs_to_tracing, LogOptions};

/// llama.cpp allows one backend per process and frees global state when it is dropped, so it lives
/// in a static for the rest of the process.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The shared backend, initialized on first use.
pub fn backend() -> KilnResult<&'static LlamaBackend> {
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

/// Held (shared) by every forward pass; taken exclusively, and never given back, when the process
/// exits. `exit()` runs C++ static destructors that free ggml's CPU backend registry; a pass
/// still running on a worker thread at that moment would read freed memory and crash the
/// process on its way out (seen when a test binary ends while a stream is still generating).
static DECODE_GATE: RwLock<()> = RwLock::new(());

/// A permit to run one forward pass. Blocks forever once the process has started exiting.
pub(crate) fn decode_permit() -> RwLockReadGuard<'static, ()> {
    DECODE_GATE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers the exit gate. Exit handlers run in reverse order of registration, and ggml builds
/// some of its statics lazily (while loading a model, on a first forward pass), so this is
/// called after each model's first pass: the latest registration runs before every destructor
/// registered earlier. The handler is idempotent, so registering it several times is harmless.
pub(crate) fn register_exit_gate() {
    // SAFETY: `atexit` only stores the function pointer; `close_gate` is `extern "C"`, takes no
    // arguments and does not unwind.
    let registered = unsafe { libc::atexit(close_gate) };
    if registered != 0 {
        tracing::warn!("could not register the llama.cpp exit gate");
    }
}

extern "C" fn close_gate() {
    static CLOSED: AtomicBool = AtomicBool::new(false);
    if CLOSED.swap(true, Ordering::SeqCst) {
        return;
    }
    // Waits for running passes to finish; forgetting the guard keeps new ones from starting.
    let guard = DECODE_GATE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    std::mem::forget(guard);
}
