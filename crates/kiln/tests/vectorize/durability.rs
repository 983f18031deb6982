//! `kill -9` in the middle of a stream of upserts: after a restart, every id whose mutation was
//! acknowledged is returned by `get_by_ids`.

use std::process::{Child, Command, Stdio};

use serde_json::json;

use super::*;

struct KilnProcess {
    child: Child,
    base: String,
}

impl KilnProcess {
    async fn start(vectorize_dir: &std::path::Path) -> KilnProcess {
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
            .arg("--vectorize-dir")
            .arg(vectorize_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !client()
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "kiln did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        KilnProcess { child, base }
    }
}

#[tokio::test]
async fn acknowledged_upserts_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = KilnProcess::start(dir.path()).await;
    let index = Index::create_on(&first.base, json!({"dimensions": 8, "metric": "cosine"})).await;
    let upsert_url = format!("{}/docs/upsert", index.collection());

    // Writers keep upserting while the server is killed under them.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let url = upsert_url.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for batch in 0.. {
                    let ids: Vec<String> =
                        (0..5).map(|i| format!("w{writer}-b{batch}-{i}")).collect();
                    let lines: String = ids
                        .iter()
                        .enumerate()
                        .map(|(i, id)| {
                            let values: Vec<f32> =
                                (0..8).map(|d| ((d + i + batch) % 7) as f32 + 1.0).collect();
                            json!({"id": id, "values": values}).to_string() + "\n"
                        })
                        .collect();
                    let sent = client()
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(lines)
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.lock().unwrap().extend(ids);
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.child.kill().expect("killed");
    let _ = first.child.wait();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut second = KilnProcess::start(dir.path()).await;
    let restarted = Index {
        base: second.base.clone(),
        account: index.account.clone(),
        name: index.name.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, got) = restarted
            .post("/get_by_ids", json!({"ids": acknowledged}))
            .await;
        assert_eq!(status, 200, "{got}");
        let found = got["result"].as_array().map_or(0, Vec::len);
        if found == acknowledged.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged vectors after restart",
            found,
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.child.kill().expect("killed");
    let _ = second.child.wait();
}
