//! The real Workers runtime against Kiln: `workerd` (npm `workerd`, pinned in sdk-tests/node and
//! installed by scripts/install-deps) runs `worker.js`, whose genuine AI binding
//! (`cloudflare-internal:ai-api`) and Vectorize binding (`cloudflare-internal:vectorize-api`) are
//! wired to this test's Kiln as in `config.capnp` (spec §11). Every answer the Worker gets from
//! `env.AI` or `env.VECTORIZE` is compared with what Kiln's REST API answers for the same input.

#[path = "../common/mod.rs"]
mod common;
mod streams;
mod vectorize;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TEXT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";
const EMBEDDING_MODEL: &str = "@cf/baai/bge-base-en-v1.5";
const GPT_OSS: &str = "@cf/openai/gpt-oss-20b";
/// Binding requests act for `--binding-account`, "local" by default.
const BINDING_ACCOUNT: &str = "local";

/// A `workerd serve` process running `worker.js`; killed on drop.
struct Workerd {
    child: Child,
    base: String,
    log: PathBuf,
    /// The index `env.VECTORIZE` names (of the binding account), unique to this process; it is
    /// not created here.
    index: String,
    _dir: tempfile::TempDir,
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Workerd {
    async fn start(kiln: SocketAddr) -> Workerd {
        let binary = workerd_binary();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workerd");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = std::fs::read_to_string(fixtures.join("config.capnp")).expect("config");
        let index = format!("workerd-{}", uuid::Uuid::new_v4().simple());
        let config = config
            .replace("KILN_ADDR", &kiln.to_string())
            .replace("VECTORIZE_INDEX", &index);
        std::fs::write(dir.path().join("config.capnp"), config).expect("config written");
        std::fs::copy(fixtures.join("worker.js"), dir.path().join("worker.js")).expect("worker");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let log = dir.path().join("workerd.log");
        let output = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&binary)
            .current_dir(dir.path())
            .args(["serve", "config.capnp", "--socket-addr"])
            .arg(format!("http=127.0.0.1:{port}"))
            .arg("--external-addr")
            .arg(format!("kiln={kiln}"))
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        let mut workerd = Workerd {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            index,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = client()
                .get(format!("{}/health", workerd.base))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return workerd;
            }
            if let Ok(Some(status)) = workerd.child.try_wait() {
                panic!("workerd exited ({status}):\n{}", workerd.output());
            }
            assert!(
                Instant::now() < deadline,
                "workerd did not answer within 60 s:\n{}",
                workerd.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs `body` to a route of `worker.js`: (status, JSON answer). 599 is a thrown error.
    async fn call(&self, route: &str, body: Value) -> (u16, Value) {
        let response = client()
            .post(format!("{}{route}", self.base))
            .json(&body)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .expect("the Worker answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let answer = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!(
                "{route}: not JSON ({status}): {text}\nworkerd:\n{}",
                self.output()
            )
        });
        (status, answer)
    }

    /// A call the Worker must complete: its JSON answer.
    async fn ok(&self, route: &str, body: Value) -> Value {
        let (status, answer) = self.call(route, body).await;
        assert_eq!(status, 200, "{route}: {answer}");
        answer
    }

    /// A call whose `env.AI` method must throw: (error name, message).
    async fn thrown(&self, route: &str, body: Value) -> (String, String) {
        let (status, answer) = self.call(route, body).await;
        assert_eq!(status, 599, "{route} should throw: {answer}");
        let text = |name: &str| {
            answer["error"][name]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        (text("name"), text("message"))
    }
}

/// The pinned workerd binary; missing or another version is a failure, never a skip.
fn workerd_binary() -> PathBuf {
    let node = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk-tests/node");
    let binary = node.join("node_modules/workerd/bin/workerd");
    let version = |path: PathBuf| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        Some(value.pointer("/version")?.as_str()?.to_owned())
    };
    let lock = std::fs::read_to_string(node.join("package-lock.json")).expect("package-lock.json");
    let lock: Value = serde_json::from_str(&lock).expect("package-lock.json is JSON");
    let pinned = lock["packages"]["node_modules/workerd"]["version"]
        .as_str()
        .expect("sdk-tests/node/package-lock.json pins workerd");
    let installed = version(node.join("node_modules/workerd/package.json"));
    assert!(
        binary.is_file() && installed.as_deref() == Some(pinned),
        "workerd {pinned} is not installed at {} (found {installed:?}): run scripts/install-deps",
        binary.display()
    );
    binary
}

async fn rest_result(model: &str, inputs: &Value) -> Value {
    let (status, _, body) = run(model, inputs).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

async fn rest_get(path: &str) -> (u16, Value) {
    let response = client()
        .get(url(path))
        .bearer_auth("sk-test")
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// The shared server, after the speech models `streams.rs` uses are installed (the registry
/// lists what is installed when it starts).
fn kiln() -> SocketAddr {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for model in ["whisper-base", "piper-en-us-joe-medium"] {
            kiln_store::ensure_for_tests(model);
        }
    });
    server()
}

/// JSON as JavaScript sees it: every number a double (the Worker writes `3.0` as `3`).
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(number) => json!(number.as_f64()),
        Value::Array(items) => items.iter().map(numbers_as_f64).collect(),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), numbers_as_f64(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn ids(models: &Value) -> Vec<String> {
    let list = models
        .as_array()
        .unwrap_or_else(|| panic!("a list: {models}"));
    list.iter()
        .map(|model| model["name"].as_str().expect("name").to_owned())
        .collect()
}

/// One test, so that Kiln serves one request at a time: greedy text is then the same for the
/// Worker and for REST (a batch's composition can change late tokens).
#[tokio::test]
async fn workers_ai_binding_in_real_workerd_matches_the_rest_api() {
    let started = Instant::now();
    let kiln = kiln();
    let workerd = Workerd::start(kiln).await;
    eprintln!("workerd answered after {:?}", started.elapsed());

    // env.AI.run: text generation, greedy, equal to the REST answer.
    let inputs = json!({"prompt": "Write one sentence about the sea.", "max_tokens": 24,
                        "temperature": 0});
    let rest = rest_result(TEXT_MODEL, &inputs).await;
    let seen = workerd
        .ok("/run", json!({"model": TEXT_MODEL, "inputs": inputs}))
        .await;
    let text = rest["response"].as_str().expect("REST response text");
    assert!(!text.is_empty());
    assert_eq!(seen["result"]["response"], text, "{seen}");
    assert_eq!(
        seen["result"]["usage"]["completion_tokens"], rest["usage"]["completion_tokens"],
        "{seen}"
    );
    assert!(
        seen["requestId"].as_str().is_some_and(|id| !id.is_empty()),
        "env.AI.lastRequestId: {seen}"
    );
    assert_eq!(seen["status"], 200);

    // stream: true → the Worker gets the SSE bytes.
    let mut streamed = inputs.clone();
    streamed["stream"] = json!(true);
    let seen = workerd
        .ok("/run", json!({"model": TEXT_MODEL, "inputs": streamed}))
        .await;
    let stream = seen["stream"]
        .as_str()
        .unwrap_or_else(|| panic!("a stream: {seen}"));
    assert!(stream.starts_with("data: "), "{stream}");
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");
    let events = sse_data(stream);
    let (done, chunks) = events.split_last().expect("events");
    assert_eq!(done, "[DONE]");
    let joined: String = chunks
        .iter()
        .map(|chunk| {
            let chunk: Value = serde_json::from_str(chunk).expect("JSON event");
            chunk["response"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(joined, text, "the stream's text equals the plain answer");
    assert!(seen["requestId"].as_str().is_some_and(|id| !id.is_empty()));

    // gpt-oss takes Responses `input` and answers a Responses object (spec §3.1.3).
    let inputs = json!({"instructions": "You are a concise assistant.", "max_output_tokens": 24,
                        "input": "Write one sentence about the sea.", "temperature": 0});
    let rest = rest_result(GPT_OSS, &inputs).await;
    let seen = workerd
        .ok("/run", json!({"model": GPT_OSS, "inputs": inputs}))
        .await;
    assert_eq!(seen["result"]["object"], "response", "{seen}");
    assert!(rest["output_text"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(seen["result"]["output_text"], rest["output_text"], "{seen}");

    // Embeddings, equal within 1e-6.
    let inputs = json!({"text": ["A man is eating food.", "The stock market fell today."]});
    let rest = rest_result(EMBEDDING_MODEL, &inputs).await;
    let seen = workerd
        .ok("/run", json!({"model": EMBEDDING_MODEL, "inputs": inputs}))
        .await;
    let result = &seen["result"];
    assert_eq!(result["shape"], rest["shape"], "{result}");
    let vectors = |value: &Value| -> Vec<f64> {
        value["data"]
            .as_array()
            .expect("data")
            .iter()
            .flat_map(|row| row.as_array().expect("row").clone())
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    let (worker, direct) = (vectors(result), vectors(&rest));
    assert_eq!(worker.len(), direct.len());
    assert!(!worker.is_empty());
    for (a, b) in worker.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }

    // env.AI.models(): the REST catalog search's ids.
    let search = "/client/v4/accounts/local/ai/models/search";
    let seen = workerd
        .ok("/models", json!({"params": {"task": "Text Generation"}}))
        .await;
    let (_, rest) = rest_get(&format!("{search}?task=Text%20Generation")).await;
    assert!(!ids(&rest["result"]).is_empty());
    let tasks = seen["result"].as_array().expect("a list").iter();
    assert!(tasks
        .map(|model| &model["task"]["name"])
        .all(|task| task == "Text Generation"));
    assert_eq!(ids(&seen["result"]), ids(&rest["result"]));
    for (worker, direct) in seen["result"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(rest["result"].as_array().expect("a list"))
    {
        assert_eq!(numbers_as_f64(worker), numbers_as_f64(direct));
    }
    let seen = workerd.ok("/models", json!({})).await;
    let (_, rest) = rest_get(search).await;
    assert_eq!(ids(&seen["result"]), ids(&rest["result"]));
    let params = json!({"author": "meta", "hide_experimental": true, "per_page": 3, "page": 2});
    let seen = workerd.ok("/models", json!({"params": params})).await;
    let (_, rest) = rest_get(&format!(
        "{search}?author=meta&hide_experimental=true&per_page=3&page=2"
    ))
    .await;
    assert_eq!(ids(&seen["result"]), ids(&rest["result"]));
    assert_eq!(ids(&seen["result"]).len(), 3);
    // A bad parameter: AiInternalError with the REST error's message.
    let (name, message) = workerd
        .thrown("/models", json!({"params": {"per_page": -1}}))
        .await;
    let (status, rest) = rest_get(&format!("{search}?per_page=-1")).await;
    assert_eq!(status, 400);
    assert_eq!(name, "AiInternalError");
    assert_eq!(
        message,
        rest["errors"][0]["message"].as_str().expect("message")
    );

    // An unknown model: InferenceUpstreamError "<code>: <message>", as REST says it.
    let unknown = "@cf/kiln/no-such-model";
    let (name, message) = workerd
        .thrown(
            "/run",
            json!({"model": unknown, "inputs": {"prompt": "hi"}}),
        )
        .await;
    let (status, _, rest) = run(unknown, &json!({"prompt": "hi"})).await;
    let (code, rest_message) = assert_error_envelope(&rest);
    assert_eq!((status, code), (400, 5007));
    assert_eq!(name, "InferenceUpstreamError");
    assert_eq!(message, format!("{code}: {rest_message}"));

    gateway_helpers(&workerd, kiln).await;
    eprintln!("done after {:?}", started.elapsed());
}

/// `env.AI.run(…, {gateway})`, `aiGatewayLogId`, and `env.AI.gateway(id)`: getLog, patchLog,
/// getUrl, run.
async fn gateway_helpers(workerd: &Workerd, kiln: SocketAddr) {
    let gateway = format!("workerd-{}", uuid::Uuid::new_v4().simple());
    let api = url(&format!(
        "/client/v4/accounts/{BINDING_ACCOUNT}/ai-gateway/gateways"
    ));
    let response = client()
        .post(&api)
        .bearer_auth("sk-test")
        // Authenticated: binding requests need no cf-aig-authorization (spec §4.2).
        .json(&json!({"id": gateway, "authentication": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let inputs = json!({"text": ["through the gateway"]});
    let options = json!({"gateway": {"id": gateway, "metadata": {"worker": "w1"}}});
    let seen = workerd
        .ok(
            "/run",
            json!({"model": EMBEDDING_MODEL, "inputs": inputs, "options": options}),
        )
        .await;
    assert_eq!(seen["result"]["shape"], json!([1, 384]), "{seen}");
    let log_id = seen["logId"]
        .as_str()
        .unwrap_or_else(|| panic!("env.AI.aiGatewayLogId: {seen}"))
        .to_owned();

    // getLog: the REST log, `created_at` as a Date.
    let seen = workerd
        .ok("/gateway/log", json!({"gateway": gateway, "id": log_id}))
        .await;
    let log_path = format!(
        "/client/v4/accounts/{BINDING_ACCOUNT}/ai-gateway/gateways/{gateway}/logs/{log_id}"
    );
    let (status, rest) = rest_get(&log_path).await;
    assert_eq!(status, 200, "{rest}");
    let log = &seen["log"];
    assert_eq!(log["id"], log_id.as_str());
    assert_eq!(log["request_type"], "binding");
    assert_eq!(log["metadata"], rest["result"]["metadata"]);
    assert_eq!(log["model"], rest["result"]["model"]);
    assert_eq!(seen["createdAtIsDate"], true, "{seen}");
    assert!(seen["createdAtMs"].as_f64().is_some_and(|ms| ms > 1.7e12));

    // patchLog → the REST log has the feedback.
    let patch = json!({"feedback": 1, "score": 90, "metadata": {"reviewed": true}});
    let seen = workerd
        .ok(
            "/gateway/patch",
            json!({"gateway": gateway, "id": log_id, "patch": patch}),
        )
        .await;
    assert_eq!(
        seen["patched"],
        Value::Null,
        "patchLog resolves to undefined"
    );
    let (_, rest) = rest_get(&log_path).await;
    assert_eq!(rest["result"]["feedback"], 1, "{rest}");
    assert_eq!(rest["result"]["score"], 90, "{rest}");

    // Unknown logs: AiGatewayLogNotFound.
    for route in ["/gateway/log", "/gateway/patch"] {
        let body = json!({"gateway": gateway, "id": "01KNOSUCHLOG0000000000000", "patch": {}});
        let (name, message) = workerd.thrown(route, body).await;
        assert_eq!(name, "AiGatewayLogNotFound", "{route}: {message}");
    }

    // getUrl: Kiln's own gateway URLs (x-forwarded-host from config.capnp).
    let base = format!("http://{kiln}/v1/{BINDING_ACCOUNT}/{gateway}");
    let seen = workerd
        .ok(
            "/gateway/url",
            json!({"gateway": gateway, "provider": "workers-ai"}),
        )
        .await;
    assert_eq!(seen["url"], format!("{base}/workers-ai"));
    let seen = workerd
        .ok("/gateway/url", json!({"gateway": gateway}))
        .await;
    let universal = format!("{base}/");
    assert_eq!(seen["url"], universal.as_str());
    let (name, _) = workerd
        .thrown("/gateway/url", json!({"gateway": "no-such-gateway"}))
        .await;
    assert_eq!(name, "AiGatewayInternalError");
    // …and the universal URL answers.
    let step = json!([{"provider": "workers-ai", "endpoint": EMBEDDING_MODEL, "headers": {},
                       "query": {"text": ["via the universal URL"]}}]);
    let response = client()
        .post(&universal)
        .header("cf-aig-authorization", "Bearer sk-test")
        .json(&step)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["shape"], json!([1, 384]));
    let (status, _, body) = post_json(&universal, &step).await;
    assert_eq!(status, 401, "the gateway is authenticated: {body}");

    // gateway(id).run: the universal endpoint, options as cf-aig-* headers.
    let steps = json!([
        {"provider": "workers-ai", "endpoint": "@cf/kiln/no-such-model", "headers": {},
         "query": {"text": ["fallback"]}},
        {"provider": "workers-ai", "endpoint": EMBEDDING_MODEL,
         "headers": {"cf-aig-cache-ttl": 120}, "query": {"text": ["fallback"]}},
    ]);
    let options = json!({"gateway": {"metadata": {"via": "gateway.run"}, "eventId": "ev-w"}});
    let seen = workerd
        .ok(
            "/gateway/run",
            json!({"gateway": gateway, "steps": steps, "options": options}),
        )
        .await;
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["step"], "1", "the second step answered: {seen}");
    assert_eq!(seen["body"]["result"]["shape"], json!([1, 384]), "{seen}");
    let log_id = seen["logId"].as_str().expect("cf-aig-log-id");
    let (_, rest) = rest_get(&format!(
        "/client/v4/accounts/{BINDING_ACCOUNT}/ai-gateway/gateways/{gateway}/logs/{log_id}"
    ))
    .await;
    assert_eq!(rest["result"]["request_type"], "binding", "{rest}");
    assert_eq!(rest["result"]["metadata"], r#"{"via":"gateway.run"}"#);
    assert_eq!(rest["result"]["event_id"], "ev-w");

    let response = client()
        .delete(format!("{api}/{gateway}"))
        .bearer_auth("sk-test")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
}
