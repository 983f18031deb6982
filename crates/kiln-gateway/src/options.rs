//! The `cf-aig-*` request headers (spec §4.3), parsed once per request or universal step.
//! Bad values are a 400 naming the header, never silently ignored.

use std::time::Duration;

use kiln_core::{KilnError, KilnResult};
use serde_json::{Map, Value};

use crate::cache::CUSTOM_KEY_DEFAULT_TTL_SECS;
use crate::config::{GatewayConfig, RetryBackoff, MAX_CACHE_TTL_SECS};

/// Entries of `cf-aig-metadata` kept; later ones are ignored, as Cloudflare does.
pub const MAX_METADATA_ENTRIES: usize = 5;
const MIN_CACHE_TTL_SECS: u64 = 60;

/// Overrides the response's cost (spec §4.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CustomCost {
    PerToken { input: f64, output: f64 },
    Total(f64),
}

impl CustomCost {
    pub fn cost(self, tokens_in: u64, tokens_out: u64) -> f64 {
        match self {
            Self::PerToken { input, output } => {
                tokens_in as f64 * input + tokens_out as f64 * output
            }
            Self::Total(total) => total,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestOptions {
    /// The token of `cf-aig-authorization: Bearer <token>`.
    pub authorization: Option<String>,
    /// `cf-aig-cache-ttl`; `Some(0)` turns caching off for the request.
    pub cache_ttl: Option<u64>,
    pub skip_cache: bool,
    pub cache_key: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub collect_log: Option<bool>,
    pub event_id: Option<String>,
    pub custom_cost: Option<CustomCost>,
    /// Time allowed until the provider's first byte.
    pub request_timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub retry_delay_ms: Option<u32>,
    pub backoff: Option<RetryBackoff>,
}

impl RequestOptions {
    /// Reads every `cf-aig-*` header (and the old `cf-cache-ttl` / `cf-skip-cache` names) from
    /// `headers`; later pairs override earlier ones, so a universal step's own headers can be
    /// appended after the request's.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> KilnResult<Self> {
        let mut options = Self::default();
        for (name, value) in headers {
            options.apply(&name.to_ascii_lowercase(), value.trim())?;
        }
        Ok(options)
    }

    fn apply(&mut self, name: &str, value: &str) -> KilnResult<()> {
        match name {
            "cf-aig-authorization" => {
                self.authorization = value
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, token)| token.trim().to_owned())
                    .filter(|token| !token.is_empty());
            }
            "cf-aig-cache-ttl" | "cf-cache-ttl" => {
                let ttl: u64 = number(name, value)?;
                if ttl != 0 && !(MIN_CACHE_TTL_SECS..=MAX_CACHE_TTL_SECS).contains(&ttl) {
                    return Err(invalid(
                        name,
                        "must be 0 (no caching) or between 60 and 2592000 seconds",
                    ));
                }
                self.cache_ttl = Some(ttl);
            }
            "cf-aig-skip-cache" | "cf-skip-cache" => self.skip_cache = boolean(name, value)?,
            "cf-aig-cache-key" => {
                if value.is_empty() {
                    return Err(invalid(name, "must not be empty"));
                }
                self.cache_key = Some(value.to_owned());
            }
            "cf-aig-metadata" => self.metadata = Some(metadata(value)?),
            "cf-aig-collect-log" => self.collect_log = Some(boolean(name, value)?),
            "cf-aig-event-id" => self.event_id = Some(value.to_owned()),
            "cf-aig-custom-cost" => self.custom_cost = Some(custom_cost(value)?),
            "cf-aig-request-timeout" => {
                self.request_timeout = Some(Duration::from_millis(number(name, value)?));
            }
            "cf-aig-max-attempts" => {
                let attempts: u32 = number(name, value)?;
                if !(1..=5).contains(&attempts) {
                    return Err(invalid(name, "must be between 1 and 5"));
                }
                self.max_attempts = Some(attempts);
            }
            "cf-aig-retry-delay" => {
                let delay: u32 = number(name, value)?;
                if delay > 5000 {
                    return Err(invalid(name, "must be at most 5000 milliseconds"));
                }
                self.retry_delay_ms = Some(delay);
            }
            "cf-aig-backoff" => {
                self.backoff = Some(match value.to_ascii_lowercase().as_str() {
                    "constant" => RetryBackoff::Constant,
                    "linear" => RetryBackoff::Linear,
                    "exponential" => RetryBackoff::Exponential,
                    _ => return Err(invalid(name, "must be constant, linear or exponential")),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Seconds to cache this request's response, or `None` for no caching.
    pub fn cache_ttl_secs(&self, gateway: &GatewayConfig) -> Option<u64> {
        if self.skip_cache {
            return None;
        }
        match self.cache_ttl {
            Some(0) => None,
            Some(ttl) => Some(ttl),
            None => gateway
                .cache_ttl
                .filter(|&ttl| ttl > 0)
                .or(self.cache_key.as_ref().map(|_| CUSTOM_KEY_DEFAULT_TTL_SECS)),
        }
    }

    pub fn collects_log(&self, gateway: &GatewayConfig) -> bool {
        self.collect_log.unwrap_or(gateway.collect_logs)
    }

    /// The retry plan: request headers first, then the gateway's settings.
    pub fn retries(&self, gateway: &GatewayConfig) -> RetryPlan {
        RetryPlan {
            attempts: self
                .max_attempts
                .unwrap_or(gateway.retry_max_attempts)
                .max(1),
            delay_ms: self.retry_delay_ms.unwrap_or(gateway.retry_delay),
            backoff: self.backoff.unwrap_or(gateway.retry_backoff),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPlan {
    pub attempts: u32,
    pub delay_ms: u32,
    pub backoff: RetryBackoff,
}

impl RetryPlan {
    /// The pause before retry number `retry` (1 for the first retry).
    pub fn delay_before(&self, retry: u32) -> Duration {
        let base = u64::from(self.delay_ms);
        let millis = match self.backoff {
            RetryBackoff::Constant => base,
            RetryBackoff::Linear => base * u64::from(retry),
            RetryBackoff::Exponential => base << retry.saturating_sub(1).min(16),
        };
        Duration::from_millis(millis)
    }
}

fn invalid(header: &str, rule: &str) -> KilnError {
    KilnError::bad_input(format!("header {header} {rule}"))
}

fn number<T: std::str::FromStr>(header: &str, value: &str) -> KilnResult<T> {
    value
        .parse()
        .map_err(|_| invalid(header, &format!("must be a whole number, not {value:?}")))
}

fn boolean(header: &str, value: &str) -> KilnResult<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(header, "must be true or false")),
    }
}

fn metadata(value: &str) -> KilnResult<Map<String, Value>> {
    let header = "cf-aig-metadata";
    let Ok(Value::Object(entries)) = serde_json::from_str::<Value>(value) else {
        return Err(invalid(header, "must be a JSON object"));
    };
    let mut kept = Map::new();
    for (key, value) in entries.into_iter().take(MAX_METADATA_ENTRIES) {
        if !(value.is_string() || value.is_number() || value.is_boolean()) {
            return Err(invalid(
                header,
                &format!("values must be strings, numbers or booleans ({key:?} is not)"),
            ));
        }
        kept.insert(key, value);
    }
    Ok(kept)
}

fn custom_cost(value: &str) -> KilnResult<CustomCost> {
    let header = "cf-aig-custom-cost";
    let parsed: Value =
        serde_json::from_str(value).map_err(|_| invalid(header, "must be a JSON object"))?;
    let field = |name: &str| parsed.get(name).map(|v| v.as_f64().filter(|x| *x >= 0.0));
    match (
        field("total_cost"),
        field("per_token_in"),
        field("per_token_out"),
    ) {
        (Some(Some(total)), None, None) => Ok(CustomCost::Total(total)),
        (None, input, output) if input.is_some() || output.is_some() => {
            match (input.unwrap_or(Some(0.0)), output.unwrap_or(Some(0.0))) {
                (Some(input), Some(output)) => Ok(CustomCost::PerToken { input, output }),
                _ => Err(invalid(header, "costs must be non-negative numbers")),
            }
        }
        _ => Err(invalid(
            header,
            "must be {\"per_token_in\": n, \"per_token_out\": n} or {\"total_cost\": n}",
        )),
    }
}

#[cfg(test)]
mod tests;
