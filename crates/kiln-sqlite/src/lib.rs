//! One way to open Kiln's SQLite files (accounts, gateway, batches): WAL journal, a busy
//! timeout, and a bounded retry of the opening itself.
//!
//! Why the retry: SQLite's busy handler does not cover everything a fresh connection does.
//! Switching a new file to WAL, or reading a WAL index another connection is recovering,
//! can answer "database is locked" at once. Two servers (or a server and `kiln tokens`)
//! opening the same fresh file together hit exactly that, so the open is retried until
//! [`BUSY_WAIT`] has passed, the same bound every later statement waits.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// How long a statement, or the opening, waits for another connection's lock.
pub const BUSY_WAIT: Duration = Duration::from_secs(5);

/// `PRAGMA synchronous` for the file: what a crash may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A commit survives a process crash; a power loss may lose the last ones (WAL + NORMAL).
    Normal,
    /// Every commit is on disk before it returns (WAL + FULL).
    Full,
}

/// Opens `path` (creating the file, not its directory) in WAL mode with [`BUSY_WAIT`].
pub fn open(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    retry_while_busy(|| open_once(path, durability))
}

/// Runs `step` again while it fails with "database is busy/locked", until [`BUSY_WAIT`].
pub fn retry_while_busy<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match step() {
            Err(error) if is_busy(&error) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            outcome => return outcome,
        }
    }
}

fn open_once(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(BUSY_WAIT)?;
    // Only the first opener changes the mode; the others just read it, which takes no lock.
    let mode: String = db.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // SQLite answers the old mode when it could not switch (another connection
            // held the file): report it as the busy it is, so the open is retried.
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                Some(format!("journal mode stayed {mode}")),
            ));
        }
    }
    db.execute_batch(match durability {
        Durability::Normal => "PRAGMA synchronous = NORMAL;",
        Durability::Full => "PRAGMA synchronous = FULL;",
    })?;
    Ok(db)
}

/// Whether the error is a UNIQUE or PRIMARY KEY violation (an insert of something that exists).
pub fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error().map(|e| e.extended_code),
        Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
    )
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many threads opening one fresh file at once all get a WAL connection (the failure
    /// this crate exists for was one of two servers refusing to start).
    #[test]
    fn concurrent_opens_of_a_fresh_file_all_succeed() {
        for _round in 0..20 {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("shared.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        let db = open(&path, Durability::Normal)?;
                        db.execute_batch(
                            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY);
                             INSERT INTO t DEFAULT VALUES;",
                        )?;
                        db.query_row("PRAGMA journal_mode", [], |row| row.get::<_, String>(0))
                    })
                })
                .collect();
            for opener in openers {
                let mode = opener.join().expect("no panic").expect("opened");
                assert_eq!(mode, "wal");
            }
            let db = open(&path, Durability::Full).expect("reopened");
            let rows: i64 = db
                .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                .expect("count");
            assert_eq!(rows, 8);
        }
    }
}
