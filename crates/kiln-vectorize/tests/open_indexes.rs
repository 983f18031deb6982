//! Many indexes cost a bounded number of threads and open files: idle ones beyond
//! `max_open_indexes` are closed and reopened on use, and nothing is opened at start.
//! Alone in its test binary, so the process's descriptor and thread counts are this test's.

mod common;

use common::{create, query, settle, vector, ACCOUNT};
use kiln_vectorize::{StoreOptions, VectorStore};
use serde_json::json;

const CAP: usize = 4;
const INDEXES: usize = 40;

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

/// What the descriptors point at, for a failure message.
fn open_file_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_link(entry.path()).ok())
                .map(|target| target.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |entries| entries.count())
}

fn name(index: usize) -> String {
    format!("idx-{index}")
}

/// Every index holds the vectors written to it: its own id and values.
fn check_all(store: &VectorStore) {
    for index in 0..INDEXES {
        let found = query(
            store,
            &name(index),
            json!({"vector": [index as f32, 1.0], "topK": 2, "returnValues": true}),
        );
        let ids = common::ids(&found);
        assert_eq!(
            ids,
            vec![format!("v{index}"), format!("w{index}")],
            "{found}"
        );
        assert_eq!(
            found["matches"][0]["values"],
            json!([index as f32, 1.0]),
            "{found}"
        );
    }
}

#[test]
fn many_indexes_cost_bounded_threads_and_files_and_keep_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        max_open_indexes: CAP,
        // Some indexes snapshot (log replay after the snapshot on reopen), some do not.
        snapshot_min_log_bytes: 1,
        ..StoreOptions::default()
    };
    let (files_before, threads_before) = (open_files(), threads());
    {
        let store = VectorStore::open_with_options(dir.path(), options).unwrap();
        for index in 0..INDEXES {
            create(&store, &name(index), 2, "euclidean");
        }
        assert_eq!(store.open_index_count(), 0, "creating does not open");
        for round in 0..2 {
            for index in 0..INDEXES {
                let id = if round == 0 { "v" } else { "w" };
                let values = if round == 0 {
                    [index as f32, 1.0]
                } else {
                    [index as f32 + 0.5, 1.0]
                };
                store
                    .upsert(
                        ACCOUNT,
                        &name(index),
                        vec![vector(&format!("{id}{index}"), &values)],
                    )
                    .unwrap();
                settle(&store, &name(index));
                assert!(store.open_index_count() <= CAP);
                // A log each, and while a snapshot is written its file, the next log segment and
                // a directory to sync.
                assert!(
                    open_files() <= files_before + 4 * CAP + 2,
                    "{} files open, {files_before} before: {:?}",
                    open_files(),
                    open_file_names()
                );
                assert!(
                    threads() <= threads_before + CAP,
                    "{} threads, {threads_before} before",
                    threads()
                );
            }
        }
        check_all(&store);
        // Quiet now (reads write no snapshots): exactly a log file per open index.
        assert!(store.open_index_count() <= CAP);
        assert!(
            open_files() <= files_before + CAP,
            "{:?}",
            open_file_names()
        );
        assert!(threads() <= threads_before + CAP);
        // A deleted index that was closed is gone, and its name can be used again.
        store.delete_index(ACCOUNT, &name(0)).unwrap();
        create(&store, &name(0), 2, "euclidean");
        store
            .upsert(
                ACCOUNT,
                &name(0),
                vec![vector("v0", &[0.0, 1.0]), vector("w0", &[0.5, 1.0])],
            )
            .unwrap();
        settle(&store, &name(0));
    }
    assert!(
        threads() <= threads_before,
        "a dropped store stops every apply thread"
    );
    // A restarted store opens nothing until asked, then finds everything.
    let store = VectorStore::open_with_options(dir.path(), options).unwrap();
    assert_eq!(store.open_index_count(), 0);
    assert_eq!(store.list_indexes(ACCOUNT).unwrap().len(), INDEXES);
    assert!(threads() <= threads_before);
    check_all(&store);
    assert!(store.open_index_count() <= CAP);
    assert!(
        open_files() <= files_before + CAP,
        "{:?}",
        open_file_names()
    );
    assert!(threads() <= threads_before + CAP);
    // Reopening many times leaves no pile of empty log segments.
    for _ in 0..5 {
        check_all(&store);
    }
    let segments = std::fs::read_dir(dir.path().join(ACCOUNT).join(name(5)).join("log"))
        .unwrap()
        .count();
    assert!(segments <= 3, "{segments} log segments");
}
