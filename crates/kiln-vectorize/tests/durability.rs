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

fn quarantined(dir: &std::path::Path, name: &str) -> usize {
    fs::read_dir(dir.join(ACCOUNT).join(".quarantine"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| {
                    let file_name = entry.file_name();
                    let file_name = file_name.to_string_lossy();
                    file_name.starts_with(&format!("{name}."))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Two indexes, one vector each, closed again.
fn two_indexes(dir: &tempfile::TempDir, options: StoreOptions) {
    let store = VectorStore::open_with_options(dir.path(), options).unwrap();
    for name in ["bad", "good"] {
        create(&store, name, 2, "cosine");
        store
            .upsert(ACCOUNT, name, vec![vector("v", &[1.0, 0.0])])
            .unwrap();
        store
            .upsert(ACCOUNT, name, vec![vector("w", &[0.0, 1.0])])
            .unwrap();
        settle(&store, name);
    }
}

/// The other index answers, the damaged one is moved aside and then missing (its name free).
fn check_quarantined(dir: &tempfile::TempDir, store: &VectorStore) {
    assert_eq!(store.info(ACCOUNT, "good").unwrap()["vectorCount"], 2);
    let missing = store.get_index(ACCOUNT, "bad").unwrap_err();
    assert_eq!(missing.kind, kiln_core::ErrorKind::NotFound);
    assert_eq!(quarantined(dir.path(), "bad"), 1);
    create(store, "bad", 2, "cosine");
    assert_eq!(store.info(ACCOUNT, "bad").unwrap()["vectorCount"], 0);
}

#[test]
fn a_damaged_config_is_quarantined_at_start() {
    let dir = tempfile::tempdir().unwrap();
    two_indexes(&dir, StoreOptions::default());
    fs::write(
        dir.path().join(ACCOUNT).join("bad").join("config.json"),
        "{not json",
    )
    .unwrap();
    let store = store(&dir);
    let listed = store.list_indexes(ACCOUNT).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    check_quarantined(&dir, &store);
    // The quarantine survives the next start (it is not taken for a half-created index).
    drop(store);
    let _store = common::store(&dir);
    assert_eq!(quarantined(dir.path(), "bad"), 1);
}

#[test]
fn a_damaged_snapshot_or_log_is_quarantined_when_opened() {
    for damage in ["snapshot", "log"] {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            snapshot_min_log_bytes: if damage == "snapshot" { 1 } else { u64::MAX },
            ..StoreOptions::default()
        };
        two_indexes(&dir, options);
        let index_dir = dir.path().join(ACCOUNT).join("bad");
        let target = if damage == "snapshot" {
            index_dir.join("snapshot.bin")
        } else {
            let mut files: Vec<_> = fs::read_dir(index_dir.join("log"))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| fs::metadata(path).unwrap().len() > 0)
                .collect();
            files.sort();
            files.remove(0)
        };
        let mut bytes = fs::read(&target).unwrap();
        // A flipped byte inside the first record (or the snapshot's body), with data after it.
        bytes[12] ^= 0xff;
        fs::write(&target, bytes).unwrap();
        let store = VectorStore::open_with_options(dir.path(), options).unwrap();
        let error = store.info(ACCOUNT, "bad").unwrap_err();
        assert!(
            error.message.contains("damaged"),
            "{damage}: {}",
            error.message
        );
        check_quarantined(&dir, &store);
    }
}
