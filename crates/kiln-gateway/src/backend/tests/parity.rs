//! The PostgreSQL backend answers the logs and analytics APIs exactly as SQLite does: the same
//! logs, written to both, queried with every parameter, filter key and operator, and order.

use serde_json::{json, Map, Value};

use super::{journaled, postgres_db, sqlite_db, write};
use crate::{GatewayStore, LogQuery, RequestWrite};

const T0: i64 = 1_795_737_600_000; // 2026-11-27T00:00:00Z

fn object(value: Value) -> Option<Map<String, Value>> {
    value.as_object().cloned()
}

/// Ten logs that differ in every field a query looks at.
fn writes() -> Vec<RequestWrite> {
    (0..10)
        .map(|n: i64| {
            let mut write = write(&format!("01PAR{n:04}"), T0 + n * 37_000);
            let record = &mut write.record;
            record.provider = ["workers-ai", "openai", "custom-acme"][n as usize % 3].into();
            record.model =
                ["@cf/meta/llama", "gpt-4o", "Model-Z", "gpt-4o-mini"][n as usize % 4].into();
            record.model_type = (n % 3 != 0).then(|| "Text Generation".into());
            record.request_type = if n == 4 { "compat" } else { "workers-ai" }.into();
            record.duration_ms = (n as u64 * 17) % 50;
            record.status_code = if n == 5 { 500 } else { 200 };
            record.success = n != 5;
            record.cached = n % 4 == 1;
            record.tokens_in = (n as u64 * 7) % 11;
            record.tokens_out = (n as u64 * 5) % 13;
            record.cost = (n % 5 != 0).then_some(n as f64 * 0.0015);
            record.custom_cost = n == 2;
            record.metadata = match n % 4 {
                0 => object(json!({"user": "alice", "tier": 2})),
                1 => object(json!({"user": "Bob", "beta": true, "score": 0.5})),
                2 => object(json!({"team": "Search", "tier": 10})),
                _ => None,
            };
            record.step = (n % 2 == 0).then_some(n as u32);
            record.event_id = (n == 6).then(|| "evt-6".into());
            record.user_agent = (n % 3 == 1).then(|| format!("curl/8.{n}"));
            record.authentication = n % 2 == 1;
            record.request_content_type = Some("application/json".into());
            record.response_content_type = (n != 7).then(|| "text/event-stream".into());
            record.request_body = if n == 8 {
                // Stored empty: was too large to keep.
                Vec::new()
            } else {
                format!("{{\"prompt\":\"é{}\"}}", "x".repeat(n as usize * 300)).into_bytes()
            };
            record.request_size = if n == 8 {
                4096
            } else {
                record.request_body.len() as u64
            };
            write
        })
        .collect()
}

fn queries() -> Vec<Vec<(String, String)>> {
    let mut queries: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("per_page", "3".into()), ("page", "2".into())],
        vec![("per_page", "4".into()), ("page", "4".into())],
        vec![("cached", "true".into())],
        vec![("success", "false".into())],
        vec![("feedback", "1".into())],
        vec![("feedback", "0".into())],
        vec![("start_date", "2026-11-27T00:01:00Z".into())],
        vec![("end_date", "2026-11-27T00:02:00Z".into())],
        vec![("model", "gpt-4o".into())],
        vec![("model_type", "Text Generation".into())],
        vec![("provider", "openai".into())],
        vec![("response_content_type", "text/event-stream".into())],
        vec![("search", "GPT".into())],
        vec![("search", "alice".into())],
        vec![("min_cost", "0.005".into())],
        vec![("max_duration", "20".into())],
        vec![("min_total_tokens", "10".into())],
        vec![("max_tokens_out", "4".into())],
    ];
    for order in [
        "created_at",
        "provider",
        "model",
        "model_type",
        "success",
        "cached",
        "cost",
        "tokens",
        "tokens_in",
        "tokens_out",
        "duration",
        "feedback",
    ] {
        for direction in ["asc", "desc"] {
            queries.push(vec![
                ("order_by", order.into()),
                ("order_by_direction", direction.into()),
                ("per_page", "50".into()),
            ]);
        }
    }
    let filters = [
        json!({"key": "id", "operator": "gt", "value": ["01PAR0004"]}),
        json!({"key": "created_at", "operator": "lt", "value": ["2026-11-27T00:03:00Z"]}),
        json!({"key": "created_at", "operator": "gt", "value": [T0 + 100_000]}),
        json!({"key": "request_type", "operator": "eq", "value": ["compat"]}),
        json!({"key": "success", "operator": "neq", "value": [true]}),
        json!({"key": "cached", "operator": "eq", "value": ["true"]}),
        json!({"key": "provider", "operator": "neq", "value": ["openai", "custom-acme"]}),
        json!({"key": "model", "operator": "contains", "value": ["GPT"]}),
        json!({"key": "model", "operator": "lt", "value": ["Z"]}),
        json!({"key": "model_type", "operator": "eq", "value": [null]}),
        json!({"key": "model_type", "operator": "neq", "value": [null]}),
        json!({"key": "cost", "operator": "gt", "value": [0.004]}),
        json!({"key": "cost", "operator": "eq", "value": [null]}),
        json!({"key": "cost", "operator": "lt", "value": ["0.006"]}),
        json!({"key": "tokens", "operator": "eq", "value": [12]}),
        json!({"key": "tokens_in", "operator": "gt", "value": [5]}),
        json!({"key": "tokens_out", "operator": "lt", "value": [3]}),
        json!({"key": "duration", "operator": "gt", "value": [16]}),
        json!({"key": "feedback", "operator": "eq", "value": [0]}),
        json!({"key": "feedback", "operator": "eq", "value": [null]}),
        json!({"key": "event_id", "operator": "eq", "value": ["evt-6"]}),
        json!({"key": "authentication", "operator": "eq", "value": [true]}),
        json!({"key": "user_agent", "operator": "contains", "value": ["CURL/8.1"]}),
        json!({"key": "wholesale", "operator": "eq", "value": [false]}),
        json!({"key": "dlp_action", "operator": "eq", "value": [null]}),
        json!({"key": "dlp_action", "operator": "contains", "value": ["x"]}),
        json!({"key": "compatibilityMode", "operator": "eq", "value": [true]}),
        json!({"key": "compatibilityMode", "operator": "neq", "value": [true]}),
        json!({"key": "request_content_type", "operator": "eq", "value": ["application/json"]}),
        json!({"key": "response_content_type", "operator": "eq", "value": [null]}),
        json!({"key": "metadata.key", "operator": "eq", "value": ["user"]}),
        json!({"key": "metadata.key", "operator": "neq", "value": ["user"]}),
        json!({"key": "metadata.key", "operator": "contains", "value": ["TI"]}),
        json!({"key": "metadata.key", "operator": "lt", "value": ["c"]}),
        json!({"key": "metadata.value", "operator": "eq", "value": ["Bob", "Search"]}),
        json!({"key": "metadata.value", "operator": "eq", "value": [true]}),
        json!({"key": "metadata.value", "operator": "eq", "value": ["2"]}),
        json!({"key": "metadata.value", "operator": "eq", "value": [0.5]}),
        json!({"key": "metadata.value", "operator": "contains", "value": ["ALI"]}),
        json!({"key": "metadata.value", "operator": "gt", "value": [5]}),
        json!({"key": "metadata.value", "operator": "lt", "value": [5]}),
        json!({"key": "metadata.value", "operator": "gt", "value": ["B"]}),
        json!({"key": "metadata.value", "operator": "neq", "value": ["alice"]}),
    ];
    for filter in filters {
        queries.push(vec![
            ("filters", json!([filter]).to_string()),
            ("direction", "asc".into()),
            ("per_page", "50".into()),
        ]);
    }
    queries.push(vec![(
        "filters",
        json!([
            {"key": "model", "operator": "contains", "value": ["gpt"]},
            {"key": "cost", "operator": "gt", "value": [0.001]}
        ])
        .to_string(),
    )]);
    queries
        .into_iter()
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect()
        })
        .collect()
}

fn filled(store: &GatewayStore) {
    store.create("a", &json!({"id": "g"})).expect("gateway");
    for write in writes() {
        journaled(store, write);
    }
    for (id, feedback) in [("01PAR0001", 1), ("01PAR0002", -1), ("01PAR0006", 1)] {
        store
            .patch_log("a", "g", id, &json!({"feedback": feedback, "score": 40}))
            .expect("rated");
    }
}

/// Costs are sums of floats, added in another order by each database: equal to 12 places.
fn rounded(value: Value) -> Value {
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or_default();
            json!((float * 1e12).round() / 1e12)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(rounded).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name, rounded(value)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn postgres_answers_as_sqlite_does() {
    let (lite, pg) = (sqlite_db(), postgres_db());
    let (lite, pg) = (lite.open(), pg.open());
    filled(&lite);
    filled(&pg);
    for pairs in queries() {
        let query = LogQuery::from_pairs(&pairs).expect("valid query");
        let expected = lite.list_logs("a", "g", &query).expect("sqlite lists");
        let got = pg.list_logs("a", "g", &query).expect("postgres lists");
        assert_eq!(got, expected, "{pairs:?}");
    }
    for n in 0..10 {
        let id = format!("01PAR{n:04}");
        let expected = lite.get_log("a", "g", &id).expect("sqlite gets");
        assert_eq!(
            pg.get_log("a", "g", &id).expect("postgres gets"),
            expected,
            "{id}"
        );
    }
    for (interval, group) in [("minute", "model"), ("hour", "provider"), ("day", "none")] {
        let pairs = [
            ("start", "2026-11-27T00:00:30Z"),
            ("end", "2026-11-27T00:10:00Z"),
            ("interval", interval),
            ("group_by", group),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
        let expected = lite.analytics("a", "g", &pairs).expect("sqlite analytics");
        assert_eq!(
            rounded(pg.analytics("a", "g", &pairs).expect("postgres analytics")),
            rounded(expected),
            "{interval} by {group}"
        );
    }
    let limited = LogQuery::from_pairs(&[("order_by".into(), "cost".into())]).expect("query");
    assert_eq!(
        pg.delete_logs("a", "g", &limited, Some(3))
            .expect("pg deletes"),
        lite.delete_logs("a", "g", &limited, Some(3))
            .expect("sqlite deletes")
    );
    let rest = LogQuery::from_pairs(&[("per_page".into(), "50".into())]).expect("query");
    assert_eq!(
        pg.list_logs("a", "g", &rest).expect("postgres lists"),
        lite.list_logs("a", "g", &rest).expect("sqlite lists")
    );
}
