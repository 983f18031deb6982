//! The store's tests on every backend ([`on_every_backend!`]): a SQLite file; a fresh schema
//! of the PostgreSQL at `KILN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) with the cache in its table; and the same with
//! the cache in the Redis at `KILN_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) under a
//! key prefix of the test's own. Schemas and keys are removed afterwards.

mod cluster;
mod features;
mod parity;
mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiln_postgres::TestSchema;
use tempfile::TempDir;

use crate::journal::tests::sample;
use crate::{CacheEntry, GatewayDb, GatewayStore, LogCap, RequestWrite, WriterLimits};

pub(crate) fn redis_test_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Deletes a test's Redis keys when dropped.
pub(crate) struct RedisKeys {
    pub prefix: String,
}

impl RedisKeys {
    pub fn new() -> RedisKeys {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        RedisKeys {
            prefix: format!(
                "kiln-test:gw:{}:{}:{}:",
                std::process::id(),
                kiln_core::time::unix_millis(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        if let Err(error) = crate::cache::redis::purge_prefix(&redis_test_url(), &self.prefix) {
            eprintln!("could not delete the test's Redis keys: {error}");
        }
    }
}

/// One test's database, and how a second node would open it.
pub(crate) struct TestDb {
    pub db: GatewayDb,
    /// The journal directory of `db`'s node.
    pub journal_dir: PathBuf,
    pub redis: bool,
    dir: TempDir,
    nodes: AtomicU64,
    _schema: Option<TestSchema>,
    _keys: Option<RedisKeys>,
}

impl TestDb {
    pub fn open(&self) -> GatewayStore {
        GatewayStore::open_db(self.db.clone(), WriterLimits::default()).expect("store opens")
    }

    /// Another node on the same shared database: its own journal directory.
    pub fn another_node(&self) -> GatewayStore {
        let GatewayDb::Shared {
            postgres_url,
            redis_url,
            redis_prefix,
            ..
        } = &self.db
        else {
            panic!("only a shared database has other nodes");
        };
        let node = self.nodes.fetch_add(1, Ordering::Relaxed);
        let db = GatewayDb::Shared {
            postgres_url: postgres_url.clone(),
            redis_url: redis_url.clone(),
            redis_prefix: redis_prefix.clone(),
            journal_dir: self.dir.path().join(format!("node-{node}")),
        };
        GatewayStore::open_db(db, WriterLimits::default()).expect("another node opens")
    }
}

pub(crate) type NewDb = fn() -> TestDb;

pub(crate) fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.db");
    TestDb {
        journal_dir: crate::writer::journal_dir(&path),
        db: GatewayDb::Sqlite(path),
        redis: false,
        dir,
        nodes: AtomicU64::new(0),
        _schema: None,
        _keys: None,
    }
}

fn shared_db(redis: bool) -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = TestSchema::new("gateway");
    let keys = redis.then(RedisKeys::new);
    let journal_dir = dir.path().join("journal");
    TestDb {
        db: GatewayDb::Shared {
            postgres_url: schema.url(),
            redis_url: redis.then(redis_test_url),
            redis_prefix: keys
                .as_ref()
                .map_or_else(String::new, |keys| keys.prefix.clone()),
            journal_dir: journal_dir.clone(),
        },
        journal_dir,
        redis,
        dir,
        nodes: AtomicU64::new(0),
        _schema: Some(schema),
        _keys: keys,
    }
}

pub(crate) fn postgres_db() -> TestDb {
    shared_db(false)
}

pub(crate) fn redis_db() -> TestDb {
    shared_db(true)
}

/// Each listed `fn name(new_db: NewDb)` becomes `sqlite::name`, `postgres::name` and
/// `postgres_redis::name` tests.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(crate::backend::tests::sqlite_db) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(crate::backend::tests::postgres_db) })*
        }
        mod postgres_redis {
            $(#[test] fn $name() { super::$name(crate::backend::tests::redis_db) })*
        }
    };
}
pub(crate) use on_every_backend;

/// Each listed `fn name(new_db: NewDb)` becomes `postgres::name` and `postgres_redis::name`.
macro_rules! on_shared_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[test] fn $name() { super::$name(crate::backend::tests::postgres_db) })*
        }
        mod postgres_redis {
            $(#[test] fn $name() { super::$name(crate::backend::tests::redis_db) })*
        }
    };
}
pub(crate) use on_shared_backends;

/// Polls `condition` until it holds or `within` passes; whether it held.
pub(crate) fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A request's writes: a log `id` of gateway `g` of account `a` at `at_ms`, without a cache
/// entry.
pub(crate) fn write(id: &str, at_ms: i64) -> RequestWrite {
    let mut write = sample();
    write.record.id = id.to_owned();
    write.record.created_at_ms = at_ms;
    write.log = Some(LogCap::Unlimited);
    write.cache = None;
    write
}

/// A live cache entry of gateway `g` of account `a`, for a minute from now.
pub(crate) fn entry(key: u8, body: &str) -> CacheEntry {
    let now = kiln_core::time::unix_millis();
    CacheEntry {
        key: [key; 32],
        account: "a".into(),
        gateway: "g".into(),
        status: 200,
        content_type: Some("application/json".into()),
        streamed: false,
        body: body.as_bytes().to_vec(),
        created_at_ms: now,
        expires_at_ms: now + 60_000,
    }
}

/// Submits and waits until the write is journaled (and its cache entry published).
pub(crate) fn journaled(store: &GatewayStore, write: RequestWrite) {
    store
        .submit(write)
        .expect("queued")
        .blocking_recv()
        .expect("journaled");
}
