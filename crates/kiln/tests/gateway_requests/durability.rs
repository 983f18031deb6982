//! `kill -9` right after responses: every log whose id was returned, and every cache entry,
//! is there after a restart.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

struct KilnProcess {
    child: Child,
    base: String,
}

impl KilnProcess {
    async fn start(gateway_db: &std::path::Path) -> KilnProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/default-kiln.toml"))
            .arg("--data-dir")
            .arg(kiln_store::default_data_dir())
            .arg("--gateway-db")
            .arg(gateway_db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health = client().get(format!("{base}/health")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "kiln did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        KilnProcess { child, base }
    }

    fn kill_9(mut self) {
        // `Child::kill` sends SIGKILL: no shutdown code runs.
        self.child.kill().expect("killed");
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn logs_and_cache_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway_db = dir.path().join("gateway.db");
    let first = KilnProcess::start(&gateway_db).await;
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

    let second = KilnProcess::start(&gateway_db).await;
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
