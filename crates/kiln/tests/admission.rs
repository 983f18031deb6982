//! Backpressure, deadlines and disconnects on a server with a tiny queue and a short timeout.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";

static SMALL_SERVER: OnceLock<SocketAddr> = OnceLock::new();

fn small_server_url(model: &str) -> String {
    let addr = SMALL_SERVER.get_or_init(|| {
        let mut config = test_config();
        config.queue_capacity = Some(1);
        config.request_timeout_secs = Some(4);
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
            started.elapsed() < Duration::from_secs(1),
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
