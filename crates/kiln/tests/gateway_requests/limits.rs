//! Rate limits, authenticated gateways, retries and timeouts.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// Waits out the last two seconds of an aligned hour so a fixed window cannot roll over
/// mid-test.
async fn away_from_hour_boundary() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if now % 3600 >= 3598 {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[tokio::test]
async fn fixed_window_limits_and_cache_hits_are_free() {
    away_from_hour_boundary().await;
    let gateway = Gateway::create(json!({
        "cache_ttl": 600,
        "rate_limiting_limit": 2,
        "rate_limiting_interval": 3600,
        "rate_limiting_technique": "fixed",
    }))
    .await;
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let cached = embedding_input("counted once");
    let (status, _, _) = gateway.post(&path, &cached, &[]).await;
    assert_eq!(status, 200);
    for _ in 0..5 {
        let (status, headers, body) = gateway.post(&path, &cached, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));
    }
    let (status, _, _) = gateway
        .post(&path, &embedding_input("second request"), &[])
        .await;
    assert_eq!(status, 200);
    let (status, headers, body) = gateway
        .post(&path, &embedding_input("third request"), &[])
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(gateway_error(&body).0, 2003);
    assert!(header(&headers, "retry-after").is_some());
    assert!(
        header(&headers, "cf-aig-log-id").is_some(),
        "refusals are logged"
    );
    // A hit is still served while the limit is used up.
    let (status, _, _) = gateway.post(&path, &cached, &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sliding_window_admits_as_requests_age_out() {
    let gateway = Gateway::create(json!({
        "rate_limiting_limit": 2,
        "rate_limiting_interval": 2,
        "rate_limiting_technique": "sliding",
    }))
    .await;
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let started = Instant::now();
    for text in ["a", "b"] {
        let (status, _, body) = gateway.post(&path, &embedding_input(text), &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = gateway.post(&path, &embedding_input("c"), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(gateway_error(&body).0, 2003);
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed())).await;
    let (status, _, body) = gateway.post(&path, &embedding_input("d"), &[]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn authenticated_gateways_need_a_token() {
    let gateway = Gateway::create(json!({"authentication": true})).await;
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let input = embedding_input("who is asking");
    let (status, headers, body) = gateway.post(&path, &input, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(gateway_error(&body).0, 2009);
    assert!(header(&headers, "cf-aig-log-id").is_none());
    let (status, _, body) = gateway
        .post(&path, &input, &[("cf-aig-authorization", "Basic abc")])
        .await;
    assert_eq!((status, gateway_error(&body).0), (401, 2009));
    let (status, _, body) = gateway
        .post(
            &path,
            &input,
            &[("cf-aig-authorization", "Bearer local-token")],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Gateways without authentication ignore the header.
    let open = Gateway::create(json!({})).await;
    let (status, _, _) = open.post(&path, &input, &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn retries_back_off_and_timeouts_end_the_wait() {
    let gateway = Gateway::create(json!({})).await;
    super::providers::create_provider(&gateway.account, "dead", "http://127.0.0.1:9/v1").await;
    let input = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let (status, headers, body) = gateway
        .post(
            "custom-dead/chat/completions",
            &input,
            &[
                ("cf-aig-max-attempts", "3"),
                ("cf-aig-retry-delay", "150"),
                ("cf-aig-backoff", "linear"),
            ],
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(gateway_error(&body).0, 2005);
    // Linear backoff: 150 ms, then 300 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    let log = gateway
        .log(header(&headers, "cf-aig-log-id").expect("failures are logged"))
        .await;
    assert_eq!(
        (log["success"].clone(), log["status_code"].clone()),
        (json!(false), json!(502))
    );

    // A generation that cannot send its first byte in 1 ms.
    let (status, _, body) = gateway
        .post(
            &format!("workers-ai/{TEXT_MODEL}"),
            &json!({"prompt": "Write a long story.", "max_tokens": 64}),
            &[("cf-aig-request-timeout", "1")],
        )
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(gateway_error(&body).0, 2006);
}
