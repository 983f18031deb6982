//! Several vector stores sharing indexes through a real JetStream stream on the local NATS
//! server (`KILN_TEST_NATS_URL`, default nats://127.0.0.1:4222): each test has a stream of its
//! own, deleted at the end.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_nats::{test_url, Bus, TestStream, VectorizeLog, VectorizeLogOptions};
use kiln_vectorize::{parse_vectors, Query, Unparsable, VectorStore, WriteLimits};
use serde_json::{json, Value};

struct Node {
    store: Arc<VectorStore>,
    log: Arc<VectorizeLog>,
}

fn node(dir: &Path, stream: &TestStream, max_part_bytes: Option<usize>) -> Node {
    let store = Arc::new(VectorStore::open(&dir.join("vectorize")).unwrap());
    let options = VectorizeLogOptions {
        stream: stream.name().to_owned(),
        position_file: dir.join("vectorize-log.position"),
        max_part_bytes,
    };
    let bus = Arc::new(Bus::connect(&test_url()).unwrap());
    let log = VectorizeLog::start(bus, options, &store).unwrap();
    Node { store, log }
}

fn upsert(node: &Node, index: &str, body: &str) -> String {
    let vectors =
        parse_vectors(body.as_bytes(), Unparsable::Error, WriteLimits::default()).unwrap();
    node.store.upsert("acct", index, vectors).unwrap()
}

/// Polls `info` until the node reports `mutation` processed, as a client would.
fn wait_processed(node: &Node, index: &str, mutation: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = node.store.info("acct", index).unwrap();
        if info["processedUpToMutation"] == mutation {
            return info;
        }
        assert!(Instant::now() < deadline, "not processed: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create(node: &Node, name: &str, dimensions: usize) {
    node.store
        .create_index(
            "acct",
            &json!({"name": name, "config": {"dimensions": dimensions, "metric": "cosine"}}),
        )
        .unwrap();
}

#[test]
fn a_vector_upserted_through_one_node_is_queried_through_another() {
    let stream = TestStream::new();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|dir| node(dir.path(), &stream, None))
        .collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    create(a, "docs", 3);
    // Created through A, known to B and C without waiting (they catch up first).
    assert_eq!(
        b.store.get_index("acct", "docs").unwrap()["config"]["dimensions"],
        3
    );
    assert_eq!(c.store.list_indexes("acct").unwrap().len(), 1);

    let mutation = upsert(
        a,
        "docs",
        r#"[{"id":"v1","values":[1,0,0],"metadata":{"k":"x"}}]"#,
    );
    let info = wait_processed(c, "docs", &mutation);
    assert_eq!(info["vectorCount"], 1);
    let query =
        Query::from_json(&json!({"vector": [0.9, 0.1, 0], "topK": 1, "returnMetadata": "all"}))
            .unwrap();
    let found = c.store.query("acct", "docs", &query).unwrap();
    assert_eq!(found["matches"][0]["id"], "v1");
    assert_eq!(found["matches"][0]["metadata"]["k"], "x");
    // Every node reports the same mutation and time for it.
    let on_b = wait_processed(b, "docs", &mutation);
    assert_eq!(on_b["processedUpToDatetime"], info["processedUpToDatetime"]);

    // A delete through C reaches A.
    let deleted = c
        .store
        .delete_by_ids("acct", "docs", vec!["v1".into()])
        .unwrap();
    assert_eq!(wait_processed(a, "docs", &deleted)["vectorCount"], 0);
    assert!(a.log.applied() >= 3);
}

#[test]
fn a_change_larger_than_a_message_goes_in_parts() {
    let stream = TestStream::new();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // 512-byte messages: 40 vectors of 32 floats take dozens of parts.
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|dir| node(dir.path(), &stream, Some(512)))
        .collect();
    create(&nodes[0], "big", 32);
    let vectors: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("v{i}"), "values": (0..32).map(|d| ((i * 32 + d) % 7) as f32 + 0.5).collect::<Vec<_>>()}))
        .collect();
    let before = nodes[1].log.applied();
    let mutation = upsert(&nodes[0], "big", &Value::Array(vectors).to_string());
    let info = wait_processed(&nodes[1], "big", &mutation);
    assert_eq!(info["vectorCount"], 40);
    assert!(
        nodes[1].log.applied() - before > 10,
        "the change went in one message"
    );
}

#[test]
fn a_restarted_node_resumes_where_it_stopped() {
    let stream = TestStream::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dir_a.path(), &stream, None);
    create(&a, "docs", 2);
    let first = upsert(&a, "docs", r#"[{"id":"one","values":[1,0]}]"#);
    let b = node(dir_b.path(), &stream, None);
    wait_processed(&b, "docs", &first);
    let position = b.log.applied();
    drop(b);

    // While B is down: another upsert, and an index created and deleted.
    let second = upsert(&a, "docs", r#"[{"id":"two","values":[0,1]}]"#);
    create(&a, "gone", 2);
    a.store.delete_index("acct", "gone").unwrap();

    // Back up on the same files: it starts from its saved position, not from the start.
    let saved_at = dir_b.path().join("vectorize-log.position");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&saved_at)
        .unwrap_or_default()
        .trim()
        .ends_with(&format!(" {position}"))
    {
        assert!(Instant::now() < deadline, "position {position} never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = node(dir_b.path(), &stream, None);
    let info = wait_processed(&b, "docs", &second);
    assert_eq!(info["vectorCount"], 2);
    assert_eq!(b.store.list_indexes("acct").unwrap().len(), 1);
}

#[test]
fn an_unreachable_server_or_a_bad_stream_name_is_a_clear_error_at_start() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let error = Bus::connect(&format!("nats://127.0.0.1:{port}"))
        .err()
        .unwrap();
    assert_eq!(
        error.kind,
        kiln_core::ErrorKind::StorageUnavailable,
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(VectorStore::open(dir.path()).unwrap());
    let bad_name = VectorizeLogOptions {
        stream: "no.dots".into(),
        position_file: dir.path().join("position"),
        max_part_bytes: None,
    };
    let bus = Arc::new(Bus::connect(&test_url()).unwrap());
    assert!(VectorizeLog::start(bus, bad_name, &store).is_err());
}
