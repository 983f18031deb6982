//! Where the gateway keeps everything: one SQLite file (the default, nothing to install), or a
//! PostgreSQL database (and optionally Redis for the response cache) shared by the nodes of a
//! cluster.
//!
//! [`crate::GatewayStore`] calls a [`Backend`] for gateway objects, logs, analytics and the
//! cache table, and a [`FeatureRows`] for the features kept beside gateways (custom providers,
//! stored keys, datasets, evaluations, dynamic routes); the `crate::writer::Writer`'s apply
//! thread commits journaled writes through a `Sink` of the same backend. SQLite's statements
//! are in each feature's module (`gateways`, `logs`, `providers`, …), PostgreSQL's in
//! [`postgres`]; the checks and the JSON answered are shared, so the HTTP layer sees the same
//! answers from either.

pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::path::PathBuf;

use kiln_core::KilnResult;
use serde_json::Value;

use crate::analytics::Report;
use crate::cache::CacheEntry;
use crate::datasets::DatasetRows;
use crate::dynamic_routes::RouteRows;
use crate::evaluations::EvaluationRows;
use crate::logs::{BodyPart, LogPage, LogQuery};
use crate::provider_configs::ConfigRows;
use crate::providers::ProviderRows;
use crate::Gateway;

/// The key prefix of the Redis cache in production; tests use their own.
pub const DEFAULT_REDIS_PREFIX: &str = "kiln:gw:";

/// Which databases the gateway store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayDb {
    /// One SQLite file; its write-ahead journal sits beside it (`{file}.journal.d`).
    Sqlite(PathBuf),
    /// Shared by every node of a cluster: gateway objects, logs, analytics (and the cache
    /// without Redis) in PostgreSQL; the response cache in Redis when `redis_url` is set.
    Shared {
        postgres_url: String,
        redis_url: Option<String>,
        /// Starts every Redis key ([`DEFAULT_REDIS_PREFIX`] in production).
        redis_prefix: String,
        /// This node's own directory for the write-ahead journal of its request writes
        /// (logs, analytics, cache entries), applied to PostgreSQL in batches. One node per
        /// directory (a lock file refuses a second); it keeps the journal's name (`ID`), under
        /// which PostgreSQL records how far it is applied.
        journal_dir: PathBuf,
    },
}

impl GatewayDb {
    /// Shared mode with the production Redis prefix.
    pub fn shared(postgres_url: &str, redis_url: Option<&str>, journal_dir: PathBuf) -> Self {
        GatewayDb::Shared {
            postgres_url: postgres_url.to_owned(),
            redis_url: redis_url.map(str::to_owned),
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            journal_dir,
        }
    }

    /// For logs: the file, or the servers without their passwords.
    pub fn describe(&self) -> String {
        match self {
            GatewayDb::Sqlite(path) => format!("SQLite file {}", path.display()),
            GatewayDb::Shared {
                postgres_url,
                redis_url,
                ..
            } => {
                let postgres = postgres::describe_url(postgres_url);
                match redis_url {
                    Some(url) => format!(
                        "PostgreSQL {postgres}, cache in Redis {}",
                        crate::cache::redis::describe_url(url)
                    ),
                    None => format!("PostgreSQL {postgres} (cache included)"),
                }
            }
        }
    }
}

/// What the features kept per account or gateway read and write: custom providers, stored
/// keys, datasets, evaluations and dynamic routes. A SQLite connection (the gateway file's)
/// and the PostgreSQL backend implement it; each feature's module holds its logic once.
pub(crate) trait FeatureRows:
    ProviderRows + ConfigRows + DatasetRows + EvaluationRows + RouteRows
{
    /// Removes a gateway's stored keys, datasets, evaluations and routes (when it goes).
    fn purge_features(&self, account: &str, gateway: &str) -> KilnResult<()>;
}

/// The statements behind [`crate::GatewayStore`]. Errors are Kiln errors already: missing rows
/// as `NotFound`, conflicts as `Conflict`, an unreachable server as 503 / 3052.
pub(crate) trait Backend: Send + Sync {
    fn create_gateway(&self, account: &str, body: &Value) -> KilnResult<Gateway>;
    /// The account's gateways, oldest first.
    fn list_gateways(&self, account: &str) -> KilnResult<Vec<Gateway>>;
    fn get_gateway(&self, account: &str, id: &str) -> KilnResult<Gateway>;
    fn update_gateway(&self, account: &str, id: &str, body: &Value) -> KilnResult<Gateway>;
    /// Removes the gateway and its logs (its cache entries are [`Backend::purge_cache`]'s).
    fn delete_gateway(&self, account: &str, id: &str) -> KilnResult<Gateway>;

    /// A live entry of the cache table (unused when the cache is in Redis).
    fn cached(&self, key: &[u8; 32], now_ms: i64) -> KilnResult<Option<CacheEntry>>;
    /// Drops a gateway's entries from the cache table.
    fn purge_cache(&self, account: &str, gateway: &str) -> KilnResult<()>;

    fn list_logs(&self, account: &str, gateway: &str, query: &LogQuery) -> KilnResult<LogPage>;
    fn get_log(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value>;
    fn log_body(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        part: BodyPart,
    ) -> KilnResult<(Option<String>, Vec<u8>)>;
    fn delete_logs(
        &self,
        account: &str,
        gateway: &str,
        query: &LogQuery,
        limit: Option<u64>,
    ) -> KilnResult<u64>;
    fn patch_log(&self, account: &str, gateway: &str, id: &str, body: &Value) -> KilnResult<Value>;

    fn analytics(&self, account: &str, gateway: &str, report: &Report) -> KilnResult<Value>;
}

#[cfg(test)]
pub(crate) mod tests;
