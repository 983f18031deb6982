//! What a request can make Kiln store: a batch over `limits.batch.max_requests`, an NDJSON
//! upsert over `limits.vectorize.max_vectors_per_write`, and a LoRA adapter whose tensors
//! disagree with its rank are refused; the server stays up, the same kind of request within
//! the bounds succeeds, and peak memory stays under the bound.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::client;
use crate::harness::{assert_peak_rss_under, assert_refused, target, PEAK_RSS_BOUND};

/// Served by the default embedding model, so a batch of it is queued and run.
const EMBEDDING: &str = "@cf/baai/bge-small-en-v1.5";
/// A catalog model with LoRA support (fine-tunes are only registered, never run, here).
const LORA_BASE: &str = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";

/// A fresh account per run: indexes and fine-tunes persist in the shared data directory.
fn fresh_account() -> String {
    format!("abuse-{}", uuid::Uuid::new_v4().simple())
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn assert_healthy() {
    let health = client()
        .get(format!("{}/health", target().base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/health answers after the attack");
    assert_eq!(health.status(), 200);
    assert_peak_rss_under(PEAK_RSS_BOUND);
}

#[tokio::test]
async fn a_batch_over_max_requests_is_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let url = format!(
        "{}/client/v4/accounts/{}/ai/run/{EMBEDDING}?queueRequest=true",
        target().base,
        crate::common::ACCOUNT
    );
    let requests = vec![json!({"text": "x"}); 1001];
    let (status, body) = send(client().post(&url).json(&json!({"requests": requests}))).await;
    assert_refused(status, &body, 5006, "limits.batch.max_requests");
    assert_healthy().await;
    let (status, body) = send(
        client()
            .post(&url)
            .json(&json!({"requests": [{"text": "a"}, {"text": "b", "external_reference": "b"}]})),
    )
    .await;
    assert_eq!(status, 200, "a batch within the limits: {body}");
    assert_eq!(body["result"]["status"], "queued", "{body}");
}

#[tokio::test]
async fn an_ndjson_upsert_over_max_vectors_is_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let account = fresh_account();
    let indexes = format!(
        "{}/client/v4/accounts/{account}/vectorize/v2/indexes",
        target().base
    );
    let (status, body) = send(
        client()
            .post(&indexes)
            .json(&json!({"name": "abuse", "config": {"dimensions": 2, "metric": "cosine"}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // About 25 MB of tiny lines: a million vectors, far over the 5000 of one write.
    let line = "{\"id\":\"a\",\"values\":[1,0]}\n";
    let ndjson = line.repeat(1_000_000);
    let (status, body) = send(
        client()
            .post(format!("{indexes}/abuse/upsert"))
            .header("content-type", "application/x-ndjson")
            .body(ndjson),
    )
    .await;
    assert_refused(
        status,
        &body,
        5006,
        "limits.vectorize.max_vectors_per_write",
    );
    assert_healthy().await;
    let normal: String = (0..3)
        .map(|n| format!("{{\"id\":\"v{n}\",\"values\":[1,{n}]}}\n"))
        .collect();
    let (status, body) = send(
        client()
            .post(format!("{indexes}/abuse/upsert"))
            .header("content-type", "application/x-ndjson")
            .body(normal),
    )
    .await;
    assert_eq!(status, 200, "an upsert within the limits: {body}");
    assert!(body["result"]["mutationId"].is_string(), "{body}");
    let (status, body) = send(client().delete(format!("{indexes}/abuse"))).await;
    assert_eq!(status, 200, "{body}");
}

/// A safetensors file of f32 zeros, built by hand: `[(name, shape)]`.
fn safetensors(tensors: &[(&str, [usize; 2])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, shape) in tensors {
        let bytes = shape[0] * shape[1] * 4;
        header.insert(
            (*name).to_owned(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = Value::Object(header).to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.resize(file.len() + offset, 0);
    file
}

const Q_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const Q_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

async fn upload(
    finetunes: &str,
    finetune: &str,
    file_name: &str,
    contents: Vec<u8>,
) -> (u16, Value) {
    let form = reqwest::multipart::Form::new()
        .text("file_name", file_name.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(contents).file_name(file_name.to_owned()),
        );
    send(
        client()
            .post(format!("{finetunes}/{finetune}/finetune-assets"))
            .multipart(form),
    )
    .await
}

#[tokio::test]
async fn a_lora_adapter_whose_shape_disagrees_with_its_rank_is_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let account = fresh_account();
    let finetunes = format!(
        "{}/client/v4/accounts/{account}/ai/finetunes",
        target().base
    );
    let config = json!({"peft_type": "LORA", "model_type": "llama", "r": 8, "lora_alpha": 16,
        "target_modules": ["q_proj"]})
    .to_string()
    .into_bytes();
    for name in ["bad-rank", "good-rank"] {
        let (status, body) = send(
            client()
                .post(&finetunes)
                .json(&json!({"model": LORA_BASE, "name": name})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = upload(&finetunes, name, "adapter_config.json", config.clone()).await;
        assert_eq!(status, 200, "{body}");
    }
    // Rank 4 tensors against r = 8.
    let wrong = safetensors(&[(Q_A, [4, 576]), (Q_B, [576, 4])]);
    let (status, body) = upload(&finetunes, "bad-rank", "adapter_model.safetensors", wrong).await;
    assert_refused(status, &body, 3039, Q_A);
    assert_healthy().await;
    let right = safetensors(&[(Q_A, [8, 576]), (Q_B, [576, 8])]);
    let (status, body) = upload(&finetunes, "good-rank", "adapter_model.safetensors", right).await;
    assert_eq!(status, 200, "an adapter of the declared rank: {body}");
    let _ = std::fs::remove_dir_all(
        kiln_store::default_data_dir()
            .join("finetunes")
            .join(&account),
    );
}
