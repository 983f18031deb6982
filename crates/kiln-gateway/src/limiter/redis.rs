//! Rate-limit windows in Redis, shared by every node pointed at the same server and prefix, so
//! a gateway's limit holds across a cluster as on one node. Each admission is one Lua script,
//! atomic on the server:
//!
//! - fixed: a counter per aligned window, `{prefix}rl:f:{settings}:{who}:{index}`, expiring
//!   with its window; a refused request is not counted;
//! - sliding: a sorted set of the admitted requests' times, `{prefix}rl:s:{settings}:{who}`,
//!   trimmed to the trailing interval on each admission.
//!
//! The settings (limit and interval) are in the key, so changing them starts a fresh window, as
//! the in-memory limiter does. Times are the calling node's clock (nodes' clocks must agree, as
//! for the accounts' limits).

use ::redis::Script;

use super::RateLimit;
use crate::cache::redis::RedisCache;
use crate::config::RateLimitTechnique;

/// KEYS: the window's counter. ARGV: limit, TTL ms. 1 admitted, 0 refused.
const FIXED: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
if count == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// KEYS: the window's set. ARGV: limit, interval ms, now ms, member. -1 admitted, else the
/// time (ms) of the oldest request in the window.
const SLIDING: &str = r"
local now = tonumber(ARGV[3])
local interval = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - interval)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2])
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], interval)
return -1
";

pub(crate) struct RedisWindows {
    fixed: Script,
    sliding: Script,
}

impl RedisWindows {
    pub(crate) fn new() -> Self {
        Self {
            fixed: Script::new(FIXED),
            sliding: Script::new(SLIDING),
        }
    }

    /// Counts one request at `now_ms` against `limit` for `(account, window)`: `Ok(Ok(()))`
    /// admitted, `Ok(Err(seconds))` refused, `Err` when Redis did not answer.
    pub(crate) fn admit(
        &self,
        redis: &RedisCache,
        account: &str,
        window: &str,
        limit: RateLimit,
        now_ms: u64,
    ) -> Result<Result<(), u64>, String> {
        let interval_ms = limit.interval_secs.max(1) * 1000;
        // The account's length keeps ("a:b", "c") and ("a", "b:c") apart.
        let who = format!("{}:{account}:{window}", account.len());
        let settings = format!("{}:{}", limit.limit, limit.interval_secs);
        let prefix = redis.prefix();
        match limit.technique {
            RateLimitTechnique::Fixed => {
                let index = now_ms / interval_ms;
                let key = format!("{prefix}rl:f:{settings}:{who}:{index}");
                let admitted: i64 = redis.with_connection(|connection| {
                    self.fixed
                        .key(&key)
                        .arg(limit.limit)
                        .arg(interval_ms + 1000)
                        .invoke(connection)
                })?;
                Ok(if admitted == 1 {
                    Ok(())
                } else {
                    Err(((index + 1) * interval_ms - now_ms).div_ceil(1000))
                })
            }
            RateLimitTechnique::Sliding => {
                let key = format!("{prefix}rl:s:{settings}:{who}");
                let member = format!("{now_ms}:{}", uuid::Uuid::new_v4().simple());
                let oldest: i64 = redis.with_connection(|connection| {
                    self.sliding
                        .key(&key)
                        .arg(limit.limit)
                        .arg(interval_ms)
                        .arg(now_ms)
                        .arg(&member)
                        .invoke(connection)
                })?;
                Ok(match u64::try_from(oldest) {
                    Err(_) => Ok(()),
                    Ok(oldest) => Err((oldest + interval_ms)
                        .saturating_sub(now_ms)
                        .div_ceil(1000)
                        .max(1)),
                })
            }
        }
    }
}
