//! The limiter's cases run against both backends: in memory and in Redis (`mod redis` below;
//! the Redis at `KILN_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`, under a random key
//! prefix deleted afterwards).

use std::sync::Arc;
use std::time::Duration;

use kiln_core::Task;

use crate::{
    default_limit_per_minute, purge_redis_prefix, Clock, ManualClock, RateLimited, RateLimiter,
    RedisLimits, Refused,
};

/// A limiter on a clock the test moves, and the Redis prefix to delete when done.
struct Fixture {
    clock: Arc<ManualClock>,
    limiter: RateLimiter,
    redis_prefix: Option<String>,
}

fn redis_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn random_prefix() -> String {
    format!("kiln-test:{:016x}:", rand::random::<u64>())
}

impl Fixture {
    fn memory() -> Self {
        let clock = Arc::new(ManualClock::at(1_700_000_000_000));
        let limiter = RateLimiter::new(clock.clone() as Arc<dyn Clock>);
        Fixture {
            clock,
            limiter,
            redis_prefix: None,
        }
    }

    fn redis() -> Self {
        let clock = Arc::new(ManualClock::at(1_700_000_000_000));
        let prefix = random_prefix();
        let limiter = redis_limiter(&clock, &prefix);
        Fixture {
            clock,
            limiter,
            redis_prefix: Some(prefix),
        }
    }
}

fn redis_limiter(clock: &Arc<ManualClock>, prefix: &str) -> RateLimiter {
    let redis = RedisLimits::new(&redis_url(), prefix).expect("Redis URL");
    redis
        .ping()
        .expect("Redis must run for these tests (KILN_TEST_REDIS_URL)");
    RateLimiter::with_redis(clock.clone() as Arc<dyn Clock>, redis)
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(prefix) = &self.redis_prefix {
            let _ = purge_redis_prefix(&redis_url(), prefix);
        }
    }
}

/// The refusal of a full window (not of an unavailable backend).
fn full(refused: Refused) -> RateLimited {
    refused
        .limited()
        .expect("a full window, not a Redis failure")
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $case() {
                super::$case(&super::Fixture::memory());
            })*
        }
        mod redis {
            $(#[test]
            fn $case() {
                super::$case(&super::Fixture::redis());
            })*
        }
    };
}

on_both_backends!(
    the_301st_request_in_a_minute_is_refused_until_the_window_moves,
    retry_after_is_at_least_one_second,
    accounts_and_keys_are_independent,
    zero_means_unlimited,
    a_lowered_limit_waits_for_the_entry_that_must_leave,
    an_accounts_windows_show_their_limit_and_the_requests_of_the_last_minute,
);

fn the_301st_request_in_a_minute_is_refused_until_the_window_moves(f: &Fixture) {
    let (clock, limiter) = (&f.clock, &f.limiter);
    for _ in 0..300 {
        limiter.check_and_count("a", "m", 300).unwrap();
        clock.advance(Duration::from_millis(100)); // 300 requests over 30 s
    }
    let refused = full(limiter.check_and_count("a", "m", 300).unwrap_err());
    assert_eq!(refused.limit, 300);
    // The first request was 30 s ago: it leaves the window in 30 s.
    assert_eq!(refused.retry_after_secs, 30);
    assert!((1..=60).contains(&refused.retry_after_secs));
    // Refusals are not counted: one slot opens as soon as the oldest leaves.
    clock.advance(Duration::from_secs(30));
    limiter.check_and_count("a", "m", 300).unwrap();
    assert!(limiter.check_and_count("a", "m", 300).is_err());
    clock.advance(Duration::from_secs(60));
    for _ in 0..300 {
        limiter.check_and_count("a", "m", 300).unwrap();
    }
}

fn retry_after_is_at_least_one_second(f: &Fixture) {
    let (clock, limiter) = (&f.clock, &f.limiter);
    limiter.check_and_count("a", "m", 1).unwrap();
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(
        full(limiter.check_and_count("a", "m", 1).unwrap_err()).retry_after_secs,
        1
    );
    clock.advance(Duration::from_millis(1));
    limiter.check_and_count("a", "m", 1).unwrap();
    assert_eq!(
        full(limiter.check_and_count("a", "m", 1).unwrap_err()).retry_after_secs,
        60
    );
}

fn accounts_and_keys_are_independent(f: &Fixture) {
    let limiter = &f.limiter;
    for _ in 0..5 {
        limiter.check_and_count("a", "m1", 5).unwrap();
    }
    assert!(limiter.check_and_count("a", "m1", 5).is_err());
    limiter.check_and_count("a", "m2", 5).unwrap();
    limiter.check_and_count("b", "m1", 5).unwrap();
}

fn zero_means_unlimited(f: &Fixture) {
    let limiter = &f.limiter;
    for _ in 0..10_000 {
        limiter.check_and_count("a", "m", 0).unwrap();
    }
}

fn a_lowered_limit_waits_for_the_entry_that_must_leave(f: &Fixture) {
    let (clock, limiter) = (&f.clock, &f.limiter);
    for _ in 0..4 {
        limiter.check_and_count("a", "m", 4).unwrap();
        clock.advance(Duration::from_secs(10));
    }
    // Entries at 0, 10, 20, 30 s; now 40 s. With a limit of 2, the entry at 20 s must leave.
    let refused = full(limiter.check_and_count("a", "m", 2).unwrap_err());
    assert_eq!((refused.limit, refused.retry_after_secs), (2, 40));
}

#[test]
fn idle_windows_are_swept() {
    let f = Fixture::memory();
    let (clock, limiter) = (&f.clock, &f.limiter);
    for account in 0..100 {
        limiter
            .check_and_count(&account.to_string(), "m", 10)
            .unwrap();
    }
    clock.advance(Duration::from_secs(61));
    limiter.check_and_count("fresh", "m", 10).unwrap();
    let windows = limiter.windows.lock().unwrap();
    assert_eq!(windows.by_account.len(), 1);
}

#[test]
fn workers_ai_defaults() {
    assert_eq!(
        default_limit_per_minute(Task::TextGeneration, "@cf/meta/llama-3.1-8b-instruct"),
        300
    );
    assert_eq!(
        default_limit_per_minute(Task::TextGeneration, "@cf/qwen/qwen1.5-14b-chat-awq"),
        150
    );
    assert_eq!(
        default_limit_per_minute(
            Task::TextGeneration,
            "@cf/mistral/mistral-7b-instruct-v0.1-awq"
        ),
        400
    );
    assert_eq!(
        default_limit_per_minute(Task::TextEmbeddings, "@cf/baai/bge-base-en-v1.5"),
        3000
    );
    assert_eq!(
        default_limit_per_minute(Task::TextEmbeddings, "@cf/baai/bge-large-en-v1.5"),
        1500
    );
    assert_eq!(
        default_limit_per_minute(
            Task::TextToImage,
            "@cf/runwayml/stable-diffusion-v1-5-img2img"
        ),
        1500
    );
    assert_eq!(default_limit_per_minute(Task::TextToImage, "@cf/x/y"), 720);
    assert_eq!(
        default_limit_per_minute(Task::TextClassification, "@cf/x/y"),
        2000
    );
    assert_eq!(
        default_limit_per_minute(Task::Summarization, "@cf/x/y"),
        1500
    );
    assert_eq!(
        default_limit_per_minute(Task::ObjectDetection, "@cf/x/y"),
        3000
    );
    assert_eq!(default_limit_per_minute(Task::TextToSpeech, "@cf/x/y"), 720);
    assert_eq!(
        default_limit_per_minute(Task::VoiceActivityDetection, "@cf/x/y"),
        720
    );
}

fn an_accounts_windows_show_their_limit_and_the_requests_of_the_last_minute(f: &Fixture) {
    let (clock, limiter) = (&f.clock, &f.limiter);
    for _ in 0..3 {
        limiter.check_and_count("a", "m", 300).unwrap();
        clock.advance(Duration::from_secs(20));
    }
    limiter
        .check_and_count("a", "Text Embeddings", 3000)
        .unwrap();
    limiter.check_and_count("b", "m", 300).unwrap();
    let state = |key: &str, limit, count| crate::WindowState {
        key: key.into(),
        limit_per_minute: limit,
        requests_last_minute: count,
    };
    // The first request to `m` was 60 s ago: it has left the window.
    assert_eq!(
        limiter.windows_of("a").unwrap(),
        vec![state("Text Embeddings", 3000, 1), state("m", 300, 2)]
    );
    assert_eq!(limiter.windows_of("nobody").unwrap(), Vec::new());
    clock.advance(Duration::from_secs(61));
    assert_eq!(limiter.windows_of("a").unwrap(), Vec::new());
}

/// Several nodes on one Redis share each window exactly: concurrent requests from three
/// limiters admit the limit, not a request more.
#[test]
fn nodes_sharing_redis_admit_exactly_the_limit_between_them() {
    let f = Fixture::redis();
    let prefix = f.redis_prefix.clone().expect("redis fixture");
    let nodes: Vec<RateLimiter> = (0..3).map(|_| redis_limiter(&f.clock, &prefix)).collect();
    let admitted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for node in &nodes {
            for _ in 0..4 {
                let admitted = &admitted;
                scope.spawn(move || {
                    for _ in 0..25 {
                        match node.check_and_count("a", "m", 50) {
                            Ok(()) => {
                                admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Err(refused) => {
                                full(refused);
                            }
                        }
                    }
                });
            }
        }
    });
    assert_eq!(admitted.into_inner(), 50, "300 attempts, a limit of 50");
    let windows = nodes[1].windows_of("a").unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(
        (windows[0].limit_per_minute, windows[0].requests_last_minute),
        (50, 50)
    );
}

/// Redis keys expire by themselves a minute after the window's last request.
#[test]
fn redis_windows_expire_with_their_last_request() {
    let f = Fixture::redis();
    let prefix = f.redis_prefix.clone().expect("redis fixture");
    f.limiter.check_and_count("a", "m", 5).unwrap();
    let client = ::redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let keys: Vec<String> = ::redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .clone()
        .iter(&mut connection)
        .unwrap()
        .collect::<::redis::RedisResult<_>>()
        .unwrap();
    assert_eq!(
        keys.len(),
        2,
        "the window and the account's index: {keys:?}"
    );
    for key in keys {
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(&key)
            .query(&mut connection)
            .unwrap();
        assert!((1..=60_000).contains(&ttl), "{key}: {ttl}");
    }
}

/// An unreachable Redis refuses requests (never admits them), quickly, and does not retry
/// the network on every request while it is down.
#[test]
fn an_unreachable_redis_refuses_quickly_instead_of_admitting() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let clock = Arc::new(ManualClock::at(1_700_000_000_000));
    let redis = RedisLimits::new(&format!("redis://127.0.0.1:{port}"), "kiln-test:down:")
        .unwrap()
        .with_timeout(Duration::from_millis(250));
    let limiter = RateLimiter::with_redis(clock as Arc<dyn Clock>, redis);
    let started = std::time::Instant::now();
    for _ in 0..100 {
        match limiter.check_and_count("a", "m", 5) {
            Err(Refused::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    assert!(limiter.windows_of("a").is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Unlimited keys never need Redis.
    limiter.check_and_count("a", "m", 0).unwrap();
}
