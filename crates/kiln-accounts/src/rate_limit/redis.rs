//! The requests-per-minute windows in Redis (`--redis-url`), shared exactly by every Kiln node
//! pointed at the same server and key prefix (issue #21).
//!
//! Each (account, key) window is a sorted set of admitted requests scored by their time in ms.
//! Admission is one Lua script, atomic on the server: drop the entries 60 s old or more, count,
//! add a unique member when under the limit (else answer the wait until the entry that must
//! leave does), refresh the set's expiry. Two nodes can never both take the last slot. A hash per
//! account maps its window keys to their limits, so `GET …/ai/usage` reads the account's windows
//! without scanning the keyspace.
//!
//! The time is the node's injected [`Clock`](crate::Clock), passed to the script, not Redis
//! `TIME`: tests that move time keep working, and the memory backend's semantics carry over.
//! The trade-off: nodes' clocks must agree (NTP). A node running `s` seconds fast sees other
//! nodes' entries as `s` seconds older (admitting early by up to `s`), one running slow keeps
//! them longer; the count itself stays exact, only the window's edges shift by the skew.
//!
//! Blocking client, not async: `check_and_count` is called from `Platform::admit`, a
//! synchronous function shared by a dozen handlers and a WebSocket path. A round trip to a
//! nearby Redis takes about as long as the SQLite reads `admit` already makes, so it runs in
//! place, on a small pool of connections with connect, read and write timeouts
//! ([`DEFAULT_TIMEOUT`]). A failed call marks Redis down for [`BACKOFF`]: meanwhile requests
//! are refused at once without touching the network, so an outage cannot park runtime threads.
//! A refusal is [`Refused::Unavailable`] (503), never a silent admission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisResult, Script};

use super::{LimiterUnavailable, RateLimited, Refused, WindowState, WINDOW_MS};

/// The longest one Redis step (connect, send, answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a failed call keeps Redis marked down.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// Idle connections kept for reuse; more are opened under load and closed after.
const POOL: usize = 16;

/// KEYS: window set, account hash. ARGV: now ms, window ms, limit, unique member, window key.
/// Returns {1, 0} when admitted, {0, wait ms} when full.
const ADMIT: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local blocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  local at = tonumber(blocking[2]) or now
  local wait = at + window - now
  if wait < 1 then wait = 1 end
  return {0, wait}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3])
redis.call('PEXPIRE', KEYS[2], window)
return {1, 0}
";

/// A connection to the shared windows.
pub struct RedisLimits {
    client: Client,
    prefix: String,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    down_until: Mutex<Option<Instant>>,
    /// Makes members unique across nodes and requests of the same millisecond.
    node: u64,
    sequence: AtomicU64,
    admit: Script,
}

impl RedisLimits {
    /// The production key prefix.
    pub const DEFAULT_PREFIX: &'static str = "kiln:rl:";

    /// `url`: `redis://host:port[/db]` (or `rediss://`, `unix://`); `prefix` starts every key
    /// ([`Self::DEFAULT_PREFIX`] in production, a random one in tests). Nothing is dialled yet.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = Client::open(url).map_err(|error| format!("invalid Redis URL: {error}"))?;
        Ok(Self {
            client,
            prefix: prefix.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            idle: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            node: rand::random(),
            sequence: AtomicU64::new(0),
            admit: Script::new(ADMIT),
        })
    }

    /// Overrides [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server and prefix, without credentials, for logs.
    pub fn describe(&self) -> String {
        let info = self.client.get_connection_info();
        format!("redis {} (prefix {})", info.addr(), self.prefix)
    }

    /// Answers whether the server is reachable now (start-up check).
    pub fn ping(&self) -> Result<(), LimiterUnavailable> {
        self.with_connection(|connection| redis::cmd("PING").query::<String>(connection))
            .map(drop)
    }

    pub(super) fn check_and_count(
        &self,
        account_id: &str,
        key: &str,
        limit_per_minute: u32,
        now: i64,
    ) -> Result<(), Refused> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let member = format!("{now}-{:016x}-{sequence}", self.node);
        let (admitted, wait_ms): (i64, i64) = self
            .with_connection(|connection| {
                self.admit
                    .key(self.window_key(account_id, key))
                    .key(self.account_key(account_id))
                    .arg(now)
                    .arg(WINDOW_MS)
                    .arg(limit_per_minute)
                    .arg(&member)
                    .arg(key)
                    .invoke(connection)
            })
            .map_err(Refused::Unavailable)?;
        if admitted == 1 {
            return Ok(());
        }
        Err(Refused::Limited(RateLimited {
            limit: limit_per_minute,
            retry_after_secs: u64::try_from(wait_ms.max(1))
                .unwrap_or(1)
                .div_ceil(1000)
                .max(1),
        }))
    }

    pub(super) fn windows_of(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<Vec<WindowState>, LimiterUnavailable> {
        let limits: Vec<(String, u32)> = self.with_connection(|connection| {
            redis::cmd("HGETALL")
                .arg(self.account_key(account_id))
                .query(connection)
        })?;
        if limits.is_empty() {
            return Ok(Vec::new());
        }
        let counts: Vec<usize> = self.with_connection(|connection| {
            let mut pipe = redis::pipe();
            for (key, _) in &limits {
                // Entries at now - 60 s or earlier have left the window (as in memory).
                pipe.cmd("ZCOUNT")
                    .arg(self.window_key(account_id, key))
                    .arg(format!("({}", now - WINDOW_MS))
                    .arg("+inf");
            }
            pipe.query(connection)
        })?;
        let mut states: Vec<WindowState> = limits
            .into_iter()
            .zip(counts)
            .filter(|(_, count)| *count > 0)
            .map(
                |((key, limit_per_minute), requests_last_minute)| WindowState {
                    key,
                    limit_per_minute,
                    requests_last_minute,
                },
            )
            .collect();
        states.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(states)
    }

    /// The hash of the account's window keys → their limits.
    fn account_key(&self, account_id: &str) -> String {
        format!("{}a:{account_id}", self.prefix)
    }

    /// One window's sorted set. The account's length keeps `("a:b", "c")` and `("a", "b:c")`
    /// apart.
    fn window_key(&self, account_id: &str, key: &str) -> String {
        format!("{}w:{}:{account_id}:{key}", self.prefix, account_id.len())
    }

    /// Runs `step` on a pooled connection (or a new one), within the timeout. Any failure
    /// drops the connection and marks Redis down for [`BACKOFF`].
    fn with_connection<T>(
        &self,
        step: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, LimiterUnavailable> {
        let down_until = *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if down_until.is_some_and(|until| Instant::now() < until) {
            return Err(LimiterUnavailable(
                "Redis failed less than a second ago".to_owned(),
            ));
        }
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let result = match pooled {
            Some(connection) => Ok(connection),
            None => self.connect(),
        }
        .and_then(|mut connection| step(&mut connection).map(|value| (connection, value)));
        match result {
            Ok((connection, value)) => {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < POOL {
                    idle.push(connection);
                }
                Ok(value)
            }
            Err(error) => {
                *self
                    .down_until
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + BACKOFF);
                tracing::warn!(%error, "rate limits: Redis call failed; refusing requests for 1 s");
                Err(LimiterUnavailable(error.to_string()))
            }
        }
    }

    fn connect(&self) -> RedisResult<Connection> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }
}

/// Deletes every key under `prefix` (SCAN, never `KEYS`): tests' clean-up, or an operator
/// resetting the windows. Windows also expire by themselves 60 s after their last request.
pub fn purge_redis_prefix(url: &str, prefix: &str) -> Result<usize, String> {
    let limits = RedisLimits::new(url, prefix)?;
    let pattern = format!("{prefix}*");
    limits
        .with_connection(|connection| {
            let keys: Vec<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter(connection)?
                .collect::<RedisResult<_>>()?;
            if keys.is_empty() {
                return Ok(0);
            }
            redis::cmd("DEL").arg(&keys).query(connection)
        })
        .map_err(|error| error.to_string())
}
