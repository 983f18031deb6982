//! The response cache in Redis (`GatewayDb::Shared` with a Redis URL), shared by every node
//! pointed at the same server and key prefix.
//!
//! An entry is one string, `{prefix}e:{key as hex}`, holding the entry encoded as the journal
//! encodes it, set with its TTL (`PX`), so Redis drops it when it expires. Each gateway has a
//! sorted set, `{prefix}g:{account length}:{account}:{gateway}`, of its entries' keys scored by
//! their expiry: purging a gateway (`cache_invalidate_on_update`, deletion) deletes what it
//! lists. An entry and its index member are written by one Lua script, so a purge never misses
//! an entry that is in Redis; expired members leave the set at the gateway's next insert, and
//! the set itself expires with its longest-lived entry.
//!
//! Blocking client, with connect, read and write timeouts ([`DEFAULT_TIMEOUT`]), as
//! kiln-accounts' rate limits use it: lookups run on blocking threads already. A failed call
//! marks Redis down for [`BACKOFF`], during which lookups miss and stores are skipped at once,
//! so an outage costs each caller at most one timeout. A lookup that fails is a miss and a
//! warning, never an error; a purge that fails is an error (503), since stale answers would
//! otherwise be served.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, RedisResult, Script};
use kiln_core::{ErrorKind, KilnError, KilnResult};

use super::CacheEntry;
use crate::journal::{decode_cache_entry, encode_cache_entry};

/// The longest one Redis step (connect, send, answer) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a failed call keeps Redis marked down.
pub const BACKOFF: Duration = Duration::from_secs(1);
/// Idle connections kept for reuse; more are opened under load and closed after.
const POOL: usize = 16;
/// The first byte of every stored value: the encoding's version.
const FORMAT: u8 = 1;
/// Entries deleted per purge step: each step is one short script, so Redis is never held up.
const PURGE_STEP: usize = 500;
/// A purge gives up (with an error) after this long.
const PURGE_DEADLINE: Duration = Duration::from_secs(10);

/// KEYS: entry, gateway index. ARGV: value, TTL ms, now ms, expiry ms.
const STORE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
";

/// KEYS: gateway index. ARGV: how many. Deletes that many of the gateway's entries and their
/// index members; returns how many it took.
const PURGE: &str = r"
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #members > 0 then
  redis.call('DEL', unpack(members))
  redis.call('ZREM', KEYS[1], unpack(members))
end
return #members
";

pub(crate) struct RedisCache {
    client: Client,
    prefix: String,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    down_until: Mutex<Option<Instant>>,
    store: Script,
    purge: Script,
}

impl RedisCache {
    /// `url`: `redis://host:port[/db]` (or `rediss://`, `unix://`); `prefix` starts every key.
    /// Nothing is dialled yet.
    pub(crate) fn new(url: &str, prefix: &str) -> KilnResult<RedisCache> {
        let client = Client::open(url)
            .map_err(|error| KilnError::bad_input(format!("invalid Redis URL: {error}")))?;
        Ok(RedisCache {
            client,
            prefix: prefix.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            idle: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            store: Script::new(STORE),
            purge: Script::new(PURGE),
        })
    }

    /// What starts every key this store writes (the rate limits' too).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The server and prefix, without credentials, for logs.
    pub(crate) fn describe(&self) -> String {
        let info = self.client.get_connection_info();
        format!("redis {} (prefix {})", info.addr(), self.prefix)
    }

    /// Whether the server answers now (start-up check).
    pub(crate) fn ping(&self) -> Result<(), String> {
        self.with_connection(|connection| ::redis::cmd("PING").query::<String>(connection))
            .map(drop)
    }

    /// The live entry for `key`; a miss when there is none, or when Redis fails (warned).
    pub(crate) fn lookup(&self, key: &[u8; 32], now_ms: i64) -> Option<CacheEntry> {
        let stored: Option<Vec<u8>> = match self.with_connection(|connection| {
            ::redis::cmd("GET")
                .arg(self.entry_key(key))
                .query(connection)
        }) {
            Ok(stored) => stored,
            Err(error) => {
                metrics::counter!("kiln_gateway_cache_errors_total").increment(1);
                tracing::warn!("gateway cache lookup in Redis failed, a miss: {error}");
                return None;
            }
        };
        let entry = stored
            .as_deref()
            .and_then(|bytes| bytes.split_first())
            .filter(|(format, _)| **format == FORMAT)
            .and_then(|(_, encoded)| decode_cache_entry(encoded))?;
        (entry.key == *key && entry.expires_at_ms > now_ms).then_some(entry)
    }

    /// Stores each entry with the TTL it has left (expired ones are skipped). A failure is
    /// logged and counted: those entries are misses later.
    pub(crate) fn store<'a>(&self, entries: impl Iterator<Item = &'a CacheEntry>, now_ms: i64) {
        for entry in entries {
            let ttl_ms = entry.expires_at_ms.saturating_sub(now_ms);
            if ttl_ms <= 0 {
                continue;
            }
            let mut value = Vec::with_capacity(entry.body.len() + 128);
            value.push(FORMAT);
            value.extend_from_slice(&encode_cache_entry(entry));
            let stored = self.with_connection(|connection| {
                self.store
                    .key(self.entry_key(&entry.key))
                    .key(self.gateway_key(&entry.account, &entry.gateway))
                    .arg(value.as_slice())
                    .arg(ttl_ms)
                    .arg(now_ms)
                    .arg(entry.expires_at_ms)
                    .invoke::<i64>(connection)
            });
            if let Err(error) = stored {
                metrics::counter!("kiln_gateway_cache_errors_total").increment(1);
                tracing::warn!("gateway cache: storing an entry in Redis failed: {error}");
            }
        }
    }

    /// Deletes every entry of one gateway; returns how many. An error (503) when Redis does not
    /// answer: the entries may still be there.
    pub(crate) fn purge(&self, account: &str, gateway: &str) -> KilnResult<u64> {
        let index = self.gateway_key(account, gateway);
        let deadline = Instant::now() + PURGE_DEADLINE;
        let mut purged = 0u64;
        loop {
            let taken: usize = self
                .with_connection(|connection| {
                    self.purge.key(&index).arg(PURGE_STEP).invoke(connection)
                })
                .map_err(|error| unavailable(&format!("emptying the gateway's cache: {error}")))?;
            purged += taken as u64;
            if taken < PURGE_STEP {
                return Ok(purged);
            }
            if Instant::now() >= deadline {
                return Err(unavailable(
                    "emptying the gateway's cache took too long; try again",
                ));
            }
        }
    }

    fn entry_key(&self, key: &[u8; 32]) -> String {
        let mut name = String::with_capacity(self.prefix.len() + 66);
        name.push_str(&self.prefix);
        name.push_str("e:");
        for byte in key {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    /// The account's length keeps `("a:b", "c")` and `("a", "b:c")` apart.
    fn gateway_key(&self, account: &str, gateway: &str) -> String {
        format!("{}g:{}:{account}:{gateway}", self.prefix, account.len())
    }

    /// Runs `step` on a pooled connection (or a new one), within the timeout. A pooled
    /// connection the server has closed (idle timeout, restart) is replaced once; any other
    /// failure drops the connection and marks Redis down for [`BACKOFF`].
    pub(crate) fn with_connection<T>(
        &self,
        mut step: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, String> {
        let down_until = *self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if down_until.is_some_and(|until| Instant::now() < until) {
            return Err(format!(
                "Redis at {} failed less than a second ago",
                self.describe()
            ));
        }
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let reused = pooled.is_some();
        let mut result = match pooled {
            Some(connection) => Ok(connection),
            None => self.connect(),
        }
        .and_then(|mut connection| step(&mut connection).map(|value| (connection, value)));
        if reused && matches!(&result, Err(error) if error.is_connection_dropped()) {
            result = self
                .connect()
                .and_then(|mut connection| step(&mut connection).map(|value| (connection, value)));
        }
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
                Err(format!("{error} ({})", self.describe()))
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

fn unavailable(message: &str) -> KilnError {
    KilnError::new(
        ErrorKind::StorageUnavailable,
        format!("gateway cache (Redis): {message}"),
    )
    .with_retry_after(1)
}

/// `host:port`, without credentials.
pub(crate) fn describe_url(url: &str) -> String {
    match Client::open(url) {
        Ok(client) => client.get_connection_info().addr().to_string(),
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// Deletes every key under `prefix` (SCAN, never `KEYS`): tests' clean-up.
#[cfg(test)]
pub(crate) fn purge_prefix(url: &str, prefix: &str) -> Result<usize, String> {
    let cache = RedisCache::new(url, prefix).map_err(|error| error.message)?;
    let pattern = format!("{prefix}*");
    cache.with_connection(|connection| {
        let keys: Vec<String> = ::redis::cmd("SCAN")
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
        ::redis::cmd("DEL").arg(&keys).query(connection)
    })
}
