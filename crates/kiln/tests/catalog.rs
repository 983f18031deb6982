//! Catalog endpoints: search with filters and pagination, schemas.

mod common;

use common::*;
use serde_json::Value;

async fn get_json(path: &str) -> (u16, Value) {
    let response = client().get(url(path)).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn search_path(query: &str) -> String {
    format!("/client/v4/accounts/{ACCOUNT}/ai/models/search?{query}")
}

#[tokio::test]
async fn search_filters_by_task_and_reports_local_serving() {
    let (status, body) = get_json(&search_path("task=Text%20Embeddings&per_page=100")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let results = body["result"].as_array().expect("result array");
    assert!(!results.is_empty());
    assert!(results
        .iter()
        .all(|m| m["task"]["name"] == "Text Embeddings"));
    let bge = results
        .iter()
        .find(|m| m["name"] == "@cf/baai/bge-base-en-v1.5")
        .expect("bge-base listed");
    assert_eq!(bge["kiln"]["installed"], true);
    assert_eq!(bge["kiln"]["served_by"], "all-minilm-l6-v2");
    // The dimensions this server's vectors for each id have (the catalog's are kept aside).
    let dimensions = |model: &Value| {
        model["properties"]
            .as_array()
            .and_then(|properties| {
                properties
                    .iter()
                    .find(|p| p["property_id"] == "output_dimensions")
            })
            .map(|p| p["value"].clone())
    };
    assert_eq!(dimensions(bge), Some(Value::from("384")), "{bge}");
    assert_eq!(bge["kiln"]["output_dimensions"], 384);
    assert_eq!(bge["kiln"]["catalog_output_dimensions"], "768");
    let gemma = results
        .iter()
        .find(|m| m["name"] == "@cf/google/embeddinggemma-300m")
        .expect("embeddinggemma listed");
    assert_eq!(gemma["kiln"]["served_by"], "embeddinggemma-300m");
    assert_eq!(dimensions(gemma), Some(Value::from("768")), "{gemma}");
    assert_eq!(
        body["result_info"]["total_count"].as_u64(),
        Some(results.len() as u64)
    );
}

#[tokio::test]
async fn search_paginates() {
    let (_, first) = get_json(&search_path("per_page=5&page=1")).await;
    let (_, second) = get_json(&search_path("per_page=5&page=2")).await;
    assert_eq!(first["result"].as_array().map(Vec::len), Some(5));
    assert_eq!(first["result_info"]["per_page"], 5);
    assert_eq!(second["result_info"]["page"], 2);
    assert_ne!(first["result"][0]["name"], second["result"][0]["name"]);
    assert!(first["result_info"]["total_count"].as_u64().unwrap_or(0) > 50);
}

#[tokio::test]
async fn search_reports_models_nothing_serves() {
    // Text-to-image: in the catalog, served by nothing local.
    let (_, body) = get_json(&search_path("search=stable-diffusion")).await;
    let results = body["result"].as_array().expect("results");
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|m| m["kiln"]["installed"] == false),
        "{body}"
    );
}

#[tokio::test]
async fn schema_is_served_for_a_model() {
    let path = format!(
        "/client/v4/accounts/{ACCOUNT}/ai/models/schema?model=@cf/meta/llama-3.1-8b-instruct"
    );
    let (status, body) = get_json(&path).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["input"].is_object());
    assert!(body["result"]["output"].is_object());
    let path = format!("/client/v4/accounts/{ACCOUNT}/ai/models/schema?model=@cf/none/none");
    let (status, body) = get_json(&path).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], 5007);
}
