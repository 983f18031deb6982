use kiln_core::ErrorKind;
use serde_json::json;

use super::*;

fn store() -> (tempfile::TempDir, GatewayStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = GatewayStore::open(&dir.path().join("gateway.db")).expect("opens");
    (dir, store)
}

fn kind<T: std::fmt::Debug>(result: KilnResult<T>) -> (ErrorKind, String) {
    let error = result.expect_err("refused");
    (error.kind, error.message)
}

#[test]
fn create_get_update_list_delete() {
    let (_dir, store) = store();
    let created = store
        .create(
            "acct",
            &json!({"id": "my-gw", "cache_ttl": 300, "rate_limiting_limit": 10,
            "rate_limiting_interval": 60, "rate_limiting_technique": "sliding"}),
        )
        .expect("created");
    assert_eq!(created.config.cache_ttl, Some(300));
    let shown = created.to_json();
    assert_eq!(shown["id"], "my-gw");
    assert_eq!(shown["rate_limiting_technique"], "sliding");
    assert_eq!(shown["log_management_strategy"], "STOP_INSERTING");
    assert_eq!(store.get("acct", "my-gw").expect("get"), created);

    let updated = store
        .update(
            "acct",
            "my-gw",
            &json!({"collect_logs": false, "authentication": true}),
        )
        .expect("updated");
    assert!(updated.config.authentication && !updated.config.collect_logs);
    assert_eq!(updated.config.cache_ttl, None, "PUT replaces the settings");
    assert_eq!(updated.created_at, created.created_at);

    store
        .create("acct", &json!({"id": "second"}))
        .expect("second");
    let ids: Vec<String> = store
        .list("acct")
        .expect("list")
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(ids, ["my-gw", "second"]);
    assert!(store.list("other").expect("list").is_empty());

    store.delete("acct", "my-gw").expect("deleted");
    assert_eq!(kind(store.get("acct", "my-gw")).0, ErrorKind::NotFound);
    assert_eq!(kind(store.delete("acct", "my-gw")).0, ErrorKind::NotFound);
    assert_eq!(
        kind(store.update("acct", "nope", &json!({}))).0,
        ErrorKind::NotFound
    );
}

#[test]
fn bad_settings_and_names_are_refused() {
    let (_dir, store) = store();
    for (body, expected) in [
        (json!({"cache_ttl": 300}), "'id'"),
        (json!({"id": "has space"}), "invalid gateway id"),
        (json!({"id": "x".repeat(65)}), "invalid gateway id"),
        (json!({"id": "g", "cache_ttl": 2_592_001}), "cache_ttl"),
        (
            json!({"id": "g", "retry_max_attempts": 6}),
            "retry_max_attempts",
        ),
        (json!({"id": "g", "retry_delay": 5001}), "retry_delay"),
        (
            json!({"id": "g", "rate_limiting_limit": 5}),
            "rate_limiting_interval",
        ),
        (
            json!({"id": "g", "rate_limiting_technique": "leaky"}),
            "leaky",
        ),
        (
            json!({"id": "g", "cache_ttl": "long"}),
            "invalid gateway settings",
        ),
        (json!({"id": "g", "surprise": true}), "surprise"),
    ] {
        let (error_kind, message) = kind(store.create("acct", &body));
        assert_eq!(error_kind, ErrorKind::BadInput, "{body}: {message}");
        assert!(message.contains(expected), "{body}: {message}");
    }
    // Fields for services Kiln does not run are accepted.
    store
        .create("acct", &json!({"id": "g", "logpush": false, "zdr": false}))
        .expect("created");
    assert_eq!(
        kind(store.create("acct", &json!({"id": "g"}))).0,
        ErrorKind::Conflict
    );
}

#[test]
fn the_21st_gateway_is_refused_and_gateways_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.db");
    {
        let store = GatewayStore::open(&path).expect("opens");
        for index in 0..MAX_GATEWAYS_PER_ACCOUNT {
            store
                .create("acct", &json!({"id": format!("gw-{index}")}))
                .expect("within the limit");
        }
        let (error_kind, message) = kind(store.create("acct", &json!({"id": "one-more"})));
        assert_eq!(error_kind, ErrorKind::BadInput);
        assert!(message.contains("20"), "{message}");
    }
    let reopened = GatewayStore::open(&path).expect("reopens");
    assert_eq!(
        reopened.list("acct").expect("list").len(),
        MAX_GATEWAYS_PER_ACCOUNT
    );
}

/// A second store on the same file would replay and delete journal segments under the first:
/// it is refused while the first is open, and opens once the first is gone.
#[test]
fn one_store_per_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.db");
    let first = GatewayStore::open(&path).expect("opens");
    let Err(error) = GatewayStore::open(&path) else {
        panic!("a second store opened on a journal in use");
    };
    assert!(
        error.message.contains("in use by another Kiln server"),
        "{}",
        error.message
    );
    drop(first);
    GatewayStore::open(&path).expect("opens once the first store is gone");
}

#[test]
fn journaled_writes_are_replayed_once_after_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.db");
    let store = GatewayStore::open(&path).expect("opens");
    store.create("a", &json!({"id": "g"})).expect("gateway");
    drop(store);
    // A crash after the journal append, before SQLite got the write.
    let write = crate::journal::tests::sample();
    let mut encoded = Vec::new();
    crate::journal::encode_into(&mut encoded, &write);
    let mut journal =
        crate::journal::Journal::open(&crate::writer::journal_dir(&path), 0, true).unwrap();
    journal.append(&encoded).unwrap();
    drop(journal);

    for _ in 0..2 {
        let store = GatewayStore::open(&path).expect("reopens");
        let log = store
            .get_log("a", "g", &write.record.id)
            .expect("the log was replayed");
        assert_eq!(log["tokens_out"], 7);
        let entry = store
            .cached(&[7; 32], 0)
            .expect("lookup")
            .expect("cache entry replayed");
        assert_eq!(entry.body, b"data: x\n\n");
        let report = store
            .analytics("a", "g", &[("start".into(), "2020-01-01T00:00:00Z".into())])
            .expect("analytics");
        assert_eq!(report["totals"]["requests"], 1, "replayed exactly once");
    }
}

#[test]
fn a_full_writer_drops_instead_of_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = WriterLimits {
        queue_bytes: 4096,
        ..WriterLimits::default()
    };
    let store = GatewayStore::open_with(&dir.path().join("gateway.db"), limits).expect("opens");
    let mut write = crate::journal::tests::sample();
    assert!(store.submit(write.clone()).is_some(), "a small write fits");
    write.record.response_body = vec![b'x'; 8192];
    assert!(
        store.submit(write).is_none(),
        "a write past the byte budget is dropped at once"
    );
}
