//! Index management, mutations, queries and their result shapes.

mod common;

use common::*;
use kiln_core::ErrorKind;
use kiln_vectorize::{Query, VectorRecord};
use serde_json::json;

#[test]
fn index_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let created = store
        .create_index(ACCOUNT, &json!({"name": "docs", "description": "d", "config": {"dimensions": 3, "metric": "cosine"}}))
        .unwrap();
    assert_eq!(
        created["config"],
        json!({"dimensions": 3, "metric": "cosine"})
    );
    assert!(created["created_on"].as_str().unwrap().ends_with('Z'));
    let again = store.create_index(
        ACCOUNT,
        &json!({"name": "docs", "config": {"dimensions": 3, "metric": "cosine"}}),
    );
    assert_eq!(again.unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(store.list_indexes(ACCOUNT).unwrap().len(), 1);
    assert!(store.list_indexes("other").unwrap().is_empty());
    assert_eq!(
        store.get_index(ACCOUNT, "docs").unwrap()["description"],
        "d"
    );
    let info = store.info(ACCOUNT, "docs").unwrap();
    assert_eq!(
        info,
        json!({"dimensions": 3, "vectorCount": 0, "processedUpToDatetime": null, "processedUpToMutation": null})
    );
    store.delete_index(ACCOUNT, "docs").unwrap();
    assert_eq!(
        store.get_index(ACCOUNT, "docs").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        store.delete_index(ACCOUNT, "docs").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(!dir.path().join(ACCOUNT).join("docs").exists());
    // the name is free again, and the new index starts empty
    create(&store, "docs", 2, "euclidean");
    assert_eq!(store.info(ACCOUNT, "docs").unwrap()["vectorCount"], 0);
}

#[test]
fn scores_follow_each_metric_convention() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    for metric in ["cosine", "euclidean", "dot-product"] {
        create(&store, metric, 2, metric);
        store
            .insert(
                ACCOUNT,
                metric,
                vec![
                    vector("a", &[3.0, 4.0]),
                    vector("b", &[1.0, 0.0]),
                    vector("c", &[-2.0, 0.0]),
                ],
            )
            .unwrap();
        settle(&store, metric);
    }
    let q = json!({"vector": [1.0, 0.0], "topK": 3});
    let cosine = query(&store, "cosine", q.clone());
    assert_eq!(ids(&cosine), ["b", "a", "c"]);
    // reported as the shortest decimal of the f32: 0.6, not 0.6000000238418579
    assert_eq!(scores(&cosine), [1.0, 0.6, -1.0]);
    let euclidean = query(&store, "euclidean", q.clone());
    assert_eq!(ids(&euclidean), ["b", "c", "a"]);
    let e = scores(&euclidean);
    assert_eq!(e[0], 0.0);
    assert_eq!(e[1], 3.0);
    assert!((e[2] - 20f64.sqrt()).abs() < 1e-6);
    let dot = query(&store, "dot-product", q);
    assert_eq!(ids(&dot), ["a", "b", "c"]);
    assert_eq!(scores(&dot), [-3.0, -1.0, 2.0]);
}

#[test]
fn insert_skips_existing_upsert_replaces_delete_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "euclidean");
    store
        .insert(
            ACCOUNT,
            "idx",
            vec![with_metadata("a", &[1.0, 1.0], json!({"v": 1}))],
        )
        .unwrap();
    // first write wins, also within one batch
    store
        .insert(
            ACCOUNT,
            "idx",
            vec![
                vector("a", &[9.0, 9.0]),
                vector("b", &[2.0, 2.0]),
                vector("b", &[7.0, 7.0]),
            ],
        )
        .unwrap();
    settle(&store, "idx");
    let got = store
        .get_by_ids(ACCOUNT, "idx", &["a".into(), "b".into(), "zz".into()])
        .unwrap();
    assert_eq!(
        got,
        vec![
            json!({"id": "a", "values": [1.0, 1.0], "metadata": {"v": 1}}),
            json!({"id": "b", "values": [2.0, 2.0]})
        ]
    );
    // upsert replaces the whole vector (metadata is not merged); last write wins in a batch
    let id = store
        .upsert(
            ACCOUNT,
            "idx",
            vec![vector("a", &[5.0, 5.0]), vector("a", &[6.0, 6.0])],
        )
        .unwrap();
    settle(&store, "idx");
    let got = store.get_by_ids(ACCOUNT, "idx", &["a".into()]).unwrap();
    assert_eq!(got, vec![json!({"id": "a", "values": [6.0, 6.0]})]);
    let info = store.info(ACCOUNT, "idx").unwrap();
    assert_eq!(info["processedUpToMutation"], id);
    assert_eq!(info["vectorCount"], 2);
    store
        .delete_by_ids(ACCOUNT, "idx", vec!["a".into(), "nope".into()])
        .unwrap();
    settle(&store, "idx");
    assert_eq!(store.info(ACCOUNT, "idx").unwrap()["vectorCount"], 1);
    assert_eq!(
        ids(&query(
            &store,
            "idx",
            json!({"vector": [6.0, 6.0], "topK": 10})
        )),
        ["b"]
    );
}

#[test]
fn mutation_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "cosine");
    let error = store
        .insert(
            ACCOUNT,
            "idx",
            vec![vector("a", &[1.0, 2.0]), vector("b", &[1.0])],
        )
        .unwrap_err();
    assert!(
        error
            .message
            .contains("\"b\" (number 2) has 1 dimensions but index \"idx\" has 2"),
        "{}",
        error.message
    );
    let many: Vec<VectorRecord> = (0..5001)
        .map(|n| vector(&n.to_string(), &[1.0, 0.0]))
        .collect();
    assert!(store
        .upsert(ACCOUNT, "idx", many)
        .unwrap_err()
        .message
        .contains("at most 5000"));
    assert!(store.insert(ACCOUNT, "idx", vec![]).is_err());
    assert_eq!(
        store
            .insert(ACCOUNT, "missing", vec![vector("a", &[1.0, 2.0])])
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    let error = store
        .query(ACCOUNT, "idx", &Query::by_vector(vec![1.0]))
        .unwrap_err();
    assert!(error.message.contains("1 dimensions but the index has 2"));
    let error = store
        .query(
            ACCOUNT,
            "idx",
            &Query::from_json(&json!({"vectorId": "ghost"})).unwrap(),
        )
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(store
        .list_vectors(ACCOUNT, "idx", Some(1001), None)
        .unwrap_err()
        .message
        .contains("1000"));
}

#[test]
fn namespaces_restrict_before_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "euclidean");
    let mut vectors = Vec::new();
    for n in 0..50 {
        let namespace = if n % 10 == 0 {
            Some("rare".to_owned())
        } else {
            None
        };
        vectors.push(VectorRecord {
            namespace,
            ..vector(&format!("v{n:02}"), &[n as f32, 0.0])
        });
    }
    store.insert(ACCOUNT, "idx", vectors).unwrap();
    settle(&store, "idx");
    let result = query(
        &store,
        "idx",
        json!({"vector": [49.0, 0.0], "topK": 3, "namespace": "rare"}),
    );
    assert_eq!(ids(&result), ["v40", "v30", "v20"]);
    assert_eq!(result["matches"][0]["namespace"], "rare");
    assert_eq!(result["count"], 3);
    let none = query(
        &store,
        "idx",
        json!({"vector": [49.0, 0.0], "namespace": "absent"}),
    );
    assert_eq!(none, json!({"count": 0, "matches": []}));
}

#[test]
fn query_by_id_and_return_options() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "cosine");
    store
        .create_metadata_index(
            ACCOUNT,
            "idx",
            &json!({"propertyName": "title", "indexType": "string"}),
        )
        .unwrap();
    settle(&store, "idx");
    let long = "t".repeat(100);
    store
        .insert(
            ACCOUNT,
            "idx",
            vec![
                with_metadata("a", &[1.0, 0.0], json!({"title": long, "body": "x"})),
                vector("b", &[0.0, 1.0]),
            ],
        )
        .unwrap();
    settle(&store, "idx");
    let plain = query(&store, "idx", json!({"vectorId": "a", "topK": 1}));
    assert_eq!(plain["matches"][0], json!({"id": "a", "score": 1.0}));
    let all = query(
        &store,
        "idx",
        json!({"vectorId": "a", "topK": 1, "returnValues": true, "returnMetadata": "all"}),
    );
    assert_eq!(
        all["matches"][0],
        json!({"id": "a", "score": 1.0, "values": [1.0, 0.0], "metadata": {"title": long, "body": "x"}})
    );
    let indexed = query(
        &store,
        "idx",
        json!({"vectorId": "a", "topK": 1, "returnMetadata": "indexed"}),
    );
    assert_eq!(
        indexed["matches"][0]["metadata"],
        json!({"title": "t".repeat(64)})
    );
    let legacy = query(
        &store,
        "idx",
        json!({"vector": [1, 0], "topK": 1, "returnMetadata": true}),
    );
    assert_eq!(legacy["matches"][0]["metadata"]["body"], "x");
}

#[test]
fn list_pages_with_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 1, "euclidean");
    store
        .insert(
            ACCOUNT,
            "idx",
            (0..25)
                .map(|n| vector(&format!("id{n:02}"), &[n as f32]))
                .collect(),
        )
        .unwrap();
    settle(&store, "idx");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .list_vectors(ACCOUNT, "idx", Some(10), cursor.as_deref())
            .unwrap();
        assert_eq!(page["totalCount"], 25);
        seen.extend(
            page["vectors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned()),
        );
        if page["isTruncated"] == false {
            assert!(page["nextCursor"].is_null());
            assert_eq!(page["count"], 5);
            break;
        }
        assert!(page["cursorExpirationTimestamp"].is_string());
        cursor = page["nextCursor"].as_str().map(str::to_owned);
    }
    let expected: Vec<String> = (0..25).map(|n| format!("id{n:02}")).collect();
    assert_eq!(seen, expected);
    assert!(store
        .list_vectors(ACCOUNT, "idx", None, Some("zz"))
        .is_err());
    assert_eq!(
        store.list_vectors(ACCOUNT, "idx", None, None).unwrap()["count"],
        25
    );
}

#[test]
fn top_k_limits_apply_to_store_queries() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 1, "euclidean");
    let mut q = Query::by_vector(vec![1.0]);
    q.top_k = 51;
    q.return_values = true;
    assert!(store
        .query(ACCOUNT, "idx", &q)
        .unwrap_err()
        .message
        .contains("topK"));
}
