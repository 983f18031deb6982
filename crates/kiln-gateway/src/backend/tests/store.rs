//! What the HTTP layer relies on, on every backend: gateway objects, logs written through the
//! writer and read back with filters and pages, analytics, the cache, replay after a crash.

use kiln_core::ErrorKind;
use serde_json::{json, Value};

use super::{entry, journaled, on_every_backend, write, NewDb};
use crate::journal::{self, Journal};
use crate::{BodyPart, LogCap, LogQuery, MAX_GATEWAYS_PER_ACCOUNT};

on_every_backend!(
    gateway_crud,
    logs_written_through_the_writer,
    log_caps,
    analytics_counts,
    cache_insert_lookup_expiry_purge,
    journaled_writes_are_replayed_once,
);

const T0: i64 = 1_795_737_600_000; // 2026-11-27T00:00:00Z

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn query(list: &[(&str, &str)]) -> LogQuery {
    LogQuery::from_pairs(&pairs(list)).expect("valid query")
}

fn gateway_crud(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    let created = store
        .create("acct", &json!({"id": "my-gw", "cache_ttl": 300}))
        .expect("created");
    assert_eq!(created.config.cache_ttl, Some(300));
    assert_eq!(store.get("acct", "my-gw").expect("get"), created);
    assert_eq!(*store.resolve("acct", "my-gw").expect("resolve"), created);
    let conflict = store.create("acct", &json!({"id": "my-gw"})).unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Conflict);

    let updated = store
        .update("acct", "my-gw", &json!({"collect_logs": false}))
        .expect("updated");
    assert!(!updated.config.collect_logs);
    assert_eq!(updated.config.cache_ttl, None, "PUT replaces the settings");
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(*store.resolve("acct", "my-gw").expect("resolve"), updated);

    for index in 1..MAX_GATEWAYS_PER_ACCOUNT {
        store
            .create("acct", &json!({"id": format!("gw-{index:02}")}))
            .expect("within the limit");
    }
    let refused = store
        .create("acct", &json!({"id": "one-more"}))
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::BadInput);
    let ids: Vec<String> = store
        .list("acct")
        .expect("list")
        .into_iter()
        .map(|gateway| gateway.id)
        .collect();
    assert_eq!(ids.len(), MAX_GATEWAYS_PER_ACCOUNT);
    assert_eq!(ids[0], "my-gw", "oldest first");
    assert!(store.list("other").expect("list").is_empty());

    store.delete("acct", "my-gw").expect("deleted");
    for result in [
        store.get("acct", "my-gw"),
        store
            .resolve("acct", "my-gw")
            .map(|gateway| (*gateway).clone()),
        store.delete("acct", "my-gw"),
        store.update("acct", "my-gw", &json!({})),
    ] {
        assert_eq!(result.unwrap_err().kind, ErrorKind::NotFound);
    }
}

fn logs_written_through_the_writer(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    for n in 0..7 {
        let mut write = write(&format!("01LOG{n:04}"), T0 + n * 1000);
        write.record.cached = n == 3;
        write.record.success = n != 4;
        write.record.model = if n % 2 == 0 { "even" } else { "odd" }.into();
        journaled(&store, write);
    }
    let page = store
        .list_logs("a", "g", &query(&[("per_page", "3"), ("page", "2")]))
        .expect("lists");
    assert_eq!(
        (page.page, page.per_page, page.count, page.total_count),
        (2, 3, 3, 7)
    );
    let ids: Vec<&str> = page
        .items
        .iter()
        .map(|item| item["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["01LOG0003", "01LOG0002", "01LOG0001"]);
    let item = &page.items[0];
    assert_eq!(item["created_at"], "2026-11-27T00:00:03.000Z");
    assert_eq!(item["cached"], true);
    assert_eq!(item["tokens_out"], 7);

    let filtered = |list: &[(&str, &str)]| store.list_logs("a", "g", &query(list)).unwrap();
    assert_eq!(filtered(&[("cached", "true")]).total_count, 1);
    assert_eq!(filtered(&[("success", "false")]).total_count, 1);
    assert_eq!(filtered(&[("model", "even")]).total_count, 4);
    let odd = json!([{"key": "model", "operator": "eq", "value": ["odd"]}]).to_string();
    let oldest_odd = filtered(&[("filters", &odd), ("direction", "asc")]);
    assert_eq!(oldest_odd.items[0]["id"], "01LOG0001");
    let metadata = json!([{"key": "metadata.value", "operator": "eq", "value": ["u1"]}]);
    assert_eq!(
        filtered(&[("filters", &metadata.to_string())]).total_count,
        7
    );

    let log = store.get_log("a", "g", "01LOG0002").expect("get");
    assert_eq!(log["request_head"], "{}");
    assert_eq!(log["request_head_complete"], true);
    assert_eq!(log["response_size"], 3);
    let (content_type, body) = store
        .log_body("a", "g", "01LOG0002", BodyPart::Response)
        .expect("body");
    assert_eq!((content_type, body), (None, vec![0, 1, 2]));
    let patched = store
        .patch_log("a", "g", "01LOG0002", &json!({"feedback": 1, "score": 90}))
        .expect("patched");
    assert_eq!(
        (patched["feedback"].clone(), patched["score"].clone()),
        (json!(1), json!(90))
    );
    assert_eq!(filtered(&[("feedback", "1")]).total_count, 1);
    let missing = store.get_log("a", "g", "nope").unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);

    let deleted = store
        .delete_logs("a", "g", &query(&[("model", "odd")]), Some(2))
        .expect("deleted");
    assert_eq!(deleted, 2);
    assert_eq!(filtered(&[]).total_count, 5);
    assert_eq!(
        store
            .delete_logs("a", "g", &LogQuery::default(), None)
            .expect("deleted"),
        5
    );
    assert_eq!(filtered(&[]).total_count, 0);
}

fn log_caps(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    for n in 0..4 {
        let mut write = write(&format!("01OLD{n:04}"), T0 + n * 1000);
        write.log = Some(LogCap::DeleteOldest(3));
        journaled(&store, write);
    }
    let listed = store
        .list_logs("a", "g", &query(&[("direction", "asc")]))
        .expect("lists");
    assert_eq!(listed.total_count, 3);
    assert_eq!(listed.items[0]["id"], "01OLD0001", "the oldest made room");
    let mut capped = write("01STOP", T0 + 9000);
    capped.log = Some(LogCap::StopInserting(3));
    journaled(&store, capped);
    assert!(store.get_log("a", "g", "01STOP").is_err(), "over the cap");
}

fn analytics_counts(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    let minute = 60_000;
    for (n, at) in [
        T0,
        T0 + 5_000,
        T0 + 59_999,
        T0 + 30 * minute,
        T0 + 70 * minute,
    ]
    .into_iter()
    .enumerate()
    {
        let mut write = write(&format!("01AN{n:04}"), at);
        write.log = None;
        write.record.cached = n == 1;
        write.record.success = n != 2;
        write.record.model = if n == 2 { "m2" } else { "m1" }.into();
        journaled(&store, write);
    }
    let report = store
        .analytics(
            "a",
            "g",
            &pairs(&[
                ("start", "2026-11-27T00:00:00Z"),
                ("end", "2026-11-28T00:00:00Z"),
            ]),
        )
        .expect("analytics");
    let totals = &report["totals"];
    assert_eq!(
        (
            totals["requests"].clone(),
            totals["errors"].clone(),
            totals["cached"].clone()
        ),
        (json!(5), json!(1), json!(1))
    );
    assert_eq!(totals["tokens_in"], 25);
    let buckets: Vec<(Value, Value, Value)> = report["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|entry| {
            (
                entry["bucket"].clone(),
                entry["model"].clone(),
                entry["requests"].clone(),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        [
            (json!("2026-11-27T00:00:00.000Z"), json!("m1"), json!(3)),
            (json!("2026-11-27T00:00:00.000Z"), json!("m2"), json!(1)),
            (json!("2026-11-27T01:00:00.000Z"), json!("m1"), json!(1)),
        ]
    );
    let by_day = store
        .analytics(
            "a",
            "g",
            &pairs(&[
                ("start", "2026-11-27T00:00:00Z"),
                ("end", "2026-11-28T00:00:00Z"),
                ("interval", "day"),
                ("group_by", "none"),
            ]),
        )
        .expect("analytics");
    assert_eq!(by_day["series"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_day["series"][0]["provider"], Value::Null);
    assert_eq!(by_day["series"][0]["requests"], 5);
    let bad = store.analytics("a", "g", &pairs(&[("interval", "week")]));
    assert_eq!(bad.unwrap_err().kind, ErrorKind::BadInput);
    let missing = store.analytics("a", "nope", &[]);
    assert_eq!(missing.unwrap_err().kind, ErrorKind::NotFound);
}

fn cache_insert_lookup_expiry_purge(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store
        .create("a", &json!({"id": "g", "cache_invalidate_on_update": true}))
        .expect("gateway");
    let now = kiln_core::time::unix_millis();
    assert_eq!(store.cached(&[1; 32], now).expect("lookup"), None);
    let mut cached = write("01CACHE1", now);
    let first = entry(1, "first");
    cached.cache = Some(first.clone());
    journaled(&store, cached);
    assert_eq!(
        store.cached(&[1; 32], now).expect("lookup"),
        Some(first.clone())
    );
    store.writer.flush();
    assert_eq!(
        store
            .cached(&[1; 32], now)
            .expect("lookup after the writer applied it"),
        Some(first.clone())
    );
    assert_eq!(
        store.cached(&[1; 32], first.expires_at_ms).expect("lookup"),
        None,
        "expired"
    );
    // Updating a gateway with cache_invalidate_on_update empties its cache.
    store
        .update("a", "g", &json!({"cache_invalidate_on_update": true}))
        .expect("updated");
    assert_eq!(store.cached(&[1; 32], now).expect("lookup"), None);
    let mut again = write("01CACHE2", now);
    again.cache = Some(entry(2, "second"));
    journaled(&store, again);
    store.writer.flush();
    assert!(store.cached(&[2; 32], now).expect("lookup").is_some());
    store.delete("a", "g").expect("deleted");
    assert_eq!(store.cached(&[2; 32], now).expect("lookup"), None);
}

/// A crash after the journal append, before the database got the write: replayed at the next
/// start, and only once.
fn journaled_writes_are_replayed_once(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    drop(store);
    let write = journal::tests::sample();
    let mut encoded = Vec::new();
    journal::encode_into(&mut encoded, &write);
    let mut appended = Journal::open(&test.journal_dir, 0, true).expect("journal");
    appended.append(&encoded).expect("appended");
    drop(appended);

    for _ in 0..2 {
        let store = test.open();
        let log = store
            .get_log("a", "g", &write.record.id)
            .expect("the log was replayed");
        assert_eq!(log["tokens_out"], 7);
        if !test.redis {
            // The sample's entry expires at 2 ms after the epoch.
            let entry = store.cached(&[7; 32], 0).expect("lookup");
            assert_eq!(entry.map(|entry| entry.body), Some(b"data: x\n\n".to_vec()));
        }
        let report = store
            .analytics("a", "g", &pairs(&[("start", "2020-01-01T00:00:00Z")]))
            .expect("analytics");
        assert_eq!(report["totals"]["requests"], 1, "replayed exactly once");
    }
}
