//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use kiln_vectorize::{Query, VectorRecord, VectorStore};
use serde_json::{json, Value};

pub const ACCOUNT: &str = "acct";

pub fn store(dir: &tempfile::TempDir) -> VectorStore {
    VectorStore::open(dir.path()).unwrap()
}

pub fn create(store: &VectorStore, name: &str, dimensions: usize, metric: &str) {
    store
        .create_index(
            ACCOUNT,
            &json!({"name": name, "config": {"dimensions": dimensions, "metric": metric}}),
        )
        .unwrap();
}

pub fn vector(id: &str, values: &[f32]) -> VectorRecord {
    VectorRecord {
        id: id.into(),
        values: values.to_vec(),
        namespace: None,
        metadata: None,
    }
}

pub fn with_metadata(id: &str, values: &[f32], metadata: Value) -> VectorRecord {
    VectorRecord {
        metadata: metadata.as_object().cloned(),
        ..vector(id, values)
    }
}

pub fn settle(store: &VectorStore, name: &str) {
    store
        .wait_until_processed(ACCOUNT, name, Duration::from_secs(30))
        .unwrap();
}

pub fn query(store: &VectorStore, name: &str, body: Value) -> Value {
    store
        .query(ACCOUNT, name, &Query::from_json(&body).unwrap())
        .unwrap()
}

pub fn ids(result: &Value) -> Vec<String> {
    result["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn scores(result: &Value) -> Vec<f64> {
    result["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["score"].as_f64().unwrap())
        .collect()
}
