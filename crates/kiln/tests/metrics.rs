//! `GET /metrics` and the request-metrics middleware, against a real server and model.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";
const RUN_ROUTE: &str = "/client/v4/accounts/{account_id}/ai/run/{*model}";
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_SIZE_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// One sample line of the exposition: metric name, labels in order, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text format; label values here never contain `,` or `"`.
fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label is key=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("numeric sample value"),
            }
        })
        .collect()
}

async fn scrape() -> (String, Vec<Sample>) {
    let response = client()
        .get(url("/metrics"))
        .send()
        .await
        .expect("scrape sent");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII content type")
        .to_owned();
    let text = response.text().await.expect("exposition text");
    (content_type, parse_samples(&text))
}

fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
}

/// A request's duration is recorded when the server drops its body, just after the client has
/// read it; scrape until the expected count shows up, briefly.
async fn scrape_until(condition: impl Fn(&[Sample]) -> bool) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (content_type, samples) = scrape().await;
        if condition(&samples) || Instant::now() > deadline {
            return (content_type, samples);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_template_status_and_model() {
    let (_, before) = scrape().await;
    let ok_before = value_of(
        &before,
        "kiln_requests_total",
        &[("route", RUN_ROUTE), ("status", "200")],
    )
    .unwrap_or(0.0);

    let ask = json!({"prompt": "Say hi.", "max_tokens": 4, "temperature": 0});
    for _ in 0..2 {
        let (status, headers, body) = run(LLAMA, &ask).await;
        assert_eq!(status, 200, "{body}");
        let total_ms: f64 = headers["x-kiln-total-ms"]
            .to_str()
            .expect("ASCII header")
            .parse()
            .expect("milliseconds");
        assert!(total_ms > 0.0 && total_ms < 300_000.0, "{total_ms}");
    }
    let unknown = client()
        .get(url("/no/such/route/1234"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(unknown.status(), 404);

    let (content_type, samples) = scrape_until(|samples| {
        value_of(
            samples,
            "kiln_request_duration_seconds_count",
            &[("route", RUN_ROUTE)],
        )
        .is_some_and(|count| count >= ok_before + 2.0)
    })
    .await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );

    let ok_after = value_of(
        &samples,
        "kiln_requests_total",
        &[("route", RUN_ROUTE), ("status", "200")],
    )
    .expect("run route counted");
    assert!(ok_after >= ok_before + 2.0, "{ok_before} → {ok_after}");
    // The raw path never becomes a label: unmatched requests share one.
    assert!(
        value_of(
            &samples,
            "kiln_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        )
        .is_some_and(|n| n >= 1.0),
        "{samples:?}"
    );
    assert!(!samples.iter().any(|s| s
        .label("route")
        .is_some_and(|r| r.contains("1234") || r.contains(ACCOUNT))));
    assert!(
        value_of(
            &samples,
            "kiln_model_requests_total",
            &[("model", "smollm2-135m-instruct"), ("status", "200")]
        )
        .is_some_and(|n| n >= 2.0),
        "{samples:?}"
    );
}

#[tokio::test]
async fn request_durations_are_a_histogram_with_the_configured_buckets() {
    let ask =
        json!({"prompt": "Count to three.", "max_tokens": 4, "temperature": 0, "stream": true});
    let response = client()
        .post(run_url(LLAMA))
        .json(&ask)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-kiln-total-ms"));
    let events = sse_data(&response.text().await.expect("SSE body"));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let (_, samples) = scrape_until(|samples| {
        value_of(
            samples,
            "kiln_request_duration_seconds_count",
            &[("route", RUN_ROUTE)],
        )
        .is_some_and(|count| count >= 1.0)
    })
    .await;
    let total = assert_histogram(
        &samples,
        "kiln_request_duration_seconds",
        ("route", RUN_ROUTE),
        &LATENCY_BUCKETS,
    );
    assert!(total >= 1.0);
    // The engine's metrics reach the same recorder, with the same explicit buckets: the recorder
    // is installed before the models register their handles.
    let model = ("model", "smollm2-135m-instruct");
    for latency in [
        "kiln_time_to_first_token_seconds",
        "kiln_queue_time_seconds",
    ] {
        assert!(assert_histogram(&samples, latency, model, &LATENCY_BUCKETS) >= 1.0);
    }
    assert!(assert_histogram(&samples, "kiln_batch_size", model, &BATCH_SIZE_BUCKETS) >= 1.0);
}

/// Asserts that `name` is a Prometheus histogram for the series `label` with exactly `bounds`
/// (then `+Inf`) and cumulative counts; returns its count.
fn assert_histogram(samples: &[Sample], name: &str, label: (&str, &str), bounds: &[f64]) -> f64 {
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket") && s.label(label.0) == Some(label.1))
        .collect();
    let les: Vec<String> = buckets
        .iter()
        .map(|s| s.label("le").expect("le label").to_owned())
        .collect();
    let expected: Vec<String> = bounds
        .iter()
        .map(|b| b.to_string())
        .chain(["+Inf".to_owned()])
        .collect();
    assert_eq!(les, expected, "{name}");
    let counts: Vec<f64> = buckets.iter().map(|s| s.value).collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "{name}: {counts:?}"
    );
    let total = value_of(samples, &format!("{name}_count"), &[label]).expect("histogram count");
    assert_eq!(counts.last().copied(), Some(total), "{name}");
    total
}
