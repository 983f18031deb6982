//! Several Kiln nodes sharing one Redis (`--redis-url`, issue #21): an account's per-minute
//! limit holds across them, exactly. Needs Redis at `KILN_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); every test writes under a random key prefix and deletes it.

mod common;

use std::net::SocketAddr;

use serde_json::{json, Value};

use common::{client, spawn_server, test_config};

const EMBEDDING_MODEL: &str = "@cf/baai/bge-base-en-v1.5";
const TEXT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";

fn redis_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix of this test's own, deleted when dropped.
struct Prefix(String);

impl Prefix {
    fn new() -> Self {
        Prefix(format!(
            "kiln-test-cluster:{}:{}:",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let _ = kiln_accounts::purge_redis_prefix(&redis_url(), &self.0);
    }
}

/// Three in-process nodes on one Redis and prefix, each with its own databases.
fn three_nodes(prefix: &Prefix, models: &[&str], rpm_limits: &[(&str, u32)]) -> Vec<SocketAddr> {
    (0..3)
        .map(|_| {
            spawn_server(kiln::ServeConfig {
                redis_url: Some(redis_url()),
                redis_key_prefix: Some(prefix.0.clone()),
                rate_limits: Some(true),
                models: Some(models.iter().map(|m| (*m).to_owned()).collect()),
                fetch: Some(Vec::new()),
                rpm_limits: rpm_limits
                    .iter()
                    .map(|(key, limit)| ((*key).to_owned(), *limit))
                    .collect(),
                ..test_config()
            })
        })
        .collect()
}

async fn run(addr: SocketAddr, account: &str, model: &str, input: &Value) -> (u16, u64, Value) {
    let url = format!("http://{addr}/client/v4/accounts/{account}/ai/run/{model}");
    let response = client().post(url).json(input).send().await.expect("sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (
        status,
        retry_after,
        response.json().await.expect("JSON body"),
    )
}

fn assert_rate_limited(status: u16, retry_after: u64, body: &Value) {
    assert_eq!(status, 429, "{body}");
    let (code, message) = common::assert_error_envelope(body);
    assert_eq!(code, 3021, "{message}");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
}

/// The limit's requests, round-robin over three nodes, pass; the next one, on any node, gets
/// 429 / 3021; other accounts keep their own window; the usage route of any node shows the
/// shared count.
#[tokio::test]
async fn an_accounts_limit_holds_across_three_nodes() {
    const LIMIT: u32 = 7;
    let prefix = Prefix::new();
    let nodes = three_nodes(&prefix, &["all-minilm-l6-v2"], &[(EMBEDDING_MODEL, LIMIT)]);
    let input = json!({"text": "shared window"});
    for i in 0..LIMIT as usize {
        let (status, _, body) = run(nodes[i % 3], "spread", EMBEDDING_MODEL, &input).await;
        assert_eq!(status, 200, "request {} on node {}: {body}", i + 1, i % 3);
    }
    for node in &nodes {
        let (status, retry_after, body) = run(*node, "spread", EMBEDDING_MODEL, &input).await;
        assert_rate_limited(status, retry_after, &body);
    }
    assert_eq!(
        run(nodes[2], "elsewhere", EMBEDDING_MODEL, &input).await.0,
        200
    );

    let usage = client()
        .get(format!(
            "http://{}/client/v4/accounts/spread/ai/usage",
            nodes[1]
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(usage.status(), 200);
    let usage: Value = usage.json().await.expect("JSON");
    assert_eq!(
        usage["result"]["rate_limits"]["windows"],
        json!([{"key": EMBEDDING_MODEL, "limit_per_minute": LIMIT, "requests_last_minute": LIMIT}]),
        "{usage}"
    );
}

/// Unreachable Redis: rate-limited requests get 503 / 3051, promptly, never an uncounted 200.
#[tokio::test]
async fn an_unreachable_redis_refuses_with_503() {
    let port = common::free_port();
    let node = spawn_server(kiln::ServeConfig {
        redis_url: Some(format!("redis://127.0.0.1:{port}")),
        rate_limits: Some(true),
        models: Some(vec!["all-minilm-l6-v2".to_owned()]),
        fetch: Some(Vec::new()),
        ..test_config()
    });
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let (status, retry_after, body) =
            run(node, "anyone", EMBEDDING_MODEL, &json!({"text": "x"})).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(common::assert_error_envelope(&body).0, 3051, "{body}");
        assert!(retry_after >= 1, "{body}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Issue #21's bar, literally: 300 text generations of one account in a minute, spread over
/// three nodes, pass; the 301st gets 429 / 3021.
#[tokio::test]
async fn the_301st_text_generation_over_three_nodes_is_refused() {
    use futures::StreamExt;

    let prefix = Prefix::new();
    let nodes = three_nodes(&prefix, &["smollm2-135m-instruct"], &[]);
    let input = json!({"prompt": "Say hi", "max_tokens": 1});
    let statuses: Vec<u16> = futures::stream::iter(0..300usize)
        .map(|i| {
            let input = input.clone();
            let node = nodes[i % 3];
            async move { run(node, "busy", TEXT_MODEL, &input).await.0 }
        })
        .buffer_unordered(12)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let (status, retry_after, body) = run(nodes[0], "busy", TEXT_MODEL, &input).await;
    assert_rate_limited(status, retry_after, &body);
}
