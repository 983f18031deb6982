//! `env.VECTORIZE` in real workerd: the genuine binding (`cloudflare-internal:vectorize-api`, v2)
//! reaches Kiln through an external service that only injects `x-kiln-vectorize-index`
//! (config.capnp). insert, upsert, query with metadata filters, queryById, getByIds,
//! deleteByIds and describe are compared with what the REST API says about the same index.

use super::*;

/// `env.VECTORIZE[method](...args)`: its result.
async fn call(workerd: &Workerd, method: &str, args: Value) -> Value {
    let seen = workerd
        .ok("/vectorize", json!({"method": method, "args": args}))
        .await;
    seen["result"].clone()
}

/// A mutation through the binding, then `describe()` until it is applied (mutations are
/// asynchronous in Vectorize v2).
async fn mutate(workerd: &Workerd, method: &str, args: Value) -> String {
    let answer = call(workerd, method, args).await;
    let mutation = answer["mutationId"]
        .as_str()
        .unwrap_or_else(|| panic!("{method}: {{mutationId}}: {answer}"))
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = call(workerd, "describe", json!([])).await;
        if info["processedUpToMutation"] == mutation.as_str() {
            return mutation;
        }
        assert!(Instant::now() < deadline, "{mutation} not applied: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `…/vectorize/v2/indexes/{index}{rest}` of the binding account, by REST.
fn rest_path(index: &str, rest: &str) -> String {
    format!("/client/v4/accounts/{BINDING_ACCOUNT}/vectorize/v2/indexes/{index}{rest}")
}

async fn rest_post(index: &str, rest: &str, body: Value) -> (u16, Value) {
    let (status, _, answer) = post_json(&url(&rest_path(index, rest)), &body).await;
    (status, answer)
}

fn ids_of(matches: &Value) -> Vec<&str> {
    matches
        .as_array()
        .unwrap_or_else(|| panic!("a list: {matches}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect()
}

#[tokio::test]
async fn vectorize_binding_in_real_workerd_matches_the_rest_api() {
    let kiln = kiln();
    let workerd = Workerd::start(kiln).await;
    let index = workerd.index.clone();
    let collection = url(&format!(
        "/client/v4/accounts/{BINDING_ACCOUNT}/vectorize/v2/indexes"
    ));
    let config = json!({"name": index, "config": {"dimensions": 3, "metric": "cosine"}});
    let (status, _, body) = post_json(&collection, &config).await;
    assert!(status == 200 || status == 201, "{body}");
    let property = json!({"propertyName": "genre", "indexType": "string"});
    let (status, body) = rest_post(&index, "/metadata_index/create", property).await;
    assert_eq!(status, 200, "{body}");

    // insert, then upsert: `a` moves from jazz to rock, `d` is new.
    let vectors = json!([[
        {"id": "a", "values": [1, 0, 0], "metadata": {"genre": "jazz"}},
        {"id": "b", "values": [0, 1, 0], "metadata": {"genre": "rock"}},
        {"id": "c", "values": [0.9, 0.1, 0], "metadata": {"genre": "rock", "year": 1999}},
    ]]);
    mutate(&workerd, "insert", vectors).await;
    let vectors = json!([[
        {"id": "a", "values": [1, 0, 0], "metadata": {"genre": "rock"}},
        {"id": "d", "values": [0, 0, 1], "metadata": {"genre": "jazz"}},
    ]]);
    let mutation = mutate(&workerd, "upsert", vectors).await;

    // describe() is REST's info.
    let info = call(&workerd, "describe", json!([])).await;
    let (status, rest) = rest_get(&rest_path(&index, "/info")).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(info, rest["result"]);
    assert_eq!(info["vectorCount"], 4, "{info}");
    assert_eq!(info["dimensions"], 3);
    assert_eq!(info["processedUpToMutation"], mutation.as_str());

    // query with metadata filters: the REST query's matches, scores included.
    let cases = [
        (json!({"genre": "rock"}), vec!["a", "c", "b"]),
        (json!({"genre": {"$eq": "jazz"}}), vec!["d"]),
        (json!({"genre": {"$in": ["jazz", "pop"]}}), vec!["d"]),
    ];
    for (filter, expected) in cases {
        let options = json!({"topK": 5, "returnMetadata": "all", "returnValues": true,
                             "filter": filter});
        let seen = call(&workerd, "query", json!([[1, 0, 0], options])).await;
        let mut body = options.clone();
        body["vector"] = json!([1, 0, 0]);
        let (status, rest) = rest_post(&index, "/query", body).await;
        assert_eq!(status, 200, "{rest}");
        assert_eq!(ids_of(&seen["matches"]), expected, "{filter}: {seen}");
        assert_eq!(seen["count"], expected.len(), "{seen}");
        assert_eq!(numbers_as_f64(&seen), numbers_as_f64(&rest["result"]));
    }
    let seen = call(&workerd, "query", json!([[1, 0, 0], {"topK": 1}])).await;
    assert_eq!(ids_of(&seen["matches"]), ["a"]);
    assert!(seen["matches"][0].get("values").is_none(), "{seen}");
    let seen = call(&workerd, "queryById", json!(["c", {"topK": 2}])).await;
    assert_eq!(ids_of(&seen["matches"]), ["c", "a"], "{seen}");

    // getByIds: the stored vectors, with the upserted metadata.
    let seen = call(&workerd, "getByIds", json!([["a", "d", "nope"]])).await;
    let (status, rest) = rest_post(&index, "/get_by_ids", json!({"ids": ["a", "d", "nope"]})).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(numbers_as_f64(&seen), numbers_as_f64(&rest["result"]));
    let mut found = ids_of(&seen);
    found.sort_unstable();
    assert_eq!(found, ["a", "d"]);
    let a = seen
        .as_array()
        .and_then(|vectors| vectors.iter().find(|v| v["id"] == "a"))
        .expect("a");
    assert_eq!(a["metadata"]["genre"], "rock", "{a}");

    // deleteByIds.
    mutate(&workerd, "deleteByIds", json!([["b"]])).await;
    let info = call(&workerd, "describe", json!([])).await;
    assert_eq!(info["vectorCount"], 3, "{info}");
    let seen = call(&workerd, "getByIds", json!([["b"]])).await;
    assert_eq!(seen, json!([]));

    // A bad query: the binding's own error, with REST's code and message.
    let (name, message) = workerd
        .thrown(
            "/vectorize",
            json!({"method": "query", "args": [[1, 0], {"topK": 1}]}),
        )
        .await;
    let (status, rest) = rest_post(&index, "/query", json!({"vector": [1, 0], "topK": 1})).await;
    assert_eq!(status, 400);
    let (code, rest_message) = assert_error_envelope(&rest);
    assert_eq!(name, "Error");
    assert_eq!(
        message,
        format!("VECTOR_QUERY_ERROR (code = {code}): {rest_message}")
    );

    let response = client()
        .delete(url(&rest_path(&index, "")))
        .bearer_auth("sk-test")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // An index that does not exist: describe() throws INDEX_GET_ERROR.
    let (_, message) = workerd
        .thrown("/vectorize", json!({"method": "describe"}))
        .await;
    assert!(message.starts_with("INDEX_GET_ERROR (code = "), "{message}");
}
