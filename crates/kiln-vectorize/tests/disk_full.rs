//! A full disk: a mutation the log cannot store fails with an error (no mutationId), every
//! acknowledged one stays readable, and once space is back the index takes writes again and
//! they survive a restart (the failed append left no torn record before them).

mod common;

#[path = "../../../tests/disk_full.rs"]
mod disk_full;

use common::*;
use kiln_vectorize::{VectorRecord, VectorStore};
use serde_json::json;

/// Enough vectors that the log record needs fresh pages of the disk.
fn batch(prefix: &str) -> Vec<VectorRecord> {
    (0..40)
        .map(|n| vector(&format!("{prefix}{n}"), &[n as f32 + 1.0; 128]))
        .collect()
}

fn found(store: &VectorStore, ids: &[&str]) -> usize {
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    store.get_by_ids(ACCOUNT, "idx", &ids).unwrap().len()
}

#[test]
fn a_full_disk_refuses_mutations_and_loses_none_acknowledged() {
    let Some(disk) = disk_full::SmallDisk::mount("vectorize log") else {
        return;
    };
    let store = VectorStore::open(disk.path()).unwrap();
    create(&store, "idx", 128, "cosine");
    let acknowledged = store.upsert(ACCOUNT, "idx", batch("a")).unwrap();
    settle(&store, "idx");

    disk.fill();
    let error = store.upsert(ACCOUNT, "idx", batch("b")).unwrap_err();
    assert!(
        disk_full::says_disk_full(&error.message),
        "{}",
        error.message
    );
    let error = store
        .create_index(
            ACCOUNT,
            &json!({"name": "other", "config": {"dimensions": 2, "metric": "cosine"}}),
        )
        .unwrap_err();
    assert!(
        disk_full::says_disk_full(&error.message),
        "{}",
        error.message
    );
    settle(&store, "idx");
    assert_eq!(found(&store, &["a0", "a39"]), 2);
    assert_eq!(found(&store, &["b0"]), 0);
    assert_eq!(
        store.info(ACCOUNT, "idx").unwrap()["processedUpToMutation"],
        acknowledged
    );

    disk.free();
    store.upsert(ACCOUNT, "idx", batch("c")).unwrap();
    settle(&store, "idx");
    assert_eq!(found(&store, &["a0", "c39"]), 2);
    drop(store);
    let store = VectorStore::open(disk.path()).unwrap();
    assert_eq!(found(&store, &["a0", "a39", "c0", "c39"]), 4);
    assert_eq!(found(&store, &["b0"]), 0);
    assert_eq!(store.info(ACCOUNT, "idx").unwrap()["vectorCount"], 80);
}
