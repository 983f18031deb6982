//! A throwaway stream name for tests that need a real NATS with JetStream.

use crate::Bus;

/// The NATS tests use: `KILN_TEST_NATS_URL`, default the local server on loopback
/// (`scripts/install-deps` starts one with JetStream).
pub fn test_url() -> String {
    std::env::var("KILN_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A stream name of its own (letters, digits and `_`, as `--nats-stream` wants); the stream, if
/// something created it, is deleted when this is dropped.
pub struct TestStream {
    name: String,
}

impl TestStream {
    pub fn new() -> TestStream {
        TestStream {
            name: format!("KILN_TEST_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Default for TestStream {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread of its own: a drop may run on an async runtime, where a bus cannot start.
        let _ = std::thread::spawn(move || {
            let Ok(bus) = Bus::connect(&test_url()) else {
                return;
            };
            let jetstream = bus.jetstream().clone();
            let _ = bus.call("deleting a test stream", async move {
                jetstream
                    .delete_stream(&name)
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            });
        })
        .join();
    }
}
