//! AI Gateway (spec §4): gateway objects, kept per account in a SQLite database that the
//! gateway's cache, logs and limits will share.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a change is on disk before the REST call
//! that made it answers.

mod config;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

pub use config::GatewayConfig;

/// Gateways per account (Workers Paid's limit).
pub const MAX_GATEWAYS_PER_ACCOUNT: usize = 20;

/// A gateway as the REST API shows it: its settings plus `id` and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub id: String,
    pub config: GatewayConfig,
    pub created_at: String,
    pub modified_at: String,
}

impl Gateway {
    pub fn to_json(&self) -> Value {
        let mut object = serde_json::to_value(&self.config).unwrap_or_default();
        if let Value::Object(map) = &mut object {
            map.insert("id".into(), Value::String(self.id.clone()));
            map.insert("created_at".into(), Value::String(self.created_at.clone()));
            map.insert(
                "modified_at".into(),
                Value::String(self.modified_at.clone()),
            );
        }
        object
    }
}

pub struct GatewayStore {
    db: Mutex<Connection>,
}

impl GatewayStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> KilnResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| storage(e.to_string()))?;
        }
        let db = Connection::open(path).map_err(db_error)?;
        // Other processes (a second server, `kiln` commands) may hold the write lock briefly.
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_error)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS gateways (
                 account TEXT NOT NULL,
                 id TEXT NOT NULL,
                 config TEXT NOT NULL,
                 created_at TEXT NOT NULL,
                 modified_at TEXT NOT NULL,
                 PRIMARY KEY (account, id)
             );",
        )
        .map_err(db_error)?;
        Ok(Self { db: Mutex::new(db) })
    }

    /// `POST …/ai-gateway/gateways`: `body` holds `id` and any settings.
    pub fn create(&self, account: &str, body: &Value) -> KilnResult<Gateway> {
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| KilnError::bad_input("'id' (the gateway's name) is required"))?;
        validate_id(id)?;
        let config = GatewayConfig::from_json(body)?;
        let db = self.db();
        let count: usize = db
            .query_row(
                "SELECT COUNT(*) FROM gateways WHERE account = ?1",
                params![account],
                |row| row.get(0),
            )
            .map_err(db_error)?;
        if count >= MAX_GATEWAYS_PER_ACCOUNT {
            return Err(KilnError::bad_input(format!(
                "the account already has {MAX_GATEWAYS_PER_ACCOUNT} gateways, the most allowed"
            )));
        }
        let now = utc_timestamp();
        let inserted = db.execute(
            "INSERT OR IGNORE INTO gateways (account, id, config, created_at, modified_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![account, id, config.to_text(), now],
        );
        if inserted.map_err(db_error)? == 0 {
            return Err(KilnError::new(
                ErrorKind::Conflict,
                format!("a gateway named {id:?} already exists"),
            ));
        }
        Ok(Gateway {
            id: id.to_owned(),
            config,
            created_at: now.clone(),
            modified_at: now,
        })
    }

    /// The account's gateways, oldest first.
    pub fn list(&self, account: &str) -> KilnResult<Vec<Gateway>> {
        let db = self.db();
        let mut statement = db
            .prepare(
                "SELECT id, config, created_at, modified_at FROM gateways
                 WHERE account = ?1 ORDER BY created_at, id",
            )
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error).and_then(gateway_from_row))
            .collect()
    }

    pub fn get(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        let db = self.db();
        let row = db
            .query_row(
                "SELECT id, config, created_at, modified_at FROM gateways
                 WHERE account = ?1 AND id = ?2",
                params![account, id],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()
            .map_err(db_error)?;
        row.map_or_else(|| Err(not_found(id)), gateway_from_row)
    }

    /// `PUT`: the settings in `body` replace the stored ones (unset fields take defaults).
    pub fn update(&self, account: &str, id: &str, body: &Value) -> KilnResult<Gateway> {
        let config = GatewayConfig::from_json(body)?;
        let now = utc_timestamp();
        let changed = self
            .db()
            .execute(
                "UPDATE gateways SET config = ?3, modified_at = ?4 WHERE account = ?1 AND id = ?2",
                params![account, id, config.to_text(), now],
            )
            .map_err(db_error)?;
        if changed == 0 {
            return Err(not_found(id));
        }
        self.get(account, id)
    }

    pub fn delete(&self, account: &str, id: &str) -> KilnResult<Gateway> {
        let gateway = self.get(account, id)?;
        self.db()
            .execute(
                "DELETE FROM gateways WHERE account = ?1 AND id = ?2",
                params![account, id],
            )
            .map_err(db_error)?;
        Ok(gateway)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Row = (String, String, String, String);

fn gateway_from_row((id, config, created_at, modified_at): Row) -> KilnResult<Gateway> {
    Ok(Gateway {
        id,
        config: GatewayConfig::from_text(&config)?,
        created_at,
        modified_at,
    })
}

/// Gateway names: 1–64 characters of letters, digits, `-` and `_`.
fn validate_id(id: &str) -> KilnResult<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(KilnError::bad_input(format!(
            "invalid gateway id {id:?}: use 1–64 letters, digits, '-' and '_'"
        )))
    }
}

fn not_found(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no gateway named {id:?}"))
}

fn db_error(error: rusqlite::Error) -> KilnError {
    storage(error.to_string())
}

fn storage(message: String) -> KilnError {
    KilnError::internal(format!("gateway storage: {message}"))
}

#[cfg(test)]
mod tests;
