//! `/v1/embeddings` over plain HTTP against the real all-MiniLM-L6-v2 model.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const BGE: &str = "@cf/baai/bge-base-en-v1.5";

async fn embed(body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post_json(&url("/v1/embeddings"), body).await
}

fn float_vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| {
            item["embedding"]
                .as_array()
                .expect("float embedding")
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test]
async fn float_embeddings_have_openai_list_shape() {
    for base in ["/v1".to_owned(), format!("/accounts/{ACCOUNT}/ai/v1")] {
        let response = client()
            .post(url(&format!("{base}/embeddings")))
            .json(&json!({"model": BGE, "input": ["hello world", "world"], "encoding_format": "float"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-kiln-model"], "all-minilm-l6-v2");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], BGE);
        for (index, item) in body["data"].as_array().unwrap().iter().enumerate() {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], index);
        }
        let vectors = float_vectors(&body);
        assert_eq!(vectors.len(), 2);
        for vector in &vectors {
            assert_eq!(vector.len(), 384);
            let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
        }
        // [CLS] hello world [SEP] + [CLS] world [SEP].
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 7, "total_tokens": 7})
        );
    }
}

#[tokio::test]
async fn base64_decodes_to_the_float_vectors() {
    let input = json!(["The quick brown fox.", "A man is eating food."]);
    let (_, _, floats) = embed(&json!({"model": BGE, "input": input})).await;
    let (status, _, encoded) =
        embed(&json!({"model": BGE, "input": input, "encoding_format": "base64"})).await;
    assert_eq!(status, 200, "{encoded}");
    let expected = float_vectors(&floats);
    for (item, expected) in encoded["data"].as_array().unwrap().iter().zip(&expected) {
        let bytes = BASE64
            .decode(item["embedding"].as_str().expect("base64 string"))
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // JSON floats are printed from f32 and read back; they round-trip exactly.
        assert!(max_abs_difference(&decoded, expected) < 1e-6);
    }
    assert_eq!(encoded["usage"], floats["usage"]);
}

/// bert-base-uncased ids (MiniLM's vocabulary): "hello" 7592, "world" 2088.
#[tokio::test]
async fn token_arrays_embed_like_the_same_text() {
    let (_, _, from_text) = embed(&json!({"model": BGE, "input": ["hello world", "world"]})).await;
    let (status, _, from_ids) =
        embed(&json!({"model": BGE, "input": [[7592, 2088], [2088]]})).await;
    assert_eq!(status, 200, "{from_ids}");
    let (status, _, single_ids) = embed(&json!({"model": BGE, "input": [7592, 2088]})).await;
    assert_eq!(status, 200, "{single_ids}");
    let text_vectors = float_vectors(&from_text);
    let id_vectors = float_vectors(&from_ids);
    assert!(max_abs_difference(&text_vectors[0], &id_vectors[0]) < 1e-5);
    assert!(max_abs_difference(&text_vectors[1], &id_vectors[1]) < 1e-5);
    assert!(max_abs_difference(&text_vectors[0], &float_vectors(&single_ids)[0]) < 1e-5);
    assert_eq!(from_ids["usage"], from_text["usage"]);

    let (status, _, error) = embed(&json!({"model": BGE, "input": [[7592, 999999]]})).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("999999"),
        "{error}"
    );
}

#[tokio::test]
async fn dimensions_must_match_the_model() {
    let (status, _, body) = embed(&json!({"model": BGE, "input": "hi", "dimensions": 384})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = embed(&json!({"model": BGE, "input": "hi", "dimensions": 256})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "dimensions");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("384"),
        "{body}"
    );
}

/// Concurrent requests share forward passes; each must still be billed its own tokens exactly.
#[tokio::test]
async fn usage_is_exact_when_requests_are_batched_together() {
    let inputs = [
        json!("hello world"),
        json!(["world", "hello world"]),
        json!("This is a test sentence."),
        json!(["a", "b", "c", "hello world"]),
    ];
    let mut solo = Vec::new();
    for input in &inputs {
        let (_, _, body) = embed(&json!({"model": BGE, "input": input})).await;
        solo.push(body["usage"]["prompt_tokens"].as_u64().unwrap());
    }
    assert_eq!(solo, vec![4, 7, 8, 13]);
    for _ in 0..3 {
        let bodies: Vec<Value> = inputs
            .iter()
            .map(|input| json!({"model": BGE, "input": input}))
            .collect();
        let answers = futures::future::join_all(bodies.iter().map(embed)).await;
        let together: Vec<u64> = answers
            .iter()
            .map(|(_, _, body)| body["usage"]["prompt_tokens"].as_u64().unwrap())
            .collect();
        assert_eq!(together, solo);
    }
}
