//! The connection to NATS and the runtime it runs on.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream;
use kiln_core::{ErrorKind, KilnError, KilnResult};

/// How long connecting may take before the node gives up starting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for any one exchange with the server (a publish and its acknowledgement, a
/// stream lookup), so that no request hangs on a stuck server.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A NATS connection with its own runtime thread.
pub struct Bus {
    /// Taken on drop: shut down in the background, since a bus may be dropped on an async
    /// thread, where waiting for a runtime to stop is not allowed.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl Bus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`). Later disconnections are retried
    /// for as long as the node runs.
    pub fn connect(url: &str) -> KilnResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kiln-nats")
            .enable_all()
            .build()
            .map_err(|error| KilnError::internal(format!("starting the NATS runtime: {error}")))?;
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(CALL_TIMEOUT))
            .name("kiln");
        let client = runtime
            .block_on(async {
                tokio::time::timeout(CONNECT_TIMEOUT * 2, options.connect(url))
                    .await
                    .map_err(|_| format!("no answer within {:?}", CONNECT_TIMEOUT * 2))?
                    .map_err(|error| error.to_string())
            })
            .map_err(|error| unavailable(&format!("connecting to NATS at {url}: {error}")))?;
        // The context starts tasks of its own on the current runtime.
        let jetstream = {
            let _inside = runtime.enter();
            jetstream::new(client.clone())
        };
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            client,
            jetstream,
        })
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The largest message the server accepts.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Runs `future` on the bus's runtime and waits for it, at most [`CALL_TIMEOUT`]. Callable
    /// from any thread, one of a tokio runtime included (it blocks that thread meanwhile, so
    /// async callers use `spawn_blocking`).
    pub(crate) fn call<T: Send + 'static>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> KilnResult<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let result = tokio::time::timeout(CALL_TIMEOUT, future)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {CALL_TIMEOUT:?}")));
            let _ = answer.send(result);
        });
        answered
            .recv_timeout(CALL_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))
            .and_then(|result| result)
            .map_err(|error| unavailable(&format!("NATS: {what}: {error}")))
    }

    /// Publishes `payload` on `subject` without waiting (plain NATS: delivered to whoever
    /// listens now, kept nowhere).
    pub fn publish(&self, subject: &str, payload: Vec<u8>) {
        let client = self.client.clone();
        let subject = subject.to_owned();
        self.spawn(async move {
            if let Err(error) = client.publish(subject, payload.into()).await {
                tracing::warn!(%error, "NATS: publishing");
            }
        });
    }

    /// Calls `on_message` with the payload of every message published on `subject` from now
    /// on, on the bus's runtime thread (so it must not block), for as long as the bus lives.
    pub fn subscribe(
        &self,
        subject: &str,
        on_message: impl Fn(&[u8]) + Send + 'static,
    ) -> KilnResult<()> {
        let client = self.client.clone();
        let subject = subject.to_owned();
        let mut subscription = self.call("subscribing", async move {
            client
                .subscribe(subject)
                .await
                .map_err(|error| error.to_string())
        })?;
        self.spawn(async move {
            while let Some(message) = futures::StreamExt::next(&mut subscription).await {
                on_message(&message.payload);
            }
        });
        Ok(())
    }

    /// Starts `future` on the bus's runtime and returns at once.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(future);
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) fn unavailable(message: &str) -> KilnError {
    KilnError::new(ErrorKind::StorageUnavailable, message.to_owned())
}
