//! A throwaway schema for tests that need a real PostgreSQL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::pool::Pool;

/// The PostgreSQL tests use: `KILN_TEST_POSTGRES_URL`, default the local `test` database
/// (`scripts/install-deps` starts one with trust auth on loopback).
pub fn test_url() -> String {
    std::env::var("KILN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema in the test database, dropped with everything in it when this is dropped.
pub struct TestSchema {
    pool: Pool,
    name: String,
}

impl TestSchema {
    /// Panics when the test PostgreSQL cannot be reached: a test that needs it must fail
    /// loudly, not pass without it.
    pub fn new(label: &str) -> TestSchema {
        let pool = Pool::open(&test_url(), 1).expect("KILN_TEST_POSTGRES_URL is a PostgreSQL URL");
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        // Unique across the processes (pid, time) and threads (counter) of a test run.
        let name = format!(
            "kiln_test_{label}_{}_{nanos:x}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let create = format!("CREATE SCHEMA {name}");
        pool.run(move |client| Ok(client.batch_execute(&create)?))
            .expect("the PostgreSQL at KILN_TEST_POSTGRES_URL (scripts/install-deps starts one)");
        TestSchema { pool, name }
    }

    /// A URL whose connections use this schema (first on their `search_path`).
    pub fn url(&self) -> String {
        let base = test_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}options=-csearch_path%3D{}", self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(error) = self
            .pool
            .run(move |client| Ok(client.batch_execute(&drop_schema)?))
        {
            eprintln!("could not drop test schema: {error}");
        }
    }
}
