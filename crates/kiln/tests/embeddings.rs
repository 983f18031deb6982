//! Text embeddings over HTTP against the real all-MiniLM-L6-v2 model.

mod common;

use common::*;
use serde_json::{json, Value};

const BGE: &str = "@cf/baai/bge-base-en-v1.5";

fn vectors(body: &Value) -> Vec<Vec<f64>> {
    body["result"]["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|v| {
            v.as_array()
                .expect("vector")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn similar_sentences_score_high_and_unrelated_low() {
    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell today.",
    ];
    let (status, headers, body) = run(BGE, &json!({"text": texts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-kiln-model"], "all-minilm-l6-v2");
    assert_eq!(body["result"]["shape"], json!([3, 384]));
    assert_eq!(body["result"]["pooling"], "mean");
    let v = vectors(&body);
    assert!(
        cosine(&v[0], &v[1]) > 0.7,
        "similar: {}",
        cosine(&v[0], &v[1])
    );
    assert!(
        cosine(&v[0], &v[2]) < 0.3,
        "unrelated: {}",
        cosine(&v[0], &v[2])
    );
    for vector in &v {
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalized, got {norm}");
    }
}

#[tokio::test]
async fn single_string_gives_one_row() {
    let (status, _, body) = run(
        "@cf/baai/bge-small-en-v1.5",
        &json!({"text": "hello world"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["shape"], json!([1, 384]));
}

#[tokio::test]
async fn cls_and_mean_pooling_differ() {
    let text = "Kiln serves models on your own machine.";
    let (_, _, mean) = run(BGE, &json!({"text": text, "pooling": "mean"})).await;
    let (status, _, cls) = run(BGE, &json!({"text": text, "pooling": "cls"})).await;
    assert_eq!(status, 200, "{cls}");
    assert_eq!(cls["result"]["pooling"], "cls");
    let (m, c) = (vectors(&mean), vectors(&cls));
    assert!(cosine(&m[0], &c[0]) < 0.999, "cls and mean must differ");
}

#[tokio::test]
async fn batched_vectors_equal_single_vectors() {
    let texts = [
        "short",
        "A considerably longer sentence that needs many more tokens than the others in the batch.",
        "medium length text here",
    ];
    let (_, _, batch) = run(BGE, &json!({"text": texts})).await;
    let batched = vectors(&batch);
    for (i, text) in texts.iter().enumerate() {
        let (_, _, single) = run(BGE, &json!({"text": text})).await;
        let single = vectors(&single);
        let max_diff = batched[i]
            .iter()
            .zip(&single[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(max_diff < 1e-5, "text {i}: max difference {max_diff}");
    }
}

#[tokio::test]
async fn concurrent_requests_get_their_own_vectors() {
    let texts = ["alpha beta", "the quick brown fox", "zeta"];
    let bodies: Vec<Value> = texts.iter().map(|t| json!({"text": t})).collect();
    let singles = futures::future::join_all(bodies.iter().map(|b| run(BGE, b))).await;
    let (_, _, batch) = run(BGE, &json!({"text": texts})).await;
    let batched = vectors(&batch);
    for (i, (_, _, body)) in singles.iter().enumerate() {
        let v = vectors(body);
        let max_diff = batched[i]
            .iter()
            .zip(&v[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            max_diff < 1e-5,
            "request {i} got someone else's vector ({max_diff})"
        );
    }
}

const EMBEDDING_GEMMA: &str = "@cf/google/embeddinggemma-300m";

/// The reference vectors of `scripts/reference/embeddinggemma_golden.py` (sentence-transformers
/// on the same files), with the document prompt Kiln applies.
fn embeddinggemma_golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kiln-engine-bert/tests/fixtures/embeddinggemma_golden.json"
    );
    let text = std::fs::read_to_string(path).expect("EmbeddingGemma fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

#[tokio::test]
async fn embeddinggemma_answers_768_dimensional_reference_vectors() {
    let golden = embeddinggemma_golden();
    let documents: Vec<&Value> = golden["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|item| item["prompt"] == "document")
        .take(3)
        .collect();
    let texts: Vec<&str> = documents
        .iter()
        .map(|item| item["text"].as_str().expect("text"))
        .collect();
    let (status, headers, body) = run(EMBEDDING_GEMMA, &json!({"text": texts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-kiln-model"], "embeddinggemma-300m");
    assert_eq!(body["result"]["shape"], json!([texts.len(), 768]));
    for (vector, item) in vectors(&body).iter().zip(&documents) {
        let expected: Vec<f64> = item["vector"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        let similarity = cosine(vector, &expected);
        assert!(
            similarity >= 0.999,
            "{:?}: cosine {similarity}",
            item["text"]
        );
    }
}

const BGE_M3: &str = "@cf/baai/bge-m3";
const QWEN3_EMBEDDING: &str = "@cf/qwen/qwen3-embedding-0.6b";

/// bge-m3's `{query?, contexts}` input (spec §3.2): contexts alone answer their vectors in
/// `response`; with a query they come back ranked by similarity to it, best first.
#[tokio::test]
async fn bge_m3_contexts_answer_vectors_and_rank_against_a_query() {
    let contexts = json!([
        {"text": "The Nile is a river in Africa."},
        {"text": "The Eiffel Tower in Paris is 330 metres tall."},
        {"text": "Espresso is brewed by forcing hot water through coffee."},
    ]);
    let (status, _, body) = run(BGE_M3, &json!({"contexts": contexts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["shape"], json!([3, 384]), "{body}");
    let response = body["result"]["response"].as_array().expect("vectors");
    assert_eq!(response.len(), 3);
    // The same texts as `text` give the same vectors.
    let texts: Vec<&str> = contexts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    // (Equal up to float rounding: concurrent tests share forward passes, padded differently.)
    let (_, _, plain) = run(BGE_M3, &json!({"text": texts})).await;
    for (plain, context) in vectors(&plain).iter().zip(response) {
        let context: Vec<f64> = serde_json::from_value(context.clone()).expect("vector");
        assert!(cosine(plain, &context) > 0.99999);
    }

    let (status, _, ranked) = run(
        BGE_M3,
        &json!({"query": "How tall is the Eiffel Tower?", "contexts": contexts}),
    )
    .await;
    assert_eq!(status, 200, "{ranked}");
    let ranking = ranked["result"]["response"].as_array().expect("ranking");
    assert_eq!(ranking.len(), 3);
    assert_eq!(ranking[0]["id"], 1, "{ranked}");
    let scores: Vec<f64> = ranking
        .iter()
        .map(|r| r["score"].as_f64().expect("score"))
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    let (status, _, refused) = run(BGE_M3, &json!({"query": "q", "contexts": []})).await;
    assert_eq!(status, 400, "{refused}");
}

/// qwen3-embedding's `{queries, documents, text, instruction}`: the queries' vectors, then the
/// documents' (and `text`'s), each equal to what the same text gets alone.
#[tokio::test]
async fn qwen3_embedding_takes_queries_and_documents() {
    let (status, _, body) = run(
        QWEN3_EMBEDDING,
        &json!({
            "queries": "what fires clay?",
            "documents": ["A kiln fires clay.", "Tea is a drink."],
            "instruction": "Given a question, retrieve passages that answer it",
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["shape"], json!([3, 384]), "{body}");
    let v = vectors(&body);
    assert!(
        cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]),
        "the kiln passage first"
    );
    let (_, _, alone) = run(QWEN3_EMBEDDING, &json!({"text": ["A kiln fires clay."]})).await;
    assert!(cosine(&vectors(&alone)[0], &v[1]) > 0.99999);
    let (status, _, refused) = run(QWEN3_EMBEDDING, &json!({"instruction": "only"})).await;
    assert_eq!(status, 400, "{refused}");
}

/// Queries get the serving model's query convention: with qwen3-embedding's id served by
/// EmbeddingGemma (an alias), `queries` take its query prompt and `documents` its document
/// prompt, matching sentence-transformers' `encode_query` / `encode_document` vectors.
#[tokio::test]
async fn queries_take_the_serving_models_query_prompt() {
    let mut config = test_config();
    config
        .aliases
        .insert(QWEN3_EMBEDDING.into(), "embeddinggemma-300m".into());
    let addr = spawn_server(config);
    let golden = embeddinggemma_golden();
    let items = golden["items"].as_array().expect("items");
    let of = |prompt: &str| -> Vec<&Value> {
        items
            .iter()
            .filter(|item| item["prompt"] == prompt)
            .take(2)
            .collect()
    };
    let (queries, documents) = (of("query"), of("document"));
    assert_eq!(queries.len(), 2, "the fixture holds two queries");
    let text = |item: &&Value| item["text"].as_str().expect("text").to_owned();
    let (status, _, body) = post_json(
        &format!("http://{addr}/client/v4/accounts/{ACCOUNT}/ai/run/{QWEN3_EMBEDDING}"),
        &json!({
            "queries": queries.iter().map(text).collect::<Vec<_>>(),
            "documents": documents.iter().map(text).collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["shape"], json!([4, 768]), "{body}");
    for (vector, item) in vectors(&body).iter().zip(queries.iter().chain(&documents)) {
        let expected: Vec<f64> = item["vector"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect();
        let similarity = cosine(vector, &expected);
        assert!(
            similarity >= 0.999,
            "{} {:?}: cosine {similarity}",
            item["prompt"],
            item["text"]
        );
    }
}

/// A catalog id aliased to the int8 ONNX MiniLM is served by ONNX Runtime through the same
/// routes, and its vectors stay within quantization error of the default f32 model's.
#[tokio::test]
async fn an_id_aliased_to_the_int8_model_answers_vectors_close_to_the_f32_ones() {
    kiln_store::ensure_for_tests("all-minilm-l6-v2-int8");
    let mut config = test_config();
    config
        .aliases
        .insert(BGE.into(), "all-minilm-l6-v2-int8".into());
    let int8_addr = spawn_server(config);
    let f32_addr = spawn_server(test_config());
    let texts = json!({"text": ["A man is eating food.", "The stock market fell today."]});
    let url = |addr| format!("http://{addr}/client/v4/accounts/{ACCOUNT}/ai/run/{BGE}");
    let (status, headers, int8) = post_json(&url(int8_addr), &texts).await;
    assert_eq!(status, 200, "{int8}");
    assert_eq!(headers["x-kiln-model"], "all-minilm-l6-v2-int8");
    assert_eq!(int8["result"]["shape"], json!([2, 384]));
    let (status, _, full) = post_json(&url(f32_addr), &texts).await;
    assert_eq!(status, 200, "{full}");
    for (quantized, reference) in vectors(&int8).iter().zip(&vectors(&full)) {
        let similarity = cosine(quantized, reference);
        assert!(similarity > 0.995, "cosine {similarity} to the f32 vector");
    }
}
