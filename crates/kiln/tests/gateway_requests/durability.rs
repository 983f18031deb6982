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

#[path = "../../../../tests/disk_full.rs"]
mod disk_full;

/// The gateway database and journal on a disk that fills up: a request whose log cannot be
/// journaled answers with an error envelope (not a success whose log id leads nowhere), every
/// log acknowledged before is still there, and once space is back requests are logged again,
/// across a `kill -9` too.
#[tokio::test]
async fn a_full_disk_fails_requests_cleanly_and_loses_no_log() {
    let Some(disk) = disk_full::SmallDisk::mount("gateway journal over HTTP") else {
        return;
    };
    let gateway_db = disk.path().join("gateway.db");
    let args = [OsStr::new("--gateway-db"), gateway_db.as_os_str()];
    let first = KilnProcess::start(&args).await;
    let gateway = Gateway::create_on(&first.base, json!({})).await;
    let run = |base: &str| {
        format!(
            "{base}/v1/{}/{}/workers-ai/{EMBEDDING_MODEL}",
            gateway.account, gateway.id
        )
    };
    let log_status = |base: String, log_id: String| {
        let url = format!(
            "{base}/client/v4/accounts/{}/ai-gateway/gateways/{}/logs/{log_id}",
            gateway.account, gateway.id
        );
        async move { client().get(url).send().await.expect("sent").status() }
    };
    let logged = |headers: &reqwest::header::HeaderMap| {
        header(headers, "cf-aig-log-id").expect("log id").to_owned()
    };

    let (status, headers, body) =
        post_with(&run(&first.base), &embedding_input("before"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let before = logged(&headers);
    assert_eq!(log_status(first.base.clone(), before.clone()).await, 200);

    disk.fill();
    let (status, _, body) = post_with(&run(&first.base), &embedding_input("refused"), &[]).await;
    assert_eq!(status, 500, "{body}");
    let envelope: serde_json::Value = serde_json::from_str(&body).expect("JSON envelope");
    assert_eq!(envelope["success"], false, "{body}");
    assert!(body.contains("could not store log"), "{body}");
    assert_eq!(log_status(first.base.clone(), before.clone()).await, 200);

    disk.free();
    let (status, headers, body) =
        post_with(&run(&first.base), &embedding_input("after"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let after = logged(&headers);
    first.kill_9();

    let second = KilnProcess::start(&args).await;
    for log_id in [&before, &after] {
        assert_eq!(
            log_status(second.base.clone(), log_id.clone()).await,
            200,
            "log {log_id} was lost"
        );
    }
    second.kill_9();
}
