//! AI Gateway billing (`/accounts/{account_id}/ai-gateway/billing/…`) through real HTTP against
//! the real server: the shapes of every route, their validation errors, and the spending limit
//! refusing gateway requests once real embeddings have spent it, until it is lifted.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const EMBEDDING_MODEL: &str = "@cf/baai/bge-small-en-v1.5";

/// An account of its own per test, so no test sees another's limit or usage.
fn fresh_account() -> String {
    format!("bill-{}", uuid::Uuid::new_v4().simple())
}

fn billing_url(account: &str, rest: &str) -> String {
    url(&format!(
        "/client/v4/accounts/{account}/ai-gateway/billing/{rest}"
    ))
}

async fn call(method: reqwest::Method, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = client().request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"));
    (status, body)
}

async fn get(url: &str) -> (u16, Value) {
    call(reqwest::Method::GET, url, None).await
}

/// A successful envelope's `result`.
fn result_of(status: u16, body: &Value) -> &Value {
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["errors"], json!([]), "{body}");
    &body["result"]
}

/// A 400 in the Workers AI envelope; returns its message.
fn bad_request(status: u16, body: &Value) -> String {
    assert_eq!(status, 400, "{body}");
    assert_error_envelope(body).1
}

#[tokio::test]
async fn credit_balance_and_top_ups_say_kiln_sells_no_credits() {
    let account = fresh_account();
    let (status, body) = get(&billing_url(&account, "credit-balance")).await;
    let balance = result_of(status, &body);
    assert_eq!(balance["balance"], 0, "{balance}");
    assert_eq!(balance["has_default_payment_method"], false);
    assert!(balance["payment_method"].is_null());
    assert_eq!(balance["first_topup_success"], false);
    let config = &balance["topup_config"];
    assert!(
        config["amount"].is_null() && config["threshold"].is_null(),
        "{config}"
    );
    assert!(config["disabledReason"]
        .as_str()
        .expect("a reason")
        .starts_with("Kiln sells no credits"));

    let (status, body) = get(&billing_url(&account, "topup/config")).await;
    let config = result_of(status, &body);
    for field in ["amount", "threshold", "error", "lastFailedAt"] {
        assert!(config[field].is_null(), "{field}: {config}");
    }
    assert!(config["disabledReason"].is_string(), "{config}");

    // Top-ups are refused with 400 in the envelope, whatever the body.
    for body in [json!({"amount": 5000}), json!({}), json!("nonsense")] {
        let (status, answer) = call(
            reqwest::Method::POST,
            &billing_url(&account, "topup"),
            Some(&body),
        )
        .await;
        let message = bad_request(status, &answer);
        assert!(message.starts_with("Kiln sells no credits: "), "{message}");
    }
    let (status, answer) = call(
        reqwest::Method::POST,
        &billing_url(&account, "topup/config"),
        Some(&json!({"amount": 5000, "threshold": 500})),
    )
    .await;
    assert!(bad_request(status, &answer).starts_with("Kiln sells no credits"));
    let (status, answer) = call(
        reqwest::Method::DELETE,
        &billing_url(&account, "topup/config"),
        None,
    )
    .await;
    assert!(result_of(status, &answer).is_null());

    // No top-up has a status: a missing id is bad input, any id is not found.
    let (status, answer) = call(
        reqwest::Method::POST,
        &billing_url(&account, "topup/status"),
        Some(&json!({})),
    )
    .await;
    assert!(bad_request(status, &answer).contains("payment_intent_id"));
    let (status, answer) = call(
        reqwest::Method::POST,
        &billing_url(&account, "topup/status"),
        Some(&json!({"payment_intent_id": "in_1abc"})),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert!(assert_error_envelope(&answer).1.contains("in_1abc"));
}

#[tokio::test]
async fn invoice_history_is_an_empty_page() {
    let account = fresh_account();
    let (status, body) = get(&billing_url(&account, "invoice-history")).await;
    let history = result_of(status, &body);
    assert_eq!(
        history,
        &json!({
            "invoices": [],
            "pagination": {"has_more": false, "page": 1, "per_page": 20, "total_count": 0},
        })
    );
    assert_eq!(body["result_info"]["total_count"], 0, "{body}");

    let (status, body) = get(&billing_url(
        &account,
        "invoice-history?type=manual&page=2&per_page=5",
    ))
    .await;
    let pagination = &result_of(status, &body)["pagination"];
    assert_eq!(pagination["page"], 2, "{pagination}");
    assert_eq!(pagination["per_page"], 5, "{pagination}");

    for query in ["type=monthly", "page=0", "per_page=1001", "per_page=ten"] {
        let (status, body) = get(&billing_url(&account, &format!("invoice-history?{query}"))).await;
        bad_request(status, &body);
    }
}

#[tokio::test]
async fn usage_history_and_invoice_preview_shapes() {
    let account = fresh_account();
    let (status, body) = get(&billing_url(
        &account,
        "usage-history?value_grouping_window=day",
    ))
    .await;
    let history = result_of(status, &body)["history"]
        .as_array()
        .expect("history")
        .clone();
    // The last 30 days by default: 31 UTC days touched, oldest first, no usage yet.
    assert_eq!(history.len(), 31, "{body}");
    for (entry, next) in history.iter().zip(history.iter().skip(1)) {
        assert_eq!(entry["end_time"], next["start_time"]);
    }
    let today = &history[30];
    assert_eq!(today["aggregated_value"], 0.0, "{today}");
    assert!(today["id"].as_str().expect("id").starts_with("kiln-usage-"));
    let start = today["start_time"].as_i64().expect("seconds");
    assert_eq!(today["end_time"].as_i64().expect("seconds") - start, 86_400);
    let now_seconds = kiln_core::time::unix_millis() / 1000;
    assert!(
        (start..start + 86_400).contains(&now_seconds),
        "{today} at {now_seconds}"
    );

    // An explicit range in milliseconds: the UTC days it touches.
    let day_ms = 86_400_000_i64;
    let from = 20_000 * day_ms + 5;
    let (status, body) = get(&billing_url(
        &account,
        &format!(
            "usage-history?value_grouping_window=day&start_time={from}&end_time={}",
            from + 2 * day_ms
        ),
    ))
    .await;
    let history = &result_of(status, &body)["history"];
    assert_eq!(history.as_array().expect("array").len(), 3, "{body}");
    assert_eq!(history[0]["start_time"], 20_000_i64 * 86_400);

    for query in [
        "",
        "value_grouping_window=hour",
        "value_grouping_window=week",
        "value_grouping_window=day&start_time=yesterday",
        "value_grouping_window=day&start_time=2000&end_time=1000",
        "value_grouping_window=day&start_time=0",
    ] {
        let (status, body) = get(&billing_url(&account, &format!("usage-history?{query}"))).await;
        let message = bad_request(status, &body);
        if query.ends_with("hour") {
            assert!(message.contains("per UTC day"), "{message}");
        }
    }

    let (status, body) = get(&billing_url(&account, "invoice-preview")).await;
    let preview = result_of(status, &body);
    for field in ["amount_due", "amount_paid", "amount_remaining"] {
        assert_eq!(preview[field], 0, "{field}: {preview}");
    }
    assert_eq!(preview["currency"], "usd");
    assert_eq!(preview["status"], "draft");
    assert!(preview["id"].is_string());
    let (start, end) = (
        preview["period_start"].as_i64().expect("start"),
        preview["period_end"].as_i64().expect("end"),
    );
    assert!(start <= now_seconds && now_seconds < end, "{preview}");
    assert!((28..=31).contains(&((end - start) / 86_400)), "{preview}");
    let line = &preview["invoice_lines"][0];
    assert_eq!(line["amount"], 0, "{line}");
    assert_eq!(line["currency"], "usd");
    assert_eq!(line["quantity"], 0.0, "{line}");
    assert_eq!(line["period"], json!({"start": start, "end": end}));
    assert_eq!(line["pricing"]["unit_amount_decimal"], "0");
    assert!(line["description"]
        .as_str()
        .expect("description")
        .contains("$0.011 per 1,000 neurons"));
}

#[tokio::test]
async fn spending_limit_validation() {
    let account = fresh_account();
    let limit_url = billing_url(&account, "spending-limit");
    for body in [
        json!([]),
        json!({"duration": "daily", "strategy": "fixed"}),
        json!({"amount": "100", "duration": "daily", "strategy": "fixed"}),
        json!({"amount": 0, "duration": "daily", "strategy": "fixed"}),
        json!({"amount": -1, "duration": "daily", "strategy": "fixed"}),
        json!({"amount": 100, "duration": "yearly", "strategy": "fixed"}),
        json!({"amount": 100, "duration": "daily", "strategy": "leaky"}),
        json!({"amount": 100, "duration": "daily"}),
    ] {
        let (status, answer) = call(reqwest::Method::POST, &limit_url, Some(&body)).await;
        let message = bad_request(status, &answer);
        assert!(message.contains("Bad input"), "{body}: {message}");
    }
    // Not JSON at all; a number too large for a double.
    for raw in [
        "{",
        r#"{"amount": 1e999, "duration": "daily", "strategy": "fixed"}"#,
    ] {
        let response = client()
            .post(&limit_url)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        bad_request(status, &body);
    }
    // Nothing was stored.
    let (status, body) = get(&limit_url).await;
    assert_eq!(result_of(status, &body)["enabled"], false, "{body}");
    // A verb the route lacks.
    let (status, body) = call(reqwest::Method::PUT, &limit_url, Some(&json!({}))).await;
    assert_eq!(status, 405, "{body}");
}

/// Sends one embeddings request through the account's gateway to Workers AI.
async fn embed(account: &str) -> (u16, String) {
    let response = client()
        .post(url(&format!("/v1/{account}/main/workers-ai/v1/embeddings")))
        .json(&json!({"model": EMBEDDING_MODEL, "input": "what does this cost?"}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Today's neurons, as the usage history reports them.
async fn neurons_today(account: &str) -> f64 {
    let (status, body) = get(&billing_url(
        account,
        "usage-history?value_grouping_window=day",
    ))
    .await;
    let history = result_of(status, &body)["history"].clone();
    history
        .as_array()
        .and_then(|days| days.last())
        .and_then(|day| day["aggregated_value"].as_f64())
        .expect("today's neurons")
}

#[tokio::test]
async fn a_spent_limit_refuses_gateway_requests_until_it_is_lifted() {
    let account = fresh_account();
    let response = client()
        .post(url(&format!(
            "/client/v4/accounts/{account}/ai-gateway/gateways"
        )))
        .json(&json!({"id": "main"}))
        .send()
        .await
        .expect("gateway created");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let limit_url = billing_url(&account, "spending-limit");
    let (status, body) = get(&limit_url).await;
    assert_eq!(
        result_of(status, &body),
        &json!({"config": {"amount": null, "duration": null, "strategy": null}, "enabled": false})
    );
    // A millionth of a cent: the first request's neurons spend it.
    let limit = json!({"amount": 0.000001, "duration": "daily", "strategy": "fixed"});
    let (status, body) = call(reqwest::Method::POST, &limit_url, Some(&limit)).await;
    let expected = json!({"config": limit, "enabled": true});
    assert_eq!(result_of(status, &body), &expected);
    let (status, body) = get(&limit_url).await;
    assert_eq!(result_of(status, &body), &expected);
    // The plain `/accounts/…` path serves the same limit.
    let (status, body) = get(&url(&format!(
        "/accounts/{account}/ai-gateway/billing/spending-limit"
    )))
    .await;
    assert_eq!(result_of(status, &body), &expected);

    // Nothing spent yet: the request goes through, and its neurons reach the ledger.
    let (status, body) = embed(&account).await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let spent = loop {
        let spent = neurons_today(&account).await;
        if spent > 0.0 || std::time::Instant::now() > deadline {
            break spent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(spent > 0.0, "the embeddings request recorded no neurons");

    // Spent: the gateway refuses, naming the limit.
    let (status, body) = embed(&account).await;
    assert_eq!(status, 429, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["success"], false, "{answer}");
    let message = answer["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.starts_with("Spending limit reached")
            && message.contains("0.000001 US cents (daily fixed)")
            && message.contains("resume at"),
        "{message}"
    );
    assert_eq!(answer["error"], answer["errors"], "{answer}");

    // The invoice preview shows the month's neurons, still at nothing due.
    let (status, body) = get(&billing_url(&account, "invoice-preview")).await;
    let preview = result_of(status, &body);
    assert_eq!(preview["amount_due"], 0);
    let quantity = preview["invoice_lines"][0]["quantity"]
        .as_f64()
        .expect("quantity");
    assert!((quantity - spent).abs() < 1e-6, "{preview} vs {spent}");

    // A larger limit lets requests through again; so does lifting it.
    let (status, body) = call(
        reqwest::Method::POST,
        &limit_url,
        Some(&json!({"amount": 10_000, "duration": "monthly", "strategy": "sliding"})),
    )
    .await;
    assert_eq!(result_of(status, &body)["config"]["strategy"], "sliding");
    let (status, body) = embed(&account).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(reqwest::Method::POST, &limit_url, Some(&limit)).await;
    result_of(status, &body);
    let (status, body) = embed(&account).await;
    assert_eq!(status, 429, "{body}");

    let (status, body) = call(reqwest::Method::DELETE, &limit_url, None).await;
    assert_eq!(result_of(status, &body)["enabled"], false, "{body}");
    let (status, body) = get(&limit_url).await;
    assert_eq!(result_of(status, &body)["enabled"], false, "{body}");
    let (status, body) = embed(&account).await;
    assert_eq!(status, 200, "{body}");
    // Deleting again succeeds: there is simply no limit.
    let (status, body) = call(reqwest::Method::DELETE, &limit_url, None).await;
    assert_eq!(result_of(status, &body)["enabled"], false, "{body}");

    // Other accounts never felt it.
    let other = fresh_account();
    let (status, body) = get(&billing_url(&other, "spending-limit")).await;
    assert_eq!(result_of(status, &body)["enabled"], false, "{body}");
}
