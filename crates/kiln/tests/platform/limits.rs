//! Per-task requests per minute and a free account's daily neurons, on a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kiln_accounts::{next_utc_midnight_ms, AccountStore, Clock, ManualClock, Plan};
use kiln_http::platform::AuthMode;
use serde_json::{json, Value};

use crate::common::{self, client, spawn_server_with_clock, test_config};

const TEXT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";
/// spec §7: llama-3.1-8b-instruct costs 25,608 neurons per M input and 75,147 per M output.
const INPUT_NEURONS_PER_TOKEN: f64 = 25_608.0 / 1e6;
const OUTPUT_NEURONS_PER_TOKEN: f64 = 75_147.0 / 1e6;
/// A tiny allocation, so that a few real requests use it up.
const FREE_NEURONS_PER_DAY: f64 = 2.0;

async fn run(
    addr: std::net::SocketAddr,
    account: &str,
    input: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("http://{addr}/client/v4/accounts/{account}/ai/run/{TEXT_MODEL}");
    let response = client().post(url).json(input).send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("JSON body"))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("numeric retry-after")
}

/// One test: both halves move the same clock.
#[tokio::test]
async fn rate_limits_and_daily_neurons_follow_the_clock() {
    let dir = common::private_state_dir().join("limits");
    let db = dir.join("accounts.db");
    let store = AccountStore::open(&db).expect("accounts db");
    store
        .create_account(Some("free-account"), "free", Plan::Free)
        .expect("account");
    let now = kiln_core::time::unix_millis();
    let clock = Arc::new(ManualClock::at(now));
    let addr = spawn_server_with_clock(
        kiln::ServeConfig {
            auth: Some(AuthMode::Open),
            accounts_db: Some(db),
            batch_db: Some(dir.join("batches.db")),
            rate_limits: Some(true),
            free_neurons_per_day: Some(FREE_NEURONS_PER_DAY),
            ..test_config()
        },
        clock.clone(),
    );
    the_301st_text_generation_request_in_a_minute_is_refused(addr, &clock).await;
    a_free_account_runs_out_at_its_allocation_until_midnight_utc(addr, &clock).await;
}

async fn the_301st_text_generation_request_in_a_minute_is_refused(
    addr: std::net::SocketAddr,
    clock: &ManualClock,
) {
    let input = json!({"prompt": "Say hi", "max_tokens": 1});
    let statuses: Vec<u16> = futures::stream::iter(0..300)
        .map(|_| {
            let input = input.clone();
            async move { run(addr, "busy-account", &input).await.0 }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    let (status, headers, body) = run(addr, "busy-account", &input).await;
    assert_eq!(status, 429, "{body}");
    let (code, message) = common::assert_error_envelope(&body);
    assert_eq!(code, 3021, "{message}");
    assert!(message.contains("rate limiting"), "{message}");
    assert!((1..=60).contains(&retry_after(&headers)), "{headers:?}");

    // Other accounts and other tasks have their own windows.
    assert_eq!(run(addr, "other-account", &input).await.0, 200);
    let embed = client()
        .post(format!(
            "http://{addr}/client/v4/accounts/busy-account/ai/run/@cf/baai/bge-base-en-v1.5"
        ))
        .json(&json!({"text": "still fine"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(embed.status(), 200);

    clock.advance(Duration::from_secs(61));
    let (status, _, body) = run(addr, "busy-account", &input).await;
    assert_eq!(status, 200, "a minute later the window is empty: {body}");
}

async fn a_free_account_runs_out_at_its_allocation_until_midnight_utc(
    addr: std::net::SocketAddr,
    clock: &ManualClock,
) {
    let input = json!({"prompt": "Count to three", "max_tokens": 8});
    let mut spent = 0.0;
    let mut refused = None;
    for _ in 0..200 {
        let (status, headers, body) = run(addr, "free-account", &input).await;
        if status == 429 {
            refused = Some((headers, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
        let usage = &body["result"]["usage"];
        let prompt = usage["prompt_tokens"].as_f64().expect("prompt tokens");
        let completion = usage["completion_tokens"]
            .as_f64()
            .expect("completion tokens");
        let neurons = usage["neurons"].as_f64().expect("usage.neurons");
        let expected = prompt * INPUT_NEURONS_PER_TOKEN + completion * OUTPUT_NEURONS_PER_TOKEN;
        assert!(
            (neurons - expected).abs() < 1e-5,
            "{neurons} vs {expected}: {usage}"
        );
        spent += neurons;
    }
    let (headers, body) = refused.expect("the allocation runs out");
    assert!(
        spent >= FREE_NEURONS_PER_DAY,
        "refused after {spent} neurons"
    );
    let (code, message) = common::assert_error_envelope(&body);
    assert_eq!(code, 3036, "{message}");
    let midnight = next_utc_midnight_ms(clock.now_unix_ms());
    let until_midnight = ((midnight - clock.now_unix_ms()) / 1000) as u64;
    assert!(
        retry_after(&headers).abs_diff(until_midnight) <= 2,
        "{headers:?}"
    );

    // Usage per day and model, over REST.
    let usage: Value = client()
        .get(format!(
            "http://{addr}/client/v4/accounts/free-account/ai/usage"
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let rows = usage["result"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{usage}");
    assert_eq!(rows[0]["model"], TEXT_MODEL);
    assert!(
        (rows[0]["neurons"].as_f64().unwrap_or(0.0) - spent).abs() < 1e-3,
        "{usage}"
    );
    assert_eq!(usage["result"]["plan"], "free");

    clock.set(midnight + 1_000);
    let (status, _, body) = run(addr, "free-account", &input).await;
    assert_eq!(
        status, 200,
        "a new UTC day brings the allocation back: {body}"
    );
}
