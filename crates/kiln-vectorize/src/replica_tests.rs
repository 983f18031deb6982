//! Unit tests of `replica`: several stores sharing one log, applied in order. The log here is
//! in process and applies synchronously; `kiln-nats` runs the same store over JetStream.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::{parse_vectors, Query, Unparsable, VectorRecord, WriteLimits};

/// Changes in a Vec; `wait_applied` applies pending ones to every store, in order.
#[derive(Default)]
struct InProcessLog {
    changes: Mutex<Vec<Vec<u8>>>,
    stores: Mutex<Vec<(Weak<VectorStore>, usize)>>,
}

impl InProcessLog {
    fn join(self: &Arc<Self>, store: &Arc<VectorStore>) {
        assert!(store.share_through(self.clone()));
        self.stores.lock().unwrap().push((Arc::downgrade(store), 0));
    }

    /// Applies everything appended so far to every store.
    fn deliver(&self) {
        let changes = self.changes.lock().unwrap().clone();
        let mut stores = self.stores.lock().unwrap();
        for (store, applied) in stores.iter_mut() {
            let Some(store) = store.upgrade() else {
                continue;
            };
            for bytes in &changes[*applied..] {
                // A refused change is refused on every store alike; nothing to do here.
                let _ = store.apply_change(Change::decode(bytes).unwrap());
            }
            *applied = changes.len();
        }
    }
}

impl ChangeLog for InProcessLog {
    fn append(&self, change: &Change) -> KilnResult<u64> {
        let mut changes = self.changes.lock().unwrap();
        changes.push(change.encode());
        Ok(changes.len() as u64)
    }

    fn head(&self) -> KilnResult<u64> {
        Ok(self.changes.lock().unwrap().len() as u64)
    }

    fn wait_applied(&self, _position: u64) -> KilnResult<()> {
        self.deliver();
        Ok(())
    }
}

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Arc<VectorStore>>,
    log: Arc<InProcessLog>,
}

fn cluster(nodes: usize) -> Cluster {
    let log = Arc::new(InProcessLog::default());
    let dirs: Vec<_> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = dirs
        .iter()
        .map(|dir| {
            let store = Arc::new(VectorStore::open(dir.path()).unwrap());
            log.join(&store);
            store
        })
        .collect();
    Cluster {
        _dirs: dirs,
        nodes,
        log,
    }
}

fn vectors(json: &str) -> Vec<VectorRecord> {
    parse_vectors(json.as_bytes(), Unparsable::Error, WriteLimits::default()).unwrap()
}

#[test]
fn every_kind_of_change_survives_encoding() {
    let config = IndexConfig::from_create_body(
        &json!({"name": "docs", "description": "d", "config": {"dimensions": 3, "metric": "cosine"}}),
        "2026-12-06T00:00:00Z",
    )
    .unwrap();
    let identity = MutationIdentity::fresh();
    let changes = [
        ChangeKind::CreateIndex(config),
        ChangeKind::DeleteIndex("docs".into()),
        ChangeKind::Mutate {
            index: "docs".into(),
            identity: identity.clone(),
            op: MutationOp::Upsert(vectors(
                r#"[{"id":"a","values":[1,2,3],"namespace":"n","metadata":{"k":"v"}}]"#,
            )),
        },
        ChangeKind::Mutate {
            index: "docs".into(),
            identity,
            op: MutationOp::CreateMetadataIndex {
                property: "k".into(),
                index_type: MetadataIndexType::String,
            },
        },
    ];
    for kind in changes {
        let change = Change {
            account: "acct".into(),
            id: "id-1".into(),
            kind,
        };
        assert_eq!(Change::decode(&change.encode()).unwrap(), change);
    }
    assert!(Change::decode(&[9, 0, 0]).is_err());
    assert!(Change::decode(&[]).is_err());
}

#[test]
fn an_upsert_through_one_node_is_queried_through_another_once_processed() {
    let cluster = cluster(3);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    a.create_index(
        "acct",
        &json!({"name": "docs", "config": {"dimensions": 2, "metric": "cosine"}}),
    )
    .unwrap();
    // Created through A, seen through C at once (C catches up before answering).
    assert_eq!(c.get_index("acct", "docs").unwrap()["name"], "docs");

    let mutation = a
        .upsert("acct", "docs", vectors(r#"[{"id":"x","values":[1,0]}]"#))
        .unwrap();
    // Nothing applied anywhere until the log delivers it, A included.
    assert_eq!(a.info("acct", "docs").unwrap()["vectorCount"], 0);
    cluster.log.deliver();
    for node in [a, b, c] {
        node.wait_until_processed("acct", "docs", Duration::from_secs(5))
            .unwrap();
        let info = node.info("acct", "docs").unwrap();
        assert_eq!(info["processedUpToMutation"], mutation.as_str());
        assert_eq!(info["vectorCount"], 1);
    }
    let query = Query::from_json(&json!({"vector": [1.0, 0.1], "topK": 1})).unwrap();
    let found = c.query("acct", "docs", &query).unwrap();
    assert_eq!(found["matches"][0]["id"], "x");
    // The same time on every node, the accepting node's.
    assert_eq!(
        a.info("acct", "docs").unwrap()["processedUpToDatetime"],
        c.info("acct", "docs").unwrap()["processedUpToDatetime"]
    );
}

#[test]
fn nodes_make_the_same_decision_on_a_change_that_became_invalid() {
    let cluster = cluster(2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    a.create_index(
        "acct",
        &json!({"name": "docs", "config": {"dimensions": 2, "metric": "cosine"}}),
    )
    .unwrap();
    b.get_index("acct", "docs").unwrap();
    // Both accept a metadata index on "k" before either is applied; the second is refused
    // when applied, on both nodes.
    let body = json!({"propertyName": "k", "indexType": "string"});
    a.create_metadata_index("acct", "docs", &body).unwrap();
    b.create_metadata_index("acct", "docs", &body).unwrap();
    cluster.log.deliver();
    for node in [a, b] {
        node.wait_until_processed("acct", "docs", Duration::from_secs(5))
            .unwrap();
        let listed = node.list_metadata_indexes("acct", "docs").unwrap();
        assert_eq!(listed["metadataIndexes"].as_array().unwrap().len(), 1);
    }
    // Now known everywhere: refused where it is asked.
    let refused = b.create_metadata_index("acct", "docs", &body).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Conflict);
}

#[test]
fn deletes_and_duplicate_creates_reach_every_node() {
    let cluster = cluster(2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let body = json!({"name": "docs", "config": {"dimensions": 2, "metric": "cosine"}});
    a.create_index("acct", &body).unwrap();
    assert_eq!(
        b.create_index("acct", &body).unwrap_err().kind,
        ErrorKind::Conflict
    );
    b.delete_index("acct", "docs").unwrap();
    assert_eq!(
        a.get_index("acct", "docs").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(a.list_indexes("acct").unwrap().is_empty());
    // The name is free again on every node.
    a.create_index("acct", &body).unwrap();
    assert_eq!(b.list_indexes("acct").unwrap().len(), 1);
}

#[test]
fn a_create_that_loses_a_race_is_told_so() {
    let cluster = cluster(2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    // B's create is appended before A's is applied anywhere (as when both arrive at once).
    let mine = IndexConfig::from_create_body(
        &json!({"name": "docs", "description": "b's", "config": {"dimensions": 2, "metric": "cosine"}}),
        "2026-12-06T00:00:00Z",
    )
    .unwrap();
    cluster
        .log
        .append(&Change {
            account: "acct".into(),
            id: "b".into(),
            kind: ChangeKind::CreateIndex(mine),
        })
        .unwrap();
    let lost = a
        .create_shared(
            a.shared_log().unwrap(),
            "acct",
            IndexConfig::from_create_body(
                &json!({"name": "docs", "config": {"dimensions": 2, "metric": "cosine"}}),
                "2026-12-06T00:00:01Z",
            )
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(lost.kind, ErrorKind::Conflict);
    for node in [a, b] {
        assert_eq!(
            node.get_index("acct", "docs").unwrap()["description"],
            "b's"
        );
    }
}
