//! AI Gateway (spec §4): gateway objects, custom providers, the response cache, request logs,
//! datasets and evaluations, analytics and rate limits.
//!
//! One node keeps them all in one SQLite database in the data dir ([`GatewayDb::Sqlite`]). A
//! cluster's nodes share them through PostgreSQL, and the response cache through Redis (or
//! PostgreSQL) ([`GatewayDb::Shared`]); see `backend`. Either way, request writes (logs,
//! analytics, cache entries) go through the writer: journaled on this node's disk before the
//! response completes, committed to the database in batches. Rate limits (a gateway's, a
//! stored key's, a dynamic route's `rate` elements) are counted in each node's memory.
//! [`GatewayStore`] is the only storage interface the HTTP layer sees.

pub mod analytics;
mod backend;
pub mod cache;
mod config;
mod datasets;
pub mod dynamic_routes;
mod evaluations;
mod features;
mod gateways;
mod journal;
mod limiter;
pub mod logs;
mod options;
mod provider_configs;
mod providers;
mod record;
mod resolved;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::Connection;
use serde_json::Value;

pub use backend::{GatewayDb, DEFAULT_REDIS_PREFIX};
pub use cache::{CacheEntry, KeyParts};
pub use config::{GatewayConfig, LogStrategy, RateLimitTechnique, RetryBackoff};
pub use datasets::{Dataset, MAX_DATASETS_PER_GATEWAY};
pub use gateways::{Gateway, MAX_GATEWAYS_PER_ACCOUNT};
pub use limiter::RateLimit;
pub use logs::{BodyPart, LogCap, LogQuery};
pub use options::{CustomCost, RequestOptions, RetryPlan, MAX_METADATA_ENTRIES};
pub use provider_configs::{ProviderConfig, StoredKey, DEFAULT_ALIAS as DEFAULT_BYOK_ALIAS};
pub use providers::CustomProvider;
pub use record::LogRecord;
pub use writer::{RequestWrite, WriterLimits};

use analytics::Report;
use backend::postgres::PostgresBackend;
use backend::sqlite::{SqliteBackend, SqliteSink};
use backend::{Backend, FeatureRows};
use cache::redis::RedisCache;
use limiter::RateLimiter;
use resolved::{ResolvedGateways, SharedResolved};
use writer::Writer;

/// With a shared database, how long a gateway held in memory is used before it is read again
/// (notifications of changes usually clear it much sooner).
const SHARED_RECHECK: Duration = Duration::from_secs(2);

pub struct GatewayStore {
    backend: Arc<dyn Backend>,
    /// Custom providers, stored keys, datasets, evaluations and dynamic routes.
    features: Features,
    /// The response cache, when it is in Redis rather than the backend's table.
    redis: Option<Arc<RedisCache>>,
    writer: Writer,
    limiter: RateLimiter,
    /// Gateways by (account, id), read on every proxied request.
    resolved: SharedResolved,
    /// Keeps the thread that hears other nodes' gateway changes running.
    _listener: Option<kiln_postgres::Listener>,
}

impl GatewayStore {
    /// Opens (or creates) the database at `path` with the default writer limits.
    pub fn open(path: &Path) -> KilnResult<Self> {
        Self::open_with(path, WriterLimits::default())
    }

    /// The SQLite database at `path`.
    pub fn open_with(path: &Path, limits: WriterLimits) -> KilnResult<Self> {
        Self::open_db(GatewayDb::Sqlite(path.to_owned()), limits)
    }

    /// Opens the store on `db`: a SQLite file, or PostgreSQL (migrated on the way) and
    /// optionally Redis, shared with other nodes. Replays this node's journal first.
    pub fn open_db(db: GatewayDb, limits: WriterLimits) -> KilnResult<Self> {
        match db {
            GatewayDb::Sqlite(path) => {
                let backend = SqliteBackend::open(&path)?;
                let journal_dir = writer::journal_dir(&path);
                let journal_lock = writer::lock_journal(&journal_dir)?;
                let sink = Box::new(SqliteSink::open(&path)?);
                let writer = Writer::start(sink, &journal_dir, journal_lock, limits, None)?;
                Ok(Self {
                    features: Features::Sqlite(backend.connection()),
                    backend: Arc::new(backend),
                    redis: None,
                    writer,
                    limiter: RateLimiter::default(),
                    resolved: Arc::new(ResolvedGateways::new(None)),
                    _listener: None,
                })
            }
            GatewayDb::Shared {
                postgres_url,
                redis_url,
                redis_prefix,
                journal_dir,
            } => {
                let redis = match redis_url {
                    Some(url) => {
                        let cache = RedisCache::new(&url, &redis_prefix)?;
                        // A node may start before Redis: until it answers, lookups miss.
                        if let Err(error) = cache.ping() {
                            tracing::warn!("gateway cache: {error}; lookups miss until it answers");
                        }
                        Some(Arc::new(cache))
                    }
                    None => None,
                };
                let backend = Arc::new(PostgresBackend::connect(&postgres_url, redis.is_none())?);
                let journal_lock = writer::lock_journal(&journal_dir)?;
                let journal_id = journal::identity(&journal_dir).map_err(writer::io_error)?;
                let sink = Box::new(backend.sink(&journal_id)?);
                let writer =
                    Writer::start(sink, &journal_dir, journal_lock, limits, redis.clone())?;
                let resolved = Arc::new(ResolvedGateways::new(Some(SHARED_RECHECK)));
                let cleared = resolved.clone();
                let listener = backend.listen(move || cleared.clear())?;
                Ok(Self {
                    features: Features::Postgres(backend.clone()),
                    backend,
                    limiter: redis
                        .clone()
                        .map_or_else(RateLimiter::default, RateLimiter::shared),
                    redis,
                    writer,
                    resolved,
                    _listener: Some(listener),
                })
            }
        }
    }

    // Gateway objects.

    pub fn create(&self, account: &str, body: &Value) -> KilnResult<Gateway> {
        self.backend.create_gateway(account, body)
    }

    pub fn list(&self, account: &str) -> KilnResult<Vec<Gateway>> {
        self.backend.list_gateways(account)
    }

    pub fn get(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        self.backend.get_gateway(account, id)
    }

    /// The gateway a request names, from memory after its first use (and, with a shared
    /// database, reread after a change or every couple of seconds). While the shared database
    /// is unreachable, the last one read is used.
    pub fn resolve(&self, account: &str, id: &str) -> KilnResult<Arc<Gateway>> {
        if let Some(gateway) = self.resolved.fresh(account, id) {
            return Ok(gateway);
        }
        let generation = self.resolved.generation();
        match self.get(account, id) {
            Ok(gateway) => {
                let gateway = Arc::new(gateway);
                self.resolved.keep(account, id, gateway.clone(), generation);
                Ok(gateway)
            }
            Err(error) if error.kind == ErrorKind::StorageUnavailable => {
                match self.resolved.any(account, id) {
                    Some(known) => {
                        tracing::warn!(account, id, "{}; using the gateway as last read", error);
                        Ok(known)
                    }
                    None => Err(error),
                }
            }
            Err(error) => {
                if error.kind == ErrorKind::NotFound {
                    self.resolved.forget(account, id);
                }
                Err(error)
            }
        }
    }

    /// The gateway a request names if it is in memory: never touches the database, so an async
    /// caller can try it before [`GatewayStore::resolve`] on a blocking thread.
    pub fn resolved(&self, account: &str, id: &str) -> Option<Arc<Gateway>> {
        self.resolved.fresh(account, id)
    }

    /// Replaces the settings; with `cache_invalidate_on_update` the gateway's cache is emptied.
    pub fn update(&self, account: &str, id: &str, body: &Value) -> KilnResult<Gateway> {
        self.writer.flush();
        let gateway = self.backend.update_gateway(account, id, body)?;
        self.forget(account, id);
        if gateway.config.cache_invalidate_on_update {
            self.purge_cache(account, id)?;
        }
        Ok(gateway)
    }

    /// Deletes the gateway with its cache, logs, datasets and evaluations.
    pub fn delete(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        self.writer.flush();
        if self.redis.is_some() {
            // Redis may be down: refuse before anything is deleted, rather than leave entries
            // a gateway created again under this name would be served.
            self.purge_cache(account, id)?;
        }
        let gateway = self.backend.delete_gateway(account, id)?;
        self.forget(account, id);
        self.purge_cache(account, id)?;
        self.rows().purge_features(account, id)?;
        self.limiter.forget(account, id);
        Ok(gateway)
    }

    fn purge_cache(&self, account: &str, gateway: &str) -> KilnResult<()> {
        match &self.redis {
            Some(redis) => redis.purge(account, gateway).map(drop),
            None => self.backend.purge_cache(account, gateway),
        }
    }

    fn forget(&self, account: &str, id: &str) {
        self.resolved.forget(account, id);
    }

    // The request path.

    /// A live cache entry for `key`.
    pub fn cached(&self, key: &[u8; 32], now_ms: i64) -> KilnResult<Option<CacheEntry>> {
        if let Some(entry) = self.writer.pending_cache_entry(key) {
            return Ok((entry.expires_at_ms > now_ms).then_some(entry));
        }
        match &self.redis {
            Some(redis) => Ok(redis.lookup(key, now_ms)),
            None => self.backend.cached(key, now_ms),
        }
    }

    /// Counts a request against the gateway's rate limit; `Err` holds seconds to wait.
    pub fn admit(
        &self,
        account: &str,
        gateway: &str,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<(), u64> {
        self.limiter
            .admit(account, gateway, limit, now_ms.max(0) as u64)
    }

    /// Queues a request's log, analytics and cache writes; see [`Writer::submit`].
    pub fn submit(&self, write: RequestWrite) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.writer.submit(write)
    }

    pub fn cache_size(&self) -> i64 {
        self.writer.cache_size()
    }

    // Logs and analytics.

    pub fn list_logs(
        &self,
        account: &str,
        gateway: &str,
        query: &LogQuery,
    ) -> KilnResult<logs::LogPage> {
        self.writer.flush();
        self.get(account, gateway)?;
        self.backend.list_logs(account, gateway, query)
    }

    pub fn get_log(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        self.writer.flush();
        self.backend.get_log(account, gateway, id)
    }

    pub fn log_body(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        part: BodyPart,
    ) -> KilnResult<(Option<String>, Vec<u8>)> {
        self.writer.flush();
        self.backend.log_body(account, gateway, id, part)
    }

    pub fn delete_logs(
        &self,
        account: &str,
        gateway: &str,
        query: &LogQuery,
        limit: Option<u64>,
    ) -> KilnResult<u64> {
        self.writer.flush();
        self.get(account, gateway)?;
        self.backend.delete_logs(account, gateway, query, limit)
    }

    pub fn patch_log(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        self.writer.flush();
        self.backend.patch_log(account, gateway, id, body)
    }

    pub fn analytics(
        &self,
        account: &str,
        gateway: &str,
        pairs: &[(String, String)],
    ) -> KilnResult<Value> {
        self.writer.flush();
        self.get(account, gateway)?;
        let report = Report::parse(pairs)?;
        self.backend.analytics(account, gateway, &report)
    }

    /// Where the features beside gateways are, for one call: the SQLite connection is held
    /// for the whole of it, as before anything was shared.
    fn rows(&self) -> Rows<'_> {
        match &self.features {
            Features::Sqlite(db) => Rows::Sqlite(db.lock().unwrap_or_else(PoisonError::into_inner)),
            Features::Postgres(pg) => Rows::Postgres(pg),
        }
    }
}

/// Where custom providers, stored keys, datasets, evaluations and dynamic routes are kept:
/// beside the gateways, in the same database.
enum Features {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Arc<PostgresBackend>),
}

enum Rows<'a> {
    Sqlite(MutexGuard<'a, Connection>),
    Postgres(&'a PostgresBackend),
}

impl<'a> std::ops::Deref for Rows<'a> {
    type Target = dyn FeatureRows + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            Rows::Sqlite(db) => &**db,
            Rows::Postgres(pg) => *pg,
        }
    }
}

/// A stored key's rate-limit window, beside its gateway's own (NUL never occurs in a gateway id).
fn stored_key_window(gateway: &str, config_id: &str) -> String {
    format!("{gateway}\0key/{config_id}")
}

pub(crate) fn db_error(error: rusqlite::Error) -> KilnError {
    storage(error.to_string())
}

pub(crate) fn storage(message: String) -> KilnError {
    KilnError::internal(format!("gateway storage: {message}"))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod durability_tests;
