//! The Vectorize binding's wire protocol (spec §5.8) at `/vectorize-binding/{account}/{index}/`.

use serde_json::json;

use super::*;

async fn op(
    index: &Index,
    method: reqwest::Method,
    op: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let mut request = client().request(
        method,
        url(&format!(
            "/vectorize-binding/{}/{}/{op}",
            index.account, index.name
        )),
    );
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn binding_operations_answer_bare_json() {
    use reqwest::Method;
    let index = Index::create(json!({"dimensions": 2, "metric": "dot-product"})).await;
    let ndjson = "{\"id\":\"x\",\"values\":[1,2]}\n{\"id\":\"y\",\"values\":[3,1],\"metadata\":{\"t\":\"y\"}}\n";
    let response = client()
        .post(url(&format!(
            "/vectorize-binding/{}/{}/insert",
            index.account, index.name
        )))
        .header("content-type", "application/x-ndjson")
        .header("cf-vector-search-dim-width", "2")
        .header("cf-vector-search-dim-height", "2")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let inserted: Value = response.json().await.unwrap();
    let mutation = inserted["mutationId"]
        .as_str()
        .expect("bare {mutationId}")
        .to_owned();
    index.wait_for(&mutation).await;

    let (status, info) = op(&index, Method::GET, "info", None).await;
    assert_eq!(status, 200);
    assert_eq!(info["vectorCount"], 2, "{info}");
    assert_eq!(info["processedUpToMutation"], mutation.as_str());

    let query = json!({"vector": [1, 1], "topK": 2, "returnMetadata": "all"}).to_string();
    let (status, found) = op(
        &index,
        Method::POST,
        "query",
        Some(("application/json", query)),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["count"], 2);
    // dot-product scores are negated: y (dot 4) beats x (dot 3).
    assert_eq!(found["matches"][0]["id"], "y");
    assert_eq!(found["matches"][0]["score"], -4.0);
    assert_eq!(found["matches"][0]["metadata"]["t"], "y");

    let upsert = json!({"vectors": [{"id": "z", "values": [0, 5]}]}).to_string();
    let (status, body) = op(
        &index,
        Method::POST,
        "upsert",
        Some(("application/json", upsert)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    index.wait_for(body["mutationId"].as_str().unwrap()).await;
    let ids = json!({"ids": ["z", "x"]}).to_string();
    let (status, got) = op(
        &index,
        Method::POST,
        "getByIds",
        Some(("application/json", ids.clone())),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got.as_array().map(Vec::len), Some(2), "{got}");
    let (status, deleted) = op(
        &index,
        Method::POST,
        "deleteByIds",
        Some(("application/json", ids)),
    )
    .await;
    assert_eq!(status, 200);
    index
        .wait_for(deleted["mutationId"].as_str().unwrap())
        .await;

    // Errors are {code, error}, as the binding expects.
    let bad = json!({"vector": [1, 2, 3]}).to_string();
    let (status, error) = op(
        &index,
        Method::POST,
        "query",
        Some(("application/json", bad)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], 5006, "{error}");
    assert!(error["error"].is_string());
    let (status, error) = op(
        &index,
        Method::POST,
        "unknownOp",
        Some(("application/json", "{}".into())),
    )
    .await;
    assert_eq!(status, 404, "{error}");
}
