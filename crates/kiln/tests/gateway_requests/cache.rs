//! The response cache: MISS then HIT, skip, custom keys, TTLs, streams.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test]
async fn miss_then_hit_with_equal_bodies_then_skip_and_custom_key() {
    let gateway = Gateway::create(json!({"cache_ttl": 600})).await;
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let input = embedding_input("the cache keeps this");

    let (status, first_headers, first) = gateway.post(&path, &input, &[]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(header(&first_headers, "cf-aig-cache-status"), Some("MISS"));
    let (_, headers, second) = gateway.post(&path, &input, &[]).await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));
    assert_eq!(second, first);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_ne!(
        header(&headers, "cf-aig-log-id"),
        header(&first_headers, "cf-aig-log-id"),
        "every request has its own log id"
    );

    // The same request on the `run/` path form is answered too (its own cache entry).
    let (status, headers, run_form) = gateway
        .post(&format!("workers-ai/run/{EMBEDDING_MODEL}"), &input, &[])
        .await;
    assert_eq!(status, 200, "{run_form}");
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));

    // A different body misses.
    let (_, headers, _) = gateway
        .post(&path, &embedding_input("something else"), &[])
        .await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));

    let (_, headers, _) = gateway
        .post(&path, &input, &[("cf-aig-skip-cache", "true")])
        .await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));
    let (_, headers, _) = gateway.post(&path, &input, &[]).await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));

    // A custom key stands for the request: another body under the same key gets the first
    // body's answer.
    let keyed = [("cf-aig-cache-key", "greeting-v1")];
    let (_, headers, keyed_first) = gateway
        .post(&path, &embedding_input("first keyed"), &keyed)
        .await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));
    let (_, headers, keyed_second) = gateway
        .post(&path, &embedding_input("second keyed"), &keyed)
        .await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));
    assert_eq!(keyed_second, keyed_first);
}

#[tokio::test]
async fn ttl_expires_and_headers_turn_caching_on() {
    let gateway = Gateway::create(json!({"cache_ttl": 1})).await;
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let input = embedding_input("short lived");
    let status_of = |headers: &HeaderMap| header(headers, "cf-aig-cache-status").map(str::to_owned);
    let (_, headers, _) = gateway.post(&path, &input, &[]).await;
    assert_eq!(status_of(&headers).as_deref(), Some("MISS"));
    let (_, headers, _) = gateway.post(&path, &input, &[]).await;
    assert_eq!(status_of(&headers).as_deref(), Some("HIT"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, headers, _) = gateway.post(&path, &input, &[]).await;
    assert_eq!(status_of(&headers).as_deref(), Some("MISS"), "expired");

    // A gateway without caching caches what `cf-aig-cache-ttl` or `cf-aig-cache-key` asks.
    let uncached = Gateway::create(json!({})).await;
    for headers in [
        vec![("cf-aig-cache-ttl", "60")],
        vec![("cf-aig-cache-key", "five-minutes")],
    ] {
        let input = embedding_input(&format!("{headers:?}"));
        let (_, first, _) = uncached.post(&path, &input, &headers).await;
        assert_eq!(status_of(&first).as_deref(), Some("MISS"));
        let (_, second, _) = uncached.post(&path, &input, &headers).await;
        assert_eq!(status_of(&second).as_deref(), Some("HIT"), "{headers:?}");
    }
    let input = embedding_input("never cached");
    uncached.post(&path, &input, &[]).await;
    let (_, headers, _) = uncached.post(&path, &input, &[]).await;
    assert_eq!(status_of(&headers).as_deref(), Some("MISS"));

    // Out-of-range TTLs are refused, naming the header.
    let (status, _, body) = uncached
        .post(&path, &input, &[("cf-aig-cache-ttl", "59")])
        .await;
    assert_eq!(status, 400, "{body}");
    let (code, message) = gateway_error(&body);
    assert_eq!(code, 5006);
    assert!(message.contains("cf-aig-cache-ttl"), "{message}");
}

#[tokio::test]
async fn streams_are_cached_and_replayed_as_streams() {
    let gateway = Gateway::create(json!({"cache_ttl": 600})).await;
    let path = format!("workers-ai/{TEXT_MODEL}");
    let input = json!({"prompt": "Count to three.", "max_tokens": 8, "stream": true});
    let (status, headers, first) = gateway.post(&path, &input, &[]).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("MISS"));
    assert!(header(&headers, "content-type").is_some_and(|ct| ct.starts_with("text/event-stream")));
    let events = sse_data(&first);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{first}");

    let (_, headers, second) = gateway.post(&path, &input, &[]).await;
    assert_eq!(header(&headers, "cf-aig-cache-status"), Some("HIT"));
    assert!(header(&headers, "content-type").is_some_and(|ct| ct.starts_with("text/event-stream")));
    assert_eq!(second, first);

    // The cached stream's log has the stream's token counts.
    let log_id = header(&headers, "cf-aig-log-id")
        .expect("log id")
        .to_owned();
    let log = gateway.log(&log_id).await;
    assert_eq!(log["cached"], true);
    let usage = events
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find_map(|event| event.get("usage").cloned())
        .expect("the stream reports usage");
    assert_eq!(log["tokens_out"], usage["completion_tokens"], "{log}");
    assert_eq!(log["tokens_in"], usage["prompt_tokens"], "{log}");
    assert!(log["tokens_out"].as_u64() > Some(0), "{log}");
}
