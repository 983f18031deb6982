//! Starts one real Kiln server per test binary, on an ephemeral port, with the real default models.

#![allow(dead_code)]

pub mod upstream;

use std::net::SocketAddr;
use std::sync::OnceLock;

use kiln::ServeConfig;
use kiln_store::Progress;
use serde_json::Value;

pub const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";

static SERVER: OnceLock<SocketAddr> = OnceLock::new();

/// A loopback port nothing listens on right now (for a server process to take, or to prove a
/// connection is refused).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// This test process's own directory for accounts and batches, so that tokens someone created
/// in the shared data dir never turn these servers' open mode off.
pub fn private_state_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

static NEXT_SERVER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Test configuration: default models from the shared model cache, ephemeral port, open
/// mode (no API tokens) on this process's own accounts database.
pub fn test_config() -> ServeConfig {
    let server = NEXT_SERVER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ServeConfig {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: Some(kiln_store::default_data_dir()),
        auth: Some(kiln_http::platform::AuthMode::Open),
        // Test upstreams (and Kiln itself, as a custom provider) listen on loopback.
        egress_allow: Some(vec!["127.0.0.1".into(), "::1".into()]),
        accounts_db: Some(private_state_dir().join("accounts.db")),
        // Each server its own batch queue: servers sharing one claim each other's items, and
        // a test's server may stop while holding another test's claims.
        batch_db: Some(private_state_dir().join(format!("batches-{server}.db"))),
        // A gateway journal has one owner: servers of one binary never share one.
        gateway_db: Some(private_state_dir().join(format!("gateway-{server}.db"))),
        config: Some(std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/default-kiln.toml"
        ))),
        ..Default::default()
    }
}

/// Starts `config` on its own runtime thread, so every `#[tokio::test]` runtime can use it.
pub fn spawn_server(config: ServeConfig) -> SocketAddr {
    spawn_server_with_clock(config, std::sync::Arc::new(kiln_accounts::SystemClock))
}

/// [`spawn_server`] with the clock that rate limits and daily allocations read.
pub fn spawn_server_with_clock(
    config: ServeConfig,
    clock: std::sync::Arc<dyn kiln_accounts::Clock>,
) -> SocketAddr {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        runtime.block_on(async move {
            let config = config.resolve().expect("test config resolves");
            let server = kiln::start_with_clock(config, Progress::Quiet, clock)
                .await
                .expect("server starts");
            ready_tx.send(server.addr).expect("report address");
            std::future::pending::<()>().await;
            drop(server);
        });
    });
    ready_rx.recv().expect("server thread reports its address")
}

/// The shared server of this test binary.
pub fn server() -> SocketAddr {
    *SERVER.get_or_init(|| spawn_server(test_config()))
}

pub fn url(path: &str) -> String {
    format!("http://{}{}", server(), path)
}

pub fn run_url(model: &str) -> String {
    url(&format!("/client/v4/accounts/{ACCOUNT}/ai/run/{model}"))
}

/// Whether an answer came from the router's fallbacks (no such route, or not with this method)
/// rather than a handler: what the route-coverage probes (`spec_routes.rs`, `openapi.rs`) look
/// for. Workers AI's "no route" envelope carries 7003 and 7000; the OpenAI surface's says
/// `unknown_url`.
pub fn answered_by_router_fallback(status: u16, body: &Value) -> bool {
    let codes: Vec<u64> = body["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["code"].as_u64()).collect())
        .unwrap_or_default();
    let no_route = codes.contains(&7003)
        || codes.contains(&7000)
        || body["error"]["code"].as_str() == Some("unknown_url");
    (status == 404 && no_route) || status == 405
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs JSON with a bearer token and returns (status, headers, body text).
pub async fn post_text(url: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client()
        .post(url)
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// POSTs JSON with a bearer token and returns (status, headers, parsed body).
pub async fn post_json(url: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let (status, headers, text) = post_text(url, body).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"));
    (status, headers, body)
}

/// POSTs JSON to a model's native route and returns (status, headers, parsed body).
pub async fn run(model: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post_json(&run_url(model), body).await
}

/// Asserts the Workers AI error envelope and returns the first error's (code, message).
pub fn assert_error_envelope(body: &Value) -> (u64, String) {
    assert_eq!(body["success"], false, "{body}");
    assert!(body["result"].is_null(), "{body}");
    assert_eq!(body["messages"], serde_json::json!([]), "{body}");
    let error = &body["errors"][0];
    let code = error["code"].as_u64().expect("numeric code");
    let message = error["message"].as_str().expect("message").to_owned();
    (code, message)
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event.lines().find_map(|line| {
                line.strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                    .map(str::to_owned)
            })
        })
        .collect()
}

/// Reads what the server sends on a raw socket until it closes (at most 10 s), as text.
pub async fn read_raw_response(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut response),
    )
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

/// A real `kiln serve` process on a free port, with the default models and `extra` arguments;
/// for tests that must kill a server outright (`kill -9`) and start it again.
pub struct KilnProcess {
    child: std::process::Child,
    pub base: String,
}

impl KilnProcess {
    pub async fn start(extra: &[&std::ffi::OsStr]) -> KilnProcess {
        Self::spawn(extra, &[], std::process::Stdio::null(), None).await
    }

    /// [`KilnProcess::start`] with extra environment variables for the server.
    pub async fn start_with_env(extra: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> KilnProcess {
        Self::spawn(extra, env, std::process::Stdio::null(), None).await
    }

    /// [`KilnProcess::start`] with the server's log, at trace level, sent to `log`.
    pub async fn start_with_log(
        extra: &[&std::ffi::OsStr],
        log: impl Into<std::process::Stdio>,
    ) -> KilnProcess {
        Self::spawn(extra, &[], log.into(), Some("trace")).await
    }

    async fn spawn(
        extra: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
        log: std::process::Stdio,
        level: Option<&str>,
    ) -> KilnProcess {
        use std::time::{Duration, Instant};
        let port = free_port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/default-kiln.toml"));
        if !extra.iter().any(|arg| *arg == "--data-dir") {
            command
                .arg("--data-dir")
                .arg(kiln_store::default_data_dir());
        }
        if !extra.iter().any(|arg| *arg == "--accounts-db") {
            command
                .args(["--auth", "open", "--accounts-db"])
                .arg(private_state_dir().join("process-accounts.db"));
        }
        if !extra.iter().any(|arg| *arg == "--gateway-db") {
            let server = NEXT_SERVER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            command
                .arg("--gateway-db")
                .arg(private_state_dir().join(format!("process-gateway-{server}.db")));
        }
        if !extra.iter().any(|arg| *arg == "--batch-db") {
            command
                .arg("--batch-db")
                .arg(private_state_dir().join("process-batches.db"));
        }
        if let Some(level) = level {
            command.env("KILN_LOG", level);
        }
        command.envs(env.iter().copied());
        // The server dies with the thread that started it, so a failed or finished test never
        // leaves one running.
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !client()
            .get(format!("{base}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "kiln did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        KilnProcess { child, base }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (`Child::kill`): no shutdown code runs.
    pub fn kill_9(mut self) {
        self.child.kill().expect("killed");
        let _ = self.child.wait();
    }
}

/// Pages through a Cloudflare V4 list as the SDKs do (`page=1, 2, …` until a short page),
/// checking each `result_info`; returns every item. Panics if the loop would not end.
pub async fn page_through(list_url: &str, per_page: usize) -> Vec<Value> {
    let separator = if list_url.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    for page in 1..=100 {
        let response = client()
            .get(format!(
                "{list_url}{separator}page={page}&per_page={per_page}"
            ))
            .bearer_auth("sk-test")
            .send()
            .await
            .expect("list answered");
        assert_eq!(response.status().as_u16(), 200, "{list_url} page {page}");
        let body: Value = response.json().await.expect("JSON list");
        let page_items = body["result"].as_array().expect("a list").clone();
        let info = &body["result_info"];
        assert_eq!(info["page"], page, "{body}");
        assert_eq!(info["per_page"], per_page, "{body}");
        assert_eq!(info["count"], page_items.len(), "{body}");
        let total = info["total_count"].as_u64().expect("total_count") as usize;
        let short = page_items.len() < per_page;
        items.extend(page_items);
        if short {
            assert_eq!(items.len(), total, "{body}");
            return items;
        }
    }
    panic!("{list_url}: the page loop does not end");
}
