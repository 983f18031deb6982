//! The counters of `rate` elements, held in memory like the gateway's own rate limits: a
//! restart starts every window afresh. In a cluster with Redis, a route's [`Live`] counts in the
//! gateway's Redis windows instead (shared by every node; exact, for `sliding` too), and here
//! again only while Redis does not answer.
//!
//! Each counted value (one user id, say) keeps the count of its current and previous window,
//! so memory is constant per value whatever the limit: a `fixed` limit counts the current
//! aligned window; a `sliding` one weighs the previous window by how much of it the trailing
//! interval still covers (Cloudflare's sliding-window estimate).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};

use super::graph::{RateRule, Surroundings};
use crate::limiter::SharedWindows;
use crate::{RateLimit, RateLimitTechnique};

/// Values counted at once over all routes; when full, windows that ended are dropped, and if
/// none have, every count starts afresh rather than memory growing without bound.
pub const MAX_COUNTERS: usize = 100_000;

/// Counted values longer than this are counted under their SHA-256.
const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Window {
    window_ms: u64,
    index: u64,
    current: u64,
    previous: u64,
}

#[derive(Default)]
pub struct Counters {
    windows: Mutex<HashMap<String, Window>>,
}

impl Counters {
    /// The counters every route of this process shares.
    pub fn shared() -> &'static Counters {
        static SHARED: OnceLock<Counters> = OnceLock::new();
        SHARED.get_or_init(Counters::default)
    }

    /// Counts one request under `key` at `now_ms`; `false` (and nothing counted) when `rule`'s
    /// limit is used up.
    pub fn admit(&self, key: &str, rule: &RateRule, now_ms: u64) -> bool {
        let window_ms = rule.window_secs.max(1) * 1000;
        let index = now_ms / window_ms;
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= MAX_COUNTERS && !windows.contains_key(key) {
            windows.retain(|_, w| w.index + 1 >= now_ms / w.window_ms);
            if windows.len() >= MAX_COUNTERS {
                windows.clear();
            }
        }
        let window = windows.entry(key.to_owned()).or_insert(Window {
            window_ms,
            index,
            current: 0,
            previous: 0,
        });
        if window.window_ms != window_ms {
            *window = Window {
                window_ms,
                index,
                current: 0,
                previous: 0,
            };
        }
        if window.index != index {
            window.previous = if window.index + 1 == index {
                window.current
            } else {
                0
            };
            window.current = 0;
            window.index = index;
        }
        let used = match rule.technique {
            RateLimitTechnique::Fixed => window.current as f64,
            RateLimitTechnique::Sliding => {
                let elapsed = (now_ms % window_ms) as f64 / window_ms as f64;
                window.previous as f64 * (1.0 - elapsed) + window.current as f64
            }
        };
        if used >= rule.limit as f64 {
            return false;
        }
        window.current += 1;
        true
    }
}

/// The surroundings of a request's walk: random percentage rolls and the shared counters,
/// scoped to one route of one gateway.
pub struct Live {
    account: String,
    scope: String,
    now_ms: u64,
    shared: Option<Arc<SharedWindows>>,
}

impl Live {
    /// Counting in this process (see [`crate::GatewayStore::route_surroundings`] for a store's).
    pub fn new(account: &str, gateway: &str, route_id: &str, now_ms: i64) -> Self {
        Self {
            account: account.to_owned(),
            scope: format!("{account}\n{gateway}\n{route_id}"),
            now_ms: now_ms.max(0) as u64,
            shared: None,
        }
    }

    /// Counting in `shared` windows when given.
    pub(crate) fn with_shared(mut self, shared: Option<Arc<SharedWindows>>) -> Self {
        self.shared = shared;
        self
    }
}

impl Surroundings for Live {
    fn roll(&mut self) -> f64 {
        // The low 53 bits of a v4 UUID are random (its version and variant bits are higher).
        let random = uuid::Uuid::new_v4().as_u128() as u64 & ((1u64 << 53) - 1);
        random as f64 / (1u64 << 53) as f64 * 100.0
    }

    fn admit(&mut self, element: &str, rule: &RateRule, key: &str) -> bool {
        // A key may be any part of the body: long ones are kept as their hash.
        let hashed;
        let key = if key.len() > MAX_KEY_BYTES {
            hashed = format!("sha256:{:x}", Sha256::digest(key.as_bytes()));
            &hashed
        } else {
            key
        };
        // The rule is part of the key: a new version with other limits counts afresh.
        let key = format!(
            "{}\n{element}\n{}/{}/{:?}\n{key}",
            self.scope, rule.limit, rule.window_secs, rule.technique
        );
        if let Some(shared) = &self.shared {
            let limit = RateLimit {
                limit: rule.limit,
                interval_secs: rule.window_secs,
                technique: rule.technique,
            };
            // Long keys are hashed again: Redis keys stay short whatever the scope holds.
            let window = format!("route:{:x}", Sha256::digest(key.as_bytes()));
            if let Ok(decided) = shared.admit(&self.account, &window, limit, self.now_ms) {
                return decided.is_ok();
            }
        }
        Counters::shared().admit(&key, rule, self.now_ms)
    }
}
