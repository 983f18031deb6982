//! `kill -9` right after responses: every log whose id was returned, and every cache entry,
//! is there after a restart.

use std::ffi::OsStr;

use serde_json::json;

use super::*;

#[tokio::test]
async fn logs_and_cache_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway_db = dir.path().join("gateway.db");
    let first = KilnProcess::start(&[OsStr::new("--gateway-db"), gateway_db.as_os_str()]).await;
    let gateway = Gateway::create_on(&first.base, json!({"cache_ttl": 3600})).await;
    let gateway_url = |base: &str| {
        format!(
            "{base}/v1/{}/{}/workers-ai/{EMBEDDING_MODEL}",
            gateway.account, gateway.id
        )
    };

    // Requests in flight together, as a loaded server sees them.
    let requests = (0..24).map(|i| {
        let url = gateway_url(&first.base);
        async move {
            let input = embedding_input(&format!("durable request {i}"));
            let (status, headers, body) = post_with(&url, &input, &[]).await;
            assert_eq!(status, 200, "{body}");
            let log_id = header(&headers, "cf-aig-log-id")
                .expect("log id")
                .to_owned();
            (input, log_id, body)
        }
    });
    let answered = futures::future::join_all(requests).await;
    first.kill_9();

    let second = KilnProcess::start(&[OsStr::new("--gateway-db"), gateway_db.as_os_str()]).await;
    for (input, log_id, body) in &answered {
        let log_url = format!(
            "{}/client/v4/accounts/{}/ai-gateway/gateways/{}/logs/{log_id}",
            second.base, gateway.account, gateway.id
        );
        let response = client().get(log_url).send().await.expect("sent");
        assert_eq!(response.status(), 200, "log {log_id} was lost");
        let (status, headers, replayed) = post_with(&gateway_url(&second.base), input, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "cf-aig-cache-status"),
            Some("HIT"),
            "cache entry lost"
        );
        assert_eq!(&replayed, body);
    }
    second.kill_9();
}
