//! PostgreSQL for Kiln's shared stores (accounts, tokens, usage; more to come), the way
//! `kiln-sqlite` is SQLite for the embedded ones.
//!
//! The stores are synchronous (they are called from request handlers for a few
//! milliseconds, like their SQLite twins), and `postgres`'s blocking client cannot run on a
//! tokio thread. So a [`Pool`] owns a few OS threads, each with one connection, and a call
//! sends its closure to them and waits for the answer with a deadline: a slow or dead server
//! costs a caller at most [`CALL_TIMEOUT`], never a hang.

mod error;
mod listen;
mod migrate;
mod pool;
mod test_schema;

pub use error::{PgError, PgErrorKind};
pub use listen::Listener;
pub use migrate::Migration;
pub use pool::{Pool, CALL_TIMEOUT};
pub use test_schema::{test_url, TestSchema};

/// The client types the closures given to [`Pool::run`] work with.
pub use postgres::{types, Client, GenericClient, IsolationLevel, Row, Transaction};
