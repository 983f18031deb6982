//! One log per request with its tokens, cost, duration, cache flag and metadata; the logs API's
//! filters, pagination, bodies, deletion and caps; feedback; analytics.

use serde_json::json;

use super::*;

/// The catalog's public price of `tokens` on `model`, as the gateway estimates it.
fn catalog_cost(model: &str, tokens_in: u64, tokens_out: u64) -> f64 {
    kiln_catalog::Catalog::builtin()
        .get(model)
        .and_then(|entry| entry.neurons.as_ref())
        .map(|rates| rates.usd_for_tokens(tokens_in, tokens_out))
        .expect("the catalog prices the model")
}

#[tokio::test]
async fn every_request_is_logged_with_tokens_cost_and_metadata() {
    let gateway = Gateway::create(json!({"cache_ttl": 600})).await;
    let path = format!("workers-ai/{TEXT_MODEL}");
    let input = json!({"prompt": "Name a color.", "max_tokens": 5});
    let metadata = r#"{"user":"u-42","plan":"free","n":3}"#;
    let (status, headers, body) = gateway
        .post(
            &path,
            &input,
            &[("cf-aig-metadata", metadata), ("cf-aig-event-id", "evt-1")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "cf-aig-event-id"), Some("evt-1"));
    let log_id = header(&headers, "cf-aig-log-id")
        .expect("log id")
        .to_owned();
    assert_eq!(log_id.len(), 26, "a ULID: {log_id}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    let usage = &answer["result"]["usage"];
    let (tokens_in, tokens_out) = (
        usage["prompt_tokens"].as_u64().expect("prompt tokens"),
        usage["completion_tokens"]
            .as_u64()
            .expect("completion tokens"),
    );

    let log = gateway.log(&log_id).await;
    assert_eq!(log["id"], log_id.as_str());
    assert_eq!(log["provider"], "workers-ai");
    assert_eq!(log["model"], TEXT_MODEL);
    assert_eq!(log["model_type"], "Text Generation");
    assert_eq!(log["path"], path.as_str());
    assert_eq!(
        (log["tokens_in"].as_u64(), log["tokens_out"].as_u64()),
        (Some(tokens_in), Some(tokens_out))
    );
    let cost = log["cost"].as_f64().expect("cost");
    assert!(
        (cost - catalog_cost(TEXT_MODEL, tokens_in, tokens_out)).abs() < 1e-12,
        "{log}"
    );
    assert!(cost > 0.0);
    assert!(log["duration"].as_u64() > Some(0), "{log}");
    assert_eq!(
        (log["cached"].clone(), log["success"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(log["status_code"], 200);
    assert_eq!(log["event_id"], "evt-1");
    let stored: Value = serde_json::from_str(log["metadata"].as_str().expect("a JSON string"))
        .expect("metadata JSON");
    assert_eq!(stored, serde_json::from_str::<Value>(metadata).unwrap());
    assert_eq!(log["request_head_complete"], true);
    assert_eq!(log["response_size"].as_u64(), Some(body.len() as u64));

    // The stored bodies are what was sent and answered.
    let (_, request) = gateway.get_api(&format!("/logs/{log_id}/request")).await;
    assert_eq!(request["result"], input);
    let (_, response) = gateway.get_api(&format!("/logs/{log_id}/response")).await;
    assert_eq!(response["result"], answer);

    // A cache hit is logged as cached and costs nothing.
    let (_, headers, _) = gateway.post(&path, &input, &[]).await;
    let hit = gateway
        .log(header(&headers, "cf-aig-log-id").unwrap())
        .await;
    assert_eq!(
        (hit["cached"].clone(), hit["cost"].clone()),
        (json!(true), json!(0.0))
    );
    assert_eq!(hit["tokens_out"].as_u64(), Some(tokens_out));

    // A custom cost replaces the catalog's price.
    let (_, headers, _) = gateway
        .post(
            &path,
            &input,
            &[
                ("cf-aig-skip-cache", "true"),
                (
                    "cf-aig-custom-cost",
                    r#"{"per_token_in":0.001,"per_token_out":0.01}"#,
                ),
            ],
        )
        .await;
    let custom = gateway
        .log(header(&headers, "cf-aig-log-id").unwrap())
        .await;
    let expected = custom["tokens_in"].as_f64().unwrap() * 0.001
        + custom["tokens_out"].as_f64().unwrap() * 0.01;
    assert!(
        (custom["cost"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{custom}"
    );
    assert_eq!(custom["custom_cost"], true);

    // `cf-aig-collect-log: false` keeps this request out of the logs.
    let (status, headers, _) = gateway
        .post(&path, &input, &[("cf-aig-collect-log", "false")])
        .await;
    // The writer reports what it committed and what it had to drop.
    let metrics = client().get(url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("kiln_gateway_writes_dropped_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_gateway_writes_committed_total"),
        "{metrics}"
    );
    assert_eq!(status, 200);
    let unlogged = header(&headers, "cf-aig-log-id").expect("still has an id");
    let (status, _) = gateway.get_api(&format!("/logs/{unlogged}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn logs_api_filters_pages_feedback_and_deletes() {
    let gateway = Gateway::create(json!({"cache_ttl": 600})).await;
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let mut ids = Vec::new();
    for (text, user) in [("one", "alice"), ("two", "bob"), ("one", "carol")] {
        let metadata = format!(r#"{{"user":"{user}"}}"#);
        let (status, headers, _) = gateway
            .post(
                &path,
                &embedding_input(text),
                &[("cf-aig-metadata", &metadata)],
            )
            .await;
        assert_eq!(status, 200);
        ids.push(header(&headers, "cf-aig-log-id").unwrap().to_owned());
    }
    let all = list(&gateway, "").await;
    assert_eq!(all["result_info"]["total_count"], 3);
    // Newest first by default.
    assert_eq!(all["result"][0]["id"], ids[2].as_str());
    let cached = list(&gateway, "?cached=true").await;
    assert_eq!(cached["result_info"]["total_count"], 1);
    assert_eq!(cached["result"][0]["id"], ids[2].as_str());
    let oldest_first = list(
        &gateway,
        "?order_by=created_at&order_by_direction=asc&per_page=1&page=2",
    )
    .await;
    assert_eq!(oldest_first["result"][0]["id"], ids[1].as_str());
    assert_eq!(oldest_first["result_info"]["count"], 1);
    let bob = list(&gateway, "?filters=%5B%7B%22key%22%3A%22metadata.value%22%2C%22operator%22%3A%22eq%22%2C%22value%22%3A%5B%22bob%22%5D%7D%5D").await;
    assert_eq!(bob["result_info"]["total_count"], 1, "{bob}");
    assert_eq!(bob["result"][0]["id"], ids[1].as_str());
    let (status, body) = gateway.get_api("/logs?min_cost=cheap").await;
    assert_eq!((status, assert_error_envelope(&body).0), (400, 5006));

    // Feedback.
    let (status, body) = patch(
        &gateway,
        &ids[0],
        json!({"feedback": 1, "score": 90, "metadata": {"reviewed": true}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["result"]["feedback"].clone(),
            body["result"]["score"].clone()
        ),
        (json!(1), json!(90))
    );
    let (status, body) = patch(&gateway, &ids[1], json!({"feedback": 7})).await;
    assert_eq!((status, assert_error_envelope(&body).0), (400, 5006));
    let (status, body) = patch(
        &gateway,
        "01AAAAAAAAAAAAAAAAAAAAAAAA",
        json!({"feedback": 1}),
    )
    .await;
    assert_eq!((status, assert_error_envelope(&body).0), (404, 1004));
    let liked = list(&gateway, "?feedback=1").await;
    assert_eq!(liked["result_info"]["total_count"], 1);
    assert_eq!(liked["result"][0]["id"], ids[0].as_str());

    // Deletion by filter.
    let response = client()
        .delete(gateway.api("/logs?cached=false"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let left = list(&gateway, "").await;
    assert_eq!(left["result_info"]["total_count"], 1);
    assert_eq!(left["result"][0]["id"], ids[2].as_str());

    // Analytics count every request, by model, with the cache-hit ratio.
    let (status, report) = gateway.get_api("/analytics?interval=day").await;
    assert_eq!(status, 200, "{report}");
    let totals = &report["result"]["totals"];
    assert_eq!(totals["requests"], 3, "{report}");
    assert_eq!(totals["cached"], 1);
    assert!((totals["cache_hit_ratio"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(report["result"]["series"][0]["model"], EMBEDDING_MODEL);
}

#[tokio::test]
async fn log_caps_stop_inserting_or_delete_the_oldest() {
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    for strategy in ["STOP_INSERTING", "DELETE_OLDEST"] {
        let gateway = Gateway::create(json!({
            "log_management": 2,
            "log_management_strategy": strategy,
        }))
        .await;
        let mut ids = Vec::new();
        for text in ["a", "b", "c"] {
            let (_, headers, _) = gateway.post(&path, &embedding_input(text), &[]).await;
            ids.push(header(&headers, "cf-aig-log-id").unwrap().to_owned());
        }
        let (_, body) = gateway.get_api("/logs?order_by_direction=asc").await;
        let kept: Vec<&str> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|log| log["id"].as_str())
            .collect();
        let expected = if strategy == "STOP_INSERTING" {
            vec![ids[0].as_str(), ids[1].as_str()]
        } else {
            vec![ids[1].as_str(), ids[2].as_str()]
        };
        assert_eq!(kept, expected, "{strategy}");
    }
}

async fn list(gateway: &Gateway, query: &str) -> Value {
    let (status, body) = gateway.get_api(&format!("/logs{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn patch(gateway: &Gateway, id: &str, body: Value) -> (u16, Value) {
    let response = client()
        .patch(gateway.api(&format!("/logs/{id}")))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.expect("JSON"))
}
