//! `kill -9` in the middle of a stream of upserts: after a restart, every id whose mutation was
//! acknowledged is returned by `get_by_ids`.

use std::ffi::OsStr;

use serde_json::json;

use super::*;

#[tokio::test]
async fn acknowledged_upserts_survive_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = KilnProcess::start(&[OsStr::new("--vectorize-dir"), dir.path().as_os_str()]).await;
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
    first.kill_9();
    for writer in writers {
        let _ = writer.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let second = KilnProcess::start(&[OsStr::new("--vectorize-dir"), dir.path().as_os_str()]).await;
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
    second.kill_9();
}
