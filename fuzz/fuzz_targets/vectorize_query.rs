//! Vectorize queries, metadata filters included: the raw body through `Query::from_plain_json`
//! (or `from_json`), then run against a small index with string, number and boolean metadata
//! indexes, so filter parsing and matching both run.
#![no_main]
use std::sync::LazyLock;
use std::time::Duration;

use kiln_core::ErrorKind;
use kiln_vectorize::{Query, VectorRecord, VectorStore};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const ACCOUNT: &str = "acct";
const INDEX: &str = "idx";

static STORE: LazyLock<VectorStore> = LazyLock::new(|| {
    let store = VectorStore::open(&kiln_fuzz::scratch_dir("vectorize")).expect("open store");
    store
        .create_index(ACCOUNT, &json!({"name": INDEX, "config": {"dimensions": 4, "metric": "cosine"}}))
        .expect("create index");
    for (property, kind) in [("genre", "string"), ("year", "number"), ("ok", "boolean"), ("a.b", "string")] {
        store
            .create_metadata_index(ACCOUNT, INDEX, &json!({"propertyName": property, "indexType": kind}))
            .expect("metadata index");
    }
    let metadata = [
        json!({"genre": "jazz", "year": 1959, "ok": true, "a": {"b": "x"}}),
        json!({"genre": "rock", "year": 1971.5, "ok": false}),
        json!({"genre": "", "year": -1, "a": {"b": "é\u{0}"}}),
        json!({"genre": 3, "year": "1959", "ok": null}),
    ];
    let vectors = metadata
        .iter()
        .enumerate()
        .map(|(i, m)| VectorRecord {
            id: format!("v{i}"),
            values: vec![i as f32 + 1.0, 0.5, -0.25, 1.0 - i as f32],
            namespace: (i % 2 == 0).then(|| "ns".to_owned()),
            metadata: m.as_object().cloned(),
        })
        .collect();
    store.insert(ACCOUNT, INDEX, vectors).expect("insert");
    store
        .wait_until_processed(ACCOUNT, INDEX, Duration::from_secs(60))
        .expect("settle");
    store
});

fuzz_target!(|data: &[u8]| {
    let store = &*STORE;
    let parsed = match Query::from_plain_json(data) {
        Some(parsed) => parsed,
        None => match serde_json::from_slice::<Value>(data) {
            Ok(body) => Query::from_json(&body),
            Err(_) => return,
        },
    };
    let outcome = parsed.and_then(|query| {
        query.check_top_k()?;
        store.query(ACCOUNT, INDEX, &query)
    });
    if let Err(error) = outcome {
        assert!(
            matches!(error.kind, ErrorKind::BadInput | ErrorKind::NotFound),
            "{:?}: {}",
            error.kind,
            error.message
        );
    }
});
