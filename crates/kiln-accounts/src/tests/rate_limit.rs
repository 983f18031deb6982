use std::sync::Arc;
use std::time::Duration;

use kiln_core::Task;

use crate::{default_limit_per_minute, Clock, ManualClock, RateLimiter};

fn limiter() -> (Arc<ManualClock>, RateLimiter) {
    let clock = Arc::new(ManualClock::at(1_700_000_000_000));
    let limiter = RateLimiter::new(clock.clone() as Arc<dyn Clock>);
    (clock, limiter)
}

#[test]
fn the_301st_request_in_a_minute_is_refused_until_the_window_moves() {
    let (clock, limiter) = limiter();
    for _ in 0..300 {
        limiter.check_and_count("a", "m", 300).unwrap();
        clock.advance(Duration::from_millis(100)); // 300 requests over 30 s
    }
    let refused = limiter.check_and_count("a", "m", 300).unwrap_err();
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

#[test]
fn retry_after_is_at_least_one_second() {
    let (clock, limiter) = limiter();
    limiter.check_and_count("a", "m", 1).unwrap();
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(
        limiter
            .check_and_count("a", "m", 1)
            .unwrap_err()
            .retry_after_secs,
        1
    );
    clock.advance(Duration::from_millis(1));
    limiter.check_and_count("a", "m", 1).unwrap();
    assert_eq!(
        limiter
            .check_and_count("a", "m", 1)
            .unwrap_err()
            .retry_after_secs,
        60
    );
}

#[test]
fn accounts_and_keys_are_independent() {
    let (_clock, limiter) = limiter();
    for _ in 0..5 {
        limiter.check_and_count("a", "m1", 5).unwrap();
    }
    assert!(limiter.check_and_count("a", "m1", 5).is_err());
    limiter.check_and_count("a", "m2", 5).unwrap();
    limiter.check_and_count("b", "m1", 5).unwrap();
}

#[test]
fn zero_means_unlimited() {
    let (_clock, limiter) = limiter();
    for _ in 0..10_000 {
        limiter.check_and_count("a", "m", 0).unwrap();
    }
}

#[test]
fn idle_windows_are_swept() {
    let (clock, limiter) = limiter();
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

#[test]
fn an_accounts_windows_show_their_limit_and_the_requests_of_the_last_minute() {
    let (clock, limiter) = limiter();
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
        limiter.windows_of("a"),
        vec![state("Text Embeddings", 3000, 1), state("m", 300, 2)]
    );
    assert_eq!(limiter.windows_of("nobody"), Vec::new());
    clock.advance(Duration::from_secs(61));
    assert_eq!(limiter.windows_of("a"), Vec::new());
}
