use kiln_core::ErrorKind;
use serde_json::json;

use super::*;
use crate::logs::{self, LogCap};
use crate::LogRecord;

fn db() -> Connection {
    let db = Connection::open_in_memory().expect("opens");
    let schemas: [fn(&Connection) -> rusqlite::Result<()>; 4] = [
        gateways::create_schema,
        logs::create_schema,
        datasets::create_schema,
        create_schema,
    ];
    for create in schemas {
        create(&db).expect("schema");
    }
    datasets::create_schema(&db).expect("schema again");
    create_schema(&db).expect("schema again");
    gateways::create(&db, "acct", &json!({"id": "gw"})).expect("gateway");
    db
}

/// A log of `model` with `duration` ms, `cost` and `feedback`.
fn log(db: &Connection, n: u32, model: &str, duration: u64, cost: Option<f64>, feedback: i64) {
    let record = LogRecord {
        id: format!("01LOG{n:04}"),
        account: "acct".into(),
        gateway: "gw".into(),
        created_at_ms: 1_700_000_000_000 + i64::from(n),
        provider: "workers-ai".into(),
        model: model.into(),
        path: format!("workers-ai/{model}"),
        request_type: "workers-ai".into(),
        duration_ms: duration,
        status_code: 200,
        success: true,
        cost,
        ..LogRecord::default()
    };
    assert!(logs::insert(db, &record, LogCap::Unlimited).expect("insert"));
    if feedback != 0 {
        logs::patch(db, "acct", "gw", &record.id, &json!({"feedback": feedback})).expect("rated");
    }
}

fn dataset(db: &Connection, filters: Value) -> String {
    datasets::create(db, "acct", "gw", &json!({"name": "d", "filters": filters}))
        .expect("dataset")
        .id
}

fn result(evaluation: &Value, type_id: &str) -> (Option<f64>, u64) {
    let result = evaluation["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|result| result["evaluation_type_id"] == type_id)
        .expect("the type's result");
    let value = result["result"]
        .as_str()
        .map(|text| text.parse().expect("a number"));
    (value, result["total_logs"].as_u64().expect("total_logs"))
}

#[test]
fn evaluators_measure_the_union_of_datasets() {
    let db = db();
    log(&db, 1, "a", 100, Some(0.5), 1);
    log(&db, 2, "a", 300, None, -1);
    log(&db, 3, "b", 200, Some(1.5), 1);
    log(&db, 4, "c", 1000, Some(9.0), 1);
    let a = dataset(
        &db,
        json!([{"key": "model", "operator": "eq", "value": ["a"]}]),
    );
    let b = dataset(
        &db,
        json!([{"key": "model", "operator": "eq", "value": "b"}]),
    );
    // Overlaps `a`: its log counts once.
    let slow_a = dataset(
        &db,
        json!([{"key": "model", "operator": "eq", "value": ["a"]},
               {"key": "duration", "operator": "gt", "value": [150]}]),
    );
    let evaluation = create(
        &db,
        "acct",
        "gw",
        &json!({"name": "e", "dataset_ids": [a, b, slow_a, a],
                "evaluation_type_ids": ["cost", "speed", "human-feedback"]}),
    )
    .expect("evaluated");
    assert_eq!(evaluation["total_logs"], 3, "{evaluation}");
    assert_eq!(evaluation["processed"], true);
    assert_eq!(evaluation["datasets"].as_array().map(Vec::len), Some(3));
    assert_eq!(result(&evaluation, "cost"), (Some(1.0), 2));
    assert_eq!(result(&evaluation, "speed"), (Some(200.0), 3));
    let (share, rated) = result(&evaluation, "human-feedback");
    assert_eq!(rated, 3);
    assert!((share.expect("rated") - 200.0 / 3.0).abs() < 1e-9);

    // A snapshot: later logs and deleted datasets leave it as it was.
    log(&db, 5, "a", 5000, Some(100.0), -1);
    datasets::delete(&db, "acct", "gw", &a).expect("deleted");
    let id = evaluation["id"].as_str().expect("id");
    assert_eq!(get(&db, "acct", "gw", id).expect("stored"), evaluation);
    assert_eq!(
        list(&db, "acct", "gw").expect("list"),
        vec![evaluation.clone()]
    );

    // No matching logs: no numbers, and a status that says so.
    let none = dataset(
        &db,
        json!([{"key": "model", "operator": "eq", "value": ["zzz"]}]),
    );
    let empty = create(
        &db,
        "acct",
        "gw",
        &json!({"name": "e", "dataset_ids": [none], "evaluation_type_ids": ["speed"]}),
    )
    .expect("evaluated");
    assert_eq!(result(&empty, "speed"), (None, 0));
    assert_eq!(empty["results"][0]["status"], 2);

    delete(&db, "acct", "gw", id).expect("deleted");
    assert_eq!(
        get(&db, "acct", "gw", id).expect_err("gone").kind,
        ErrorKind::NotFound
    );
}

#[test]
fn bad_evaluations_and_datasets_are_refused() {
    let db = db();
    let a = dataset(&db, json!([]));
    let refused = |body: Value| create(&db, "acct", "gw", &body).expect_err("refused");
    for body in [
        json!({"dataset_ids": [a], "evaluation_type_ids": ["cost"]}),
        json!({"name": "e", "dataset_ids": [], "evaluation_type_ids": ["cost"]}),
        json!({"name": "e", "dataset_ids": [a], "evaluation_type_ids": ["vibes"]}),
        json!({"name": "e", "dataset_ids": [1], "evaluation_type_ids": ["cost"]}),
        json!([]),
    ] {
        assert_eq!(refused(body).kind, ErrorKind::BadInput);
    }
    let missing = refused(json!({"name": "e", "dataset_ids": ["nope"],
        "evaluation_type_ids": ["cost"]}));
    assert_eq!(missing.kind, ErrorKind::NotFound, "{}", missing.message);
    let other_gateway = create(
        &db,
        "other",
        "gw",
        &json!({"name": "e", "dataset_ids": [a], "evaluation_type_ids": ["cost"]}),
    );
    assert_eq!(other_gateway.expect_err("404").kind, ErrorKind::NotFound);

    for filters in [
        json!([{"key": "nope", "operator": "eq", "value": [1]}]),
        json!([{"key": "model", "operator": "like", "value": ["a"]}]),
        json!([{"key": "model", "operator": "eq", "value": ["a", "b"]}]),
        json!([{"key": "model", "operator": "eq"}]),
        json!({"key": "model"}),
    ] {
        let body = json!({"name": "d", "filters": filters});
        let error = datasets::create(&db, "acct", "gw", &body).expect_err("refused");
        assert_eq!(error.kind, ErrorKind::BadInput, "{filters}");
    }
    for _ in 1..datasets::MAX_DATASETS_PER_GATEWAY {
        dataset(&db, json!([]));
    }
    let eleventh = datasets::create(&db, "acct", "gw", &json!({"name": "d"}));
    assert!(eleventh
        .expect_err("refused")
        .message
        .contains("10 datasets"));
}
