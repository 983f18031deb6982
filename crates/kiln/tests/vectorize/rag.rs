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

/// The RAG recipe for every preset that names a catalog embeddings id: an index made from the
/// preset takes the dimensions of the local model serving that id here (and says which), so
/// the id's own vectors go in and come back out.
#[tokio::test]
async fn a_preset_index_takes_the_dimensions_of_the_model_serving_its_id() {
    for preset in [
        "@cf/baai/bge-small-en-v1.5",
        "@cf/baai/bge-base-en-v1.5",
        "@cf/baai/bge-large-en-v1.5",
    ] {
        let index = Index {
            base: url(""),
            account: format!("vz-{}", uuid::Uuid::new_v4().simple()),
            name: "docs".into(),
        };
        let (status, created) = index
            .post("", json!({"name": "docs", "config": {"preset": preset}}))
            .await;
        assert_eq!(status, 201, "{created}");
        let note = created["messages"][0]["message"].as_str().unwrap_or("");
        assert!(
            note.contains(preset) && note.contains("local model"),
            "{created}"
        );

        let (status, _, embedded) =
            run(preset, &json!({"text": ["a kiln fires clay", "tea"]})).await;
        assert_eq!(status, 200, "{embedded}");
        let dimensions = embedded["result"]["shape"][1].as_u64().expect("shape");
        assert_eq!(
            created["result"]["config"]["dimensions"], dimensions,
            "{preset}"
        );
        assert!(note.contains(&format!("{dimensions} dimensions")), "{note}");

        let lines: String = embedded["result"]["data"]
            .as_array()
            .expect("vectors")
            .iter()
            .enumerate()
            .map(|(n, values)| json!({"id": format!("v{n}"), "values": values}).to_string() + "\n")
            .collect();
        let (status, body) = index.ndjson("upsert", &lines).await;
        index.wait_for(&mutation_id(status, &body)).await;
        let (status, found) = index
            .post(
                "/query",
                json!({"vector": embedded["result"]["data"][1], "topK": 1}),
            )
            .await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(
            found["result"]["matches"][0]["id"], "v1",
            "{preset}: {found}"
        );
    }
}
