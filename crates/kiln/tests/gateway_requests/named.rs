//! `cf-aig-gateway-id` on `/ai/run` and `/ai/v1/…` (issue #17): the request goes through the
//! named gateway as `/v1/{account}/{gateway}/workers-ai/…` would, so it is logged, cached, rate
//! limited and, on an authenticated gateway, refused without `cf-aig-authorization`.

use serde_json::json;

use super::*;

async fn run_named(
    gateway: &Gateway,
    text: &str,
    extra: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut headers = vec![("cf-aig-gateway-id", gateway.id.as_str())];
    headers.extend_from_slice(extra);
    post_with(
        &url(&format!(
            "/client/v4/accounts/{}/ai/run/{EMBEDDING_MODEL}",
            gateway.account
        )),
        &json!({"text": text}),
        &headers,
    )
    .await
}

#[tokio::test]
async fn the_header_sends_ai_run_through_the_gateway() {
    let gateway = Gateway::create(json!({
        "cache_ttl": 600,
        "rate_limiting_limit": 2,
        "rate_limiting_interval": 60,
    }))
    .await;
    let (status, headers, body) = run_named(&gateway, "first", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));
    let log_id = header(&headers, "cf-aig-log-id")
        .expect("a log id")
        .to_owned();
    let log = gateway.log(&log_id).await;
    assert_eq!(log["model"], EMBEDDING_MODEL, "{log}");
    assert_eq!(log["provider"], "workers-ai", "{log}");

    let (status, headers, _) = run_named(&gateway, "first", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));

    let (status, _, _) = run_named(&gateway, "second", &[]).await;
    assert_eq!(status, 200);
    let (status, _, body) = run_named(&gateway, "third", &[]).await;
    assert_eq!(status, 429, "the gateway's limit of 2: {body}");
    assert_eq!(gateway_error(&body).0, 2003);

    // The OpenAI route of the account too.
    let (status, headers, body) = post_with(
        &url(&format!(
            "/client/v4/accounts/{}/ai/v1/embeddings",
            gateway.account
        )),
        &json!({"model": EMBEDDING_MODEL, "input": "fourth"}),
        &[("cf-aig-gateway-id", gateway.id.as_str())],
    )
    .await;
    assert_eq!(status, 429, "still the same gateway's window: {body}");
    assert!(header(&headers, "cf-aig-log-id").is_some());
}

#[tokio::test]
async fn an_authenticated_gateway_named_by_header_needs_its_token() {
    let gateway = Gateway::create(json!({"authentication": true})).await;
    let (status, _, body) = run_named(&gateway, "hello", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(gateway_error(&body).0, 2009);
    let (status, _, body) = run_named(
        &gateway,
        "hello",
        &[("cf-aig-authorization", "Bearer any-token-in-open-mode")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post_with(
        &url(&format!(
            "/client/v4/accounts/{}/ai/run/{EMBEDDING_MODEL}",
            gateway.account
        )),
        &json!({"text": "x"}),
        &[("cf-aig-gateway-id", "not/an id")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_header_sends_a_binding_run_through_the_gateway() {
    // What `env.AI.run(model, inputs, {extraHeaders: {"cf-aig-gateway-id": id}})` sends; the
    // binding's calls are pre-authenticated (spec §4.2), so only the cache and log are visible.
    let id = format!("named-binding-{}", uuid::Uuid::new_v4().simple());
    let gateway = Gateway::create_named(&url(""), "local", &id, json!({"cache_ttl": 600})).await;
    let call = || {
        client()
            .post(url("/run?version=3"))
            .header("content-type", "application/json")
            .header("cf-consn-model-id", EMBEDDING_MODEL)
            .header("cf-aig-gateway-id", id.as_str())
            .header("cf-aig-metadata", r#"{"via":"header"}"#)
            .json(&json!({"inputs": {"text": ["by header"]}, "options": {}}))
            .send()
    };
    let first = call().await.expect("sent");
    assert_eq!(first.status().as_u16(), 200);
    let cache_status = |response: &reqwest::Response| {
        response
            .headers()
            .get("cf-aig-cache-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(cache_status(&first).as_deref(), Some("MISS"));
    let log_id = first
        .headers()
        .get("cf-aig-log-id")
        .and_then(|v| v.to_str().ok())
        .expect("logged by the gateway")
        .to_owned();
    let answer: Value = first.json().await.expect("the bare output");
    assert_eq!(answer["shape"], json!([1, 384]), "{answer}");
    let log = gateway.log(&log_id).await;
    assert_eq!(log["request_type"], "binding", "{log}");
    assert_eq!(log["metadata"], r#"{"via":"header"}"#, "{log}");
    let second = call().await.expect("sent");
    assert_eq!(cache_status(&second).as_deref(), Some("HIT"));
}
