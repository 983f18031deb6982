//! Several models: installed models load on their first request, the memory budget unloads the
//! least recently used idle model, and the keep-alive unloads idle ones; a model installed while
//! the server runs is served without a restart, and a removed one is unloaded.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const SMOL: &str = "smollm2-135m-instruct";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct";
const MINILM: &str = "all-minilm-l6-v2";

fn config(models: &[&str]) -> kiln::ServeConfig {
    kiln::ServeConfig {
        models: Some(models.iter().map(|m| m.to_string()).collect()),
        context_size: Some(1024),
        parallel: Some(2),
        ..test_config()
    }
}

/// The body of `GET /kiln/models`.
async fn kiln_models(base: &str) -> Value {
    client()
        .get(format!("{base}/kiln/models"))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body")
}

/// Loaded models → memory, from `GET /kiln/models`.
async fn loaded(base: &str) -> BTreeMap<String, u64> {
    let body = kiln_models(base).await;
    body["result"]["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter(|m| m["loaded"] == true)
        .map(|m| {
            let name = m["name"].as_str().expect("name").to_owned();
            (
                name,
                m["memory_bytes"]
                    .as_u64()
                    .expect("memory of a loaded model"),
            )
        })
        .collect()
}

async fn chat(base: &str, model: &str) -> (u16, Value, String) {
    let url = format!("{base}/client/v4/accounts/{ACCOUNT}/ai/run/{model}");
    let body = json!({"prompt": "Say hi.", "max_tokens": 4, "temperature": 0});
    let (status, headers, body) = post_json(&url, &body).await;
    let served_by = headers
        .get("x-kiln-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, body, served_by)
}

async fn embed(base: &str) {
    let url = format!("{base}/client/v4/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-small-en-v1.5");
    let (status, _, body) = post_json(&url, &json!({"text": "hello"})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn models_load_on_request_and_the_budget_unloads_the_least_recently_used() {
    kiln_store::ensure_for_tests(QWEN);

    // No budget: an installed model that was not configured loads on its first request.
    let base = format!("http://{}", spawn_server(config(&[SMOL, MINILM])));
    let before = loaded(&base).await;
    assert_eq!(before.keys().collect::<Vec<_>>(), [MINILM, SMOL]);
    let (status, body, served_by) = chat(&base, QWEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by, QWEN);
    let sizes = loaded(&base).await;
    assert_eq!(sizes.len(), 3, "{sizes:?}");

    // A budget that holds the embedder and one of the two LLMs, never both LLMs.
    let budget = sizes[MINILM] + sizes[SMOL].max(sizes[QWEN]) + sizes[SMOL].min(sizes[QWEN]) / 2;
    let base = format!(
        "http://{}",
        spawn_server(kiln::ServeConfig {
            memory_budget_mib: Some(budget.div_ceil(1024 * 1024)),
            ..config(&[SMOL, MINILM])
        })
    );
    let (status, body, _) = chat(&base, QWEN).await;
    assert_eq!(status, 200, "{body}");
    // SmolLM2 was loaded first and used least recently.
    assert_eq!(
        loaded(&base).await.keys().collect::<Vec<_>>(),
        [MINILM, QWEN]
    );
    embed(&base).await;
    let (status, body, served_by) = chat(&base, SMOL).await;
    assert_eq!((status, served_by.as_str()), (200, SMOL), "{body}");
    // Now Qwen is the least recently used idle model.
    assert_eq!(
        loaded(&base).await.keys().collect::<Vec<_>>(),
        [MINILM, SMOL]
    );
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("kiln_model_unloads_total{model=\"qwen2.5-coder-0.5b-instruct\",reason=\"memory_budget\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_models_are_unloaded_after_the_keep_alive_and_load_again() {
    let base = format!(
        "http://{}",
        spawn_server(kiln::ServeConfig {
            keep_alive_secs: Some(1),
            ..config(&[SMOL])
        })
    );
    let (status, body, _) = chat(&base, SMOL).await;
    assert_eq!(status, 200, "{body}");
    let mut waited = Duration::ZERO;
    while !loaded(&base).await.is_empty() {
        assert!(
            waited < Duration::from_secs(10),
            "still loaded after {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        waited += Duration::from_millis(250);
    }
    assert!(
        waited >= Duration::from_millis(500),
        "unloaded too early: {waited:?}"
    );
    let (status, body, served_by) = chat(&base, SMOL).await;
    assert_eq!((status, served_by.as_str()), (200, SMOL), "{body}");
}

#[tokio::test]
async fn a_model_larger_than_the_budget_is_refused_clearly() {
    let base = format!(
        "http://{}",
        spawn_server(kiln::ServeConfig {
            memory_budget_mib: Some(1),
            ..config(&[])
        })
    );
    let (status, body, _) = chat(&base, SMOL).await;
    assert_eq!(status, 500, "{body}");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 5000);
    assert!(message.contains("memory budget"), "{message}");
}

/// What `all-minilm-l6-v2` answers on a server: the status and the Workers AI error code, if any.
async fn embed_status(base: &str) -> (u16, Option<u64>) {
    let url = format!("{base}/client/v4/accounts/{ACCOUNT}/ai/run/{MINILM}");
    let (status, _, body) =
        post_json(&url, &json!({"text": ["a model pulled while serving"]})).await;
    (status, body["errors"][0]["code"].as_u64())
}

/// Polls `embed_status` until it gives `want` (the registry looks at the store at most every
/// two seconds, and the sweeper once a second after that).
async fn wait_for_status(base: &str, want: u16) -> (u16, Option<u64>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = embed_status(base).await;
        if got.0 == want || std::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_installed_while_serving_answers_and_a_removed_one_is_unloaded() {
    let installed = kiln_store::ensure_for_tests(MINILM);
    let data = tempfile::tempdir().expect("temp dir");
    let models_dir = data.path().join("models");
    std::fs::create_dir_all(&models_dir).expect("models dir");
    let addr = spawn_server(kiln::ServeConfig {
        data_dir: Some(data.path().to_path_buf()),
        batch_db: Some(data.path().join("batches.db")),
        models: Some(Vec::new()),
        fetch: Some(Vec::new()),
        ..test_config()
    });
    let base = format!("http://{addr}");
    assert_eq!(
        embed_status(&base).await,
        (400, Some(5007)),
        "not installed yet"
    );

    // Installed as `kiln models pull` leaves it (here: the verified files of the shared test
    // store, linked in).
    let link = models_dir.join(MINILM);
    std::os::unix::fs::symlink(&installed.dir, &link).expect("link the model in");
    assert_eq!(
        wait_for_status(&base, 200).await,
        (200, None),
        "served after install"
    );
    assert!(
        loaded(&base).await.contains_key(MINILM),
        "loaded by its request"
    );

    std::fs::remove_file(&link).expect("remove the model");
    assert_eq!(
        wait_for_status(&base, 400).await,
        (400, Some(5007)),
        "unknown again after removal"
    );
    assert!(
        !loaded(&base).await.contains_key(MINILM),
        "unloaded after removal"
    );
}

/// The events of a `POST /kiln/models/pull` stream, in order.
async fn pull_events(base: &str, name: &str) -> (u16, Vec<Value>) {
    let response = client()
        .post(format!("{base}/kiln/models/pull"))
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let events = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("JSON event"))
        .collect();
    (status, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_pulled_over_http_reports_progress_answers_at_once_and_unloads_on_request() {
    // The shared test store is the mirror: the pull copies its verified files, offline.
    kiln_store::ensure_for_tests(MINILM);
    let data = tempfile::tempdir().expect("temp dir");
    let addr = spawn_server(kiln::ServeConfig {
        data_dir: Some(data.path().to_path_buf()),
        model_mirrors: Some(vec![kiln_store::default_data_dir()]),
        batch_db: Some(data.path().join("batches.db")),
        models: Some(Vec::new()),
        fetch: Some(Vec::new()),
        ..test_config()
    });
    let base = format!("http://{addr}");
    assert_eq!(embed_status(&base).await, (400, Some(5007)));

    let (status, events) = pull_events(&base, MINILM).await;
    assert_eq!(status, 200, "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(last["status"], "success", "{events:?}");
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|event| Some((event["completed"].as_u64()?, event["total"].as_u64()?)))
        .collect();
    let &(completed, total) = progress.last().expect("progress events");
    assert!(total > 20_000_000, "the pinned size: {total}");
    assert_eq!(completed, total, "{progress:?}");
    assert!(
        progress.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "progress only grows: {progress:?}"
    );

    // No wait: the pull refreshed the routes.
    assert_eq!(embed_status(&base).await, (200, None), "served after pull");
    let listed = kiln_models(&base).await;
    let installable = listed["result"]["installable"].as_array().expect("list");
    assert!(
        installable
            .iter()
            .any(|model| model["name"] == MINILM && model["installed"] == true),
        "{listed}"
    );

    let unload = |name: &str| {
        client()
            .post(format!("{base}/kiln/models/{name}/unload"))
            .send()
    };
    let answer: Value = unload(MINILM)
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["result"], json!({"name": MINILM, "unloaded": true}));
    assert!(!loaded(&base).await.contains_key(MINILM));
    assert_eq!(embed_status(&base).await, (200, None), "loads again");
    let response = unload("no-such-model").await.expect("sent");
    assert_eq!(response.status().as_u16(), 400);

    let (status, events) = pull_events(&base, "../etc").await;
    assert_eq!(status, 400, "{events:?}");
}
