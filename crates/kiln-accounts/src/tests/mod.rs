//! Tests for the whole crate, in one binary to keep link time down.
//!
//! The store tests run on every backend ([`on_every_backend!`]): on a SQLite file, and on a
//! fresh schema of the PostgreSQL at `KILN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards (`kiln_postgres::TestSchema`).

mod rate_limit;
mod scopes;
mod tokens;
mod usage;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_postgres::TestSchema;
use tempfile::TempDir;

use crate::AccountsDb;

/// A fresh database path in its own temporary directory (kept alive by the returned guard).
fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("accounts.sqlite");
    (dir, path)
}

/// One test's database; dropping it deletes it.
pub(crate) struct TestDb {
    pub db: AccountsDb,
    /// How another process (SQLite) or node (PostgreSQL) would open the same database.
    reopen: Box<dyn Fn() -> AccountsDb + Send + Sync>,
    _guard: Guard,
}

impl TestDb {
    pub fn reopen(&self) -> AccountsDb {
        (self.reopen)()
    }
}

enum Guard {
    Dir(#[allow(dead_code)] TempDir),
    Schema(#[allow(dead_code)] TestSchema),
}

pub(crate) type NewDb = fn() -> TestDb;

pub(crate) fn sqlite_db() -> TestDb {
    let (dir, path) = temp_db();
    let reopened = path.clone();
    TestDb {
        db: AccountsDb::Sqlite(path),
        reopen: Box::new(move || AccountsDb::Sqlite(reopened.clone())),
        _guard: Guard::Dir(dir),
    }
}

/// A fresh schema of the test PostgreSQL (`kiln_postgres::test_url`).
pub(crate) fn postgres_db() -> TestDb {
    let schema = TestSchema::new("accounts");
    let url = schema.url();
    let db = AccountsDb::postgres(&url).expect("migrated");
    TestDb {
        db,
        reopen: Box::new(move || AccountsDb::postgres(&url).expect("second node")),
        _guard: Guard::Schema(schema),
    }
}

/// Each listed `fn name(new_db: NewDb)` becomes `sqlite::name` and `postgres::name` tests.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(crate::tests::sqlite_db) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(crate::tests::postgres_db) })*
        }
    };
}
pub(crate) use on_every_backend;

/// Polls `condition` until it holds or `within` passes; whether it held. For what another
/// process or node makes true asynchronously (PostgreSQL notifications, flushes).
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
