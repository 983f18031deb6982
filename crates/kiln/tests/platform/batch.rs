//! `?queueRequest=true`: 20 embeddings and 5 generations, with the server killed (`kill -9`)
//! while they run; the restarted server finishes exactly what was left.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use kiln_batch::BatchQueue;
use serde_json::{json, Value};

use crate::common::{client, KilnProcess, ACCOUNT};

const EMBEDDING_MODEL: &str = "@cf/baai/bge-base-en-v1.5";
const TEXT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";

async fn queue(base: &str, model: &str, body: Value) -> Value {
    let url = format!("{base}/client/v4/accounts/{ACCOUNT}/ai/run/{model}?queueRequest=true");
    let response = client().post(url).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

async fn wait_until_done(base: &str, model: &str, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let polled = queue(base, model, json!({"request_id": request_id})).await;
        if polled["result"].get("responses").is_some() {
            return polled["result"].clone();
        }
        assert!(
            ["queued", "running"].contains(&polled["result"]["status"].as_str().unwrap_or("")),
            "{polled}"
        );
        assert!(
            Instant::now() < deadline,
            "batch {request_id} never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_killed_server_finishes_its_batches_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("batches.db");
    let args = [OsStr::new("--batch-db"), db.as_os_str()];
    let first = KilnProcess::start(&args).await;

    let texts: Vec<String> = (0..20)
        .map(|i| format!("document number {i} about kilns"))
        .collect();
    let embedding_requests: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"text": text, "external_reference": format!("doc-{i}")}))
        .collect();
    let queued = queue(
        &first.base,
        EMBEDDING_MODEL,
        json!({"requests": embedding_requests}),
    )
    .await;
    assert_eq!(queued["result"]["status"], "queued", "{queued}");
    assert_eq!(queued["result"]["model"], EMBEDDING_MODEL);
    let embeddings_id = queued["result"]["request_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Generations long enough that the kill lands while some still run.
    let generation_requests: Vec<Value> = (0..5)
        .map(|i| json!({"prompt": format!("Write a story about kiln number {i}."), "max_tokens": 40 + 60 * i}))
        .collect();
    let queued = queue(
        &first.base,
        TEXT_MODEL,
        json!({"requests": generation_requests}),
    )
    .await;
    let generations_id = queued["result"]["request_id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Kill once some items are done and some are not.
    let observer = BatchQueue::open(&db).expect("batch db");
    let deadline = Instant::now() + Duration::from_secs(300);
    let left_at_kill = loop {
        let left = observer.unfinished().expect("count");
        if left > 0 && left < 25 {
            break left;
        }
        assert!(left > 0, "everything finished before the kill could land");
        assert!(Instant::now() < deadline, "nothing finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill_9();
    assert!(left_at_kill > 0);
    let left_after_kill = observer.unfinished().expect("count");
    assert!(left_after_kill > 0, "the kill landed mid-batch");

    let second = KilnProcess::start(&args).await;
    let embeddings = wait_until_done(&second.base, EMBEDDING_MODEL, &embeddings_id).await;
    let generations = wait_until_done(&second.base, TEXT_MODEL, &generations_id).await;

    let responses = embeddings["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 20);
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response["id"], i, "{response}");
        assert_eq!(response["success"], true, "{response}");
        assert_eq!(response["external_reference"], format!("doc-{i}"));
        assert_eq!(response["result"]["shape"], json!([1, 384]), "{response}");
        assert!(
            response["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
            "an embedding's token count: {response}"
        );
    }
    let item_tokens: u64 = responses
        .iter()
        .map(|response| response["usage"]["prompt_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(embeddings["usage"]["prompt_tokens"], item_tokens);
    // A queued item is the same computation as a direct request.
    let direct = client()
        .post(format!(
            "{}/client/v4/accounts/{ACCOUNT}/ai/run/{EMBEDDING_MODEL}",
            second.base
        ))
        .json(&json!({"text": texts[7]}))
        .send()
        .await
        .expect("sent")
        .json::<Value>()
        .await
        .expect("JSON");
    let queued_vector = responses[7]["result"]["data"][0]
        .as_array()
        .expect("vector");
    let direct_vector = direct["result"]["data"][0].as_array().expect("vector");
    for (q, d) in queued_vector.iter().zip(direct_vector) {
        let (q, d) = (
            q.as_f64().unwrap_or(f64::NAN),
            d.as_f64().unwrap_or(f64::NAN),
        );
        assert!((q - d).abs() < 1e-5, "{q} vs {d}");
    }

    let responses = generations["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 5);
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response["id"], i, "{response}");
        assert_eq!(response["success"], true, "{response}");
        assert!(
            !response["result"]["response"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{response}"
        );
        assert!(response["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);
    }
    assert!(
        generations["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0,
        "{generations}"
    );
    assert_eq!(observer.unfinished().expect("count"), 0);
    second.kill_9();
}

/// A Worker's `env.AI.run(model, {requests}, {queueRequest: true})` and its poll
/// `env.AI.run(model, {request_id})`, as the binding sends them (spec §2.1, §2.3).
#[tokio::test]
async fn the_worker_binding_queues_and_polls_batches() {
    let binding = |inputs: Value, options: Value| async move {
        let response = client()
            .post(crate::common::url("/run?version=3"))
            .header("cf-consn-model-id", EMBEDDING_MODEL)
            .json(&json!({"inputs": inputs, "options": options}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        response.json::<Value>().await.expect("JSON")
    };
    let queued = binding(
        json!({"requests": [{"text": "one"}, {"text": "two", "external_reference": "b"}]}),
        json!({"queueRequest": true}),
    )
    .await;
    // The binding gets the bare result, not the REST envelope.
    assert_eq!(queued["status"], "queued", "{queued}");
    assert_eq!(queued["model"], EMBEDDING_MODEL);
    let request_id = queued["request_id"]
        .as_str()
        .expect("request id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let polled = binding(json!({"request_id": request_id}), json!({})).await;
        if polled.get("responses").is_some() {
            break polled;
        }
        assert!(Instant::now() < deadline, "never finished: {polled}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[1]["external_reference"], "b");
    assert_eq!(responses[0]["result"]["shape"], json!([1, 384]), "{done}");
}
