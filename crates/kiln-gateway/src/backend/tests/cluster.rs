//! Several nodes on one shared database: what one node writes, the others read.

use std::time::{Duration, Instant};

use kiln_core::ErrorKind;
use serde_json::json;

use super::{entry, eventually, journaled, on_shared_backends, write, NewDb};
use crate::{GatewayDb, GatewayStore, LogQuery, WriterLimits};

on_shared_backends!(
    a_gateway_made_on_one_node_is_seen_by_the_others,
    a_response_cached_on_one_node_is_a_hit_on_another,
    a_log_written_on_one_node_is_listed_on_another,
    one_node_per_journal,
);

/// Long enough for a notification or the recheck, on a slow test machine.
const SOON: Duration = Duration::from_secs(5);

fn a_gateway_made_on_one_node_is_seen_by_the_others(new_db: NewDb) {
    let test = new_db();
    let a = test.open();
    let b = test.another_node();
    a.create("acct", &json!({"id": "g", "cache_ttl": 60}))
        .expect("created on a");
    let seen = b.resolve("acct", "g").expect("b reads it");
    assert_eq!(seen.config.cache_ttl, Some(60));

    a.update("acct", "g", &json!({"cache_ttl": 120}))
        .expect("updated on a");
    assert!(
        eventually(SOON, || b
            .resolve("acct", "g")
            .is_ok_and(|gateway| gateway.config.cache_ttl == Some(120))),
        "b kept the old settings"
    );
    a.delete("acct", "g").expect("deleted on a");
    assert!(
        eventually(SOON, || b
            .resolve("acct", "g")
            .is_err_and(|error| error.kind == ErrorKind::NotFound)),
        "b still serves a deleted gateway"
    );
}

fn a_response_cached_on_one_node_is_a_hit_on_another(new_db: NewDb) {
    let test = new_db();
    let a = test.open();
    let c = test.another_node();
    a.create("a", &json!({"id": "g", "cache_invalidate_on_update": true}))
        .expect("gateway");
    let now = kiln_core::time::unix_millis();
    let mut cached = write("01CLUSTERCACHE", now);
    cached.cache = Some(entry(9, "answer"));
    journaled(&a, cached);
    let hit = || c.cached(&[9; 32], now).expect("lookup").is_some();
    if test.redis {
        // Stored in Redis before the request was acknowledged.
        assert!(
            hit(),
            "not a hit on another node once the response completed"
        );
    } else {
        assert!(eventually(SOON, hit), "never a hit on another node");
    }
    // An update with cache_invalidate_on_update on c empties the cache for a too.
    c.update("a", "g", &json!({"cache_invalidate_on_update": true}))
        .expect("updated on c");
    a.writer.flush();
    assert_eq!(a.cached(&[9; 32], now).expect("lookup"), None);
}

fn a_log_written_on_one_node_is_listed_on_another(new_db: NewDb) {
    let test = new_db();
    let a = test.open();
    let b = test.another_node();
    a.create("a", &json!({"id": "g"})).expect("gateway");
    let now = kiln_core::time::unix_millis();
    journaled(&a, write("01CLUSTERLOG", now));
    let listed = || {
        b.list_logs("a", "g", &LogQuery::default())
            .expect("lists")
            .items
            .iter()
            .any(|item| item["id"] == "01CLUSTERLOG")
    };
    assert!(eventually(SOON, listed), "the log never reached b");
    assert_eq!(
        b.get_log("a", "g", "01CLUSTERLOG").expect("get")["tokens_in"],
        5
    );
    let report = b
        .analytics("a", "g", &[("start".into(), "2020-01-01T00:00:00Z".into())])
        .expect("analytics");
    assert_eq!(report["totals"]["requests"], 1);
}

/// Nodes share the database, never a journal directory.
fn one_node_per_journal(new_db: NewDb) {
    let test = new_db();
    let first = test.open();
    let started = Instant::now();
    let Err(error) = GatewayStore::open_db(test.db.clone(), WriterLimits::default()) else {
        panic!("a second node opened a journal in use");
    };
    assert!(error.message.contains("in use"), "{}", error.message);
    assert!(started.elapsed() < SOON);
    drop(first);
    test.open();
}

/// Redis refusing connections: lookups miss at once, requests are still acknowledged, and a
/// purge the cache needs is refused (503) rather than skipped.
#[test]
fn redis_down_is_a_miss_never_a_hang() {
    let test = super::postgres_db();
    let GatewayDb::Shared {
        postgres_url,
        journal_dir,
        ..
    } = test.db.clone()
    else {
        unreachable!("a shared database")
    };
    let db = GatewayDb::Shared {
        postgres_url,
        // Nothing listens on port 1 of the loopback.
        redis_url: Some("redis://127.0.0.1:1".into()),
        redis_prefix: "kiln-test:down:".into(),
        journal_dir,
    };
    let store = GatewayStore::open_db(db, WriterLimits::default()).expect("opens without Redis");
    store
        .create("a", &json!({"id": "g", "cache_invalidate_on_update": true}))
        .expect("gateway");
    let now = kiln_core::time::unix_millis();
    let started = Instant::now();
    let mut cached = write("01REDISDOWN", now);
    cached.cache = Some(entry(3, "lost"));
    journaled(&store, cached);
    assert_eq!(store.cached(&[3; 32], now).expect("a miss"), None);
    assert!(started.elapsed() < SOON, "Redis calls were not bounded");
    store.writer.flush();
    assert!(
        store.get_log("a", "g", "01REDISDOWN").is_ok(),
        "the log was lost"
    );
    let refused = store
        .update("a", "g", &json!({"cache_invalidate_on_update": true}))
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::StorageUnavailable);
    assert_eq!(refused.status(), 503);
}
