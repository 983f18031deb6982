//! Gateway objects (spec §4.12) in the `gateways` table: SQLite's SQL, and the checks and row
//! decoding the PostgreSQL backend shares.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::{db_error, GatewayConfig};

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

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS gateways (
             account TEXT NOT NULL,
             id TEXT NOT NULL,
             config TEXT NOT NULL,
             created_at TEXT NOT NULL,
             modified_at TEXT NOT NULL,
             PRIMARY KEY (account, id)
         );",
    )
}

/// `POST …/ai-gateway/gateways`: `body` holds `id` and any settings.
pub fn create(db: &Connection, account: &str, body: &Value) -> KilnResult<Gateway> {
    let (id, config) = checked_new(body)?;
    let id = id.as_str();
    let count: usize = db
        .query_row(
            "SELECT COUNT(*) FROM gateways WHERE account = ?1",
            params![account],
            |row| row.get(0),
        )
        .map_err(db_error)?;
    if count >= MAX_GATEWAYS_PER_ACCOUNT {
        return Err(too_many());
    }
    let now = utc_timestamp();
    let inserted = db.execute(
        "INSERT OR IGNORE INTO gateways (account, id, config, created_at, modified_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![account, id, config.to_text(), now],
    );
    if inserted.map_err(db_error)? == 0 {
        return Err(exists(id));
    }
    Ok(Gateway {
        id: id.to_owned(),
        config,
        created_at: now.clone(),
        modified_at: now,
    })
}

/// The account's gateways, oldest first.
pub fn list(db: &Connection, account: &str) -> KilnResult<Vec<Gateway>> {
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

pub fn get(db: &Connection, account: &str, id: &str) -> KilnResult<Gateway> {
    let row = db
        .prepare_cached(
            "SELECT id, config, created_at, modified_at FROM gateways
             WHERE account = ?1 AND id = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![account, id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()
        })
        .map_err(db_error)?;
    row.map_or_else(|| Err(not_found(id)), gateway_from_row)
}

/// `PUT`: the settings in `body` replace the stored ones (unset fields take defaults).
pub fn update(db: &Connection, account: &str, id: &str, body: &Value) -> KilnResult<Gateway> {
    let config = GatewayConfig::from_json(body)?;
    let changed = db
        .execute(
            "UPDATE gateways SET config = ?3, modified_at = ?4 WHERE account = ?1 AND id = ?2",
            params![account, id, config.to_text(), utc_timestamp()],
        )
        .map_err(db_error)?;
    if changed == 0 {
        return Err(not_found(id));
    }
    get(db, account, id)
}

pub fn delete(db: &Connection, account: &str, id: &str) -> KilnResult<Gateway> {
    let gateway = get(db, account, id)?;
    db.execute(
        "DELETE FROM gateways WHERE account = ?1 AND id = ?2",
        params![account, id],
    )
    .map_err(db_error)?;
    Ok(gateway)
}

/// A create body's `id` and settings, checked.
pub(crate) fn checked_new(body: &Value) -> KilnResult<(String, GatewayConfig)> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| KilnError::bad_input("'id' (the gateway's name) is required"))?;
    validate_id(id)?;
    let config = GatewayConfig::from_json(body)?;
    Ok((id.to_owned(), config))
}

pub(crate) fn too_many() -> KilnError {
    KilnError::bad_input(format!(
        "the account already has {MAX_GATEWAYS_PER_ACCOUNT} gateways, the most allowed"
    ))
}

pub(crate) fn exists(id: &str) -> KilnError {
    KilnError::new(
        ErrorKind::Conflict,
        format!("a gateway named {id:?} already exists"),
    )
}

/// (id, settings as text, created_at, modified_at).
pub(crate) type Row = (String, String, String, String);

pub(crate) fn gateway_from_row((id, config, created_at, modified_at): Row) -> KilnResult<Gateway> {
    Ok(Gateway {
        id,
        config: GatewayConfig::from_text(&config)?,
        created_at,
        modified_at,
    })
}

/// What the features kept per gateway (stored keys, datasets, routes, …) check first: that
/// the gateway exists, in whichever database they share with it.
pub(crate) trait GatewayCheck {
    /// `NotFound` when the account has no such gateway.
    fn check_gateway(&self, account: &str, gateway: &str) -> KilnResult<()>;
}

impl GatewayCheck for Connection {
    fn check_gateway(&self, account: &str, gateway: &str) -> KilnResult<()> {
        get(self, account, gateway).map(drop)
    }
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

pub(crate) fn not_found(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no gateway named {id:?}"))
}
