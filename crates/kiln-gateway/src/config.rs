//! A gateway's settings (spec §4.12), with the bounds the API enforces.

use kiln_core::{KilnError, KilnResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest cache TTL: one month.
pub const MAX_CACHE_TTL_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Seconds responses stay cached; `null` disables caching.
    pub cache_ttl: Option<u64>,
    pub cache_invalidate_on_update: bool,
    pub collect_logs: bool,
    /// Requests allowed per `rate_limiting_interval` seconds; `null` disables the limit.
    pub rate_limiting_limit: Option<u64>,
    pub rate_limiting_interval: Option<u64>,
    pub rate_limiting_technique: RateLimitTechnique,
    /// Requests need `cf-aig-authorization`.
    pub authentication: bool,
    /// Logs kept; `null` is no cap.
    pub log_management: Option<u64>,
    pub log_management_strategy: LogStrategy,
    pub retry_max_attempts: u32,
    pub retry_delay: u32,
    pub retry_backoff: RetryBackoff,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            cache_ttl: None,
            cache_invalidate_on_update: false,
            collect_logs: true,
            rate_limiting_limit: None,
            rate_limiting_interval: None,
            rate_limiting_technique: RateLimitTechnique::Fixed,
            authentication: false,
            log_management: None,
            log_management_strategy: LogStrategy::StopInserting,
            retry_max_attempts: 1,
            retry_delay: 0,
            retry_backoff: RetryBackoff::Constant,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitTechnique {
    Fixed,
    Sliding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogStrategy {
    StopInserting,
    DeleteOldest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryBackoff {
    Constant,
    Linear,
    Exponential,
}

/// Fields of the Cloudflare object that Kiln accepts and ignores (they configure services Kiln
/// does not run: Logpush, DLP, billing, …).
const IGNORED_FIELDS: [&str; 14] = [
    "id",
    "logpush",
    "logpush_public_key",
    "store_id",
    "workers_ai_billing_mode",
    "zdr",
    "dlp",
    "guardrails",
    "otel",
    "spend_limits",
    "stripe",
    "is_default",
    "log_classification",
    "created_at",
];

impl GatewayConfig {
    /// From a create or update body; unknown fields, wrong types and out-of-range values are a
    /// 400 naming the field.
    pub fn from_json(body: &Value) -> KilnResult<Self> {
        let object = body
            .as_object()
            .ok_or_else(|| KilnError::bad_input("the body must be a JSON object"))?;
        let known: serde_json::Map<String, Value> = object
            .iter()
            .filter(|(key, _)| !IGNORED_FIELDS.contains(&key.as_str()) && *key != "modified_at")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let config: GatewayConfig = serde_json::from_value(Value::Object(known))
            .map_err(|error| KilnError::bad_input(format!("invalid gateway settings: {error}")))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> KilnResult<()> {
        let out_of_range = |field: &str, bounds: &str| {
            Err(KilnError::bad_input(format!("'{field}' must be {bounds}")))
        };
        if self.cache_ttl.is_some_and(|ttl| ttl > MAX_CACHE_TTL_SECS) {
            return out_of_range("cache_ttl", "at most 2592000 seconds (one month)");
        }
        if !(1..=5).contains(&self.retry_max_attempts) {
            return out_of_range("retry_max_attempts", "between 1 and 5");
        }
        if self.retry_delay > 5000 {
            return out_of_range("retry_delay", "between 0 and 5000 milliseconds");
        }
        match (self.rate_limiting_limit, self.rate_limiting_interval) {
            (Some(0), _) => return out_of_range("rate_limiting_limit", "at least 1"),
            (_, Some(0)) => return out_of_range("rate_limiting_interval", "at least 1 second"),
            (Some(_), None) => {
                return out_of_range("rate_limiting_interval", "set with rate_limiting_limit")
            }
            _ => {}
        }
        if self.log_management == Some(0) {
            return out_of_range("log_management", "at least 1, or null");
        }
        Ok(())
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_text(text: &str) -> KilnResult<Self> {
        serde_json::from_str(text)
            .map_err(|error| KilnError::internal(format!("stored gateway settings: {error}")))
    }
}
