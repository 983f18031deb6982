//! The one `kiln serve` process every abuse test of this binary attacks, and the checks that
//! follow each attack.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{client, KilnProcess, ACCOUNT};

/// Peak resident memory (VmHWM) the server may reach over all attacks, with the default models
/// and the media models loaded (issue #15: below 2 GiB).
pub const PEAK_RSS_BOUND: u64 = 2 * 1024 * 1024 * 1024;

/// Any request carrying this (in a prompt, a text, an image or audio bytes) panics inside its
/// engine: the server's test hook (`KILN_TEST_PANIC_MARKER`).
pub const PANIC_MARKER: &str = "kiln-injected-panic-7f3a";

/// Attacks run one after another: the memory bound is about what one hostile request can
/// cost on top of the loaded models, and two at once would measure their sum.
pub async fn one_attack_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// The attacked server: a real process, so an abort or a stack overflow shows as a dead pid.
pub struct Target {
    pub base: String,
    pub pid: u32,
}

/// Starts the shared server once (on its own runtime thread: each `#[tokio::test]` has its own
/// runtime, and the process must outlive all of them).
pub fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| start_server(&[]))
}

/// A second server whose engines panic on [`PANIC_MARKER`]. Apart from the attacked one: a
/// rebuilt engine reloads its model, and that reload's memory is not a hostile request's.
pub fn panic_target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| start_server(&[("KILN_TEST_PANIC_MARKER", PANIC_MARKER)]))
}

fn start_server(env: &'static [(&'static str, &'static str)]) -> Target {
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
            // State (gateways, logs, indexes, fine-tunes, batches) in a directory of this
            // run's own; the models are the shared cache's, through a symlink.
            let state = tempfile::tempdir().expect("state dir");
            let shared_models = kiln_store::default_data_dir().join("models");
            std::os::unix::fs::symlink(&shared_models, state.path().join("models"))
                .expect("link the model cache");
            // Requests end by 60 s (408), well inside the clients' 120 s: a generated request
            // that lets a model speak its whole context gets an answer, not a client timeout.
            let process = KilnProcess::start_with_env(
                &[
                    "--data-dir".as_ref(),
                    state.path().as_os_str(),
                    "--request-timeout-secs".as_ref(),
                    "60".as_ref(),
                ],
                env,
            )
            .await;
            ready
                .send((process.base.clone(), process.pid()))
                .expect("report");
            // Keep the child (and its kill-on-drop) alive for the whole test binary.
            std::future::pending::<()>().await;
            drop((process, state));
        });
    });
    let (base, pid) = started.recv().expect("server starts");
    Target { base, pid }
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
    let code = error["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("code: {body}"));
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
    assert_serves(target(), model, normal).await;
    assert_peak_rss_under(PEAK_RSS_BOUND);
}

/// A normal request to `model` on `server` succeeds: a success envelope, or (speech synthesis)
/// the audio itself.
pub async fn assert_serves(server: &Target, model: &str, normal: &Value) {
    let response = client()
        .post(format!(
            "{}/client/v4/accounts/{ACCOUNT}/ai/run/{model}",
            server.base
        ))
        .json(normal)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(status, 200, "a normal request to {model}: {body}");
    if content_type.starts_with("audio/") {
        // Speech synthesis answers the audio itself.
        assert!(bytes.len() > 1000, "{} bytes of audio", bytes.len());
    } else {
        assert_eq!(body["success"], json!(true), "{body}");
    }
}

pub fn assert_peak_rss_under(bound: u64) {
    let peak = peak_rss_bytes();
    eprintln!(
        "peak RSS after {}: {} MiB",
        std::thread::current().name().unwrap_or("?"),
        peak >> 20
    );
    assert!(
        peak < bound,
        "peak RSS {} MiB is over the bound of {} MiB",
        peak >> 20,
        bound >> 20
    );
}

/// Kiln's own voice saying `text`, as 16 kHz 16-bit WAV: real speech for Whisper.
pub async fn spoken_wav(text: &str) -> Vec<u8> {
    let response = client()
        .post(run_url("@cf/deepgram/aura-1"))
        .json(&json!({"text": text, "encoding": "linear16", "container": "wav", "sample_rate": 16000}))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "the voice speaks");
    response.bytes().await.expect("audio").to_vec()
}

/// A real photo from the test images package (`chelsea.png`: a cat).
pub fn photo(name: &str) -> Vec<u8> {
    let images = kiln_store::ensure_for_tests("skimage-test-images");
    std::fs::read(images.dir.join(name)).expect("test photo")
}

/// Normal requests, one per default model kind, for [`assert_still_serving`].
pub fn normal_generation() -> Value {
    json!({"prompt": "Say hello.", "max_tokens": 4})
}

pub fn normal_embedding() -> Value {
    json!({"text": ["A normal sentence."]})
}

pub fn normal_speech() -> Value {
    json!({"text": "Hello there.", "encoding": "linear16", "container": "wav"})
}

pub fn normal_image() -> Value {
    json!({"image": photo("chelsea.png")})
}

pub async fn normal_transcription() -> Value {
    json!({"audio": spoken_wav("The weather today is sunny and warm.").await})
}
