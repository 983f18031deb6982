//! Translation and summarization through real HTTP: the small random M2M100 and BART fixtures of
//! `kiln-engine-seq2seq` (made with transformers by `scripts/reference/seq2seq_models.py`)
//! installed through the store's Hugging Face directory path, then served as
//! `@cf/meta/m2m100-1.2b` and `@cf/facebook/bart-large-cnn`. The answers must be the text
//! transformers' greedy `generate` gives on the same files.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::{assert_error_envelope, post_json, spawn_server, test_config, ACCOUNT};
use kiln_store::{ModelStore, Progress, DEFAULT_HF_FILES};
use serde_json::{json, Value};

const M2M100: &str = "@cf/meta/m2m100-1.2b";
const BART: &str = "@cf/facebook/bart-large-cnn";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-engine-seq2seq/tests/fixtures")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference");
    serde_json::from_str(&text).expect("JSON")
}

/// A server whose data directory holds only the two fixture models, installed as
/// `kiln models pull NAME --hf DIR` installs them (generation_config.json included).
fn server() -> SocketAddr {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let data = DATA.get_or_init(|| tempfile::tempdir().expect("temp dir"));
        let store = ModelStore::new(data.path());
        let mut files = DEFAULT_HF_FILES.to_vec();
        files.push("generation_config.json");
        for (name, dir) in [("m2m100-tiny", "m2m100-tiny"), ("bart-tiny", "bart-tiny")] {
            let model = store
                .install_hf_dir(name, &fixture(dir), &files, Progress::Quiet)
                .expect("fixture installs");
            let expected = match name {
                "bart-tiny" => "hfsummarizer",
                _ => "hftranslator",
            };
            assert_eq!(model.format.as_str(), expected);
        }
        spawn_server(kiln::ServeConfig {
            data_dir: Some(data.path().to_path_buf()),
            batch_db: Some(data.path().join("batches.db")),
            models: Some(Vec::new()),
            fetch: Some(Vec::new()),
            ..test_config()
        })
    })
}

async fn run(model: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!(
        "http://{}/client/v4/accounts/{ACCOUNT}/ai/run/{model}",
        server()
    );
    post_json(&url, &body).await
}

#[tokio::test]
async fn m2m100_translates_as_transformers_does() {
    let served = reference("m2m100-tiny")["served_translation"].clone();
    let expected = served["generated_text"].as_str().expect("text");
    for (source, target) in [("english", "french"), ("en", "fr"), ("EN", "French")] {
        let body = json!({"text": served["text"], "source_lang": source, "target_lang": target});
        let (status, headers, answer) = run(M2M100, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(headers["x-kiln-model"], "m2m100-tiny");
        assert_eq!(answer["success"], true, "{answer}");
        assert_eq!(
            answer["result"]["translated_text"], expected,
            "{source} → {target}"
        );
    }
    // source_lang defaults to English; the local name answers in the m2m100 shapes too.
    let body = json!({"text": served["text"], "target_lang": "fr"});
    let (status, _, answer) = run("m2m100-tiny", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["translated_text"], expected);
}

#[tokio::test]
async fn bart_summarizes_as_transformers_does() {
    let reference = reference("bart-tiny");
    let max_length = reference["max_new_tokens"].clone();
    for case in reference["cases"].as_array().expect("cases").iter().take(2) {
        let body = json!({"input_text": case["text"], "max_length": max_length});
        let (status, headers, answer) = run(BART, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(headers["x-kiln-model"], "bart-tiny");
        assert_eq!(
            answer["result"]["summary"], case["generated_text"],
            "{answer}"
        );
    }
}

#[tokio::test]
async fn bad_languages_and_overlong_texts_are_the_callers_errors() {
    let body = json!({"text": "Cats sleep.", "target_lang": "xx"});
    let (status, _, answer) = run(M2M100, body).await;
    assert_eq!(status, 400, "{answer}");
    let (code, message) = assert_error_envelope(&answer);
    assert_eq!(code, 5006);
    assert!(message.contains("__xx__"), "{message}");

    let body = json!({"text": "Cats sleep.", "target_lang": "klingon"});
    let (status, _, answer) = run(M2M100, body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(assert_error_envelope(&answer).1.contains("target_lang"));

    let overlong = reference("bart-tiny")["overlong_text"].clone();
    let (status, _, answer) = run(BART, json!({"input_text": overlong})).await;
    assert_eq!(status, 400, "{answer}");
    let (code, message) = assert_error_envelope(&answer);
    assert_eq!(code, 5006);
    assert!(message.contains("at most 64"), "{message}");

    // The schema's own checks come first.
    let (status, _, answer) = run(M2M100, json!({"text": "no target"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(assert_error_envelope(&answer).0, 5006);
}

/// The Worker binding (`POST /run`, bare results) and the batch queue (`?queueRequest=true`)
/// serve both tasks in their Workers AI shapes too.
#[tokio::test]
async fn the_binding_and_the_batch_queue_serve_translation_and_summarization() {
    let served = reference("m2m100-tiny")["served_translation"].clone();
    let translated = served["generated_text"].clone();
    let bart = reference("bart-tiny");
    let case = bart["cases"][0].clone();
    let binding = |model: &'static str, inputs: Value| async move {
        let response = reqwest::Client::new()
            .post(format!("http://{}/run?version=3", server()))
            .header("cf-consn-model-id", model)
            .json(&json!({"inputs": inputs, "options": {}}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("JSON")
    };
    let answer = binding(M2M100, json!({"text": served["text"], "target_lang": "fr"})).await;
    assert_eq!(
        answer["translated_text"], translated,
        "bare result: {answer}"
    );
    let answer = binding(
        BART,
        json!({"input_text": case["text"], "max_length": bart["max_new_tokens"]}),
    )
    .await;
    assert_eq!(
        answer["summary"], case["generated_text"],
        "bare result: {answer}"
    );

    let queue_url = format!(
        "http://{}/client/v4/accounts/{ACCOUNT}/ai/run/{M2M100}?queueRequest=true",
        server()
    );
    let requests = json!({"requests": [
        {"text": served["text"], "target_lang": "fr"},
        {"text": served["text"], "source_lang": "english", "target_lang": "french"},
    ]});
    let (status, _, queued) = post_json(&queue_url, &requests).await;
    assert_eq!(status, 200, "{queued}");
    let request_id = queued["result"]["request_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let (_, _, polled) = post_json(&queue_url, &json!({"request_id": request_id})).await;
        if polled["result"].get("responses").is_some() {
            break polled["result"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "batch never finished: {polled}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 2, "{done}");
    for response in responses {
        assert_eq!(response["result"]["translated_text"], translated, "{done}");
    }
}
