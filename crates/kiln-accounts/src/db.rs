//! Opening the shared SQLite file and its schema.

use std::path::Path;

use kiln_core::KilnError;
use rusqlite::{Connection, OptionalExtension};

/// Accounts, tokens and usage. `auth_generation` is bumped by triggers on every change to
/// accounts or tokens, whichever process makes it, so a reader can tell a token change from
/// unrelated commits (usage flushes) without rereading the tokens.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS usage_daily (
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    neurons REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, model)
);
CREATE INDEX IF NOT EXISTS usage_daily_by_day ON usage_daily (day);
CREATE TABLE IF NOT EXISTS spending_limits (
    account_id TEXT PRIMARY KEY,
    amount REAL NOT NULL,
    duration TEXT NOT NULL,
    strategy TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO auth_generation (id, n) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS accounts_insert AFTER INSERT ON accounts
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS accounts_update AFTER UPDATE ON accounts
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS accounts_delete AFTER DELETE ON accounts
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_tokens_insert AFTER INSERT ON api_tokens
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_tokens_update AFTER UPDATE ON api_tokens
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_tokens_delete AFTER DELETE ON api_tokens
    BEGIN UPDATE auth_generation SET n = n + 1; END;
";

/// Opens (creating if needed) the file and its parent directories, with the schema in place.
pub(crate) fn connect(path: &Path) -> Result<Connection, KilnError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|error| storage(format!("creating {}: {error}", parent.display())))?;
    }
    // The server and CLI processes open and write it concurrently.
    let db = kiln_sqlite::open(path, kiln_sqlite::Durability::Normal).map_err(db_error)?;
    // Two processes opening a fresh file at once both run this; IF NOT EXISTS keeps it safe
    // and the immediate transaction keeps it atomic.
    kiln_sqlite::retry_while_busy(|| {
        db.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
    })
    .map_err(db_error)?;
    Ok(db)
}

/// Whether `table` has a row with this `id`.
pub(crate) fn has_row(db: &Connection, table: &str, id: &str) -> Result<bool, KilnError> {
    db.query_row(
        &format!("SELECT 1 FROM {table} WHERE id = ?1"),
        [id],
        |_| Ok(()),
    )
    .optional()
    .map(|row| row.is_some())
    .map_err(db_error)
}

pub(crate) fn db_error(error: rusqlite::Error) -> KilnError {
    storage(error.to_string())
}

fn storage(message: String) -> KilnError {
    KilnError::internal(format!("accounts storage: {message}"))
}

/// SQLite integers are signed; counters saturate rather than wrap.
pub(crate) fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql_int(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
