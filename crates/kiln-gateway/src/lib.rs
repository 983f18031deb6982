//! AI Gateway (spec §4): gateway objects, custom providers, the response cache, request logs,
//! datasets and evaluations, analytics and rate limits, all kept in one SQLite database in the
//! data dir.
//!
//! Three connections share it (WAL mode): one for the REST API's reads and writes
//! (`synchronous = FULL`: a change is on disk before the call answers), one for cache lookups on
//! the request path, and the [`Writer`]'s, which commits logs, analytics and cache entries in
//! batches. [`GatewayStore`] is the only storage interface the HTTP layer sees, so a server
//! database can replace SQLite behind it.

pub mod analytics;
pub mod cache;
mod config;
mod datasets;
pub mod dynamic_routes;
mod evaluations;
mod gateways;
mod journal;
mod limiter;
pub mod logs;
mod options;
mod provider_configs;
mod providers;
mod record;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use kiln_core::{KilnError, KilnResult};
use rusqlite::Connection;
use serde_json::Value;

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

use limiter::RateLimiter;
use writer::Writer;

pub struct GatewayStore {
    db: Mutex<Connection>,
    cache_reader: Mutex<Connection>,
    writer: Writer,
    limiter: RateLimiter,
    /// Gateways by (account, id), read on every proxied request; every change goes through
    /// this store, which keeps the map in step.
    resolved: RwLock<HashMap<(String, String), Arc<Gateway>>>,
}

impl GatewayStore {
    /// Opens (or creates) the database at `path` with the default writer limits.
    pub fn open(path: &Path) -> KilnResult<Self> {
        Self::open_with(path, WriterLimits::default())
    }

    pub fn open_with(path: &Path, limits: WriterLimits) -> KilnResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(e.to_string()))?;
        }
        let db = kiln_sqlite::open(path, kiln_sqlite::Durability::Full).map_err(db_error)?;
        gateways::create_schema(&db)
            .and_then(|()| providers::create_schema(&db))
            .and_then(|()| provider_configs::create_schema(&db))
            .and_then(|()| cache::create_schema(&db))
            .and_then(|()| logs::create_schema(&db))
            .and_then(|()| analytics::create_schema(&db))
            .and_then(|()| datasets::create_schema(&db))
            .and_then(|()| evaluations::create_schema(&db))
            .and_then(|()| dynamic_routes::create_schema(&db))
            .map_err(db_error)?;
        let cache_reader =
            kiln_sqlite::open(path, kiln_sqlite::Durability::Normal).map_err(db_error)?;
        let writer = Writer::start(path, limits).map_err(db_error)?;
        Ok(Self {
            db: Mutex::new(db),
            cache_reader: Mutex::new(cache_reader),
            writer,
            limiter: RateLimiter::default(),
            resolved: RwLock::default(),
        })
    }

    // Gateway objects.

    pub fn create(&self, account: &str, body: &Value) -> KilnResult<Gateway> {
        gateways::create(&self.db(), account, body)
    }

    pub fn list(&self, account: &str) -> KilnResult<Vec<Gateway>> {
        gateways::list(&self.db(), account)
    }

    pub fn get(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        gateways::get(&self.db(), account, id)
    }

    /// The gateway a request names, from memory after its first use.
    pub fn resolve(&self, account: &str, id: &str) -> KilnResult<Arc<Gateway>> {
        if let Some(gateway) = self.resolved(account, id) {
            return Ok(gateway);
        }
        let key = (account.to_owned(), id.to_owned());
        let gateway = Arc::new(self.get(account, id)?);
        self.resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, gateway.clone());
        Ok(gateway)
    }

    /// The gateway a request names if it is in memory: never touches SQLite, so an async
    /// caller can try it before [`GatewayStore::resolve`] on a blocking thread.
    pub fn resolved(&self, account: &str, id: &str) -> Option<Arc<Gateway>> {
        self.resolved_map()
            .get(&(account.to_owned(), id.to_owned()))
            .cloned()
    }

    /// Replaces the settings; with `cache_invalidate_on_update` the gateway's cache is emptied.
    pub fn update(&self, account: &str, id: &str, body: &Value) -> KilnResult<Gateway> {
        self.writer.flush();
        let db = self.db();
        let gateway = gateways::update(&db, account, id, body)?;
        if gateway.config.cache_invalidate_on_update {
            cache::purge_gateway(&db, account, id).map_err(db_error)?;
        }
        self.forget(account, id);
        Ok(gateway)
    }

    /// Deletes the gateway with its cache, logs, datasets and evaluations.
    pub fn delete(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        self.writer.flush();
        let db = self.db();
        let gateway = gateways::delete(&db, account, id)?;
        cache::purge_gateway(&db, account, id).map_err(db_error)?;
        datasets::purge_gateway(&db, account, id).map_err(db_error)?;
        evaluations::purge_gateway(&db, account, id).map_err(db_error)?;
        dynamic_routes::purge_gateway(&db, account, id).map_err(db_error)?;
        provider_configs::purge_gateway(&db, account, id).map_err(db_error)?;
        logs::delete(&db, account, id, &LogQuery::default(), None)?;
        self.forget(account, id);
        self.limiter.forget(account, id);
        Ok(gateway)
    }

    // Stored provider keys (BYOK).

    pub fn create_provider_config(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<ProviderConfig> {
        provider_configs::create(&self.db(), account, gateway, body)
    }

    pub fn list_provider_configs(
        &self,
        account: &str,
        gateway: &str,
    ) -> KilnResult<Vec<ProviderConfig>> {
        provider_configs::list(&self.db(), account, gateway)
    }

    pub fn delete_provider_config(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<ProviderConfig> {
        let deleted = provider_configs::delete(&self.db(), account, gateway, id)?;
        self.limiter
            .forget(account, &stored_key_window(gateway, id));
        Ok(deleted)
    }

    /// The stored key a request to a provider (under any of `provider_slugs`) goes with (see [`provider_configs::key_for`]).
    pub fn provider_key(
        &self,
        account: &str,
        gateway: &str,
        provider_slugs: &[&str],
        alias: Option<&str>,
    ) -> KilnResult<Option<StoredKey>> {
        provider_configs::key_for(&self.db(), account, gateway, provider_slugs, alias)
    }

    /// Counts one use of a stored key against its own rate limit; `Err` carries the seconds
    /// until it may be used again.
    pub fn admit_provider_key(
        &self,
        account: &str,
        gateway: &str,
        key: &StoredKey,
        now_ms: u64,
    ) -> Result<(), u64> {
        match key.rate_limit {
            Some(limit) => self.limiter.admit(
                account,
                &stored_key_window(gateway, &key.config_id),
                limit,
                now_ms,
            ),
            None => Ok(()),
        }
    }

    fn forget(&self, account: &str, id: &str) {
        self.resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(account.to_owned(), id.to_owned()));
    }

    fn resolved_map(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Arc<Gateway>>> {
        self.resolved.read().unwrap_or_else(PoisonError::into_inner)
    }

    // The request path.

    /// A live cache entry for `key`.
    pub fn cached(&self, key: &[u8; 32], now_ms: i64) -> KilnResult<Option<CacheEntry>> {
        if let Some(entry) = self.writer.pending_cache_entry(key) {
            return Ok((entry.expires_at_ms > now_ms).then_some(entry));
        }
        let reader = self
            .cache_reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache::lookup(&reader, key, now_ms).map_err(db_error)
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

    // Custom providers.

    pub fn create_provider(&self, account: &str, body: &Value) -> KilnResult<CustomProvider> {
        providers::create(&self.db(), account, body)
    }

    pub fn list_providers(&self, account: &str) -> KilnResult<Vec<CustomProvider>> {
        providers::list(&self.db(), account)
    }

    pub fn get_provider(&self, account: &str, id: &str) -> KilnResult<CustomProvider> {
        providers::get(&self.db(), account, id)
    }

    pub fn update_provider(
        &self,
        account: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<CustomProvider> {
        providers::update(&self.db(), account, id, body)
    }

    pub fn delete_provider(&self, account: &str, id: &str) -> KilnResult<CustomProvider> {
        providers::delete(&self.db(), account, id)
    }

    /// The enabled custom provider `custom-{slug}` names.
    pub fn provider_by_slug(
        &self,
        account: &str,
        slug: &str,
    ) -> KilnResult<Option<CustomProvider>> {
        providers::by_slug(&self.db(), account, slug)
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
        logs::list(&self.db(), account, gateway, query)
    }

    pub fn get_log(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        self.writer.flush();
        logs::get(&self.db(), account, gateway, id)
    }

    pub fn log_body(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        part: BodyPart,
    ) -> KilnResult<(Option<String>, Vec<u8>)> {
        self.writer.flush();
        logs::body(&self.db(), account, gateway, id, part)
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
        logs::delete(&self.db(), account, gateway, query, limit)
    }

    pub fn patch_log(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        self.writer.flush();
        logs::patch(&self.db(), account, gateway, id, body)
    }

    pub fn analytics(
        &self,
        account: &str,
        gateway: &str,
        pairs: &[(String, String)],
    ) -> KilnResult<Value> {
        self.writer.flush();
        self.get(account, gateway)?;
        analytics::query(&self.db(), account, gateway, pairs)
    }

    // Datasets and evaluations (spec §4.7).

    pub fn create_dataset(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<Dataset> {
        datasets::create(&self.db(), account, gateway, body)
    }

    pub fn list_datasets(&self, account: &str, gateway: &str) -> KilnResult<Vec<Dataset>> {
        datasets::list(&self.db(), account, gateway)
    }

    pub fn get_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Dataset> {
        datasets::get(&self.db(), account, gateway, id)
    }

    pub fn update_dataset(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Dataset> {
        datasets::update(&self.db(), account, gateway, id, body)
    }

    pub fn delete_dataset(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Dataset> {
        datasets::delete(&self.db(), account, gateway, id)
    }

    /// The evaluators `GET …/ai-gateway/evaluation-types` lists.
    pub fn evaluation_types(&self) -> Vec<Value> {
        evaluations::types()
    }

    /// Runs an evaluation over every log answered before this call.
    pub fn create_evaluation(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        self.writer.flush();
        evaluations::create(&self.db(), account, gateway, body)
    }

    pub fn list_evaluations(&self, account: &str, gateway: &str) -> KilnResult<Vec<Value>> {
        evaluations::list(&self.db(), account, gateway)
    }

    pub fn get_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        evaluations::get(&self.db(), account, gateway, id)
    }

    pub fn delete_evaluation(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        evaluations::delete(&self.db(), account, gateway, id)
    }

    // Dynamic routes (spec §4.10): management JSON in Cloudflare's shapes; see `dynamic_routes`.

    pub fn create_dynamic_route(
        &self,
        account: &str,
        gateway: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::create(&self.db(), account, gateway, body)
    }

    pub fn list_dynamic_routes(&self, account: &str, gateway: &str) -> KilnResult<Vec<Value>> {
        dynamic_routes::list(&self.db(), account, gateway)
    }

    pub fn get_dynamic_route(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        dynamic_routes::get(&self.db(), account, gateway, id)
    }

    pub fn rename_dynamic_route(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::rename(&self.db(), account, gateway, id, body)
    }

    pub fn delete_dynamic_route(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Value> {
        dynamic_routes::delete(&self.db(), account, gateway, id)
    }

    pub fn create_route_version(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::create_version(&self.db(), account, gateway, id, body)
    }

    pub fn list_route_versions(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Vec<Value>> {
        dynamic_routes::list_versions(&self.db(), account, gateway, id)
    }

    pub fn get_route_version(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        version: &str,
    ) -> KilnResult<Value> {
        dynamic_routes::get_version(&self.db(), account, gateway, id, version)
    }

    pub fn create_route_deployment(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        body: &Value,
    ) -> KilnResult<Value> {
        dynamic_routes::create_deployment(&self.db(), account, gateway, id, body)
    }

    pub fn list_route_deployments(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
    ) -> KilnResult<Vec<Value>> {
        dynamic_routes::list_deployments(&self.db(), account, gateway, id)
    }

    /// The deployed version of the route `name`, for a request that names it.
    pub fn runnable_route(
        &self,
        account: &str,
        gateway: &str,
        name: &str,
    ) -> KilnResult<dynamic_routes::Runnable> {
        dynamic_routes::runnable(&self.db(), account, gateway, name)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stored key's rate-limit window, beside its gateway's own (NUL never occurs in a gateway id).
fn stored_key_window(gateway: &str, config_id: &str) -> String {
    format!("{gateway}\0key/{config_id}")
}

pub(crate) fn db_error(error: rusqlite::Error) -> KilnError {
    storage(error.to_string())
}

fn storage(message: String) -> KilnError {
    KilnError::internal(format!("gateway storage: {message}"))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod durability_tests;
