//! The one `kiln serve` process every abuse test of this binary attacks, and the checks that
//! follow each attack.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{client, KilnProcess, ACCOUNT};

/// Peak resident memory (VmHWM) the server may reach over all attacks, with the default models
/// and the media models loaded (issue #15: below 2 GiB).
pub const PEAK_RSS_BOUND: u64 = 2 * 1024 * 1024 * 1024;

/// The attacked server: a real process, so an abort or a stack overflow shows as a dead pid.
pub struct Target {
    pub base: String,
    pub pid: u32,
}

/// Starts the shared server once (on its own runtime thread: each `#[tokio::test]` has its own
/// runtime, and the process must outlive all of them).
pub fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        for model in [
            "efficientnet-lite0",
            "piper-en-us-joe-medium",
            "whisper-tiny-en",
            "skimage-test-images",
        ] {
            kiln_store::ensure_for_tests(model);
        }
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let process = KilnProcess::start(&[]).await;
                ready
                    .send((process.base.clone(), process.pid()))
                    .expect("report");
                // Keep the child (and its kill-on-drop) alive for the whole test binary.
                std::future::pending::<()>().await;
                drop(process);
            });
        });
        let (base, pid) = started.recv().expect("server starts");
        Target { base, pid }
    })
}

pub fn run_url(model: &str) -> String {
    format!(
        "{}/client/v4/accounts/{ACCOUNT}/ai/run/{model}",
        target().base
    )
}

/// Peak resident set of the server so far, from `/proc/<pid>/status`.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", target().pid))
        .expect("the server process is alive");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// The error envelope's first code and message, asserting its Workers AI shape.
pub fn envelope_error(body: &Value) -> (u64, String) {
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["result"], Value::Null, "{body}");
    let error = &body["errors"][0];
    let code = error["code"].as_u64().unwrap_or_else(|| panic!("code: {body}"));
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    (code, message)
}

/// Sends a JSON body; the status and the parsed body (Null if it is not JSON).
pub async fn post(model: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(run_url(model))
        .json(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends raw bytes with a content type.
pub async fn post_bytes(model: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(run_url(model))
        .header("content-type", content_type)
        .body(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts that the answer is a 4xx Workers AI envelope whose message mentions `needle`.
pub fn assert_refused(status: u16, body: &Value, code: u64, needle: &str) {
    assert!((400..500).contains(&status), "status {status}: {body}");
    let (got, message) = envelope_error(body);
    assert_eq!(got, code, "{body}");
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "message should name {needle:?}: {message}"
    );
}

/// After an attack: `/health` answers, a normal request to `model` succeeds (`normal` is its
/// body; `None` sends a real test image or audio clip chosen by the caller instead), and the
/// peak resident memory is under [`PEAK_RSS_BOUND`].
pub async fn assert_still_serving(model: &str, normal: &Value) {
    let health = client()
        .get(format!("{}/health", target().base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/health answers after the attack");
    assert_eq!(health.status(), 200);
    let (status, body) = post(model, normal).await;
    assert_eq!(status, 200, "a normal request to {model} after the attack: {body}");
    assert_eq!(body["success"], json!(true), "{body}");
    assert_peak_rss_under(PEAK_RSS_BOUND);
}

pub fn assert_peak_rss_under(bound: u64) {
    let peak = peak_rss_bytes();
    assert!(
        peak < bound,
        "peak RSS {} MiB is over the bound of {} MiB",
        peak >> 20,
        bound >> 20
    );
}
