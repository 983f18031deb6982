//! Every REST route of spec §5.7, with the limits and errors of §5.2 and the score conventions
//! of §5.1. The filter grammar is tested exhaustively in `kiln-vectorize`; here each operator
//! goes through HTTP once.

use reqwest::Method;
use serde_json::json;

use super::*;

const THREE: &str = r#"{"id":"a","values":[1,0,0],"metadata":{"genre":"rock","year":1990,"live":true,"nested":{"k":"v"}}}
{"id":"b","values":[0,1,0],"namespace":"ns1","metadata":{"genre":"jazz","year":2005,"live":false}}
{"id":"c","values":[0.9,0.1,0],"metadata":{"genre":"rock","year":2020,"live":false}}
"#;

#[tokio::test]
async fn index_lifecycle_and_limits() {
    let index = Index::create(json!({"dimensions": 3, "metric": "cosine"})).await;
    let (status, body) = index
        .post(
            "",
            json!({"name": "docs", "config": {"dimensions": 3, "metric": "cosine"}}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (409, 1003), "{body}");
    for bad in [
        json!({"name": "x", "config": {"dimensions": 3, "metric": "manhattan"}}),
        json!({"name": "x", "config": {"dimensions": 1537, "metric": "cosine"}}),
        json!({"name": "x", "config": {"dimensions": 0, "metric": "cosine"}}),
        json!({"name": "x", "config": {"preset": "@cf/unknown/model"}}),
        json!({"name": "x".repeat(65), "config": {"dimensions": 3, "metric": "cosine"}}),
        json!({"config": {"dimensions": 3, "metric": "cosine"}}),
    ] {
        let (status, body) = index.post("", bad.clone()).await;
        assert_eq!((status, error_code(&body)), (400, 5006), "{bad} → {body}");
    }
    let (status, body) = index
        .post(
            "",
            json!({"name": "preset", "config": {"preset": "@cf/baai/bge-small-en-v1.5"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["result"]["config"],
        json!({"dimensions": 384, "metric": "cosine"})
    );

    let response = client().get(index.collection()).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(
        listed["result"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    let (status, body) = index.get("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["name"], "docs");
    let (status, info) = index.get("/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["result"]["dimensions"], 3);
    assert_eq!(info["result"]["vectorCount"], 0);

    let (status, _) = index.call(Method::DELETE, "", None).await;
    assert_eq!(status, 200);
    let (status, body) = index.get("").await;
    assert_eq!((status, error_code(&body)), (404, 1004), "{body}");
    let (status, body) = index.post("/query", json!({"vector": [1, 0, 0]})).await;
    assert_eq!((status, error_code(&body)), (404, 1004), "{body}");
}

#[tokio::test]
async fn mutations_insert_upsert_delete_and_read_back() {
    let index = Index::create(json!({"dimensions": 3, "metric": "euclidean"})).await;
    let (status, body) = index.ndjson("insert", THREE).await;
    let first = mutation_id(status, &body);
    index.wait_for(&first).await;
    let (_, info) = index.get("/info").await;
    assert_eq!(info["result"]["vectorCount"], 3);
    assert!(info["result"]["processedUpToDatetime"].is_string());

    // Insert skips an existing id; upsert replaces it whole.
    let (status, body) = index
        .ndjson("insert", r#"{"id":"a","values":[5,5,5]}"#)
        .await;
    index.wait_for(&mutation_id(status, &body)).await;
    let (_, got) = index.post("/get_by_ids", json!({"ids": ["a"]})).await;
    assert_eq!(got["result"][0]["values"], json!([1.0, 0.0, 0.0]), "{got}");
    let (status, body) = index
        .ndjson("upsert", r#"{"id":"a","values":[5,5,5]}"#)
        .await;
    index.wait_for(&mutation_id(status, &body)).await;
    let (_, got) = index
        .post("/get_by_ids", json!({"ids": ["a", "missing"]}))
        .await;
    assert_eq!(got["result"].as_array().map(Vec::len), Some(1), "{got}");
    assert_eq!(got["result"][0]["values"], json!([5.0, 5.0, 5.0]));
    assert!(
        got["result"][0].get("metadata").is_none_or(Value::is_null),
        "replaced, not merged"
    );

    // JSON bodies work too.
    let (status, body) = index
        .post(
            "/upsert",
            json!({"vectors": [{"id": "d", "values": [0, 0, 1]}]}),
        )
        .await;
    index.wait_for(&mutation_id(status, &body)).await;

    let (status, body) = index
        .post("/delete_by_ids", json!({"ids": ["b", "d"]}))
        .await;
    index.wait_for(&mutation_id(status, &body)).await;
    let (_, info) = index.get("/info").await;
    assert_eq!(info["result"]["vectorCount"], 2);

    // Bad vectors: wrong dimensions, unparsable lines (error, or discarded on request), empty.
    let (status, body) = index.ndjson("insert", r#"{"id":"x","values":[1,2]}"#).await;
    assert_eq!((status, error_code(&body)), (400, 5006), "{body}");
    let broken = "{\"id\":\"ok\",\"values\":[1,1,1]}\nnot json\n";
    let (status, body) = index.ndjson("insert", broken).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains('2'),
        "names the line: {body}"
    );
    let (status, body) = index
        .ndjson("insert?unparsable-behavior=discard", broken)
        .await;
    index.wait_for(&mutation_id(status, &body)).await;
    let (_, got) = index.post("/get_by_ids", json!({"ids": ["ok"]})).await;
    assert_eq!(got["result"].as_array().map(Vec::len), Some(1));
    let (status, body) = index.ndjson("insert", "\n").await;
    assert_eq!(status, 400, "{body}");
    let long_id = format!(r#"{{"id":"{}","values":[1,1,1]}}"#, "i".repeat(65));
    let (status, body) = index.ndjson("insert", &long_id).await;
    assert_eq!((status, error_code(&body)), (400, 5006), "{body}");

    // A multipart upload's `vectors` file.
    let form = reqwest::multipart::Form::new().part(
        "vectors",
        reqwest::multipart::Part::bytes(br#"{"id":"m","values":[1,2,3]}"#.to_vec())
            .file_name("v.ndjson"),
    );
    let response = client()
        .post(format!("{}/docs/upsert", index.collection()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    index.wait_for(&mutation_id(status, &body)).await;

    // Listing pages through every id with a cursor.
    let (status, page) = index.get("/list?count=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["result"]["count"], 2);
    assert_eq!(page["result"]["isTruncated"], true);
    assert_eq!(page["result"]["totalCount"], 4);
    let cursor = page["result"]["nextCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let (_, rest) = index.get(&format!("/list?count=2&cursor={cursor}")).await;
    assert_eq!(rest["result"]["isTruncated"], false, "{rest}");
    let mut ids: Vec<String> = [&page, &rest]
        .iter()
        .flat_map(|p| {
            p["result"]["vectors"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "c", "m", "ok"]);
}

#[tokio::test]
async fn queries_score_filter_and_limit() {
    for (metric, best, best_score) in [
        ("cosine", "a", 1.0),
        ("euclidean", "a", 0.0),
        ("dot-product", "a", -1.0),
    ] {
        let index = Index::create(json!({"dimensions": 3, "metric": metric})).await;
        let (status, body) = index.ndjson("insert", THREE).await;
        index.wait_for(&mutation_id(status, &body)).await;
        let (status, body) = index.post("/query", json!({"vector": [1, 0, 0]})).await;
        assert_eq!(status, 200, "{body}");
        let matches = body["result"]["matches"]
            .as_array()
            .expect("matches")
            .clone();
        assert_eq!(body["result"]["count"], 3);
        assert_eq!(matches[0]["id"], best, "{metric}: {body}");
        let score = matches[0]["score"].as_f64().unwrap();
        assert!((score - best_score).abs() < 1e-4, "{metric}: {score}");
        assert!(
            matches[0].get("values").is_none_or(Value::is_null),
            "values off by default"
        );
        // "b" is orthogonal / farthest / smallest dot product: last.
        assert_eq!(matches[2]["id"], "b", "{metric}");
    }

    let index = Index::create(json!({"dimensions": 3, "metric": "cosine"})).await;
    for (property, kind) in [("genre", "string"), ("year", "number"), ("live", "boolean")] {
        let (status, body) = index
            .post(
                "/metadata_index/create",
                json!({"propertyName": property, "indexType": kind}),
            )
            .await;
        index.wait_for(&mutation_id(status, &body)).await;
    }
    let (status, body) = index.ndjson("insert", THREE).await;
    index.wait_for(&mutation_id(status, &body)).await;
    let (_, listed) = index.get("/metadata_index/list").await;
    assert_eq!(
        listed["result"]["metadataIndexes"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );

    let ids_for = |filter: Value| {
        let index = &index;
        async move {
            let (status, body) = index
                .post(
                    "/query",
                    json!({"vector": [1, 0, 0], "topK": 10, "filter": filter}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let mut ids: Vec<String> = body["result"]["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(ids_for(json!({"genre": "rock"})).await, ["a", "c"]);
    assert_eq!(ids_for(json!({"genre": {"$ne": "rock"}})).await, ["b"]);
    assert_eq!(
        ids_for(json!({"genre": {"$in": ["jazz", "pop"]}})).await,
        ["b"]
    );
    assert_eq!(
        ids_for(json!({"genre": {"$nin": ["jazz"]}})).await,
        ["a", "c"]
    );
    assert_eq!(ids_for(json!({"year": {"$lt": 2005}})).await, ["a"]);
    assert_eq!(ids_for(json!({"year": {"$lte": 2005}})).await, ["a", "b"]);
    assert_eq!(ids_for(json!({"year": {"$gt": 2005}})).await, ["c"]);
    assert_eq!(
        ids_for(json!({"year": {"$gte": 2005, "$lt": 2021}})).await,
        ["b", "c"]
    );
    assert_eq!(ids_for(json!({"live": true, "genre": "rock"})).await, ["a"]);
    assert_eq!(
        ids_for(json!({"genre": {"$gte": "ro", "$lt": "rp"}})).await,
        ["a", "c"]
    );

    let (status, body) = index
        .post(
            "/query",
            json!({"vector": [1, 0, 0], "filter": {"unindexed": 1}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("unindexed"),
        "{body}"
    );

    // Namespaces filter first.
    let (_, body) = index
        .post("/query", json!({"vector": [1, 0, 0], "namespace": "ns1"}))
        .await;
    assert_eq!(
        body["result"]["matches"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_eq!(body["result"]["matches"][0]["namespace"], "ns1");

    // What a match carries.
    let (_, body) = index
        .post(
            "/query",
            json!({"vector": [1, 0, 0], "topK": 1, "returnValues": true, "returnMetadata": "all"}),
        )
        .await;
    let top = &body["result"]["matches"][0];
    assert_eq!(top["values"], json!([1.0, 0.0, 0.0]), "{body}");
    assert_eq!(top["metadata"]["nested"]["k"], "v");
    let (_, body) = index
        .post(
            "/query",
            json!({"vector": [1, 0, 0], "topK": 1, "returnMetadata": "indexed"}),
        )
        .await;
    let metadata = &body["result"]["matches"][0]["metadata"];
    assert_eq!(metadata["genre"], "rock", "{body}");
    assert!(
        metadata.get("nested").is_none(),
        "only indexed fields: {body}"
    );

    // Query by id.
    let (status, body) = index
        .post("/query", json!({"vectorId": "c", "topK": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["matches"][0]["id"], "c");

    // Limits and shapes.
    for bad in [
        json!({"vector": [1, 0, 0], "topK": 101}),
        json!({"vector": [1, 0, 0], "topK": 51, "returnValues": true}),
        json!({"vector": [1, 0]}),
        json!({"vector": {"shape": [1, 3], "data": [[1, 0, 0]]}}),
        json!({"topK": 3}),
    ] {
        let (status, body) = index.post("/query", bad.clone()).await;
        assert_eq!((status, error_code(&body)), (400, 5006), "{bad} → {body}");
    }

    let (status, body) = index
        .post("/metadata_index/delete", json!({"propertyName": "live"}))
        .await;
    index.wait_for(&mutation_id(status, &body)).await;
    let (_, listed) = index.get("/metadata_index/list").await;
    assert_eq!(
        listed["result"]["metadataIndexes"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn index_lists_page_and_default_to_every_index() {
    let index = Index::create(json!({"dimensions": 3, "metric": "cosine"})).await;
    for n in 1..5 {
        let (status, body) = index
            .post(
                "",
                json!({"name": format!("more-{n}"), "config": {"dimensions": 3, "metric": "cosine"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let paged = page_through(&index.collection(), 2).await;
    let mut names: Vec<&str> = paged.iter().filter_map(|i| i["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["docs", "more-1", "more-2", "more-3", "more-4"]);
    // Cloudflare answers the index list in one page: without paging, every index.
    let (status, body) = index.get_collection().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"].as_array().map(Vec::len), Some(5), "{body}");
    assert_eq!(body["result_info"]["total_count"], 5, "{body}");
}
