//! Blocking work (SQLite, file I/O and fsync, index search) and work that grows with a client's
//! input (parsing, validating, hashing, serializing megabytes) moved off the async threads, so
//! that a slow disk or one large request never stalls the requests sharing a runtime thread.

use kiln_core::{KilnError, KilnResult};

/// Inputs up to this size are parsed, hashed or serialized inline: that takes well under a
/// millisecond, less than the hand-off to the blocking pool is worth. Larger ones go to the pool.
pub(crate) const INLINE_BYTES: usize = 64 * 1024;

/// Runs `work` on the blocking pool; `what` names it in the error should the task panic.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> KilnResult<T> + Send + 'static,
) -> KilnResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KilnError::internal(format!("{what} failed: {e}")))?
}

/// Large inputs parsed or validated at once, over all requests. A JSON body expands in memory
/// (a byte array of 16 MiB becomes ~8 million 32-byte values): taking them in turn bounds
/// that transient, and costs no throughput on machines with a few cores.
const LARGE_INPUTS_AT_ONCE: usize = 2;

fn large_input_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(LARGE_INPUTS_AT_ONCE))
}

/// [`off_runtime`] when `large` (the input is past [`INLINE_BYTES`]), taking its turn among
/// the other large inputs; else `work` inline.
pub(crate) async fn off_runtime_if<T: Send + 'static>(
    large: bool,
    what: &str,
    work: impl FnOnce() -> KilnResult<T> + Send + 'static,
) -> KilnResult<T> {
    if large {
        let _turn = large_input_permits()
            .acquire()
            .await
            .map_err(|e| KilnError::internal(format!("{what}: {e}")))?;
        off_runtime(what, work).await
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    /// Tokio's default stack for runtime and blocking-pool threads.
    const TOKIO_STACK: usize = 2 * 1024 * 1024;

    fn deep_array(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    /// What the runtime threads do with a request's JSON (parse it, validate it against the
    /// catalog schema, write parts of it into messages, drop it) at the deepest JSON serde_json
    /// accepts fits in tokio's default stack, even in a debug build: serde_json's recursion
    /// limit bounds all of it. (A client's own JSON Schema is compiled on a large stack of its
    /// own: `kiln_core::schema_guard`.)
    #[test]
    fn the_deepest_json_a_request_can_send_fits_the_default_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(TOKIO_STACK)
            .spawn(|| {
                let too_deep = deep_array(200);
                assert!(crate::body::parse_json(too_deep.as_bytes()).is_err());
                let entry = kiln_catalog::Catalog::builtin()
                    .get("@cf/meta/llama-3.1-8b-instruct")
                    .expect("catalog entry");
                for field in ["prompt", "messages", "response_format", "tools", "unknown"] {
                    let body = format!(r#"{{"{field}": {}}}"#, deep_array(126));
                    let input = crate::body::parse_json(body.as_bytes()).expect("parses");
                    let refused = kiln_catalog::validate_input(entry, &input);
                    assert!(refused.is_err(), "{field}");
                    drop(input);
                }
            })
            .expect("thread");
        worker.join().expect("no overflow, no panic");
    }
}
