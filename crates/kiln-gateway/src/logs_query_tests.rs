//! Query parameters and `filters`, through `list`.

use proptest::prelude::*;

use super::*;

#[test]
fn pagination_params_are_checked() {
    assert!(rejected(&[("page", "0")]).contains("page"));
    assert!(rejected(&[("per_page", "51")]).contains("per_page"));
    assert!(rejected(&[("per_page", "x")]).contains("per_page"));
    let q = query(&[("per_page", "50"), ("meta_info", "true"), ("page", "")]);
    assert_eq!((q.page, q.per_page), (1, 50));
}

#[test]
fn flag_and_feedback_params() {
    let db = db();
    let mut records: Vec<_> = (0..4).map(record).collect();
    records[1].cached = true;
    records[2].success = false;
    store(&db, records);
    assert_eq!(ids(&db, &[("cached", "true")]), numbered(&[1]));
    assert_eq!(ids(&db, &[("success", "false")]), numbered(&[2]));
    assert_eq!(
        ids(&db, &[("success", "true"), ("cached", "false")]).len(),
        2
    );
    assert!(rejected(&[("cached", "maybe")]).contains("cached"));
    patch(&db, "acct", "gw", "01LOG0000", &json!({"feedback": -1})).unwrap();
    patch(&db, "acct", "gw", "01LOG0003", &json!({"feedback": 1})).unwrap();
    assert_eq!(ids(&db, &[("feedback", "0")]), numbered(&[0]));
    assert_eq!(ids(&db, &[("feedback", "-1")]), numbered(&[0]));
    assert_eq!(ids(&db, &[("feedback", "1")]), numbered(&[3]));
    assert!(rejected(&[("feedback", "2")]).contains("feedback"));
}

#[test]
fn date_params() {
    let db = db();
    store(&db, (0..5).map(record));
    let got = ids(
        &db,
        &[
            ("start_date", "2026-11-27T00:00:01Z"),
            ("end_date", "2026-11-27T01:00:03.000+01:00"),
        ],
    );
    assert_eq!(got, numbered(&[3, 2, 1]));
    assert!(ids(&db, &[("start_date", "2026-11-28")]).is_empty());
    assert!(rejected(&[("start_date", "yesterday")]).contains("start_date"));
    assert!(rejected(&[("end_date", "2026-02-30T00:00:00Z")]).contains("end_date"));
}

#[test]
fn range_params() {
    let db = db();
    let mut records: Vec<_> = (0..4).map(record).collect();
    for (n, r) in records.iter_mut().enumerate() {
        let n = n as u64;
        r.cost = Some(n as f64 * 0.01);
        r.duration_ms = 100 * (n + 1);
        r.tokens_in = 10 * n;
        r.tokens_out = 5 * n;
    }
    store(&db, records);
    assert_eq!(ids(&db, &[("min_cost", "0.015")]), numbered(&[3, 2]));
    assert_eq!(ids(&db, &[("max_cost", "0.01")]), numbered(&[1, 0]));
    assert_eq!(
        ids(&db, &[("min_duration", "200"), ("max_duration", "300")]),
        numbered(&[2, 1])
    );
    assert_eq!(ids(&db, &[("min_tokens_in", "20")]), numbered(&[3, 2]));
    assert_eq!(ids(&db, &[("max_tokens_out", "5")]), numbered(&[1, 0]));
    assert_eq!(
        ids(
            &db,
            &[("min_total_tokens", "30"), ("max_total_tokens", "30")]
        ),
        numbered(&[2])
    );
    assert!(rejected(&[("min_cost", "cheap")]).contains("min_cost"));
    assert!(rejected(&[("max_duration", "NaN")]).contains("max_duration"));
}

#[test]
fn text_params_and_search() {
    let db = db();
    let mut records: Vec<_> = (0..4).map(record).collect();
    records[1].model = "@cf/baai/bge-base-en-v1.5".into();
    records[1].model_type = Some("Text Embeddings".into());
    records[2].provider = "custom-acme".into();
    records[3].response_content_type = Some("text/event-stream".into());
    records[3].metadata = Some(
        json!({"Team": "Search-Quality"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    store(&db, records);
    assert_eq!(
        ids(&db, &[("model", "@cf/baai/bge-base-en-v1.5")]),
        numbered(&[1])
    );
    assert_eq!(
        ids(&db, &[("model_type", "Text Embeddings")]),
        numbered(&[1])
    );
    assert_eq!(ids(&db, &[("provider", "custom-acme")]), numbered(&[2]));
    assert_eq!(
        ids(&db, &[("request_content_type", "application/json")]).len(),
        4
    );
    assert_eq!(
        ids(&db, &[("response_content_type", "text/event-stream")]),
        numbered(&[3])
    );
    assert_eq!(ids(&db, &[("search", "BGE")]), numbered(&[1]));
    assert_eq!(ids(&db, &[("search", "ACME")]), numbered(&[2]));
    assert_eq!(ids(&db, &[("search", "search-quality")]), numbered(&[3]));
    assert_eq!(ids(&db, &[("search", "log0000")]), numbered(&[0]));
    // Values are bound, so SQL in them is only text.
    assert!(ids(&db, &[("search", "' OR 1=1 --")]).is_empty());
}

#[test]
fn filter_operators() {
    let db = db();
    let mut records: Vec<_> = (0..4).map(record).collect();
    records[1].model = "@cf/openai/gpt-oss-120b".into();
    records[2].model = "@cf/openai/gpt-oss-20b".into();
    records[3].cost = None;
    records[3].tokens_in = 500;
    store(&db, records);
    let eq = json!([{"key": "model", "operator": "eq", "value": ["@cf/openai/gpt-oss-20b"]}]);
    assert_eq!(filters(&db, eq), numbered(&[2]));
    let any = json!([{"key": "model", "operator": "eq",
        "value": ["@cf/openai/gpt-oss-20b", "@cf/openai/gpt-oss-120b"]}]);
    assert_eq!(filters(&db, any), numbered(&[1, 2]));
    let neq = json!([{"key": "model", "operator": "neq",
        "value": ["@cf/openai/gpt-oss-20b", "@cf/openai/gpt-oss-120b"]}]);
    assert_eq!(filters(&db, neq), numbered(&[0, 3]));
    let contains = json!([{"key": "model", "operator": "contains", "value": ["GPT-OSS"]}]);
    assert_eq!(filters(&db, contains), numbered(&[1, 2]));
    let lt = json!([{"key": "tokens", "operator": "lt", "value": [100]}]);
    assert_eq!(filters(&db, lt), numbered(&[0, 1, 2]));
    let gt = json!([{"key": "tokens_in", "operator": "gt", "value": ["100"]}]);
    assert_eq!(filters(&db, gt), numbered(&[3]));
    let null = json!([{"key": "cost", "operator": "eq", "value": [null]}]);
    assert_eq!(filters(&db, null), numbered(&[3]));
    let anded = json!([
        {"key": "model", "operator": "contains", "value": ["gpt"]},
        {"key": "id", "operator": "gt", "value": ["01LOG0001"]}
    ]);
    assert_eq!(filters(&db, anded), numbered(&[2]));
}

#[test]
fn filter_keys_of_each_kind() {
    let db = db();
    let mut records: Vec<_> = (0..3).map(record).collect();
    records[0].cached = true;
    records[1].authentication = true;
    records[1].event_id = Some("evt-1".into());
    records[2].user_agent = Some("curl/8.5".into());
    records[2].request_type = "compat".into();
    store(&db, records);
    patch(&db, "acct", "gw", "01LOG0002", &json!({"feedback": 1})).unwrap();
    let cases = [
        (
            json!({"key": "cached", "operator": "eq", "value": [true]}),
            vec![0],
        ),
        (
            json!({"key": "authentication", "operator": "eq", "value": ["true"]}),
            vec![1],
        ),
        (
            json!({"key": "success", "operator": "neq", "value": [true]}),
            vec![],
        ),
        (
            json!({"key": "event_id", "operator": "eq", "value": ["evt-1"]}),
            vec![1],
        ),
        (
            json!({"key": "user_agent", "operator": "contains", "value": ["curl"]}),
            vec![2],
        ),
        (
            json!({"key": "request_type", "operator": "eq", "value": ["compat"]}),
            vec![2],
        ),
        (
            json!({"key": "feedback", "operator": "eq", "value": [1]}),
            vec![2],
        ),
        (
            json!({"key": "feedback", "operator": "eq", "value": [null]}),
            vec![0, 1],
        ),
        (
            json!({"key": "duration", "operator": "eq", "value": [100]}),
            vec![0, 1, 2],
        ),
        (
            json!({"key": "created_at", "operator": "gt", "value": ["2026-11-27T00:00:01Z"]}),
            vec![2],
        ),
        (
            json!({"key": "created_at", "operator": "lt", "value": [T0 + 1000]}),
            vec![0],
        ),
        (
            json!({"key": "wholesale", "operator": "eq", "value": [false]}),
            vec![0, 1, 2],
        ),
        (
            json!({"key": "compatibilityMode", "operator": "eq", "value": [true]}),
            vec![2],
        ),
    ];
    for (filter, want) in cases {
        assert_eq!(
            filters(&db, json!([filter.clone()])),
            numbered(&want),
            "{filter}"
        );
    }
}

#[test]
fn bad_filters_are_rejected() {
    let bad = [
        json!([{"key": "model", "operator": "like", "value": ["x"]}]),
        json!([{"key": "colour", "operator": "eq", "value": ["x"]}]),
        json!([{"key": "cost", "operator": "contains", "value": ["1"]}]),
        json!([{"key": "cached", "operator": "gt", "value": [true]}]),
        json!([{"key": "cost", "operator": "eq", "value": ["cheap"]}]),
        json!([{"key": "model", "operator": "eq", "value": []}]),
        json!([{"key": "model", "operator": "lt", "value": [null]}]),
        json!([{"operator": "eq", "value": ["x"]}]),
        json!({"key": "model"}),
    ];
    for filter in bad {
        let message = rejected(&[("filters", &filter.to_string())]);
        assert!(message.contains("filters"), "{message}");
    }
    assert!(rejected(&[("filters", "[{")]).contains("filters"));
}

#[test]
fn metadata_filters() {
    let db = db();
    let mut records: Vec<_> = (0..4).map(record).collect();
    let meta = |value: Value| value.as_object().cloned();
    records[0].metadata = meta(json!({"user": "alice", "tier": 2}));
    records[1].metadata = meta(json!({"user": "bob", "beta": true}));
    records[2].metadata = meta(json!({"team": "Search", "tier": 10}));
    store(&db, records);
    let f = |key: &str, operator: &str, value: Value| {
        filters(
            &db,
            json!([{"key": key, "operator": operator, "value": value}]),
        )
    };
    assert_eq!(f("metadata.key", "eq", json!(["user"])), numbered(&[0, 1]));
    assert_eq!(f("metadata.key", "neq", json!(["user"])), numbered(&[2, 3]));
    assert_eq!(
        f("metadata.key", "contains", json!(["TI"])),
        numbered(&[0, 2])
    );
    assert_eq!(
        f("metadata.value", "eq", json!(["bob", "Search"])),
        numbered(&[1, 2])
    );
    assert_eq!(f("metadata.value", "eq", json!([true])), numbered(&[1]));
    assert_eq!(f("metadata.value", "eq", json!(["2"])), numbered(&[0]));
    assert_eq!(
        f("metadata.value", "contains", json!(["ALI"])),
        numbered(&[0])
    );
    assert_eq!(f("metadata.value", "gt", json!([5])), numbered(&[2]));
    assert_eq!(f("metadata.value", "lt", json!([5])), numbered(&[0]));
    assert_eq!(
        f("metadata.value", "neq", json!(["alice"])),
        numbered(&[1, 2, 3])
    );
}

#[test]
fn timestamps_round_trip() {
    assert_eq!(parse_timestamp("2026-11-27T00:00:00Z"), Some(T0));
    assert_eq!(parse_timestamp("2026-11-27"), Some(T0));
    assert_eq!(
        parse_timestamp("2026-11-27T08:00:00.5+08:00"),
        Some(T0 + 500)
    );
    assert_eq!(parse_timestamp("1969-12-31T23:59:59.999Z"), Some(-1));
    assert_eq!(parse_timestamp("2024-02-29T12:00"), Some(1_709_208_000_000));
    for bad in [
        "",
        "2026-13-01",
        "2026-11-27T24:00:00Z",
        "2026-11-27T00:00:00+",
        "2026-11-27Tx",
        "2026-11-27T00:00:00Zjunk",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
    assert_eq!(format_timestamp(T0 + 1), "2026-11-27T00:00:00.001Z");
    assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59.999Z");
}

proptest! {
    #[test]
    fn from_pairs_never_panics(
        pairs in proptest::collection::vec(
            (
                prop_oneof![
                    Just("filters".to_string()), Just("page".to_string()),
                    Just("per_page".to_string()), Just("start_date".to_string()),
                    Just("feedback".to_string()), Just("min_cost".to_string()),
                    Just("order_by".to_string()), "[a-z_]{0,16}",
                ],
                prop_oneof![
                    ".*",
                    "[0-9T:.Z+-]{0,30}",
                    r#"\[\{"key":"(model|cost|metadata\.value|created_at)","operator":"(eq|lt|contains)","value":\[.{0,12}\]\}\]"#,
                ],
            ),
            0..6,
        )
    ) {
        let _ = LogQuery::from_pairs(&pairs);
    }
}
