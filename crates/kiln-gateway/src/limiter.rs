//! Per-gateway request rate limits (spec §4.11), held in memory: a restart starts every window
//! afresh, as a restarted Cloudflare colo would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

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
}

impl RateLimiter {
    /// Counts one request at `now_ms` against the gateway's limit. `Err` carries the seconds
    /// until a request would be admitted again.
    pub fn admit(
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
}
