//! Unit tests of `store`.

use super::*;

#[test]
fn the_store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<super::VectorStore>();
}

/// Threads writing and querying more indexes than may be open: no deadlock, no lost write,
/// and never more open than the bound plus, per thread, one index in use and one being
/// closed.
#[test]
fn closing_and_reopening_under_concurrent_use() {
    const THREADS: usize = 6;
    const INDEXES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        max_open_indexes: 2,
        ..StoreOptions::default()
    };
    let store = VectorStore::open_with_options(dir.path(), options).unwrap();
    for index in 0..INDEXES {
        store
            .create_index(
                "acct",
                &json!({"name": format!("i{index}"), "config": {"dimensions": 2, "metric": "cosine"}}),
            )
            .unwrap();
    }
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let store = &store;
            scope.spawn(move || {
                for step in 0..40 {
                    let name = format!("i{}", (thread * 7 + step) % INDEXES);
                    let record = VectorRecord {
                        id: format!("t{thread}-{step}"),
                        values: vec![1.0, step as f32],
                        namespace: None,
                        metadata: None,
                    };
                    store.upsert("acct", &name, vec![record]).unwrap();
                    let query = Query::from_json(&json!({"vector": [1.0, 0.0]})).unwrap();
                    store.query("acct", &name, &query).unwrap();
                    assert!(store.open_index_count() <= 2 + 2 * THREADS);
                }
            });
        }
    });
    let mut total = 0;
    for index in 0..INDEXES {
        let name = format!("i{index}");
        store
            .wait_until_processed("acct", &name, Duration::from_secs(30))
            .unwrap();
        total += store.info("acct", &name).unwrap()["vectorCount"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(total, (THREADS * 40) as u64);
    assert!(store.open_index_count() <= 2);
}
