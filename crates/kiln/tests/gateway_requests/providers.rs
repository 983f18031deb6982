//! Every provider route: Workers AI (native and OpenAI forms), compat, custom providers with
//! streaming passed through, and the universal endpoint's fallbacks.

use serde_json::json;

use super::*;

/// Registers `custom-{slug}` for `account`.
pub async fn create_provider(account: &str, slug: &str, base_url: &str) {
    create_provider_on(&url(""), account, slug, base_url).await;
}

/// [`create_provider`] on the server at `base` (another one than the shared server).
pub async fn create_provider_on(base: &str, account: &str, slug: &str, base_url: &str) {
    let response = client()
        .post(format!(
            "{base}/client/v4/accounts/{account}/ai-gateway/custom-providers"
        ))
        .json(&json!({"name": slug, "slug": slug, "base_url": base_url}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

async fn provider_request(
    method: reqwest::Method,
    account: &str,
    rest: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(
        method,
        url(&format!(
            "/client/v4/accounts/{account}/ai-gateway/custom-providers{rest}"
        )),
    );
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Kiln's own OpenAI-compatible API, reached over HTTP like any other server.
fn self_base_url() -> String {
    url("/v1")
}

#[tokio::test]
async fn custom_provider_crud_and_errors() {
    let account = format!("cp-{}", uuid::Uuid::new_v4().simple());
    use reqwest::Method;
    create_provider(&account, "local", &self_base_url()).await;
    let (status, body) = provider_request(Method::GET, &account, "", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["slug"], "local");
    let (status, body) = provider_request(
        Method::POST,
        &account,
        "",
        Some(json!({"name": "again", "slug": "local", "base_url": "http://x"})),
    )
    .await;
    assert_eq!((status, assert_error_envelope(&body).0), (409, 1003));
    let (status, body) = provider_request(
        Method::POST,
        &account,
        "",
        Some(json!({"name": "bad", "slug": "bad", "base_url": "ftp://x"})),
    )
    .await;
    assert_eq!((status, assert_error_envelope(&body).0), (400, 1002));
    let (status, body) = provider_request(
        Method::PUT,
        &account,
        "/local",
        Some(json!({"description": "this machine"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["description"], "this machine");
    let (status, _) = provider_request(Method::DELETE, &account, "/local", None).await;
    assert_eq!(status, 200);
    let (status, body) = provider_request(Method::GET, &account, "/local", None).await;
    assert_eq!((status, assert_error_envelope(&body).0), (404, 1004));
}

#[tokio::test]
async fn custom_providers_pass_streams_through() {
    let gateway = Gateway::create(json!({})).await;
    create_provider(&gateway.account, "local", &self_base_url()).await;
    let input = json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 6,
        "stream": true,
    });
    let (status, headers, body) = gateway
        .post("custom-local/chat/completions", &input, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "content-type").is_some_and(|ct| ct.starts_with("text/event-stream")));
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).expect("each event is JSON");
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    let log = gateway
        .log(header(&headers, "cf-aig-log-id").expect("log id"))
        .await;
    assert_eq!(log["provider"], "custom-local");
    assert_eq!(log["model"], "smollm2-135m-instruct");

    // The unified endpoint reaches the same provider by `custom-{slug}/{model}`.
    let (status, _, body) = gateway
        .post(
            "compat/chat/completions",
            &json!({"model": "custom-local/smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["object"], "chat.completion");
}

#[tokio::test]
async fn workers_ai_in_every_form() {
    let gateway = Gateway::create(json!({})).await;
    let chat = json!({"model": TEXT_MODEL,
        "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let (status, headers, body) = gateway
        .post("workers-ai/v1/chat/completions", &chat, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    let log = gateway
        .log(header(&headers, "cf-aig-log-id").expect("id"))
        .await;
    assert_eq!(log["tokens_in"], answer["usage"]["prompt_tokens"]);
    assert_eq!(log["model"], TEXT_MODEL);

    let (status, _, body) = gateway
        .post(
            "workers-ai/v1/embeddings",
            &json!({"model": EMBEDDING_MODEL, "input": "vectors"}),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"embedding\""));

    let mut compat = chat.clone();
    compat["model"] = json!(format!("workers-ai/{TEXT_MODEL}"));
    let (status, _, body) = gateway.post("compat/chat/completions", &compat, &[]).await;
    assert_eq!(status, 200, "{body}");

    // Errors of Workers AI itself pass through in its own envelope.
    let (status, _, body) = gateway
        .post(
            &format!("workers-ai/{TEXT_MODEL}"),
            &json!({"prompt": 5}),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let envelope: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(assert_error_envelope(&envelope).0, 5006);

    // Providers that need the internet, unknown gateways and bad headers are the gateway's own
    // errors.
    let (status, _, body) = gateway.post("openai/chat/completions", &chat, &[]).await;
    assert_eq!((status, gateway_error(&body).0), (400, 1002));
    let (status, _, body) = post_with(
        &url(&format!(
            "/v1/{}/no-such-gateway/workers-ai/{TEXT_MODEL}",
            gateway.account
        )),
        &chat,
        &[],
    )
    .await;
    assert_eq!((status, gateway_error(&body).0), (404, 1004));
    let (status, _, body) = gateway
        .post(
            "workers-ai/v1/chat/completions",
            &chat,
            &[("cf-aig-metadata", "[1]")],
        )
        .await;
    assert_eq!((status, gateway_error(&body).0), (400, 5006));
}

#[tokio::test]
async fn universal_endpoint_falls_back_in_order() {
    let gateway = Gateway::create(json!({})).await;
    create_provider(&gateway.account, "dead", "http://127.0.0.1:9/v1").await;
    let dead_step = json!({
        "provider": "custom-dead",
        "endpoint": "chat/completions",
        "headers": {"Content-Type": "application/json"},
        "query": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    });
    let workers_ai_step = json!({
        "provider": "workers-ai",
        "endpoint": EMBEDDING_MODEL,
        "headers": {"Authorization": "Bearer local"},
        "query": {"text": ["fallback"]},
    });
    let (status, headers, body) = gateway
        .post("", &json!([dead_step, workers_ai_step]), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "cf-aig-step"), Some("1"));
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["success"], true);
    let log = gateway
        .log(header(&headers, "cf-aig-log-id").expect("id"))
        .await;
    assert_eq!(log["step"], 1);
    assert_eq!(log["request_type"], "universal");
    assert_eq!(log["provider"], "workers-ai");

    // A single step object is accepted and answers as step 0.
    let (status, headers, _) = gateway.post("", &workers_ai_step, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "cf-aig-step"), Some("0"));

    // A step that is too slow (its config's requestTimeout) falls back as a failure would.
    let slow_step = json!({
        "provider": "workers-ai",
        "endpoint": TEXT_MODEL,
        "headers": {},
        "query": {"prompt": "Write a long story.", "max_tokens": 64},
        "config": {"requestTimeout": 1},
    });
    let (status, headers, body) = gateway
        .post("", &json!([slow_step, workers_ai_step]), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "cf-aig-step"), Some("1"));

    // Every step failing: the last failure is the answer.
    let (status, headers, body) = gateway.post("", &json!([dead_step, dead_step]), &[]).await;
    assert_eq!((status, gateway_error(&body).0), (502, 2005));
    assert_eq!(header(&headers, "cf-aig-step"), Some("1"));

    let (status, _, body) = gateway.post("", &json!([]), &[]).await;
    assert_eq!((status, gateway_error(&body).0), (400, 5006));
}
