//! Approximate search keeps recall@10 ≥ 0.95 against exact search on a small clustered set
//! (5,000 × 64, small enough for debug builds), for every metric; filtered queries are correct
//! whether the filter is very selective (exact over candidates) or not (filtered graph search).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_vectorize::bench::clustered_vectors;
use kiln_vectorize::{Metric, VectorRecord};
use serde_json::json;

const COUNT: usize = 5000;
const DIMENSIONS: usize = 64;
const QUERIES: usize = 40;

fn wait_for_graph(store: &kiln_vectorize::VectorStore, name: &str) {
    let start = Instant::now();
    while !store.ann_ready(ACCOUNT, name).unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the graph was never built"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exact_top10(
    metric: Metric,
    data: &[Vec<f32>],
    query: &[f32],
    allowed: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut scored: Vec<(f32, usize)> = data
        .iter()
        .enumerate()
        .filter(|(n, _)| allowed(*n))
        .map(|(n, v)| (metric.score(query, v), n))
        .collect();
    scored.sort_by(|a, b| metric.best_first(a.0, b.0));
    scored
        .into_iter()
        .take(10)
        .map(|(_, n)| format!("v{n}"))
        .collect()
}

#[test]
fn recall_at_10_for_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    for (metric, name) in [
        (Metric::Cosine, "cosine"),
        (Metric::Euclidean, "euclidean"),
        (Metric::DotProduct, "dot-product"),
    ] {
        let data = clustered_vectors(
            COUNT + QUERIES,
            DIMENSIONS,
            50,
            metric == Metric::Cosine,
            11,
        );
        let (base, queries) = data.split_at(COUNT);
        create(&store, name, DIMENSIONS, name);
        store
            .create_metadata_index(
                ACCOUNT,
                name,
                &json!({"propertyName": "bucket", "indexType": "number"}),
            )
            .unwrap();
        let records: Vec<VectorRecord> = base
            .iter()
            .enumerate()
            .map(|(n, v)| with_metadata(&format!("v{n}"), v, json!({"bucket": n % 1000})))
            .collect();
        store.insert(ACCOUNT, name, records).unwrap();
        settle(&store, name);
        wait_for_graph(&store, name);
        let mut hits = 0;
        for q in queries {
            let truth = exact_top10(metric, base, q, |_| true);
            let found = ids(&query(&store, name, json!({"vector": q, "topK": 10})));
            hits += found.iter().filter(|id| truth.contains(id)).count();
        }
        let recall = hits as f64 / (QUERIES * 10) as f64;
        assert!(recall >= 0.95, "{name}: recall@10 {recall}");

        // very selective: 5 vectors match; all of them come back, best first
        let q = &queries[0];
        let found = ids(&query(
            &store,
            name,
            json!({"vector": q, "topK": 10, "filter": {"bucket": 7}}),
        ));
        assert_eq!(found, exact_top10(metric, base, q, |n| n % 1000 == 7)[..5]);
        // not selective (half the vectors): filtered graph search, still topK matching results
        let mut hits = 0;
        for q in &queries[..10] {
            let truth = exact_top10(metric, base, q, |n| n % 1000 < 500);
            let result = query(
                &store,
                name,
                json!({"vector": q, "topK": 10, "filter": {"bucket": {"$lt": 500}}, "returnMetadata": "indexed"}),
            );
            assert_eq!(result["count"], 10);
            assert!(result["matches"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["metadata"]["bucket"].as_f64().unwrap() < 500.0));
            hits += ids(&result).iter().filter(|id| truth.contains(id)).count();
        }
        let recall = hits as f64 / 100.0;
        assert!(recall >= 0.9, "{name}: filtered recall@10 {recall}");
    }
}

#[test]
fn graph_follows_deletes_and_replacements() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", DIMENSIONS, "euclidean");
    let data = clustered_vectors(3000, DIMENSIONS, 20, false, 5);
    store
        .insert(
            ACCOUNT,
            "idx",
            data.iter()
                .enumerate()
                .map(|(n, v)| vector(&format!("v{n}"), v))
                .collect(),
        )
        .unwrap();
    settle(&store, "idx");
    wait_for_graph(&store, "idx");
    // the exact neighbour of data[0] is itself; delete it and move v1 onto it
    store
        .delete_by_ids(ACCOUNT, "idx", vec!["v0".into()])
        .unwrap();
    store
        .upsert(ACCOUNT, "idx", vec![vector("v1", &data[0])])
        .unwrap();
    settle(&store, "idx");
    let result = query(
        &store,
        "idx",
        json!({"vector": data[0], "topK": 3, "returnValues": true}),
    );
    assert_eq!(ids(&result)[0], "v1");
    assert_eq!(scores(&result)[0], 0.0);
    assert!(!ids(&result).contains(&"v0".to_owned()));
}

#[test]
fn queries_go_on_while_a_large_batch_is_linked() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    create(&store, "idx", DIMENSIONS, "euclidean");
    let data = clustered_vectors(6000, DIMENSIONS, 20, false, 13);
    let (first, second) = data.split_at(3000);
    let records = |rows: &[Vec<f32>], offset: usize| -> Vec<VectorRecord> {
        rows.iter()
            .enumerate()
            .map(|(n, v)| vector(&format!("v{}", offset + n), v))
            .collect()
    };
    store.insert(ACCOUNT, "idx", records(first, 0)).unwrap();
    settle(&store, "idx");
    wait_for_graph(&store, "idx");
    // 3,000 new vectors: linking them into the graph takes a while (more in a debug build);
    // queries must not wait for it.
    store.upsert(ACCOUNT, "idx", records(second, 3000)).unwrap();
    let probe = json!({"vector": second[0], "topK": 1});
    let mut answered_meanwhile = 0;
    loop {
        let started = Instant::now();
        let found = ids(&query(&store, "idx", probe.clone()));
        assert!(started.elapsed() < Duration::from_secs(5), "a query waited");
        if found == ["v3000"] {
            break; // the batch is applied
        }
        answered_meanwhile += 1;
    }
    settle(&store, "idx");
    assert_eq!(store.info(ACCOUNT, "idx").unwrap()["vectorCount"], 6000);
    assert!(
        answered_meanwhile > 0,
        "no query was answered while the batch was being linked"
    );
    // every new vector is findable through the graph
    for (n, v) in second.iter().enumerate().step_by(300) {
        let found = ids(&query(&store, "idx", json!({"vector": v, "topK": 1})));
        assert_eq!(found, [format!("v{}", 3000 + n)]);
    }
}
