//! Text classification and reranking through real HTTP: the small random DistilBERT and XLM-R
//! fixtures of `kiln-engine-text` (made with transformers by
//! `scripts/reference/text_models.py`) installed through the store's Hugging Face directory path,
//! then served as `@cf/huggingface/distilbert-sst-2-int8` and `@cf/baai/bge-reranker-base` over
//! REST, the Worker binding and the batch queue, and as `/v1/rerank` and `/rerank`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{assert_error_envelope, client, post_json, spawn_server, test_config, ACCOUNT};
use kiln_store::{ModelStore, Progress, DEFAULT_HF_FILES};
use serde_json::{json, Value};

const SST2: &str = "@cf/huggingface/distilbert-sst-2-int8";
const RERANKER: &str = "@cf/baai/bge-reranker-base";
/// The fixtures' logits agree with transformers' within this; scores derive from them.
const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-engine-text/tests/fixtures")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference");
    serde_json::from_str(&text).expect("JSON")
}

/// A server whose data directory holds only the two fixture models, installed as a user would
/// (`kiln models pull NAME --hf DIR`).
fn server() -> SocketAddr {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let data = DATA.get_or_init(|| tempfile::tempdir().expect("temp dir"));
        let store = ModelStore::new(data.path());
        for (name, dir) in [
            ("sst2-tiny", "distilbert-sst2-tiny"),
            ("reranker-tiny", "bge-reranker-tiny"),
        ] {
            store
                .install_hf_dir(name, &fixture(dir), &DEFAULT_HF_FILES, Progress::Quiet)
                .expect("fixture installs");
        }
        // Its own batch queue: another server's runner must not take its items.
        spawn_server(kiln::ServeConfig {
            data_dir: Some(data.path().to_path_buf()),
            batch_db: Some(data.path().join("batches.db")),
            models: Some(Vec::new()),
            fetch: Some(Vec::new()),
            ..test_config()
        })
    })
}

fn url(path: &str) -> String {
    format!("http://{}{path}", server())
}

async fn run(model: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post_json(
        &url(&format!("/client/v4/accounts/{ACCOUNT}/ai/run/{model}")),
        &body,
    )
    .await
}

fn number(value: &Value) -> f64 {
    value.as_f64().expect("number")
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The first reranker case of the fixture: its query, contexts, logits and order.
fn rerank_case() -> (String, Vec<String>, Vec<f64>, Vec<usize>) {
    let case = reference("bge-reranker-tiny")["cases"][0].clone();
    let contexts = case["contexts"].as_array().expect("contexts");
    (
        case["query"].as_str().expect("query").to_owned(),
        contexts
            .iter()
            .map(|c| c.as_str().expect("text").to_owned())
            .collect(),
        case["logits"]
            .as_array()
            .expect("logits")
            .iter()
            .map(number)
            .collect(),
        case["order"]
            .as_array()
            .expect("order")
            .iter()
            .map(|i| i.as_u64().expect("index") as usize)
            .collect(),
    )
}

#[tokio::test]
async fn sentiment_answers_labels_with_transformers_scores() {
    let case = reference("distilbert-sst2-tiny")["cases"][0].clone();
    let (status, headers, body) = run(SST2, json!({"text": case["text"]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-kiln-model"], "sst2-tiny");
    let result = body["result"]
        .as_array()
        .expect("an array at the top of result");
    let expected = case["scores"].as_array().expect("scores");
    assert_eq!(result.len(), 2);
    for (got, want) in result.iter().zip(expected) {
        assert_eq!(got["label"], want["label"], "{body}");
        assert!((number(&got["score"]) - number(&want["score"])).abs() <= TOLERANCE);
    }
    assert!(number(&result[0]["score"]) >= number(&result[1]["score"]));

    // The model by its own name answers in the same shape.
    let (status, _, body) = run("sst2-tiny", json!({"text": "ok"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"][0]["label"].is_string(), "{body}");
}

#[tokio::test]
async fn reranker_orders_contexts_as_transformers_does() {
    let (query, contexts, logits, order) = rerank_case();
    let contexts_json: Vec<Value> = contexts.iter().map(|t| json!({"text": t})).collect();
    let (status, headers, body) =
        run(RERANKER, json!({"query": query, "contexts": contexts_json})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-kiln-model"], "reranker-tiny");
    let response = body["result"]["response"].as_array().expect("response");
    let ids: Vec<usize> = response
        .iter()
        .map(|r| r["id"].as_u64().expect("id") as usize)
        .collect();
    assert_eq!(ids, order, "{body}");
    for item in response {
        let id = item["id"].as_u64().expect("id") as usize;
        assert!(
            (number(&item["score"]) - logits[id]).abs() <= TOLERANCE,
            "{body}"
        );
    }

    let (status, _, body) = run(
        RERANKER,
        json!({"query": query, "contexts": contexts_json, "top_k": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["response"].as_array().map(Vec::len), Some(2));
    // A top_k past the contexts returns them all.
    let (status, _, body) = run(
        RERANKER,
        json!({"query": query, "contexts": contexts_json, "top_k": 50}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["response"].as_array().map(Vec::len), Some(4));
    // Both catalog rerankers reach the installed cross-encoder; so does its own name.
    for model in ["@cf/baai/bge-reranker-v2-m3", "reranker-tiny"] {
        let (status, _, body) =
            run(model, json!({"query": query, "contexts": contexts_json})).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["result"]["response"][0]["id"], order[0]);
    }
}

#[tokio::test]
async fn bad_input_gets_400_in_the_workers_ai_envelope() {
    let overlong = reference("bge-reranker-tiny")["overlong_text"].clone();
    let huge = "word ".repeat(20_000);
    let cases = [
        (RERANKER, json!({"contexts": [{"text": "a"}]}), "query"),
        (RERANKER, json!({"query": "q", "contexts": []}), "contexts"),
        (
            RERANKER,
            json!({"query": "q", "contexts": [{"text": "a"}], "top_k": 0}),
            "top_k",
        ),
        (
            RERANKER,
            json!({"query": "q", "contexts": [{"text": "a"}], "top_k": 1_000_000}),
            "max_contexts",
        ),
        (
            RERANKER,
            json!({"query": "q", "contexts": [{"text": "fine"}, {"text": overlong}]}),
            "input 1: the query and passage together are",
        ),
        (
            RERANKER,
            json!({"query": huge, "contexts": [{"text": "a"}]}),
            "max_text_bytes",
        ),
        (SST2, json!({"text": overlong}), "at most 128"),
        (SST2, json!({"text": ""}), "text"),
        (
            SST2,
            json!({"query": "q", "contexts": [{"text": "a"}]}),
            "text",
        ),
    ];
    for (model, body, mentions) in cases {
        let (status, _, answer) = run(model, body.clone()).await;
        assert_eq!(status, 400, "{model} {body}: {answer}");
        let (code, message) = assert_error_envelope(&answer);
        assert_eq!(code, 5006, "{answer}");
        assert!(
            message.contains(mentions),
            "{message} should mention {mentions}"
        );
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"text": format!("doc {i}")}))
        .collect();
    let (status, _, answer) = run(RERANKER, json!({"query": "q", "contexts": many})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(assert_error_envelope(&answer).1.contains("max_contexts"));
}

#[tokio::test]
async fn v1_rerank_answers_in_llama_server_and_tei_shapes() {
    let (query, contexts, logits, order) = rerank_case();
    let (status, headers, body) = post_json(
        &url("/v1/rerank"),
        &json!({"model": RERANKER, "query": query, "documents": contexts, "top_n": 3,
                "return_documents": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-kiln-model"], "reranker-tiny");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for (result, &index) in results.iter().zip(&order) {
        assert_eq!(result["index"], index, "{body}");
        let score = number(&result["relevance_score"]);
        assert!(
            (score - sigmoid(logits[index])).abs() <= TOLERANCE,
            "{body}"
        );
        assert_eq!(result["document"]["text"], contexts[index]);
    }
    assert!(body["usage"]["total_tokens"].as_u64().expect("tokens") > 0);

    // TEI: no model, `texts`, raw scores on request; also at the root.
    let (status, _, body) = post_json(
        &url("/rerank"),
        &json!({"query": query, "texts": contexts, "raw_scores": true, "return_text": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = body.as_array().expect("TEI answers an array");
    assert_eq!(results.len(), contexts.len());
    assert_eq!(results[0]["index"], order[0]);
    assert!((number(&results[0]["score"]) - logits[order[0]]).abs() <= TOLERANCE);
    assert_eq!(results[0]["text"], contexts[order[0]]);

    for (body, param) in [
        (json!({"documents": ["a"]}), "query"),
        (json!({"query": "q", "documents": []}), "documents"),
        (
            json!({"query": "q", "documents": ["a"], "top_n": 0}),
            "top_n",
        ),
        (
            json!({"model": SST2, "query": "q", "documents": ["a"]}),
            "model",
        ),
    ] {
        let (status, _, answer) = post_json(&url("/v1/rerank"), &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"].as_str(), Some(param), "{answer}");
    }
}

#[tokio::test]
async fn the_binding_and_the_batch_queue_serve_both_tasks() {
    let binding = |model: &'static str, inputs: Value| async move {
        let response = client()
            .post(url("/run?version=3"))
            .header("cf-consn-model-id", model)
            .json(&json!({"inputs": inputs, "options": {}}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("JSON")
    };
    let labels = binding(SST2, json!({"text": "ok"})).await;
    assert!(labels[0]["label"].is_string(), "bare result: {labels}");
    let (query, contexts, _, order) = rerank_case();
    let contexts_json: Vec<Value> = contexts.iter().map(|t| json!({"text": t})).collect();
    let ranked = binding(RERANKER, json!({"query": query, "contexts": contexts_json})).await;
    assert_eq!(ranked["response"][0]["id"], order[0], "{ranked}");

    let queue_url = url(&format!(
        "/client/v4/accounts/{ACCOUNT}/ai/run/{RERANKER}?queueRequest=true"
    ));
    let requests = json!({"requests": [
        {"query": query, "contexts": contexts_json},
        {"query": query, "contexts": contexts_json, "top_k": 1},
    ]});
    let (status, _, queued) = post_json(&queue_url, &requests).await;
    assert_eq!(status, 200, "{queued}");
    let request_id = queued["result"]["request_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, _, polled) = post_json(&queue_url, &json!({"request_id": request_id})).await;
        if polled["result"].get("responses").is_some() {
            break polled["result"].clone();
        }
        assert!(Instant::now() < deadline, "batch never finished: {polled}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 2, "{done}");
    assert_eq!(
        responses[0]["result"]["response"][0]["id"], order[0],
        "{done}"
    );
    assert_eq!(
        responses[1]["result"]["response"].as_array().map(Vec::len),
        Some(1),
        "{done}"
    );
}

#[tokio::test]
async fn without_a_classifier_the_catalog_id_names_what_to_pull() {
    let empty = tempfile::tempdir().expect("temp dir");
    let bare = spawn_server(kiln::ServeConfig {
        data_dir: Some(empty.path().to_path_buf()),
        batch_db: Some(empty.path().join("batches.db")),
        models: Some(Vec::new()),
        fetch: Some(Vec::new()),
        ..test_config()
    });
    for (model, body) in [
        (SST2, json!({"text": "great"})),
        (RERANKER, json!({"query": "q", "contexts": [{"text": "a"}]})),
    ] {
        let (status, _, answer) = post_json(
            &format!("http://{bare}/client/v4/accounts/{ACCOUNT}/ai/run/{model}"),
            &body,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let (code, message) = assert_error_envelope(&answer);
        assert_eq!(code, 5007);
        assert!(message.contains("kiln models pull"), "{message}");
        assert!(message.contains("ForSequenceClassification"), "{message}");
    }
}

#[test]
fn models_pull_installs_a_local_directory_and_list_shows_what_it_serves() {
    let data = tempfile::tempdir().expect("temp dir");
    let kiln = |args: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("kiln runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    };
    let source = fixture("bge-reranker-tiny");
    let pulled = kiln(&[
        "models".as_ref(),
        "pull".as_ref(),
        "my-reranker".as_ref(),
        "--hf".as_ref(),
        source.as_os_str(),
    ]);
    assert!(pulled.contains("hfreranker"), "{pulled}");
    let listed = kiln(&["models".as_ref(), "list".as_ref()]);
    assert!(listed.contains("my-reranker"), "{listed}");
    assert!(
        listed.contains("serves @cf/baai/bge-reranker-base"),
        "{listed}"
    );
    assert!(!listed.contains("distilbert-sst-2-int8"), "{listed}");
}
