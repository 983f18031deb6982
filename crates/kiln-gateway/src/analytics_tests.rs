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

fn request(at_ms: i64, provider: &str, model: &str) -> LogRecord {
    LogRecord {
        account: "acct".into(),
        gateway: "gw".into(),
        created_at_ms: at_ms,
        provider: provider.into(),
        model: model.into(),
        success: true,
        tokens_in: 10,
        tokens_out: 5,
        cost: Some(0.25),
        ..LogRecord::default()
    }
}

fn ask(db: &Connection, pairs: &[(&str, &str)]) -> Value {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    query(db, "acct", "gw", &pairs).expect("answers")
}

/// Three requests in the first minute (one cached, one failed), one at 00:30 and one at 01:10.
fn seeded() -> Connection {
    let db = db();
    let mut cached = request(T0 + 5_000, "workers-ai", "m1");
    cached.cached = true;
    cached.cost = None;
    let mut failed = request(T0 + 59_999, "workers-ai", "m2");
    failed.success = false;
    let records = [
        request(T0, "workers-ai", "m1"),
        cached,
        failed,
        request(T0 + 30 * MINUTE_MS, "custom-acme", "m1"),
        request(T0 + 70 * MINUTE_MS, "workers-ai", "m1"),
    ];
    for record in &records {
        super::record(&db, record).expect("records");
    }
    let mut elsewhere = request(T0, "workers-ai", "m1");
    elsewhere.gateway = "other".into();
    super::record(&db, &elsewhere).expect("records");
    db
}

const DAY: [(&str, &str); 2] = [
    ("start", "2026-11-27T00:00:00Z"),
    ("end", "2026-11-28T00:00:00Z"),
];

#[test]
fn minute_rows_accumulate() {
    let db = seeded();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM gateway_analytics", [], |row| {
            row.get(0)
        })
        .expect("counts");
    // (00:00, m1), (00:00, m2), (00:30), (01:10), and the other gateway's.
    assert_eq!(rows, 5);
}

#[test]
fn hourly_series_by_model() {
    let db = seeded();
    let answer = ask(&db, &DAY);
    assert_eq!(answer["interval"], "hour");
    assert_eq!(answer["start"], "2026-11-27T00:00:00.000Z");
    let series = answer["series"].as_array().cloned().unwrap_or_default();
    let keys: Vec<_> = series
        .iter()
        .map(|s| {
            (
                s["bucket"].clone(),
                s["provider"].clone(),
                s["model"].clone(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (
                json!("2026-11-27T00:00:00.000Z"),
                json!("custom-acme"),
                json!("m1")
            ),
            (
                json!("2026-11-27T00:00:00.000Z"),
                json!("workers-ai"),
                json!("m1")
            ),
            (
                json!("2026-11-27T00:00:00.000Z"),
                json!("workers-ai"),
                json!("m2")
            ),
            (
                json!("2026-11-27T01:00:00.000Z"),
                json!("workers-ai"),
                json!("m1")
            ),
        ]
    );
    let m1 = &series[1];
    assert_eq!(
        (m1["requests"].clone(), m1["cached"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(m1["cache_hit_ratio"], 0.5);
    assert_eq!(m1["cost"], 0.25);
    assert_eq!(
        (m1["tokens_in"].clone(), m1["tokens_out"].clone()),
        (json!(20), json!(10))
    );
    assert_eq!(series[2]["errors"], 1);
    let totals = &answer["totals"];
    assert_eq!(totals["requests"], 5);
    assert_eq!(totals["errors"], 1);
    assert_eq!(totals["cached"], 1);
    assert_eq!(totals["cache_hit_ratio"], 0.2);
    assert_eq!(totals["tokens_in"], 50);
    assert_eq!(totals["cost"], 1.0);
}

#[test]
fn grouping_and_intervals() {
    let db = seeded();
    let mut pairs = DAY.to_vec();
    pairs.extend([("interval", "day"), ("group_by", "none")]);
    let answer = ask(&db, &pairs);
    let series = answer["series"].as_array().cloned().unwrap_or_default();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["provider"], Value::Null);
    assert_eq!(series[0]["requests"], 5);

    let mut pairs = DAY.to_vec();
    pairs.extend([("interval", "hour"), ("group_by", "provider")]);
    let series = ask(&db, &pairs)["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let counts: Vec<_> = series
        .iter()
        .map(|s| {
            (
                s["provider"].clone(),
                s["model"].clone(),
                s["requests"].clone(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (json!("custom-acme"), Value::Null, json!(1)),
            (json!("workers-ai"), Value::Null, json!(3)),
            (json!("workers-ai"), Value::Null, json!(1)),
        ]
    );

    let mut pairs = DAY.to_vec();
    pairs.extend([("interval", "minute"), ("group_by", "none")]);
    let buckets: Vec<_> = ask(&db, &pairs)["series"]
        .as_array()
        .map(|s| s.iter().map(|e| e["bucket"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        buckets,
        [
            json!("2026-11-27T00:00:00.000Z"),
            json!("2026-11-27T00:30:00.000Z"),
            json!("2026-11-27T01:10:00.000Z"),
        ]
    );
}

#[test]
fn range_limits_the_minutes() {
    let db = seeded();
    let answer = ask(
        &db,
        &[
            ("start", "2026-11-27T00:00:30Z"),
            ("end", "2026-11-27T00:45:00Z"),
        ],
    );
    // The first minute counts whole; 01:10 is past the end.
    assert_eq!(answer["totals"]["requests"], 4);
    let empty = ask(
        &db,
        &[
            ("start", "2026-11-26T00:00:00Z"),
            ("end", "2026-11-26T12:00:00Z"),
        ],
    );
    assert_eq!(empty["totals"]["requests"], 0);
    assert_eq!(empty["totals"]["cache_hit_ratio"], 0.0);
    assert_eq!(empty["series"], json!([]));
    // By default: the last 24 hours, which these 2026 requests are not in.
    let recent = ask(&db, &[]);
    assert_eq!(recent["interval"], "hour");
    assert!(recent["start"].is_string() && recent["end"].is_string());
}

#[test]
fn bad_params_are_rejected() {
    let db = seeded();
    let cases = [
        (("interval", "week"), "interval"),
        (("group_by", "colour"), "group_by"),
        (("start", "soon"), "start"),
        (("end", "2026-11-27T25:00:00Z"), "end"),
    ];
    for ((name, value), field) in cases {
        let pairs = vec![(name.to_string(), value.to_string())];
        let error = query(&db, "acct", "gw", &pairs).expect_err("rejected");
        assert_eq!(error.kind, ErrorKind::BadInput);
        assert!(error.message.contains(field), "{}", error.message);
    }
    let backwards = vec![
        ("start".to_string(), "2026-11-28T00:00:00Z".to_string()),
        ("end".to_string(), "2026-11-27T00:00:00Z".to_string()),
    ];
    assert!(query(&db, "acct", "gw", &backwards).is_err());
}
