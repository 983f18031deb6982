//! Deadlines on the OpenAI routes, on a server with a short timeout: 408 in OpenAI's error shape,
//! and a deadline that passes mid-stream ends the stream with an `error` event the SDKs raise.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

static SHORT_TIMEOUT_SERVER: OnceLock<SocketAddr> = OnceLock::new();

fn completions_url() -> String {
    let addr = SHORT_TIMEOUT_SERVER.get_or_init(|| {
        let mut config = test_config();
        config.request_timeout_secs = Some(10);
        config.models = Some(vec!["smollm2-135m-instruct".into()]);
        spawn_server(config)
    });
    format!("http://{addr}/v1/completions")
}

/// A counting prompt keeps a small model busy for as long as `max_tokens` allows.
fn long_completion(max_tokens: u32, stream: bool) -> Value {
    json!({"model": "@cf/meta/llama-3.1-8b-instruct", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
           "temperature": 0, "max_tokens": max_tokens, "stream": stream})
}

async fn post(body: &Value) -> reqwest::Response {
    client()
        .post(completions_url())
        .json(body)
        .send()
        .await
        .expect("sent")
}

/// In order, so neither waits behind the other and eats into its deadline.
#[tokio::test]
async fn deadlines_in_openai_shape() {
    deadline_mid_stream_ends_with_an_error_event().await;
    deadline_before_the_answer_is_408().await;
}

async fn deadline_mid_stream_ends_with_an_error_event() {
    let started = Instant::now();
    let response = post(&long_completion(6000, true)).await;
    assert_eq!(
        response.status(),
        200,
        "streaming starts before the deadline"
    );
    let text = response.text().await.expect("SSE body");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ended soon after the deadline"
    );
    let data = sse_data(&text);
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("JSON event");
    assert_eq!(last["error"]["type"], "timeout_error", "{last}");
    assert_eq!(last["error"]["code"], "timeout", "{last}");
    assert!(data.len() >= 2, "text came before the error: {data:?}");
    assert!(
        !data.iter().any(|d| d == "[DONE]"),
        "a failed stream is not [DONE]"
    );
}

async fn deadline_before_the_answer_is_408() {
    let response = post(&long_completion(6000, false)).await;
    assert_eq!(response.status(), 408);
    let body: Value = response.json().await.expect("JSON error");
    assert_eq!(body["error"]["type"], "timeout_error", "{body}");
}
