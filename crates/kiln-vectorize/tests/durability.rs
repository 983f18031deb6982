//! Reopening restores every acknowledged mutation: from the log alone, from a snapshot plus the
//! log after it, and with a torn (never acknowledged) record at the end of the log.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;

use common::*;
use kiln_vectorize::{StoreOptions, VectorStore};
use serde_json::json;

fn log_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join(ACCOUNT).join("idx").join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn reopen_replays_the_log_and_ignores_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mutation = {
        let store = store(&dir);
        create(&store, "idx", 2, "cosine");
        store
            .create_metadata_index(
                ACCOUNT,
                "idx",
                &json!({"propertyName": "k", "indexType": "string"}),
            )
            .unwrap();
        store
            .insert(
                ACCOUNT,
                "idx",
                vec![
                    with_metadata("a", &[1.0, 0.0], json!({"k": "v"})),
                    vector("b", &[0.0, 1.0]),
                ],
            )
            .unwrap();
        store
            .delete_by_ids(ACCOUNT, "idx", vec!["b".into()])
            .unwrap()
        // dropped without waiting: the apply thread may or may not have applied anything
    };
    // a crash mid-append leaves a partial record at the end of the newest segment
    let newest = log_files(dir.path()).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&newest).unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(file);
    let store = store(&dir);
    let info = store.info(ACCOUNT, "idx").unwrap();
    assert_eq!(info["vectorCount"], 1);
    assert_eq!(info["processedUpToMutation"], mutation);
    let found = ids(&query(
        &store,
        "idx",
        json!({"vector": [1, 0], "filter": {"k": "v"}, "returnMetadata": "indexed"}),
    ));
    assert_eq!(found, ["a"]);
    // writing continues after the torn record, and survives another reopen
    store
        .upsert(ACCOUNT, "idx", vec![vector("c", &[1.0, 1.0])])
        .unwrap();
    drop(store);
    let store = common::store(&dir);
    assert_eq!(store.info(ACCOUNT, "idx").unwrap()["vectorCount"], 2);
}

#[test]
fn snapshots_plus_log_tail_restore_everything() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        snapshot_min_log_bytes: 1,
        ann_min_vectors: 50,
        ..StoreOptions::default()
    };
    let expected_ids: Vec<String>;
    {
        let store = VectorStore::open_with_options(dir.path(), options).unwrap();
        create(&store, "idx", 4, "euclidean");
        store
            .create_metadata_index(
                ACCOUNT,
                "idx",
                &json!({"propertyName": "n", "indexType": "number"}),
            )
            .unwrap();
        for batch in 0..10 {
            let vectors = (0..20)
                .map(|n| {
                    let id = batch * 20 + n;
                    with_metadata(
                        &format!("v{id:03}"),
                        &[id as f32, 1.0, 2.0, 3.0],
                        json!({"n": id}),
                    )
                })
                .collect();
            store.upsert(ACCOUNT, "idx", vectors).unwrap();
            settle(&store, "idx");
        }
        store
            .delete_by_ids(ACCOUNT, "idx", vec!["v000".into(), "v199".into()])
            .unwrap();
        settle(&store, "idx");
        expected_ids = (1..199).map(|id| format!("v{id:03}")).collect();
        assert!(dir
            .path()
            .join(ACCOUNT)
            .join("idx")
            .join("snapshot.bin")
            .exists());
    }
    // covered segments were deleted
    assert!(
        log_files(dir.path()).len() <= 3,
        "{:?}",
        log_files(dir.path())
    );
    let store = VectorStore::open_with_options(dir.path(), options).unwrap();
    let listed = store
        .list_vectors(ACCOUNT, "idx", Some(1000), None)
        .unwrap();
    let listed: Vec<String> = listed["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, expected_ids);
    let filtered = query(
        &store,
        "idx",
        json!({"vector": [0, 1, 2, 3], "topK": 2, "filter": {"n": {"$gte": 100}}}),
    );
    assert_eq!(ids(&filtered), ["v100", "v101"]);
    store
        .wait_until_processed(ACCOUNT, "idx", std::time::Duration::from_secs(10))
        .unwrap();
}

#[test]
fn deleted_indexes_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store(&dir);
        create(&store, "idx", 2, "cosine");
        create(&store, "keep", 2, "cosine");
        store
            .insert(ACCOUNT, "keep", vec![vector("a", &[1.0, 0.0])])
            .unwrap();
        store.delete_index(ACCOUNT, "idx").unwrap();
    }
    let store = store(&dir);
    let names: Vec<String> = store
        .list_indexes(ACCOUNT)
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(store.info(ACCOUNT, "keep").unwrap()["vectorCount"], 1);
}

#[test]
fn the_graph_is_saved_with_the_snapshot_and_loaded_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        snapshot_min_log_bytes: 1,
        ann_min_vectors: 100,
        ..StoreOptions::default()
    };
    let data = kiln_vectorize::bench::clustered_vectors(1200, 16, 10, true, 21);
    let graph_file = dir.path().join(ACCOUNT).join("idx").join("graph.bin");
    let probe = json!({"vector": data[7], "topK": 5});
    let before;
    {
        let store = VectorStore::open_with_options(dir.path(), options).unwrap();
        create(&store, "idx", 16, "cosine");
        for (batch, chunk) in data.chunks(400).enumerate() {
            let vectors = chunk
                .iter()
                .enumerate()
                .map(|(n, v)| vector(&format!("v{}", batch * 400 + n), v))
                .collect();
            store.upsert(ACCOUNT, "idx", vectors).unwrap();
            settle(&store, "idx");
        }
        // deleted and replaced vectors: the saved graph keeps them as deleted nodes
        store
            .delete_by_ids(ACCOUNT, "idx", vec!["v0".into(), "v1".into()])
            .unwrap();
        store
            .upsert(ACCOUNT, "idx", vec![vector("v2", &data[3])])
            .unwrap();
        settle(&store, "idx");
        assert_eq!(store.ann_source(ACCOUNT, "idx").unwrap(), Some("built"));
        assert!(graph_file.exists());
        before = query(&store, "idx", probe.clone());
    }
    let store = VectorStore::open_with_options(dir.path(), options).unwrap();
    assert_eq!(store.ann_source(ACCOUNT, "idx").unwrap(), Some("loaded"));
    assert_eq!(query(&store, "idx", probe.clone()), before);
    assert_eq!(store.info(ACCOUNT, "idx").unwrap()["vectorCount"], 1198);
    let found = ids(&query(&store, "idx", json!({"vector": data[3], "topK": 3})));
    assert!(found.contains(&"v2".to_owned()) && found.contains(&"v3".to_owned()));
    assert!(!ids(&query(
        &store,
        "idx",
        json!({"vector": data[0], "topK": 10})
    ))
    .contains(&"v0".to_owned()));
    // more writes after the restart go into the loaded graph
    store
        .upsert(ACCOUNT, "idx", vec![vector("new", &data[9])])
        .unwrap();
    settle(&store, "idx");
    assert_eq!(
        ids(&query(&store, "idx", json!({"vector": data[9], "topK": 1}))),
        ["new"]
    );
    drop(store);

    // a damaged graph file is ignored: the graph is rebuilt and nothing is lost
    let mut bytes = fs::read(&graph_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    fs::write(&graph_file, bytes).unwrap();
    let store = VectorStore::open_with_options(dir.path(), options).unwrap();
    assert_ne!(store.ann_source(ACCOUNT, "idx").unwrap(), Some("loaded"));
    assert_eq!(store.info(ACCOUNT, "idx").unwrap()["vectorCount"], 1199);
    assert_eq!(
        ids(&query(&store, "idx", json!({"vector": data[9], "topK": 1}))),
        ["new"]
    );
}
