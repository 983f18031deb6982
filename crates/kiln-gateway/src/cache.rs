//! The response cache (spec §4.5): exact-match entries in the gateway database, so they survive
//! restarts. Reads go straight to SQLite; writes go through the [`crate::Writer`] with the logs.
//! A cluster keeps them in PostgreSQL (the same table) or in Redis (`redis`).

pub(crate) mod redis;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// Largest request or response the cache holds.
pub const MAX_ENTRY_BYTES: usize = 25 * 1024 * 1024;

/// TTL of a request that names `cf-aig-cache-key` on a gateway whose cache is off.
pub const CUSTOM_KEY_DEFAULT_TTL_SECS: u64 = 300;

/// A cached response, as replayed to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub key: [u8; 32],
    pub account: String,
    pub gateway: String,
    pub status: u16,
    pub content_type: Option<String>,
    /// The response was an event stream: it is replayed as one.
    pub streamed: bool,
    pub body: Vec<u8>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What a cache key is computed from. Identical requests to different gateways or providers
/// never share an entry, because the path names the provider.
pub struct KeyParts<'a> {
    pub account: &'a str,
    pub gateway: &'a str,
    pub method: &'a str,
    /// The path after the gateway, provider first.
    pub path: &'a str,
    pub body: &'a [u8],
    /// `cf-aig-cache-key`: replaces method, path and body.
    pub custom_key: Option<&'a str>,
    /// Who asked: their credentials, in every key (a custom one too), so that no caller is
    /// ever served an entry another caller's credentials produced.
    pub caller: &'a [u8],
}

/// SHA-256 over length-prefixed parts, so no two different requests can share a key by
/// concatenation.
pub fn key(parts: &KeyParts<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(parts.account.as_bytes());
    field(parts.gateway.as_bytes());
    field(parts.caller);
    match parts.custom_key {
        Some(custom) => {
            field(b"custom");
            field(custom.as_bytes());
        }
        None => {
            field(parts.method.as_bytes());
            field(parts.path.as_bytes());
            field(parts.body);
        }
    }
    hasher.finalize().into()
}

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS cache (
             key BLOB PRIMARY KEY,
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             status INTEGER NOT NULL,
             content_type TEXT,
             streamed INTEGER NOT NULL,
             body BLOB NOT NULL,
             size INTEGER NOT NULL,
             created_at INTEGER NOT NULL,
             expires_at INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS cache_by_gateway ON cache (account, gateway);
         CREATE INDEX IF NOT EXISTS cache_by_age ON cache (created_at);",
    )
}

/// The live entry for `key`, if any (expired entries are misses; the writer removes them).
pub fn lookup(
    db: &Connection,
    key: &[u8; 32],
    now_ms: i64,
) -> rusqlite::Result<Option<CacheEntry>> {
    let mut statement = db.prepare_cached(
        "SELECT account, gateway, status, content_type, streamed, body, created_at, expires_at
         FROM cache WHERE key = ?1 AND expires_at > ?2",
    )?;
    statement
        .query_row(params![&key[..], now_ms], |row| {
            Ok(CacheEntry {
                key: *key,
                account: row.get(0)?,
                gateway: row.get(1)?,
                status: row.get(2)?,
                content_type: row.get(3)?,
                streamed: row.get(4)?,
                body: row.get(5)?,
                created_at_ms: row.get(6)?,
                expires_at_ms: row.get(7)?,
            })
        })
        .optional()
}

/// Stores `entry`, replacing any older one; returns the bytes the table grew by.
pub fn insert(db: &Connection, entry: &CacheEntry) -> rusqlite::Result<i64> {
    let replaced: i64 = db
        .prepare_cached("SELECT size FROM cache WHERE key = ?1")?
        .query_row(params![&entry.key[..]], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    db.prepare_cached(
        "INSERT OR REPLACE INTO cache
         (key, account, gateway, status, content_type, streamed, body, size, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        &entry.key[..],
        entry.account,
        entry.gateway,
        entry.status,
        entry.content_type,
        entry.streamed,
        entry.body,
        entry.body.len() as i64,
        entry.created_at_ms,
        entry.expires_at_ms,
    ])?;
    Ok(entry.body.len() as i64 - replaced)
}

/// Total bytes held.
pub fn total_size(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("SELECT COALESCE(SUM(size), 0) FROM cache", [], |row| {
        row.get(0)
    })
}

/// Drops expired entries, then the oldest ones until at most `target_bytes` remain; returns the
/// new total.
pub fn evict(db: &Connection, now_ms: i64, target_bytes: i64) -> rusqlite::Result<i64> {
    db.execute("DELETE FROM cache WHERE expires_at <= ?1", params![now_ms])?;
    let mut total = total_size(db)?;
    while total > target_bytes {
        // Oldest first, a batch at a time: the index on created_at keeps each pass cheap.
        let freed: i64 = db.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM
               (SELECT size FROM cache ORDER BY created_at LIMIT 64)",
            [],
            |row| row.get(0),
        )?;
        db.execute(
            "DELETE FROM cache WHERE key IN (SELECT key FROM cache ORDER BY created_at LIMIT 64)",
            [],
        )?;
        if freed == 0 {
            break;
        }
        total -= freed;
    }
    Ok(total)
}

/// Forgets every entry of one gateway (`cache_invalidate_on_update`, gateway deletion).
pub fn purge_gateway(db: &Connection, account: &str, gateway: &str) -> rusqlite::Result<usize> {
    db.execute(
        "DELETE FROM cache WHERE account = ?1 AND gateway = ?2",
        params![account, gateway],
    )
}
