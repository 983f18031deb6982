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
/// does not run: Logpush, billing, …); `guardrails`, `dlp` and `spend_limits` only while
/// switched off (see [`UNENFORCED`]).
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

/// Settings that promise protection Kiln does not give. Set to act, they are refused with
/// their name rather than stored and ignored: a gateway must not look guarded when it is not.
/// Switched off (`null`, `false`, `{"enabled": false}`, no actions) they are accepted.
const UNENFORCED: [(&str, &str); 3] = [
    (
        "guardrails",
        "Kiln does not evaluate prompts or responses with Llama Guard yet",
    ),
    ("dlp", "Kiln has no DLP profiles to scan requests with"),
    (
        "spend_limits",
        "Kiln does not stop a gateway at a spending limit yet",
    ),
];

fn refuse_unenforced(object: &serde_json::Map<String, Value>) -> KilnResult<()> {
    for (field, why) in UNENFORCED {
        if object.get(field).is_some_and(acts) {
            return Err(KilnError::bad_input(format!(
                "'{field}' is set to act, but {why}: refused rather than accepted and ignored \
                 (send it as null, false or {{\"enabled\": false}})"
            )));
        }
    }
    Ok(())
}

/// Whether a guardrails / DLP / spend-limit setting would do anything.
fn acts(setting: &Value) -> bool {
    match setting {
        Value::Null | Value::Bool(false) => false,
        Value::Bool(true) => true,
        Value::String(action) => {
            let action = action.to_ascii_uppercase();
            action == "BLOCK" || action == "FLAG"
        }
        Value::Number(_) => false,
        Value::Array(items) => items.iter().any(acts),
        Value::Object(fields) => match fields.get("enabled") {
            Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            _ => fields
                .iter()
                .filter(|(key, _)| key.as_str() != "enabled")
                .any(|(key, value)| {
                    // Spend rules name their limit as a number: any rule acts.
                    (key == "rules" && value.as_array().is_some_and(|r| !r.is_empty()))
                        || acts(value)
                }),
        },
    }
}

impl GatewayConfig {
    /// From a create or update body; unknown fields, wrong types and out-of-range values are a
    /// 400 naming the field.
    pub fn from_json(body: &Value) -> KilnResult<Self> {
        let object = body
            .as_object()
            .ok_or_else(|| KilnError::bad_input("the body must be a JSON object"))?;
        refuse_unenforced(object)?;
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
        // 0 is "no limit", as Cloudflare's Terraform and Pulumi examples send it.
        if let (Some(limit), None) = (self.rate_limiting_limit, self.rate_limiting_interval) {
            if limit > 0 {
                return out_of_range("rate_limiting_interval", "set with rate_limiting_limit");
            }
        }
        if self.log_management == Some(0) {
            return out_of_range("log_management", "at least 1, or null");
        }
        Ok(())
    }

    /// `(requests, seconds)` when the gateway limits its rate; `null` or 0 in either is off.
    pub fn rate_limit(&self) -> Option<(u64, u64)> {
        match (self.rate_limiting_limit, self.rate_limiting_interval) {
            (Some(limit), Some(interval)) if limit > 0 && interval > 0 => Some((limit, interval)),
            _ => None,
        }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_text(text: &str) -> KilnResult<Self> {
        serde_json::from_str(text)
            .map_err(|error| KilnError::internal(format!("stored gateway settings: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protection_that_is_not_enforced_is_refused_by_name() {
        for (field, setting) in [
            ("guardrails", json!({"prompt": {"S1": "BLOCK"}})),
            ("guardrails", json!({"response": {"S10": "FLAG"}})),
            ("guardrails", json!(true)),
            (
                "dlp",
                json!({"enabled": true, "action": "BLOCK", "profiles": ["p"]}),
            ),
            (
                "dlp",
                json!({"policies": [{"id": "x", "action": "FLAG", "check": ["REQUEST"]}]}),
            ),
            (
                "spend_limits",
                json!({"rules": [{"limit": 10, "limitType": "cost", "window": "daily"}]}),
            ),
            ("spend_limits", json!({"enabled": true})),
        ] {
            let error =
                GatewayConfig::from_json(&json!({"id": "g", field: setting})).expect_err("refused");
            assert_eq!(error.status(), 400);
            assert!(
                error.message.contains(&format!("'{field}'")),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn a_zero_rate_limit_is_no_rate_limit() {
        for body in [
            json!({"rate_limiting_limit": 0, "rate_limiting_interval": 0}),
            json!({"rate_limiting_limit": 0, "rate_limiting_interval": 60}),
            json!({"rate_limiting_limit": 100, "rate_limiting_interval": 0}),
            json!({"rate_limiting_limit": 0}),
        ] {
            let config = GatewayConfig::from_json(&body).expect("accepted");
            assert_eq!(config.rate_limit(), None, "{body}");
        }
        let config = GatewayConfig::from_json(
            &json!({"rate_limiting_limit": 10, "rate_limiting_interval": 60}),
        )
        .expect("accepted");
        assert_eq!(config.rate_limit(), Some((10, 60)));
        assert!(GatewayConfig::from_json(&json!({"rate_limiting_limit": 10})).is_err());
    }

    #[test]
    fn protection_switched_off_is_accepted() {
        for body in [
            json!({"guardrails": null, "dlp": null, "spend_limits": null}),
            json!({"dlp": {"enabled": false, "action": "BLOCK", "profiles": []}}),
            json!({"guardrails": {"prompt": {}, "response": {}}}),
            json!({"spend_limits": {"enabled": false, "rules": [{"limit": 1}]}}),
            json!({"spend_limits": {"rules": []}, "guardrails": false}),
        ] {
            assert!(GatewayConfig::from_json(&body).is_ok(), "{body}");
        }
    }
}
