//! Kiln nodes over NATS JetStream.
//!
//! [`VectorizeLog`]: Vectorize's changes (index creates and deletes, inserts, upserts, deletes,
//! metadata indexes) as one durable JetStream stream. A node appends a change and answers;
//! every node reads the stream in order and applies it to its own `VectorStore`, so any node
//! answers queries, and each reports its own `processedUpToMutation`.
//!
//! The NATS client is async; Kiln's stores are blocking. The client runs on a small runtime
//! of its own ([`Bus`]), and the blocking side hands it futures and waits for their answer
//! with a bound, so a store may call in from any thread (tokio's blocking pool included).

mod bus;
mod parts;
mod position;
mod test_stream;
mod vectorize_log;

pub use bus::Bus;
pub use test_stream::{test_url, TestStream};
pub use vectorize_log::{VectorizeLog, VectorizeLogOptions, DEFAULT_STREAM};
