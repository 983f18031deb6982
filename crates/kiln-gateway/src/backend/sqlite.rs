//! The SQLite backend: one file in the data dir, its SQL in the modules of each feature
//! (`gateways`, `logs`, `analytics`, `cache`, …), which this one calls.
//!
//! Three connections share the file (WAL mode): one for the REST API's reads and writes
//! (`synchronous = FULL`: a change is on disk before the call answers), one for cache lookups
//! on the request path, and the writer's ([`SqliteSink`]), which commits logs, analytics and
//! cache entries in batches.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kiln_core::KilnResult;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{Backend, FeatureRows};
use crate::analytics::{self, Report};
use crate::cache::{self, CacheEntry};
use crate::logs::{self, BodyPart, LogPage, LogQuery};
use crate::writer::{CacheBudget, Journaled, Position, Sink};
use crate::{
    datasets, db_error, dynamic_routes, evaluations, gateways, provider_configs, providers,
    storage, Gateway, RequestWrite,
};

pub(crate) struct SqliteBackend {
    db: Arc<Mutex<Connection>>,
    cache_reader: Mutex<Connection>,
}

impl SqliteBackend {
    /// Opens (or creates) the file with every feature's tables.
    pub(crate) fn open(path: &Path) -> KilnResult<SqliteBackend> {
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
        Ok(SqliteBackend {
            db: Arc::new(Mutex::new(db)),
            cache_reader: Mutex::new(cache_reader),
        })
    }

    /// The REST API's connection, which the features kept only in SQLite use too.
    pub(crate) fn connection(&self) -> Arc<Mutex<Connection>> {
        self.db.clone()
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for SqliteBackend {
    fn create_gateway(&self, account: &str, body: &Value) -> KilnResult<Gateway> {
        gateways::create(&self.db(), account, body)
    }

    fn list_gateways(&self, account: &str) -> KilnResult<Vec<Gateway>> {
        gateways::list(&self.db(), account)
    }

    fn get_gateway(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        gateways::get(&self.db(), account, id)
    }

    fn update_gateway(&self, account: &str, id: &str, body: &Value) -> KilnResult<Gateway> {
        gateways::update(&self.db(), account, id, body)
    }

    fn delete_gateway(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        let db = self.db();
        let gateway = gateways::delete(&db, account, id)?;
        logs::delete(&db, account, id, &LogQuery::default(), None)?;
        Ok(gateway)
    }

    fn cached(&self, key: &[u8; 32], now_ms: i64) -> KilnResult<Option<CacheEntry>> {
        let reader = self
            .cache_reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache::lookup(&reader, key, now_ms).map_err(db_error)
    }

    fn purge_cache(&self, account: &str, gateway: &str) -> KilnResult<()> {
        cache::purge_gateway(&self.db(), account, gateway)
            .map(drop)
            .map_err(db_error)
    }

    fn list_logs(&self, account: &str, gateway: &str, query: &LogQuery) -> KilnResult<LogPage> {
        logs::list(&self.db(), account, gateway, query)
    }

    fn get_log(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Value> {
        logs::get(&self.db(), account, gateway, id)
    }

    fn log_body(
        &self,
        account: &str,
        gateway: &str,
        id: &str,
        part: BodyPart,
    ) -> KilnResult<(Option<String>, Vec<u8>)> {
        logs::body(&self.db(), account, gateway, id, part)
    }

    fn delete_logs(
        &self,
        account: &str,
        gateway: &str,
        query: &LogQuery,
        limit: Option<u64>,
    ) -> KilnResult<u64> {
        logs::delete(&self.db(), account, gateway, query, limit)
    }

    fn patch_log(&self, account: &str, gateway: &str, id: &str, body: &Value) -> KilnResult<Value> {
        logs::patch(&self.db(), account, gateway, id, body)
    }

    fn analytics(&self, account: &str, gateway: &str, report: &Report) -> KilnResult<Value> {
        analytics::report(&self.db(), account, gateway, report)
    }
}

impl FeatureRows for Connection {
    fn purge_features(&self, account: &str, gateway: &str) -> KilnResult<()> {
        datasets::purge_gateway(self, account, gateway)
            .and_then(|()| evaluations::purge_gateway(self, account, gateway))
            .and_then(|()| dynamic_routes::purge_gateway(self, account, gateway))
            .and_then(|()| provider_configs::purge_gateway(self, account, gateway))
            .map_err(db_error)
    }
}

/// The writer's own connection. The journal position it has applied is stored with the
/// writes, in the same transaction, so a replay after a crash applies each write once.
pub(crate) struct SqliteSink {
    db: Connection,
}

impl SqliteSink {
    pub(crate) fn open(path: &Path) -> KilnResult<SqliteSink> {
        let db = kiln_sqlite::open(path, kiln_sqlite::Durability::Full).map_err(db_error)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS journal_applied (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 segment INTEGER NOT NULL,
                 offset INTEGER NOT NULL
             );",
        )
        .map_err(db_error)?;
        Ok(SqliteSink { db })
    }

    fn set_applied_position(db: &Connection, (segment, offset): Position) -> rusqlite::Result<()> {
        db.prepare_cached(
            "INSERT INTO journal_applied (id, segment, offset) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET segment = excluded.segment, offset = excluded.offset",
        )?
        .execute(params![segment as i64, offset as i64])?;
        Ok(())
    }
}

/// Counts, stores the log of, and caches one request; returns the bytes the cache grew by.
fn apply_write(db: &Connection, write: &RequestWrite) -> rusqlite::Result<i64> {
    analytics::record(db, &write.record)?;
    if let Some(cap) = write.log {
        if !logs::insert(db, &write.record, cap)? {
            metrics::counter!("kiln_gateway_logs_capped_total").increment(1);
        }
    }
    match &write.cache {
        Some(entry) => cache::insert(db, entry),
        None => Ok(0),
    }
}

impl Sink for SqliteSink {
    fn applied_position(&mut self) -> KilnResult<Position> {
        let position: Option<(i64, i64)> = self
            .db
            .query_row(
                "SELECT segment, offset FROM journal_applied WHERE id = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(db_error)?;
        Ok(position.map_or((0, 0), |(s, o)| (s as u64, o as u64)))
    }

    fn commit(&mut self, writes: &[Arc<Journaled>], cache: CacheBudget) -> KilnResult<i64> {
        let Some(last) = writes.last() else {
            return Ok(cache.size);
        };
        let transaction = self.db.transaction().map_err(db_error)?;
        let mut grown = 0;
        for journaled in writes {
            grown += apply_write(&transaction, &journaled.write).map_err(db_error)?;
        }
        Self::set_applied_position(&transaction, last.end).map_err(db_error)?;
        let mut size = cache.size + grown;
        if size > cache.limit {
            // Trim to 90% so eviction runs once per many inserts, not on each.
            size = cache::evict(
                &transaction,
                kiln_core::time::unix_millis(),
                cache.limit / 10 * 9,
            )
            .map_err(db_error)?;
        }
        transaction.commit().map_err(db_error)?;
        Ok(size)
    }

    fn cache_size(&mut self) -> KilnResult<i64> {
        cache::total_size(&self.db).map_err(db_error)
    }
}
