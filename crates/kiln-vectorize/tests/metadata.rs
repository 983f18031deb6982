//! Metadata indexes and filtered queries through the store.

mod common;

use common::*;
use kiln_core::ErrorKind;
use kiln_vectorize::Query;
use serde_json::json;

#[test]
fn metadata_index_create_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "cosine");
    let body = json!({"propertyName": "genre", "indexType": "string"});
    let mutation = store.create_metadata_index(ACCOUNT, "idx", &body).unwrap();
    assert!(!mutation.is_empty());
    assert_eq!(
        store
            .create_metadata_index(ACCOUNT, "idx", &body)
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );
    let bad_type = json!({"propertyName": "x", "indexType": "date"});
    assert!(store
        .create_metadata_index(ACCOUNT, "idx", &bad_type)
        .unwrap_err()
        .message
        .contains("indexType"));
    let bad_name = json!({"propertyName": "$x", "indexType": "string"});
    assert!(store
        .create_metadata_index(ACCOUNT, "idx", &bad_name)
        .unwrap_err()
        .message
        .contains("propertyName"));
    for n in 1..10 {
        store
            .create_metadata_index(
                ACCOUNT,
                "idx",
                &json!({"propertyName": format!("p{n}"), "indexType": "number"}),
            )
            .unwrap();
    }
    let eleventh = json!({"propertyName": "p10", "indexType": "boolean"});
    assert!(store
        .create_metadata_index(ACCOUNT, "idx", &eleventh)
        .unwrap_err()
        .message
        .contains("at most 10"));
    let listed = store.list_metadata_indexes(ACCOUNT, "idx").unwrap();
    assert_eq!(
        listed["metadataIndexes"][0],
        json!({"propertyName": "genre", "indexType": "string"})
    );
    assert_eq!(listed["metadataIndexes"].as_array().unwrap().len(), 10);
    store
        .delete_metadata_index(ACCOUNT, "idx", &json!({"propertyName": "p1"}))
        .unwrap();
    let missing = store.delete_metadata_index(ACCOUNT, "idx", &json!({"propertyName": "p1"}));
    assert_eq!(missing.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(
        store.list_metadata_indexes(ACCOUNT, "idx").unwrap()["metadataIndexes"]
            .as_array()
            .unwrap()
            .len(),
        9
    );
}

#[test]
fn vectors_written_before_an_index_exists_are_not_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "cosine");
    store
        .insert(
            ACCOUNT,
            "idx",
            vec![with_metadata("old", &[1.0, 0.0], json!({"genre": "drama"}))],
        )
        .unwrap();
    store
        .create_metadata_index(
            ACCOUNT,
            "idx",
            &json!({"propertyName": "genre", "indexType": "string"}),
        )
        .unwrap();
    store
        .insert(
            ACCOUNT,
            "idx",
            vec![with_metadata("new", &[1.0, 0.1], json!({"genre": "drama"}))],
        )
        .unwrap();
    settle(&store, "idx");
    let filtered = json!({"vector": [1, 0], "topK": 10, "filter": {"genre": "drama"}});
    assert_eq!(ids(&query(&store, "idx", filtered.clone())), ["new"]);
    // re-upserting brings the old vector in
    store
        .upsert(
            ACCOUNT,
            "idx",
            vec![with_metadata("old", &[1.0, 0.0], json!({"genre": "drama"}))],
        )
        .unwrap();
    settle(&store, "idx");
    assert_eq!(ids(&query(&store, "idx", filtered.clone())), ["old", "new"]);
    // deleting and recreating the index forgets everything written before
    store
        .delete_metadata_index(ACCOUNT, "idx", &json!({"propertyName": "genre"}))
        .unwrap();
    store
        .create_metadata_index(
            ACCOUNT,
            "idx",
            &json!({"propertyName": "genre", "indexType": "string"}),
        )
        .unwrap();
    settle(&store, "idx");
    assert!(ids(&query(&store, "idx", filtered)).is_empty());
}

#[test]
fn filters_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", 2, "euclidean");
    for (property, kind) in [
        ("genre", "string"),
        ("year", "number"),
        ("meta.ok", "boolean"),
    ] {
        store
            .create_metadata_index(
                ACCOUNT,
                "idx",
                &json!({"propertyName": property, "indexType": kind}),
            )
            .unwrap();
    }
    let docs = [
        (
            "a",
            json!({"genre": "network", "year": 1999, "meta": {"ok": true}}),
        ),
        (
            "b",
            json!({"genre": "neutral", "year": 2005, "meta": {"ok": false}}),
        ),
        ("c", json!({"genre": "drama", "year": 2010})),
    ];
    let vectors = docs
        .iter()
        .enumerate()
        .map(|(n, (id, metadata))| with_metadata(id, &[n as f32, 0.0], metadata.clone()))
        .collect();
    store.insert(ACCOUNT, "idx", vectors).unwrap();
    settle(&store, "idx");
    let run = |filter: serde_json::Value| {
        ids(&query(
            &store,
            "idx",
            json!({"vector": [0, 0], "topK": 10, "filter": filter}),
        ))
    };
    assert_eq!(run(json!({"genre": {"$gte": "net", "$lt": "neu"}})), ["a"]);
    assert_eq!(run(json!({"year": {"$gt": 2000}})), ["b", "c"]);
    assert_eq!(run(json!({"meta.ok": true})), ["a"]);
    assert_eq!(run(json!({"meta.ok": {"$ne": true}})), ["b", "c"]);
    assert_eq!(
        run(json!({"genre": {"$nin": ["drama"]}, "year": {"$lte": 2005}})),
        ["a", "b"]
    );
    let error = store
        .query(
            ACCOUNT,
            "idx",
            &Query::from_json(&json!({"vector": [0, 0], "filter": {"title": "x"}})).unwrap(),
        )
        .unwrap_err();
    assert!(
        error.message.contains("\"title\" has no metadata index"),
        "{}",
        error.message
    );
}
