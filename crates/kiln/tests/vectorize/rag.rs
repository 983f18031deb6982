//! RAG end to end (spec §5 intro): embed a corpus with Kiln's embeddings, upsert it, query with
//! a question's embedding, and generate an answer with the retrieved passage as context.

use serde_json::json;

use super::*;

const EMBEDDER: &str = "@cf/baai/bge-small-en-v1.5";

const CORPUS: [(&str, &str); 5] = [
    (
        "eiffel",
        "The Eiffel Tower in Paris is 330 metres tall and was finished in 1889.",
    ),
    (
        "nile",
        "The Nile is a river in Africa, often called the longest river in the world.",
    ),
    (
        "python",
        "Python is a programming language created by Guido van Rossum.",
    ),
    (
        "everest",
        "Mount Everest, in the Himalayas, is the highest mountain above sea level.",
    ),
    (
        "coffee",
        "Espresso is coffee brewed by forcing hot water through finely ground beans.",
    ),
];

async fn embed(texts: &[&str]) -> Vec<Vec<f64>> {
    let (status, _, body) = run(EMBEDDER, &json!({"text": texts})).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["data"]
        .as_array()
        .expect("vectors")
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn retrieve_then_generate() {
    let index = Index::create(json!({"preset": EMBEDDER})).await;
    let texts: Vec<&str> = CORPUS.iter().map(|(_, text)| *text).collect();
    let vectors = embed(&texts).await;
    let lines: String = CORPUS
        .iter()
        .zip(&vectors)
        .map(|((id, text), values)| {
            json!({"id": id, "values": values, "metadata": {"text": text}}).to_string() + "\n"
        })
        .collect();
    let (status, body) = index.ndjson("upsert", &lines).await;
    index.wait_for(&mutation_id(status, &body)).await;

    let question = "How tall is the Eiffel Tower?";
    let asked = embed(&[question]).await.remove(0);
    let (status, found) = index
        .post(
            "/query",
            json!({"vector": asked, "topK": 2, "returnMetadata": "all"}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let best = &found["result"]["matches"][0];
    assert_eq!(best["id"], "eiffel", "{found}");
    let context = best["metadata"]["text"]
        .as_str()
        .expect("the passage")
        .to_owned();

    let (status, _, answer) = run(
        "@cf/meta/llama-3.1-8b-instruct",
        &json!({
            "messages": [
                {"role": "system", "content": format!("Answer from this context only: {context}")},
                {"role": "user", "content": question},
            ],
            "max_tokens": 32,
            "temperature": 0,
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let response = answer["result"]["response"].as_str().unwrap_or("");
    assert!(!response.trim().is_empty(), "{answer}");
}
