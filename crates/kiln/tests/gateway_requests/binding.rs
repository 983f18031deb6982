//! The Worker AI binding's requests (spec §2.3, §11), as `workerd` sends them, including
//! `options.gateway`, which goes through the same gateway code as `/v1/{account}/{gateway}`.

use serde_json::json;

use super::*;

async fn binding_call(path: &str, model: &str, body: &Value) -> (u16, HeaderMap, String) {
    let response = client()
        .post(url(path))
        .header("content-type", "application/json")
        .header("cf-consn-model-id", model)
        .header("cf-consn-sdk-version", "2.0.0")
        .json(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn binding_runs_models_with_bare_answers() {
    let (status, headers, body) = binding_call(
        "/run?version=3",
        TEXT_MODEL,
        &json!({"inputs": {"prompt": "Say hi", "max_tokens": 4}, "options": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(header(&headers, "cf-ai-req-id").is_some());
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert!(answer["response"].is_string(), "the bare output: {answer}");
    assert!(answer["usage"]["completion_tokens"].as_u64() > Some(0));

    let (status, headers, body) = binding_call(
        "/run?version=3",
        TEXT_MODEL,
        &json!({"inputs": {"prompt": "Say hi", "max_tokens": 4, "stream": true}, "options": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "content-type").is_some_and(|ct| ct.starts_with("text/event-stream")));
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));

    let (status, headers, body) = binding_call(
        "/run?version=3",
        TEXT_MODEL,
        &json!({"inputs": {"prompt": 5}, "options": {}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(error["internalCode"], 5006);
    assert!(error["description"]
        .as_str()
        .is_some_and(|d| d.contains("prompt")));
}

#[tokio::test]
async fn binding_gateway_option_reaches_the_gateway() {
    // Binding requests act for the binding account ("local" by default).
    let id = format!("binding-{}", uuid::Uuid::new_v4().simple());
    let gateway = Gateway::create_named(&url(""), "local", &id, json!({})).await;
    let request = json!({
        "inputs": {"text": ["through the binding"]},
        "options": {"gateway": {"id": id, "cacheTtl": 120, "metadata": {"worker": "w1"},
                                "eventId": "ev-b"}},
    });
    let (status, headers, first) =
        binding_call("/ai-gateway/run?version=3", EMBEDDING_MODEL, &request).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));
    let answer: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(
        answer["shape"],
        json!([1, 384]),
        "the bare output: {answer}"
    );
    let log = gateway
        .log(header(&headers, "cf-aig-log-id").expect("log id"))
        .await;
    assert_eq!(log["request_type"], "binding");
    assert_eq!(log["event_id"], "ev-b");
    assert_eq!(log["metadata"], r#"{"worker":"w1"}"#);

    let (_, headers, second) =
        binding_call("/ai-gateway/run?version=3", EMBEDDING_MODEL, &request).await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));
    assert_eq!(second, first);

    let (status, _, body) = binding_call(
        "/ai-gateway/run?version=3",
        EMBEDDING_MODEL,
        &json!({"inputs": {"text": ["x"]}, "options": {"gateway": {"id": "no-such-gateway"}}}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["internalCode"],
        1004
    );

    let response = client().delete(gateway.api("")).send().await.expect("sent");
    assert_eq!(response.status(), 200);
}
