//! Per-gateway (and per stored key) request rate limits (spec §4.11), held in memory: a restart
//! starts every window afresh, as a restarted Cloudflare colo would. In a cluster with Redis the
//! windows are in Redis (`redis.rs`), shared by every node; while Redis does not answer, each
//! node counts in its own memory again (so the limit holds per node rather than not at all).

mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use crate::cache::redis::RedisCache;
use crate::config::RateLimitTechnique;

/// A gateway's limit: `limit` requests per `interval_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub interval_secs: u64,
    pub technique: RateLimitTechnique,
}

enum Window {
    /// Counter of the current window, aligned to multiples of the interval since the epoch.
    Fixed { index: u64, count: u64 },
    /// Times (ms) of the requests admitted within the trailing interval; never longer than the
    /// limit, since a full window admits nothing.
    Sliding { admitted: VecDeque<u64> },
}

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<(String, String), (RateLimit, Window)>>,
    shared: Option<Arc<SharedWindows>>,
}

/// Rate-limit windows in Redis, shared by every node that uses the same server and prefix.
pub struct SharedWindows {
    redis: Arc<RedisCache>,
    scripts: redis::RedisWindows,
}

impl SharedWindows {
    /// Counts one request at `now_ms` against `limit` for `(account, window)`: `Ok(Ok(()))`
    /// admitted, `Ok(Err(seconds))` refused, `Err` when Redis did not answer (counted and
    /// warned; the caller counts on this node instead).
    pub fn admit(
        &self,
        account: &str,
        window: &str,
        limit: RateLimit,
        now_ms: u64,
    ) -> Result<Result<(), u64>, String> {
        let decided = self
            .scripts
            .admit(&self.redis, account, window, limit, now_ms);
        if let Err(error) = &decided {
            metrics::counter!("kiln_gateway_rate_limit_errors_total").increment(1);
            tracing::warn!("gateway rate limit in Redis failed, counted on this node: {error}");
        }
        decided
    }
}

impl RateLimiter {
    /// Windows in `redis`, shared by the nodes that use it.
    pub(crate) fn shared(redis: Arc<RedisCache>) -> Self {
        Self {
            windows: Mutex::default(),
            shared: Some(Arc::new(SharedWindows {
                redis,
                scripts: redis::RedisWindows::new(),
            })),
        }
    }

    /// The Redis windows, when this limiter has them (for dynamic routes' `rate` elements).
    pub(crate) fn shared_windows(&self) -> Option<Arc<SharedWindows>> {
        self.shared.clone()
    }

    /// Counts one request at `now_ms` against the gateway's limit. `Err` carries the seconds
    /// until a request would be admitted again.
    pub fn admit(
        &self,
        account: &str,
        gateway: &str,
        limit: RateLimit,
        now_ms: u64,
    ) -> Result<(), u64> {
        if let Some(shared) = &self.shared {
            if let Ok(decided) = shared.admit(account, gateway, limit, now_ms) {
                return decided;
            }
        }
        self.admit_here(account, gateway, limit, now_ms)
    }

    /// [`Self::admit`] in this process's memory.
    fn admit_here(
        &self,
        account: &str,
        gateway: &str,
        limit: RateLimit,
        now_ms: u64,
    ) -> Result<(), u64> {
        let interval_ms = limit.interval_secs.max(1) * 1000;
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (account.to_owned(), gateway.to_owned());
        let fresh = || match limit.technique {
            RateLimitTechnique::Fixed => Window::Fixed { index: 0, count: 0 },
            RateLimitTechnique::Sliding => Window::Sliding {
                admitted: VecDeque::new(),
            },
        };
        let entry = windows.entry(key).or_insert_with(|| (limit, fresh()));
        if entry.0 != limit {
            // The gateway's settings changed: start counting under the new ones.
            *entry = (limit, fresh());
        }
        match &mut entry.1 {
            Window::Fixed { index, count } => {
                let current = now_ms / interval_ms;
                if *index != current {
                    *index = current;
                    *count = 0;
                }
                if *count >= limit.limit {
                    let next_window_ms = (current + 1) * interval_ms;
                    return Err((next_window_ms - now_ms).div_ceil(1000));
                }
                *count += 1;
            }
            Window::Sliding { admitted } => {
                while admitted
                    .front()
                    .is_some_and(|&at| at + interval_ms <= now_ms)
                {
                    admitted.pop_front();
                }
                if admitted.len() as u64 >= limit.limit {
                    let oldest = admitted.front().copied().unwrap_or(now_ms);
                    return Err((oldest + interval_ms - now_ms).div_ceil(1000));
                }
                admitted.push_back(now_ms);
            }
        }
        Ok(())
    }

    /// Forgets a deleted gateway's window.
    pub fn forget(&self, account: &str, gateway: &str) {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(account.to_owned(), gateway.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(technique: RateLimitTechnique) -> RateLimit {
        RateLimit {
            limit: 3,
            interval_secs: 10,
            technique,
        }
    }

    #[test]
    fn fixed_window_resets_at_the_boundary() {
        let limiter = RateLimiter::default();
        let fixed = limit(RateLimitTechnique::Fixed);
        for at in [10_000, 12_000, 19_000] {
            assert!(limiter.admit("a", "g", fixed, at).is_ok());
        }
        assert_eq!(limiter.admit("a", "g", fixed, 19_500), Err(1));
        // A new aligned window admits at once, although 3 requests came within the last second.
        assert!(limiter.admit("a", "g", fixed, 20_000).is_ok());
        // Other gateways count separately.
        assert!(limiter.admit("a", "other", fixed, 19_500).is_ok());
    }

    #[test]
    fn sliding_window_counts_the_trailing_interval() {
        let limiter = RateLimiter::default();
        let sliding = limit(RateLimitTechnique::Sliding);
        for at in [10_000, 12_000, 19_000] {
            assert!(limiter.admit("a", "g", sliding, at).is_ok());
        }
        // No window boundary resets a sliding limit: the trailing 10 s still hold 3 requests.
        assert_eq!(limiter.admit("a", "g", sliding, 19_999), Err(1));
        // The first request leaves the window at 20 000.
        assert!(limiter.admit("a", "g", sliding, 20_000).is_ok());
        assert!(limiter.admit("a", "g", sliding, 21_000).is_err());
        assert!(limiter.admit("a", "g", sliding, 22_000).is_ok());
    }

    /// Two nodes' limiters on one Redis prefix (deleted afterwards).
    fn two_nodes() -> (RateLimiter, RateLimiter, String) {
        let url = std::env::var("KILN_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let prefix = format!("kiln-test-gw-rl:{}:", uuid::Uuid::new_v4().simple());
        let node = || RateLimiter::shared(Arc::new(RedisCache::new(&url, &prefix).unwrap()));
        (node(), node(), prefix)
    }

    fn forget_prefix(prefix: &str) {
        let url = std::env::var("KILN_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let _ = crate::cache::redis::purge_prefix(&url, prefix);
    }

    #[test]
    fn a_fixed_window_in_redis_counts_every_nodes_requests() {
        let (a, b, prefix) = two_nodes();
        let fixed = limit(RateLimitTechnique::Fixed);
        assert!(a.admit("a", "g", fixed, 10_000).is_ok());
        assert!(b.admit("a", "g", fixed, 12_000).is_ok());
        assert!(a.admit("a", "g", fixed, 19_000).is_ok());
        assert_eq!(b.admit("a", "g", fixed, 19_500), Err(1));
        assert!(a.admit("a", "g", fixed, 20_000).is_ok());
        assert!(b.admit("a", "other", fixed, 19_500).is_ok());
        // New settings, a new window.
        let more = RateLimit { limit: 5, ..fixed };
        assert!(b.admit("a", "g", more, 20_500).is_ok());
        forget_prefix(&prefix);
    }

    #[test]
    fn a_sliding_window_in_redis_counts_every_nodes_requests() {
        let (a, b, prefix) = two_nodes();
        let sliding = limit(RateLimitTechnique::Sliding);
        for (node, at) in [(&a, 10_000), (&b, 12_000), (&a, 19_000)] {
            assert!(node.admit("a", "g", sliding, at).is_ok());
        }
        assert_eq!(b.admit("a", "g", sliding, 19_999), Err(1));
        assert!(b.admit("a", "g", sliding, 20_000).is_ok());
        assert!(a.admit("a", "g", sliding, 21_000).is_err());
        assert!(a.admit("a", "g", sliding, 22_000).is_ok());
        forget_prefix(&prefix);
    }

    #[test]
    fn without_redis_each_node_counts_for_itself() {
        // A loopback port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let limiter = RateLimiter::shared(Arc::new(RedisCache::new(&url, "p:").unwrap()));
        let fixed = limit(RateLimitTechnique::Fixed);
        for at in [10_000, 12_000, 19_000] {
            assert!(limiter.admit("a", "g", fixed, at).is_ok());
        }
        assert_eq!(limiter.admit("a", "g", fixed, 19_500), Err(1));
    }

    /// Dynamic routes' `rate` elements count in the same Redis windows: a user's two requests
    /// allowed per window are two across the nodes, not two per node.
    #[test]
    fn a_route_rate_element_counts_across_nodes_in_redis() {
        use crate::dynamic_routes::{Live, RateRule, Surroundings};
        let (a, b, prefix) = two_nodes();
        let rule = RateRule {
            key: vec!["metadata".into(), "user".into()],
            limit: 2,
            window_secs: 10,
            technique: RateLimitTechnique::Fixed,
            cost: false,
        };
        let walk = |node: &RateLimiter| {
            Live::new("acct", "gw", "route-1", 10_000).with_shared(node.shared_windows())
        };
        assert!(walk(&a).admit("rate-1", &rule, "user-7"));
        assert!(walk(&b).admit("rate-1", &rule, "user-7"));
        assert!(
            !walk(&a).admit("rate-1", &rule, "user-7"),
            "the third in the window"
        );
        assert!(walk(&b).admit("rate-1", &rule, "user-8"), "another user");
        forget_prefix(&prefix);
    }
}
