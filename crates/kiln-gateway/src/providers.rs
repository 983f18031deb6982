//! Custom providers (spec §4.12 `/custom-providers`): any OpenAI-compatible server, reached as
//! `custom-{slug}` through every gateway of the account.
//!
//! Cloudflare accepts only `https://` base URLs; Kiln also takes `http://`, because the servers
//! it fronts usually sit on the same machine or network.

use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomProvider {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub base_url: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default = "enabled")]
    pub enable: bool,
    #[serde(default)]
    pub beta: bool,
    #[serde(default)]
    pub curl_example: Option<String>,
    #[serde(default)]
    pub js_example: Option<String>,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub modified_at: String,
}

fn enabled() -> bool {
    true
}

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS custom_providers (
             account TEXT NOT NULL,
             slug TEXT NOT NULL,
             provider TEXT NOT NULL,
             PRIMARY KEY (account, slug)
         );",
    )
}

/// Reads a create or update body; `id` and timestamps are the server's.
fn from_body(body: &Value, id: String, created_at: String) -> KilnResult<CustomProvider> {
    let mut object = body
        .as_object()
        .cloned()
        .ok_or_else(|| invalid("the body must be a JSON object"))?;
    object.insert("id".into(), Value::String(id));
    object.insert("created_at".into(), Value::String(created_at));
    object.insert("modified_at".into(), Value::String(utc_timestamp()));
    let provider: CustomProvider = serde_json::from_value(Value::Object(object))
        .map_err(|e| invalid(&format!("invalid custom provider: {e}")))?;
    validate(&provider)?;
    Ok(provider)
}

fn validate(provider: &CustomProvider) -> KilnResult<()> {
    let slug_ok = !provider.slug.is_empty()
        && provider.slug.len() <= 64
        && provider
            .slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !slug_ok {
        return Err(invalid(&format!(
            "invalid slug {:?}: use 1–64 lowercase letters, digits, '-' and '_'",
            provider.slug
        )));
    }
    if provider.name.trim().is_empty() {
        return Err(invalid("'name' must not be empty"));
    }
    let rest = provider
        .base_url
        .strip_prefix("https://")
        .or_else(|| provider.base_url.strip_prefix("http://"));
    let host = rest.map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    if host.is_none_or(|host| host.is_empty() || host.contains(char::is_whitespace)) {
        return Err(invalid(&format!(
            "invalid base_url {:?}: it must be an http:// or https:// URL",
            provider.base_url
        )));
    }
    Ok(())
}

fn invalid(message: &str) -> KilnError {
    KilnError::new(ErrorKind::InvalidProvider, message)
}

fn not_found(what: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no custom provider {what:?}"))
}

/// Where custom providers are kept, one JSON text per (account, slug): SQLite (below) or
/// PostgreSQL (`backend::postgres::features`).
pub(crate) trait ProviderRows {
    /// `false` when the account already has a provider with this slug.
    fn insert_provider(&self, account: &str, slug: &str, text: &str) -> KilnResult<bool>;
    /// The account's providers, by slug.
    fn provider_texts(&self, account: &str) -> KilnResult<Vec<String>>;
    fn provider_text(&self, account: &str, slug: &str) -> KilnResult<Option<String>>;
    fn replace_provider(&self, account: &str, slug: &str, text: &str) -> KilnResult<()>;
    fn delete_provider(&self, account: &str, slug: &str) -> KilnResult<()>;
}

pub fn create<D: ProviderRows + ?Sized>(
    db: &D,
    account: &str,
    body: &Value,
) -> KilnResult<CustomProvider> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let provider = from_body(body, id, utc_timestamp())?;
    if !db.insert_provider(account, &provider.slug, &to_text(&provider))? {
        return Err(KilnError::new(
            ErrorKind::Conflict,
            format!(
                "a custom provider with slug {:?} already exists",
                provider.slug
            ),
        ));
    }
    Ok(provider)
}

pub fn list<D: ProviderRows + ?Sized>(db: &D, account: &str) -> KilnResult<Vec<CustomProvider>> {
    db.provider_texts(account)?
        .iter()
        .map(|text| from_text(text))
        .collect()
}

/// By id or by slug.
pub fn get<D: ProviderRows + ?Sized>(
    db: &D,
    account: &str,
    id_or_slug: &str,
) -> KilnResult<CustomProvider> {
    list(db, account)?
        .into_iter()
        .find(|p| p.id == id_or_slug || p.slug == id_or_slug)
        .ok_or_else(|| not_found(id_or_slug))
}

/// The enabled provider reached as `custom-{slug}`.
pub fn by_slug<D: ProviderRows + ?Sized>(
    db: &D,
    account: &str,
    slug: &str,
) -> KilnResult<Option<CustomProvider>> {
    db.provider_text(account, slug)?
        .map(|text| from_text(&text))
        .transpose()
        .map(|provider| provider.filter(|p| p.enable))
}

pub fn update<D: ProviderRows + ?Sized>(
    db: &D,
    account: &str,
    id_or_slug: &str,
    body: &Value,
) -> KilnResult<CustomProvider> {
    let current = get(db, account, id_or_slug)?;
    let mut merged = serde_json::to_value(&current).unwrap_or_default();
    if let (Value::Object(merged), Value::Object(changes)) = (&mut merged, body) {
        for (key, value) in changes {
            merged.insert(key.clone(), value.clone());
        }
    }
    let updated = from_body(&merged, current.id.clone(), current.created_at.clone())?;
    if updated.slug != current.slug {
        return Err(invalid("a custom provider's slug cannot change"));
    }
    db.replace_provider(account, &current.slug, &to_text(&updated))?;
    Ok(updated)
}

pub fn delete<D: ProviderRows + ?Sized>(
    db: &D,
    account: &str,
    id_or_slug: &str,
) -> KilnResult<CustomProvider> {
    let current = get(db, account, id_or_slug)?;
    db.delete_provider(account, &current.slug)?;
    Ok(current)
}

impl ProviderRows for Connection {
    fn insert_provider(&self, account: &str, slug: &str, text: &str) -> KilnResult<bool> {
        let inserted = self
            .execute(
                "INSERT OR IGNORE INTO custom_providers (account, slug, provider)
                 VALUES (?1, ?2, ?3)",
                params![account, slug, text],
            )
            .map_err(crate::db_error)?;
        Ok(inserted > 0)
    }

    fn provider_texts(&self, account: &str) -> KilnResult<Vec<String>> {
        let mut statement = self
            .prepare("SELECT provider FROM custom_providers WHERE account = ?1 ORDER BY slug")
            .map_err(crate::db_error)?;
        let rows = statement
            .query_map(params![account], |row| row.get::<_, String>(0))
            .map_err(crate::db_error)?;
        rows.map(|row| row.map_err(crate::db_error)).collect()
    }

    fn provider_text(&self, account: &str, slug: &str) -> KilnResult<Option<String>> {
        self.prepare_cached(
            "SELECT provider FROM custom_providers WHERE account = ?1 AND slug = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![account, slug], |row| row.get(0))
                .optional()
        })
        .map_err(crate::db_error)
    }

    fn replace_provider(&self, account: &str, slug: &str, text: &str) -> KilnResult<()> {
        self.execute(
            "UPDATE custom_providers SET provider = ?3 WHERE account = ?1 AND slug = ?2",
            params![account, slug, text],
        )
        .map_err(crate::db_error)
        .map(drop)
    }

    fn delete_provider(&self, account: &str, slug: &str) -> KilnResult<()> {
        self.execute(
            "DELETE FROM custom_providers WHERE account = ?1 AND slug = ?2",
            params![account, slug],
        )
        .map_err(crate::db_error)
        .map(drop)
    }
}

fn to_text(provider: &CustomProvider) -> String {
    serde_json::to_string(provider).unwrap_or_default()
}

fn from_text(text: &str) -> KilnResult<CustomProvider> {
    serde_json::from_str(text).map_err(|e| KilnError::internal(format!("stored provider: {e}")))
}
