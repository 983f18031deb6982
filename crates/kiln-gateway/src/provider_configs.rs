//! Stored provider keys (BYOK, spec §4.2 "Provider credentials", §4.12 `provider_configs`): a
//! gateway keeps provider API keys, so clients call providers through it without holding them.
//!
//! Cloudflare keeps the key in its Secrets Store; Kiln has none and keeps it in the gateway's
//! SQLite file, beside the logs that already hold what clients sent (the file should be as
//! private as the keys). A key is never answered back: lists show `secret_preview` only.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use crate::config::RateLimitTechnique;
use crate::limiter::RateLimit;
use crate::{db_error, gateways};

/// Stored keys per gateway.
pub const MAX_CONFIGS_PER_GATEWAY: usize = 100;

/// Longest key accepted, in bytes (provider keys are tens of bytes; service-account JSON a few KB).
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// The alias a request uses when it sends no `cf-aig-byok-alias`.
pub const DEFAULT_ALIAS: &str = "default";

/// A stored key as the API shows it (never the key itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub id: String,
    pub gateway: String,
    pub alias: String,
    pub provider_slug: String,
    pub default_config: bool,
    pub secret_id: String,
    pub secret_preview: String,
    pub rate_limit: Option<u64>,
    pub rate_limit_period: Option<u64>,
    pub modified_at: String,
}

impl ProviderConfig {
    pub fn to_json(&self) -> Value {
        let mut object = json!({
            "id": self.id,
            "alias": self.alias,
            "default_config": self.default_config,
            "gateway_id": self.gateway,
            "modified_at": self.modified_at,
            "provider_slug": self.provider_slug,
            "secret_id": self.secret_id,
            "secret_preview": self.secret_preview,
        });
        if let (Some(limit), Some(period)) = (self.rate_limit, self.rate_limit_period) {
            object["rate_limit"] = json!(limit);
            object["rate_limit_period"] = json!(period);
        }
        object
    }
}

/// The key a request is sent with, and the limit on its use.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub config_id: String,
    pub alias: String,
    pub secret: String,
    pub rate_limit: Option<RateLimit>,
}

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS provider_configs (
             account TEXT NOT NULL,
             gateway TEXT NOT NULL,
             id TEXT NOT NULL,
             alias TEXT NOT NULL,
             provider_slug TEXT NOT NULL,
             default_config INTEGER NOT NULL,
             secret TEXT NOT NULL,
             secret_id TEXT NOT NULL,
             rate_limit INTEGER,
             rate_limit_period INTEGER,
             modified_at TEXT NOT NULL,
             PRIMARY KEY (account, gateway, id),
             UNIQUE (account, gateway, provider_slug, alias)
         );",
    )
}

struct Fields {
    alias: String,
    provider_slug: String,
    default_config: bool,
    secret: String,
    rate_limit: Option<(u64, u64)>,
}

fn fields(body: &Value) -> KilnResult<Fields> {
    let Value::Object(object) = body else {
        return Err(KilnError::bad_input("the body must be a JSON object"));
    };
    let alias = slug_field(object.get("alias"), "alias")?;
    let provider_slug = slug_field(object.get("provider_slug"), "provider_slug")?;
    let default_config = match object.get("default_config") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'default_config' must be true or false, got {other}"
            )))
        }
    };
    let secret = match object.get("secret") {
        Some(Value::String(secret)) if !secret.trim().is_empty() => {
            if secret.len() > MAX_SECRET_BYTES {
                return Err(KilnError::bad_input(format!(
                    "'secret' is longer than {MAX_SECRET_BYTES} bytes"
                )));
            }
            secret.trim().to_owned()
        }
        None | Some(Value::Null) if object.get("secret_id").is_some_and(|v| !v.is_null()) => {
            return Err(KilnError::bad_input(
                "Kiln has no Secrets Store to take 'secret_id' from: send the key itself as \
                 'secret'",
            ))
        }
        _ => {
            return Err(KilnError::bad_input(
                "'secret' is required: the provider API key to store",
            ))
        }
    };
    let number = |name: &str| -> KilnResult<Option<u64>> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|n| *n >= 1 && *n <= u64::from(u32::MAX))
                .map(Some)
                .ok_or_else(|| {
                    KilnError::bad_input(format!(
                        "'{name}' must be a positive integer, got {value}"
                    ))
                }),
        }
    };
    let rate_limit = match (number("rate_limit")?, number("rate_limit_period")?) {
        (Some(limit), Some(period)) => Some((limit, period)),
        (None, None) => None,
        _ => {
            return Err(KilnError::bad_input(
                "'rate_limit' and 'rate_limit_period' (seconds) go together",
            ))
        }
    };
    Ok(Fields {
        alias,
        provider_slug,
        default_config,
        secret,
        rate_limit,
    })
}

/// `alias` and `provider_slug`: 1–64 letters, digits, `-`, `_` or `.`.
fn slug_field(value: Option<&Value>, name: &str) -> KilnResult<String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match value.and_then(Value::as_str) {
        Some(text) if valid(text) => Ok(text.to_owned()),
        _ => Err(KilnError::bad_input(format!(
            "'{name}' is required: 1 to 64 letters, digits, '-', '_' or '.'"
        ))),
    }
}

/// What a list may show of a key: its first three and last four characters when it is long
/// enough that those give nothing away.
pub(crate) fn preview(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 16 {
        return "****".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

/// Where stored keys are kept: SQLite (below) or PostgreSQL (`backend::postgres::providers`).
pub(crate) trait ConfigRows: gateways::GatewayCheck {
    fn count_configs(&self, account: &str, gateway: &str) -> KilnResult<usize>;
    /// Stores `config` with its secret; a default key takes over from the provider's previous
    /// one, in the same transaction. `Conflict` ([`alias_taken`]) when its alias is taken.
    fn insert_config(&self, account: &str, config: &ProviderConfig, secret: &str)
        -> KilnResult<()>;
    /// The gateway's stored keys, oldest first.
    fn configs(&self, account: &str, gateway: &str) -> KilnResult<Vec<ProviderConfig>>;
    fn config(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Option<ProviderConfig>>;
    fn delete_config(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()>;
    /// The key for `slugs` (either) named `wanted`, or (with `or_default`) the provider's
    /// default key: the alias first, then the default, then the newest.
    fn key_row(&self, lookup: &KeyLookup<'_>) -> KilnResult<Option<(ProviderConfig, String)>>;
}

/// What [`ConfigRows::key_row`] looks for.
pub(crate) struct KeyLookup<'a> {
    pub account: &'a str,
    pub gateway: &'a str,
    pub slugs: [&'a str; 2],
    pub wanted: &'a str,
    pub or_default: bool,
}

pub(crate) fn alias_taken(config: &ProviderConfig) -> KilnError {
    KilnError::new(
        ErrorKind::Conflict,
        format!(
            "the gateway already has a {} key with alias {:?}: delete it first",
            config.provider_slug, config.alias
        ),
    )
}

/// `POST …/gateways/{gateway}/provider_configs`.
pub fn create<D: ConfigRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    body: &Value,
) -> KilnResult<ProviderConfig> {
    db.check_gateway(account, gateway)?;
    let fields = fields(body)?;
    if db.count_configs(account, gateway)? >= MAX_CONFIGS_PER_GATEWAY {
        return Err(KilnError::bad_input(format!(
            "the gateway already holds {MAX_CONFIGS_PER_GATEWAY} provider keys, the most allowed"
        )));
    }
    let config = ProviderConfig {
        id: uuid::Uuid::new_v4().simple().to_string(),
        gateway: gateway.to_owned(),
        alias: fields.alias,
        provider_slug: fields.provider_slug,
        default_config: fields.default_config,
        secret_id: uuid::Uuid::new_v4().simple().to_string(),
        secret_preview: preview(&fields.secret),
        rate_limit: fields.rate_limit.map(|(limit, _)| limit),
        rate_limit_period: fields.rate_limit.map(|(_, period)| period),
        modified_at: utc_timestamp(),
    };
    db.insert_config(account, &config, &fields.secret)?;
    Ok(config)
}

/// The gateway's stored keys, oldest first.
pub fn list<D: ConfigRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
) -> KilnResult<Vec<ProviderConfig>> {
    db.check_gateway(account, gateway)?;
    db.configs(account, gateway)
}

/// `DELETE …/provider_configs/{id}`.
pub fn delete<D: ConfigRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    id: &str,
) -> KilnResult<ProviderConfig> {
    db.check_gateway(account, gateway)?;
    let config = db
        .config(account, gateway, id)?
        .ok_or_else(|| not_found(id))?;
    db.delete_config(account, gateway, id)?;
    Ok(config)
}

/// The key for a provider stored under any of `provider_slugs` (a custom provider's key may be
/// stored under `custom-{slug}` or its bare slug): the one named `alias` when the request names
/// one (an error when there is none), else the provider's default key, else the one aliased
/// `default`.
pub fn key_for<D: ConfigRows + ?Sized>(
    db: &D,
    account: &str,
    gateway: &str,
    provider_slugs: &[&str],
    alias: Option<&str>,
) -> KilnResult<Option<StoredKey>> {
    let provider_slug = provider_slugs.first().copied().unwrap_or_default();
    let other_slug = provider_slugs.get(1).copied().unwrap_or(provider_slug);
    let (wanted, or_default) = match alias {
        Some(alias) => (alias, false),
        None => (DEFAULT_ALIAS, true),
    };
    let found = db.key_row(&KeyLookup {
        account,
        gateway,
        slugs: [provider_slug, other_slug],
        wanted,
        or_default,
    })?;
    match (found, alias) {
        (Some((config, secret)), _) => Ok(Some(StoredKey {
            rate_limit: config.rate_limit.zip(config.rate_limit_period).map(
                |(limit, interval_secs)| RateLimit {
                    limit,
                    interval_secs,
                    technique: RateLimitTechnique::Sliding,
                },
            ),
            config_id: config.id,
            alias: config.alias,
            secret,
        })),
        (None, Some(alias)) => Err(KilnError::bad_input(format!(
            "cf-aig-byok-alias {alias:?}: the gateway stores no {provider_slug} key with that \
             alias (see …/provider_configs)"
        ))),
        (None, None) => Ok(None),
    }
}

/// Removes every stored key of a gateway (when the gateway goes).
pub fn purge_gateway(db: &Connection, account: &str, gateway: &str) -> rusqlite::Result<()> {
    db.execute(
        "DELETE FROM provider_configs WHERE account = ?1 AND gateway = ?2",
        params![account, gateway],
    )
    .map(drop)
}

const COLUMNS: &str = "id, gateway, alias, provider_slug, default_config, secret, secret_id, \
                       rate_limit, rate_limit_period, modified_at";

impl ConfigRows for Connection {
    fn count_configs(&self, account: &str, gateway: &str) -> KilnResult<usize> {
        self.query_row(
            "SELECT COUNT(*) FROM provider_configs WHERE account = ?1 AND gateway = ?2",
            params![account, gateway],
            |row| row.get(0),
        )
        .map_err(db_error)
    }

    fn insert_config(
        &self,
        account: &str,
        config: &ProviderConfig,
        secret: &str,
    ) -> KilnResult<()> {
        let gateway = &config.gateway;
        let transaction = self.unchecked_transaction().map_err(db_error)?;
        if config.default_config {
            // One default key per provider: the newest one takes over.
            transaction
                .execute(
                    "UPDATE provider_configs SET default_config = 0
                     WHERE account = ?1 AND gateway = ?2 AND provider_slug = ?3",
                    params![account, gateway, config.provider_slug],
                )
                .map_err(db_error)?;
        }
        let inserted = transaction.execute(
            "INSERT INTO provider_configs (account, gateway, id, alias, provider_slug,
                 default_config, secret, secret_id, rate_limit, rate_limit_period, modified_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                account,
                gateway,
                config.id,
                config.alias,
                config.provider_slug,
                config.default_config,
                secret,
                config.secret_id,
                config.rate_limit,
                config.rate_limit_period,
                config.modified_at,
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(error) if kiln_sqlite::is_unique_violation(&error) => {
                return Err(alias_taken(config))
            }
            Err(error) => return Err(db_error(error)),
        }
        transaction.commit().map_err(db_error)
    }

    fn configs(&self, account: &str, gateway: &str) -> KilnResult<Vec<ProviderConfig>> {
        let mut statement = self
            .prepare(&format!(
                "SELECT {COLUMNS} FROM provider_configs WHERE account = ?1 AND gateway = ?2 \
                 ORDER BY rowid"
            ))
            .map_err(db_error)?;
        let rows = statement
            .query_map(params![account, gateway], |row| {
                from_row(row).map(|(config, _)| config)
            })
            .map_err(db_error)?;
        rows.map(|row| row.map_err(db_error)).collect()
    }

    fn config(&self, account: &str, gateway: &str, id: &str) -> KilnResult<Option<ProviderConfig>> {
        self.query_row(
            &format!(
                "SELECT {COLUMNS} FROM provider_configs \
                 WHERE account = ?1 AND gateway = ?2 AND id = ?3"
            ),
            params![account, gateway, id],
            |row| from_row(row).map(|(config, _)| config),
        )
        .optional()
        .map_err(db_error)
    }

    fn delete_config(&self, account: &str, gateway: &str, id: &str) -> KilnResult<()> {
        self.execute(
            "DELETE FROM provider_configs WHERE account = ?1 AND gateway = ?2 AND id = ?3",
            params![account, gateway, id],
        )
        .map_err(db_error)
        .map(drop)
    }

    fn key_row(&self, lookup: &KeyLookup<'_>) -> KilnResult<Option<(ProviderConfig, String)>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM provider_configs
             WHERE account = ?1 AND gateway = ?2 AND provider_slug IN (?3, ?6)
               AND (alias = ?4 OR (?5 AND default_config = 1))
             ORDER BY alias = ?4 DESC, default_config DESC, rowid DESC LIMIT 1"
        );
        self.query_row(
            &sql,
            params![
                lookup.account,
                lookup.gateway,
                lookup.slugs[0],
                lookup.wanted,
                lookup.or_default,
                lookup.slugs[1]
            ],
            from_row,
        )
        .optional()
        .map_err(db_error)
    }
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ProviderConfig, String)> {
    let secret: String = row.get(5)?;
    let config = ProviderConfig {
        id: row.get(0)?,
        gateway: row.get(1)?,
        alias: row.get(2)?,
        provider_slug: row.get(3)?,
        default_config: row.get(4)?,
        secret_id: row.get(6)?,
        secret_preview: preview(&secret),
        rate_limit: row.get(7)?,
        rate_limit_period: row.get(8)?,
        modified_at: row.get(9)?,
    };
    Ok((config, secret))
}

pub(crate) fn not_found(id: &str) -> KilnError {
    KilnError::new(
        ErrorKind::NotFound,
        format!("no provider config with id {id:?} on this gateway"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Connection, &'static str, &'static str) {
        let db = Connection::open_in_memory().expect("db");
        gateways::create_schema(&db).expect("schema");
        create_schema(&db).expect("schema");
        gateways::create(&db, "acct", &json!({"id": "gw"})).expect("gateway");
        (db, "acct", "gw")
    }

    fn key(secret: &str, alias: &str, default: bool) -> Value {
        json!({"provider_slug": "custom-up", "alias": alias, "default_config": default,
               "secret": secret})
    }

    #[test]
    fn a_stored_key_is_never_shown_and_is_found_by_alias_or_default() {
        let (db, account, gateway) = store();
        let secret = "sk-live-0123456789abcdef";
        let created = create(&db, account, gateway, &key(secret, "prod", true)).expect("created");
        create(
            &db,
            account,
            gateway,
            &key("sk-other-0000000000000", "dev", false),
        )
        .expect("dev");
        assert_eq!(created.secret_preview, "sk-****cdef");
        let listed = list(&db, account, gateway).expect("list");
        assert_eq!(listed.len(), 2);
        assert!(!Value::from(
            listed
                .iter()
                .map(ProviderConfig::to_json)
                .collect::<Vec<_>>()
        )
        .to_string()
        .contains(secret));
        let by_default = key_for(&db, account, gateway, &["custom-up"], None).expect("lookup");
        assert_eq!(by_default.expect("default key").secret, secret);
        let by_alias = key_for(&db, account, gateway, &["custom-up"], Some("dev")).expect("lookup");
        assert_eq!(by_alias.expect("dev key").alias, "dev");
        let missing = key_for(&db, account, gateway, &["custom-up"], Some("nope"));
        assert_eq!(
            missing.expect_err("no such alias").kind,
            ErrorKind::BadInput
        );
        assert_eq!(
            key_for(&db, account, gateway, &["custom-other"], None).expect("lookup"),
            None
        );
    }

    #[test]
    fn one_key_per_provider_and_alias_and_bad_bodies_are_refused() {
        let (db, account, gateway) = store();
        create(&db, account, gateway, &key("k", "default", false)).expect("created");
        let again = create(&db, account, gateway, &key("k2", "default", false));
        assert_eq!(again.expect_err("duplicate").kind, ErrorKind::Conflict);
        for body in [
            json!({"provider_slug": "custom-up", "alias": "a"}),
            json!({"provider_slug": "custom-up", "alias": "a", "secret_id": "s"}),
            json!({"provider_slug": "bad slug", "alias": "a", "secret": "k"}),
            json!({"provider_slug": "x", "alias": "a", "secret": "k", "rate_limit": 5}),
            json!({"provider_slug": "x", "alias": "a", "secret": "k", "rate_limit": 0,
                   "rate_limit_period": 60}),
            json!([]),
        ] {
            let refused = create(&db, account, gateway, &body);
            assert_eq!(
                refused.expect_err("refused").kind,
                ErrorKind::BadInput,
                "{body}"
            );
        }
        let missing = create(&db, account, "no-gateway", &key("k", "b", false));
        assert_eq!(missing.expect_err("no gateway").kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_new_default_replaces_the_old_and_delete_removes() {
        let (db, account, gateway) = store();
        let first = create(
            &db,
            account,
            gateway,
            &key("first-key-0123456789", "a", true),
        )
        .expect("first");
        create(
            &db,
            account,
            gateway,
            &key("second-key-0123456789", "b", true),
        )
        .expect("second");
        let found = key_for(&db, account, gateway, &["custom-up"], None)
            .expect("lookup")
            .expect("a default");
        assert_eq!(found.alias, "b");
        delete(&db, account, gateway, &first.id).expect("deleted");
        assert_eq!(
            delete(&db, account, gateway, &first.id)
                .expect_err("gone")
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(list(&db, account, gateway).expect("list").len(), 1);
    }
}
