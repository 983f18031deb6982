//! Bad input, limits and routing errors: right status, right code, a message naming the
//! problem, and the server keeps serving.

mod common;

use common::*;
use serde_json::json;

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";

async fn expect_error(model: &str, body: serde_json::Value, status: u16, code: u64, needle: &str) {
    let (got_status, _, response) = run(model, &body).await;
    assert_eq!(got_status, status, "{body} → {response}");
    let (got_code, message) = assert_error_envelope(&response);
    assert_eq!(got_code, code, "{body} → {message}");
    assert!(message.contains(needle), "{body}: message {message:?} should mention {needle:?}");
}

#[tokio::test]
async fn schema_violations_name_the_field() {
    expect_error(LLAMA, json!({}), 400, 5006, "prompt").await;
    expect_error(LLAMA, json!({}), 400, 5006, "messages").await;
    expect_error(LLAMA, json!({"prompt": ""}), 400, 5006, "/prompt").await;
    expect_error(LLAMA, json!({"prompt": 5}), 400, 5006, "/prompt").await;
    expect_error(LLAMA, json!({"messages": "x"}), 400, 5006, "/messages").await;
    expect_error(LLAMA, json!({"prompt": "hi", "max_tokens": -1}), 400, 5006, "/max_tokens").await;
    expect_error(LLAMA, json!({"prompt": "hi", "temperature": 99}), 400, 5006, "/temperature").await;
    expect_error("@cf/baai/bge-small-en-v1.5", json!({"text": ""}), 400, 5006, "/text").await;
    let too_many: Vec<String> = (0..101).map(|i| format!("text {i}")).collect();
    expect_error("@cf/baai/bge-small-en-v1.5", json!({"text": too_many}), 400, 5006, "/text").await;
    expect_error("@cf/baai/bge-small-en-v1.5", json!({"text": "x", "pooling": "max"}), 400, 5006, "/pooling").await;
}

#[tokio::test]
async fn invalid_json_is_bad_input() {
    let response = client()
        .post(run_url(LLAMA))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 5006);
    assert!(message.contains("JSON"), "{message}");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(20 * 1024 * 1024));
    let response = client().post(run_url(LLAMA)).body(huge).send().await.expect("sent");
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    let (code, _) = assert_error_envelope(&body);
    assert_eq!(code, 3006);
}

#[tokio::test]
async fn unknown_model_is_5007() {
    expect_error("@cf/nobody/no-such-model", json!({"prompt": "hi"}), 400, 5007, "@cf/nobody/no-such-model").await;
}

#[tokio::test]
async fn catalog_model_without_a_local_model_is_5007_and_says_so() {
    expect_error("@cf/openai/whisper", json!({"audio": [1, 2, 3]}), 400, 5007, "not").await;
}

#[tokio::test]
async fn unknown_route_is_cloudflare_404() {
    let response = client().get(url("/client/v4/nothing/here")).send().await.expect("sent");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    assert_eq!(body["errors"][0]["code"], 7003);
    assert_eq!(body["errors"][1]["code"], 7000);
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn server_keeps_serving_after_bad_input() {
    for bad in [json!({"prompt": 5}), json!([1, 2]), json!(null), json!("text")] {
        let (status, _, _) = run(LLAMA, &bad).await;
        assert_eq!(status, 400);
    }
    let (status, _, body) = run(LLAMA, &json!({"prompt": "Hi", "max_tokens": 2})).await;
    assert_eq!(status, 200, "{body}");
}
