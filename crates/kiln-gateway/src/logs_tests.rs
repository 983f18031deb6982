use kiln_core::ErrorKind;
use serde_json::json;

use super::*;

const T0: i64 = 1_795_737_600_000; // 2026-11-27T00:00:00Z

fn db() -> Connection {
    let db = Connection::open_in_memory().expect("opens");
    create_schema(&db).expect("schema");
    create_schema(&db).expect("schema again");
    db
}

fn record(n: i64) -> LogRecord {
    LogRecord {
        id: format!("01LOG{n:04}"),
        account: "acct".into(),
        gateway: "gw".into(),
        created_at_ms: T0 + n * 1000,
        provider: "workers-ai".into(),
        model: "@cf/meta/llama-3.1-8b-instruct".into(),
        model_type: Some("Text Generation".into()),
        path: "workers-ai/@cf/meta/llama-3.1-8b-instruct".into(),
        request_type: "workers-ai".into(),
        duration_ms: 100,
        status_code: 200,
        success: true,
        tokens_in: 10,
        tokens_out: 20,
        cost: Some(0.001),
        request_content_type: Some("application/json".into()),
        response_content_type: Some("application/json".into()),
        request_body: br#"{"prompt":"hi"}"#.to_vec(),
        response_body: br#"{"response":"hello"}"#.to_vec(),
        request_size: 15,
        response_size: 20,
        ..LogRecord::default()
    }
}

fn store(db: &Connection, records: impl IntoIterator<Item = LogRecord>) {
    for record in records {
        assert!(insert(db, &record, LogCap::Unlimited).expect("insert"));
    }
}

fn query(pairs: &[(&str, &str)]) -> LogQuery {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LogQuery::from_pairs(&pairs).expect("valid query")
}

fn rejected(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let error = LogQuery::from_pairs(&pairs).expect_err("rejected");
    assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message);
    error.message
}

/// Ids `list` returns for `pairs`, in order, over all pages.
fn ids(db: &Connection, pairs: &[(&str, &str)]) -> Vec<String> {
    let mut pairs = pairs.to_vec();
    pairs.push(("per_page", "50"));
    let page = list(db, "acct", "gw", &query(&pairs)).expect("lists");
    page.items
        .iter()
        .map(|item| item["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn filters(db: &Connection, filters: Value) -> Vec<String> {
    ids(
        db,
        &[("filters", &filters.to_string()), ("direction", "asc")],
    )
}

fn numbered(ns: &[i64]) -> Vec<String> {
    ns.iter().map(|n| record(*n).id).collect()
}

#[test]
fn list_orders_newest_first_and_pages() {
    let db = db();
    store(&db, (0..7).map(record));
    let page = list(
        &db,
        "acct",
        "gw",
        &query(&[("per_page", "3"), ("page", "2")]),
    )
    .unwrap();
    assert_eq!(
        (page.page, page.per_page, page.count, page.total_count),
        (2, 3, 3, 7)
    );
    let got: Vec<_> = page.items.iter().map(|i| i["id"].clone()).collect();
    assert_eq!(got, ["01LOG0003", "01LOG0002", "01LOG0001"]);
    let last = list(
        &db,
        "acct",
        "gw",
        &query(&[("per_page", "3"), ("page", "3")]),
    )
    .unwrap();
    assert_eq!((last.count, last.total_count), (1, 7));
    assert_eq!(ids(&db, &[("order_by_direction", "asc")])[0], "01LOG0000");
    // Other gateways' logs stay out.
    let mut other = record(99);
    other.gateway = "other".into();
    store(&db, [other]);
    assert_eq!(ids(&db, &[]).len(), 7);
}

#[test]
fn list_items_have_the_rest_shape() {
    let db = db();
    let mut r = record(1);
    r.metadata = Some(
        json!({"user": "u1", "n": 2})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    r.step = Some(1);
    r.event_id = Some("evt".into());
    store(&db, [r]);
    let page = list(&db, "acct", "gw", &LogQuery::default()).unwrap();
    let item = &page.items[0];
    assert_eq!(item["created_at"], "2026-11-27T00:00:01.000Z");
    let metadata: Value = serde_json::from_str(item["metadata"].as_str().unwrap_or("")).unwrap();
    assert_eq!(metadata, json!({"user": "u1", "n": 2}));
    assert_eq!(item["success"], true);
    assert_eq!(item["cached"], false);
    assert_eq!(item["cost"], 0.001);
    assert_eq!(item["step"], 1);
    assert_eq!(item["event_id"], "evt");
    assert_eq!(item["feedback"], Value::Null);
    assert_eq!(item["duration"], 100);
    assert!(item.get("request_head").is_none());
    assert_eq!(item.as_object().map(|o| o.len()), Some(LIST_FIELDS));
}

#[test]
fn order_by_columns() {
    let db = db();
    let mut records: Vec<_> = (0..3).map(record).collect();
    records[0].cost = Some(0.5);
    records[1].cost = Some(0.1);
    records[2].cost = Some(0.3);
    records[0].provider = "b".into();
    records[1].provider = "c".into();
    records[2].provider = "a".into();
    records[1].tokens_out = 1000;
    store(&db, records);
    assert_eq!(ids(&db, &[("order_by", "cost")]), numbered(&[0, 2, 1]));
    assert_eq!(
        ids(&db, &[("order_by", "provider"), ("direction", "asc")]),
        numbered(&[2, 0, 1])
    );
    assert_eq!(ids(&db, &[("order_by", "tokens_out")])[0], "01LOG0001");
    assert!(rejected(&[("order_by", "bogus")]).contains("order_by"));
    assert!(rejected(&[("direction", "up")]).contains("direction"));
}

#[test]
fn get_shows_heads() {
    let db = db();
    let mut big = record(1);
    // 1201 bytes: the cut at 1024 falls inside an 'é'.
    big.response_body = format!("a{}", "é".repeat(600)).into_bytes();
    big.response_size = 1201;
    let mut unstored = record(2);
    unstored.request_body = Vec::new();
    unstored.request_size = 20_000_000;
    store(&db, [record(0), big, unstored]);
    let small = get(&db, "acct", "gw", "01LOG0000").unwrap();
    assert_eq!(small["request_head"], r#"{"prompt":"hi"}"#);
    assert_eq!(small["request_head_complete"], true);
    assert_eq!(small["response_size"], 20);
    assert_eq!(small["created_at"], "2026-11-27T00:00:00.000Z");
    let big = get(&db, "acct", "gw", "01LOG0001").unwrap();
    assert_eq!(big["response_head"], format!("a{}", "é".repeat(511)));
    assert_eq!(big["response_head_complete"], false);
    assert_eq!(big["request_head_complete"], true);
    let unstored = get(&db, "acct", "gw", "01LOG0002").unwrap();
    assert_eq!(unstored["request_head"], "");
    assert_eq!(unstored["request_head_complete"], false);
    let missing = get(&db, "acct", "gw", "nope").expect_err("missing");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert!(missing.message.contains("nope"));
    assert!(get(&db, "acct", "other-gw", "01LOG0000").is_err());
}

#[test]
fn bodies_come_back_whole() {
    let db = db();
    let mut r = record(0);
    r.response_body = vec![0, 159, 146, 150, 255];
    r.response_content_type = Some("image/png".into());
    store(&db, [r]);
    let (kind, bytes) = body(&db, "acct", "gw", "01LOG0000", BodyPart::Request).unwrap();
    assert_eq!(
        (kind.as_deref(), bytes.as_slice()),
        (Some("application/json"), &br#"{"prompt":"hi"}"#[..])
    );
    let (kind, bytes) = body(&db, "acct", "gw", "01LOG0000", BodyPart::Response).unwrap();
    assert_eq!(
        (kind.as_deref(), bytes),
        (Some("image/png"), vec![0, 159, 146, 150, 255])
    );
    let missing = body(&db, "acct", "gw", "x", BodyPart::Response).expect_err("missing");
    assert_eq!(missing.kind, ErrorKind::NotFound);
}

#[test]
fn delete_by_filter_keeps_counts() {
    let db = db();
    let mut records: Vec<_> = (0..6).map(record).collect();
    records[1].cached = true;
    records[4].cached = true;
    store(&db, records);
    assert_eq!(count(&db, "acct", "gw").unwrap(), 6);
    let deleted = delete(&db, "acct", "gw", &query(&[("cached", "true")]), None).unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(count(&db, "acct", "gw").unwrap(), 4);
    assert_eq!(ids(&db, &[("direction", "asc")]), numbered(&[0, 2, 3, 5]));
    // With a limit, the query's order picks which go: here the two newest.
    let deleted = delete(&db, "acct", "gw", &LogQuery::default(), Some(2)).unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(ids(&db, &[("direction", "asc")]), numbered(&[0, 2]));
    assert_eq!(count(&db, "acct", "gw").unwrap(), 2);
    let all = delete(&db, "acct", "gw", &LogQuery::default(), None).unwrap();
    assert_eq!((all, count(&db, "acct", "gw").unwrap()), (2, 0));
}

#[test]
fn stop_inserting_cap() {
    let db = db();
    for n in 0..3 {
        assert!(insert(&db, &record(n), LogCap::StopInserting(3)).unwrap());
    }
    assert!(!insert(&db, &record(3), LogCap::StopInserting(3)).unwrap());
    assert_eq!(count(&db, "acct", "gw").unwrap(), 3);
    let mut elsewhere = record(4);
    elsewhere.gateway = "other".into();
    assert!(insert(&db, &elsewhere, LogCap::StopInserting(3)).unwrap());
    // A duplicate id is not stored twice.
    assert!(!insert(&db, &record(0), LogCap::Unlimited).unwrap());
    assert_eq!(count(&db, "acct", "gw").unwrap(), 3);
}

#[test]
fn delete_oldest_cap() {
    let db = db();
    for n in 0..5 {
        assert!(insert(&db, &record(n), LogCap::DeleteOldest(3)).unwrap());
    }
    assert_eq!(ids(&db, &[("direction", "asc")]), numbered(&[2, 3, 4]));
    assert_eq!(count(&db, "acct", "gw").unwrap(), 3);
    // A lowered cap trims the excess in one go.
    assert!(insert(&db, &record(5), LogCap::DeleteOldest(1)).unwrap());
    assert_eq!(ids(&db, &[]), numbered(&[5]));
    assert!(!insert(&db, &record(6), LogCap::DeleteOldest(0)).unwrap());
    assert_eq!(count(&db, "acct", "gw").unwrap(), 1);
}

#[test]
fn patch_sets_only_given_fields() {
    let db = db();
    store(&db, [record(0)]);
    let shown = patch(
        &db,
        "acct",
        "gw",
        "01LOG0000",
        &json!({"feedback": 1, "score": 90}),
    )
    .unwrap();
    assert_eq!(
        (shown["feedback"].clone(), shown["score"].clone()),
        (json!(1), json!(90))
    );
    assert!(shown.get("response_head").is_some());
    let shown = patch(
        &db,
        "acct",
        "gw",
        "01LOG0000",
        &json!({"metadata": {"k": "v", "n": 1.5}}),
    )
    .unwrap();
    assert_eq!(shown["metadata"], r#"{"k":"v","n":1.5}"#);
    assert_eq!(shown["feedback"], 1);
    let shown = patch(
        &db,
        "acct",
        "gw",
        "01LOG0000",
        &json!({"feedback": 0, "score": null}),
    )
    .unwrap();
    assert_eq!(
        (shown["feedback"].clone(), shown["score"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(shown["metadata"], r#"{"k":"v","n":1.5}"#);
    let shown = patch(&db, "acct", "gw", "01LOG0000", &json!({"metadata": null})).unwrap();
    assert_eq!(shown["metadata"], Value::Null);
}

#[test]
fn patch_validates() {
    let db = db();
    store(&db, [record(0)]);
    let cases = [
        (json!({"feedback": 2}), "feedback"),
        (json!({"feedback": "up"}), "feedback"),
        (json!({"score": 101}), "score"),
        (json!({"score": 5.5}), "score"),
        (json!({"metadata": {"a": {"nested": 1}}}), "metadata.a"),
        (json!({"metadata": {"a": [1]}}), "metadata.a"),
        (json!({"metadata": "text"}), "metadata"),
        (
            json!({"metadata": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}}),
            "metadata",
        ),
        (json!([1]), "object"),
    ];
    for (body, field) in cases {
        let error = patch(&db, "acct", "gw", "01LOG0000", &body).expect_err("invalid");
        assert_eq!(error.kind, ErrorKind::BadInput);
        assert!(error.message.contains(field), "{}", error.message);
    }
    let shown = get(&db, "acct", "gw", "01LOG0000").unwrap();
    assert_eq!(
        (shown["feedback"].clone(), shown["score"].clone()),
        (Value::Null, Value::Null)
    );
    let missing = patch(&db, "acct", "gw", "nope", &json!({"score": 1})).expect_err("missing");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    let missing = patch(&db, "acct", "gw", "nope", &json!({})).expect_err("missing");
    assert_eq!(missing.kind, ErrorKind::NotFound);
}

#[path = "logs_query_tests.rs"]
mod query;
