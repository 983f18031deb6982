//! A SIGTERM drains the server (issue #21, operations): readiness fails at once while requests
//! are still served, the stream in flight runs to its end, and the process exits cleanly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::free_port;

const MODEL: &str = "smollm2-135m-instruct";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn readiness(client: &reqwest::Client, base: &str) -> Option<(u16, Value)> {
    let response = client.get(format!("{base}/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_finishes_the_stream_in_flight_and_exits_cleanly() {
    let model = kiln_store::ensure_for_tests(MODEL);
    let state = tempfile::tempdir().expect("temp dir");
    let config = state.path().join("kiln.toml");
    std::fs::write(&config, "fetch = []\n").expect("config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let data_dir = model
        .dir
        .parent()
        .and_then(|models| models.parent())
        .expect("the store's data dir");
    let path = |name: &str| state.path().join(name).to_string_lossy().into_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--config", &path("kiln.toml")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &data_dir.to_string_lossy()])
        .args([
            "--models",
            MODEL,
            "--auth",
            "open",
            "--drain-grace-secs",
            "1",
        ])
        .args(["--accounts-db", &path("accounts.db")])
        .args(["--batch-db", &path("batches.db")])
        .args(["--gateway-db", &path("gateway.db")])
        .args(["--vectorize-dir", &path("vectorize")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln serve starts");
    let mut server = Server(child);
    let client = reqwest::Client::new();

    let started = Instant::now();
    loop {
        if let Some((status, _)) = readiness(&client, &base).await {
            assert_eq!(status, 200, "ready once it listens");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not listening after 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut stream = client
        .post(format!(
            "{base}/client/v4/accounts/local/ai/run/@cf/meta/llama-3.1-8b-instruct"
        ))
        .json(&json!({
            "prompt": "Count from one to two hundred in words.",
            "max_tokens": 400,
            "temperature": 0,
            "stream": true,
        }))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(stream.status().as_u16(), 200);
    let mut received =
        String::from_utf8_lossy(&stream.chunk().await.expect("chunk").expect("first event"))
            .into_owned();

    let terminated = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(terminated.success());
    let (status, body) = loop {
        match readiness(&client, &base).await {
            Some((503, body)) => break (503, body),
            _ if started.elapsed() > Duration::from_secs(300) => panic!("readiness never failed"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(status, 503);
    assert_eq!(body["errors"][0]["code"], 3050, "{body}");

    while let Some(chunk) = stream.chunk().await.expect("the stream goes on") {
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        received.trim_end().ends_with("data: [DONE]"),
        "the stream in flight ran to its end: {received}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = server.0.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running a minute after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "a drained server exits cleanly: {exit:?}");
    assert!(
        readiness(&client, &base).await.is_none(),
        "nothing listens any more"
    );
}
