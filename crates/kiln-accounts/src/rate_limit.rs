//! Requests per minute per account and key (usually a model), with the Workers AI defaults.
//!
//! An exact sliding window: each (account, key) keeps the times of the requests it admitted in
//! the last 60 s. A full window admits nothing, so no deque grows past its limit. Held in
//! memory by default (a restart starts every window afresh), or in Redis (`--redis-url`,
//! [`redis`]) so that several Kiln nodes share each account's windows exactly.

mod redis;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_core::Task;

use crate::clock::Clock;

pub use self::redis::{purge_redis_prefix, RedisLimits};

const WINDOW_MS: i64 = 60_000;

/// The window for this (account, key) is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: u32,
    /// Seconds until the oldest admitted request leaves the window; at least 1.
    pub retry_after_secs: u64,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rate limit of {} requests per minute exceeded; retry in {} s",
            self.limit, self.retry_after_secs
        )
    }
}

impl std::error::Error for RateLimited {}

/// The shared windows (Redis) could not be read in time: the request is neither admitted nor
/// counted. Kiln answers 503 rather than admit traffic no node can count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterUnavailable(pub String);

impl fmt::Display for LimiterUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the shared rate-limit store is unavailable: {}", self.0)
    }
}

impl std::error::Error for LimiterUnavailable {}

/// Why [`RateLimiter::check_and_count`] did not admit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The window is full (429, 3021).
    Limited(RateLimited),
    /// The Redis backend failed or timed out (503).
    Unavailable(LimiterUnavailable),
}

impl Refused {
    /// The full window, if that is why; tests use it to read `retry_after_secs`.
    pub fn limited(self) -> Option<RateLimited> {
        match self {
            Refused::Limited(limited) => Some(limited),
            Refused::Unavailable(_) => None,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Limited(limited) => limited.fmt(f),
            Refused::Unavailable(down) => down.fmt(f),
        }
    }
}

impl std::error::Error for Refused {}

#[derive(Default)]
pub(crate) struct Windows {
    /// account → key → admitted request times (ms), oldest first.
    pub(crate) by_account: HashMap<String, HashMap<String, VecDeque<i64>>>,
    /// The limit last applied to each key (it depends on the key, not the account).
    limits: HashMap<String, u32>,
    last_sweep_ms: i64,
}

/// One (account, key) window as it stands: what `GET …/ai/usage` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WindowState {
    pub key: String,
    pub limit_per_minute: u32,
    pub requests_last_minute: usize,
}

pub struct RateLimiter {
    clock: Arc<dyn Clock>,
    /// The in-memory windows; unused (empty) while `redis` is set.
    pub(crate) windows: Mutex<Windows>,
    /// Windows shared by every node pointed at the same Redis and prefix.
    redis: Option<RedisLimits>,
}

impl RateLimiter {
    /// Windows in this process's memory.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let last_sweep_ms = clock.now_unix_ms();
        RateLimiter {
            clock,
            windows: Mutex::new(Windows {
                last_sweep_ms,
                ..Windows::default()
            }),
            redis: None,
        }
    }

    /// Windows in Redis, shared with every Kiln node using the same server and key prefix.
    pub fn with_redis(clock: Arc<dyn Clock>, redis: RedisLimits) -> Self {
        RateLimiter {
            redis: Some(redis),
            ..RateLimiter::new(clock)
        }
    }

    /// Where the windows live, for start-up logs: `memory` or the Redis server.
    pub fn backend(&self) -> String {
        self.redis
            .as_ref()
            .map_or_else(|| "memory".to_owned(), RedisLimits::describe)
    }

    /// Admits and counts one request, or refuses it (uncounted) when the last 60 s already
    /// hold `limit_per_minute` admitted requests. A limit of 0 means unlimited. With Redis,
    /// one round trip of at most the configured timeout; a failure refuses the request
    /// ([`Refused::Unavailable`]).
    pub fn check_and_count(
        &self,
        account_id: &str,
        key: &str,
        limit_per_minute: u32,
    ) -> Result<(), Refused> {
        if limit_per_minute == 0 {
            return Ok(());
        }
        let now = self.clock.now_unix_ms();
        if let Some(redis) = &self.redis {
            return redis.check_and_count(account_id, key, limit_per_minute, now);
        }
        self.check_and_count_in_memory(account_id, key, limit_per_minute, now)
            .map_err(Refused::Limited)
    }

    fn check_and_count_in_memory(
        &self,
        account_id: &str,
        key: &str,
        limit_per_minute: u32,
        now: i64,
    ) -> Result<(), RateLimited> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if now - windows.last_sweep_ms >= WINDOW_MS {
            windows.sweep(now);
        }
        let admitted = windows
            .by_account
            .entry(account_id.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default();
        prune(admitted, now);
        let limit = usize::try_from(limit_per_minute).unwrap_or(usize::MAX);
        if admitted.len() >= limit {
            // A lowered limit can leave more than `limit` entries: the one that must leave
            // for a slot to open is len - limit from the front.
            let blocking = admitted.get(admitted.len() - limit).copied().unwrap_or(now);
            let wait_ms = (blocking + WINDOW_MS - now).max(1);
            return Err(RateLimited {
                limit: limit_per_minute,
                retry_after_secs: u64::try_from(wait_ms).unwrap_or(1).div_ceil(1000).max(1),
            });
        }
        admitted.push_back(now);
        if windows.limits.get(key) != Some(&limit_per_minute) {
            windows.limits.insert(key.to_owned(), limit_per_minute);
        }
        Ok(())
    }

    /// The account's windows with requests in the last minute, by key.
    pub fn windows_of(&self, account_id: &str) -> Result<Vec<WindowState>, LimiterUnavailable> {
        let now = self.clock.now_unix_ms();
        if let Some(redis) = &self.redis {
            return redis.windows_of(account_id, now);
        }
        Ok(self.windows_in_memory(account_id, now))
    }

    fn windows_in_memory(&self, account_id: &str, now: i64) -> Vec<WindowState> {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Windows {
            by_account, limits, ..
        } = &mut *windows;
        let Some(keys) = by_account.get_mut(account_id) else {
            return Vec::new();
        };
        let mut states: Vec<WindowState> = keys
            .iter_mut()
            .filter_map(|(key, admitted)| {
                prune(admitted, now);
                (!admitted.is_empty()).then(|| WindowState {
                    key: key.clone(),
                    limit_per_minute: limits.get(key).copied().unwrap_or(0),
                    requests_last_minute: admitted.len(),
                })
            })
            .collect();
        states.sort_by(|a, b| a.key.cmp(&b.key));
        states
    }
}

impl Windows {
    /// Drops expired entries everywhere, and the windows and accounts left empty, so keys
    /// that stop being used do not hold memory.
    fn sweep(&mut self, now: i64) {
        self.last_sweep_ms = now;
        self.by_account.retain(|_, keys| {
            keys.retain(|_, admitted| {
                prune(admitted, now);
                !admitted.is_empty()
            });
            !keys.is_empty()
        });
    }
}

/// Removes the times that are 60 s or more in the past.
fn prune(admitted: &mut VecDeque<i64>, now: i64) {
    while admitted.front().is_some_and(|&t| now - t >= WINDOW_MS) {
        admitted.pop_front();
    }
}

/// The Workers AI per-minute default for a model of `task`, with its per-model exceptions.
pub fn default_limit_per_minute(task: Task, model: &str) -> u32 {
    let model_exception = match model {
        "@cf/baai/bge-large-en-v1.5" => Some(1500),
        "@cf/mistral/mistral-7b-instruct-v0.1-awq" => Some(400),
        "@cf/microsoft/phi-2" => Some(720),
        "@cf/qwen/qwen1.5-0.5b-chat" => Some(1500),
        "@cf/qwen/qwen1.5-1.8b-chat" => Some(720),
        "@cf/qwen/qwen1.5-14b-chat-awq" => Some(150),
        "@cf/tinyllama/tinyllama-1.1b-chat-v1.0" => Some(720),
        "@cf/runwayml/stable-diffusion-v1-5-img2img" => Some(1500),
        _ => None,
    };
    if let Some(limit) = model_exception {
        return limit;
    }
    match task {
        Task::SpeechRecognition => 720,
        Task::ImageClassification => 3000,
        Task::ImageToText => 720,
        Task::ObjectDetection => 3000,
        Task::Summarization => 1500,
        Task::TextClassification => 2000,
        Task::TextEmbeddings => 3000,
        Task::TextGeneration => 300,
        Task::TextToImage => 720,
        Task::Translation => 720,
        Task::TextToSpeech | Task::VoiceActivityDetection => 720,
    }
}
