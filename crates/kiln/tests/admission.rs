//! Backpressure, deadlines and disconnects on servers with one or two sequence slots, a tiny
//! queue and a short timeout.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";

static SMALL_SERVER: OnceLock<SocketAddr> = OnceLock::new();
static TWO_SLOT_SERVER: OnceLock<SocketAddr> = OnceLock::new();

/// One slot, one queue place.
fn small_server_url(model: &str) -> String {
    let addr = SMALL_SERVER.get_or_init(|| {
        let mut config = test_config();
        config.parallel = Some(1);
        config.queue_capacity = Some(1);
        config.request_timeout_secs = Some(4);
        config.models = Some(vec!["smollm2-135m-instruct".into()]);
        spawn_server(config)
    });
    format!("http://{addr}/client/v4/accounts/{ACCOUNT}/ai/run/{model}")
}

fn two_slot_server_url(model: &str) -> String {
    let addr = TWO_SLOT_SERVER.get_or_init(|| {
        let mut config = test_config();
        config.parallel = Some(2);
        config.queue_capacity = Some(1);
        config.context_size = Some(2048);
        config.models = Some(vec!["smollm2-135m-instruct".into()]);
        spawn_server(config)
    });
    format!("http://{addr}/client/v4/accounts/{ACCOUNT}/ai/run/{model}")
}

/// A raw counting prompt keeps a small model busy for as long as `max_tokens` allows.
fn long_generation(max_tokens: u32) -> Value {
    json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true, "temperature": 0, "max_tokens": max_tokens, "stream": true})
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    client().post(url).json(body).send().await.expect("sent")
}

/// These run one after another: they share one worker whose state each of them observes.
#[tokio::test]
async fn busy_timeout_and_disconnect() {
    reject_if_busy_gets_3040().await;
    full_queue_gets_3040_at_once().await;
    disconnect_frees_the_worker().await;
    deadline_gives_408().await;
}

async fn reject_if_busy_gets_3040() {
    let url = small_server_url(LLAMA);
    let running = post(&url, &long_generation(1000)).await;
    assert_eq!(
        running.status(),
        200,
        "the long generation starts streaming"
    );
    let busy = json!({"prompt": "hi", "max_tokens": 2, "options": {"rejectIfBusy": true}});
    let response = post(&url, &busy).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.expect("envelope");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 3040);
    assert_eq!(message, "Capacity temporarily exceeded, please try again.");
    drop(running);
}

/// The slot is busy and the one queue place is taken: the next request is refused at once.
async fn full_queue_gets_3040_at_once() {
    let url = small_server_url(LLAMA);
    let mut running = post(&url, &long_generation(1000)).await;
    assert_eq!(running.status(), 200);
    running.chunk().await.expect("read").expect("first chunk");
    let queued_url = url.clone();
    let queued = tokio::spawn(async move { post(&queued_url, &long_generation(4)).await });
    // Give the queued request time to reach the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !queued.is_finished(),
        "the second request waits for the slot"
    );

    let started = Instant::now();
    let response = post(&url, &json!({"prompt": "hi", "max_tokens": 2})).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.expect("envelope");
    assert_eq!(assert_error_envelope(&body).0, 3040);
    assert!(
        // Waiting would mean the running generation's thousands of tokens; the margin is for
        // a loaded CI machine.
        started.elapsed() < Duration::from_secs(2),
        "refused without waiting: {:?}",
        started.elapsed()
    );

    // Leaving frees the slot for the queued request, which then runs to the end.
    drop(running);
    let queued = queued.await.expect("queued request task");
    assert_eq!(queued.status(), 200);
    let body = queued.text().await.expect("SSE body");
    assert!(body.contains("[DONE]"), "{body}");
}

async fn disconnect_frees_the_worker() {
    let url = small_server_url(LLAMA);
    let mut running = post(&url, &long_generation(2000)).await;
    let first = running.chunk().await.expect("read").expect("first chunk");
    assert!(!first.is_empty());
    drop(running);
    // Once the engine notices the disconnect, the worker is idle and rejectIfBusy succeeds.
    let idle = json!({"prompt": "hi", "max_tokens": 1, "options": {"rejectIfBusy": true}});
    let started = Instant::now();
    loop {
        let response = post(&url, &idle).await;
        if response.status() == 200 {
            break;
        }
        assert!(
            // The abandoned generation had 2,000 tokens (tens of seconds) to go.
            started.elapsed() < Duration::from_secs(5),
            "worker still busy after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deadline_gives_408() {
    let url = small_server_url(LLAMA);
    let mut body = long_generation(5000);
    body["stream"] = json!(false);
    let started = Instant::now();
    let response = post(&url, &body).await;
    assert_eq!(response.status(), 408);
    let body: Value = response.json().await.expect("envelope");
    let (code, _) = assert_error_envelope(&body);
    assert_eq!(code, 3007);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered soon after the deadline"
    );
}

/// With two slots, `rejectIfBusy` is refused only when both are taken, and a request that
/// joins the batch does not stop the one already streaming.
#[tokio::test]
async fn reject_if_busy_counts_free_slots() {
    let url = two_slot_server_url(LLAMA);
    let mut first = post(&url, &long_generation(400)).await;
    assert_eq!(first.status(), 200);
    first.chunk().await.expect("read").expect("first chunk");

    let short = json!({"prompt": "hi", "max_tokens": 2, "options": {"rejectIfBusy": true}});
    let response = post(&url, &short).await;
    assert_eq!(response.status(), 200, "the second slot was free");

    let mut second = post(&url, &long_generation(400)).await;
    assert_eq!(second.status(), 200);
    second.chunk().await.expect("read").expect("first chunk");
    let response = post(&url, &short).await;
    assert_eq!(response.status(), 429, "both slots are busy");

    // Both streams are still producing.
    let next = first.chunk().await.expect("read");
    assert!(next.is_some_and(|chunk| !chunk.is_empty()));
    let next = second.chunk().await.expect("read");
    assert!(next.is_some_and(|chunk| !chunk.is_empty()));
}
