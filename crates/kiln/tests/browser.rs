//! Browser safety (issue #16): a foreign `Host` (DNS rebinding) or `Origin` (a cross-site
//! page) is refused on every state-changing route before it acts, and an origin allowed with
//! `--cors-origins` works from a real browser: headless Chromium loads a page from another port
//! that calls Kiln with `fetch` (a preflighted JSON POST).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const ACCOUNT_ID: &str = "browser-account";

/// The page server's listener is bound first so that its origin can be allowed.
struct Setup {
    kiln: SocketAddr,
    allowed_page: std::net::TcpListener,
    other_page: std::net::TcpListener,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("page port");
        let (allowed_page, other_page) = (bind(), bind());
        let origin = format!(
            "http://127.0.0.1:{}",
            allowed_page.local_addr().expect("address").port()
        );
        let kiln = spawn_server(kiln::ServeConfig {
            cors_origins: Some(vec![origin]),
            gateway_db: Some(private_state_dir().join("browser-gateway.db")),
            ..test_config()
        });
        Setup {
            kiln,
            allowed_page,
            other_page,
        }
    })
}

fn kiln_url(path: &str) -> String {
    format!("http://{}{path}", setup().kiln)
}

/// Every kind of state-changing route: (method, path, JSON body).
fn state_changing_routes() -> Vec<(Method, String, Value)> {
    let account = format!("/client/v4/accounts/{ACCOUNT_ID}");
    vec![
        (
            Method::POST,
            format!("{account}/ai-gateway/gateways"),
            json!({"id": "created-by-attacker"}),
        ),
        (
            Method::PUT,
            format!("{account}/ai-gateway/gateways/existing"),
            json!({"cache_ttl": 60}),
        ),
        (
            Method::DELETE,
            format!("{account}/ai-gateway/gateways/existing"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("{account}/ai-gateway/custom-providers"),
            json!({"name": "x", "slug": "attacker", "base_url": "http://127.0.0.1:9"}),
        ),
        (
            Method::POST,
            format!("{account}/vectorize/v2/indexes"),
            json!({"name": "attacker-index", "config": {"dimensions": 3, "metric": "cosine"}}),
        ),
        (
            Method::POST,
            format!("{account}/ai/run/@cf/baai/bge-small-en-v1.5"),
            json!({"text": "hi"}),
        ),
        (
            Method::POST,
            format!("{account}/ai/finetunes"),
            json!({"model": "@cf/meta/llama-3.1-8b-instruct", "name": "attacker"}),
        ),
        (
            Method::POST,
            "/v1/chat/completions".into(),
            json!({"model": "@cf/meta/llama-3.1-8b-instruct", "messages": []}),
        ),
        (
            Method::POST,
            format!("/v1/{ACCOUNT_ID}/existing/workers-ai/@cf/baai/bge-small-en-v1.5"),
            json!({"text": "hi"}),
        ),
        (
            Method::POST,
            "/run?version=3".into(),
            json!({"inputs": {"text": "hi"}, "options": {}}),
        ),
    ]
}

async fn send(
    method: Method,
    path: &str,
    body: &Value,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut request = client()
        .request(method, kiln_url(path))
        .header("content-type", "text/plain")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET` of one of the test account's lists, with no `Origin`.
async fn account_list(rest: &str) -> Value {
    client()
        .get(kiln_url(&format!("/client/v4/accounts/{ACCOUNT_ID}{rest}")))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON")
}

async fn gateway_ids() -> Vec<String> {
    let body = account_list("/ai-gateway/gateways").await;
    body["result"]
        .as_array()
        .map(|gateways| {
            gateways
                .iter()
                .filter_map(|g| g["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn ensure_existing_gateway() {
    if !gateway_ids().await.contains(&"existing".to_owned()) {
        let response = client()
            .post(kiln_url(&format!(
                "/client/v4/accounts/{ACCOUNT_ID}/ai-gateway/gateways"
            )))
            .json(&json!({"id": "existing"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn a_foreign_host_or_origin_is_refused_before_anything_happens() {
    ensure_existing_gateway().await;
    let port = setup().kiln.port();
    let foreign: [(&str, Vec<(&str, String)>); 3] = [
        (
            "a rebinding host",
            vec![("host", format!("rebind.attacker.example:{port}"))],
        ),
        (
            "a cross-site origin",
            vec![("origin", "https://evil.example".to_owned())],
        ),
        (
            "another local port's origin",
            vec![("origin", "http://127.0.0.1:1".to_owned())],
        ),
    ];
    for (what, headers) in &foreign {
        for (method, path, body) in state_changing_routes() {
            let (status, answer) = send(method.clone(), &path, &body, headers).await;
            assert_eq!(status, 403, "{what}: {method} {path}: {answer}");
            let message = answer["errors"][0]["message"]
                .as_str()
                .or_else(|| answer["error"]["message"].as_str())
                .unwrap_or_default();
            assert!(
                message.contains("--allowed-hosts") || message.contains("--cors-origins"),
                "{what}: {method} {path}: {answer}"
            );
        }
    }
    let ids = gateway_ids().await;
    assert!(
        ids.contains(&"existing".to_owned()),
        "deleted by a refused request"
    );
    assert!(!ids.contains(&"created-by-attacker".to_owned()));
    let indexes = account_list("/vectorize/v2/indexes").await;
    assert!(!indexes.to_string().contains("attacker-index"), "{indexes}");

    // Without Origin (curl, SDKs) and from Kiln's own pages (same origin), requests act.
    let own_origin = format!("http://127.0.0.1:{port}");
    for origin in [None, Some(own_origin)] {
        let mut request = client()
            .post(kiln_url(&format!(
                "/client/v4/accounts/{ACCOUNT_ID}/ai/run/@cf/baai/bge-small-en-v1.5"
            )))
            .json(&json!({"text": "hi"}));
        if let Some(origin) = &origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 200, "origin {origin:?}");
    }
}

#[tokio::test]
async fn preflights_answer_allowed_origins_only() {
    let page_port = setup().allowed_page.local_addr().expect("address").port();
    let preflight = |origin: String| async move {
        client()
            .request(
                Method::OPTIONS,
                kiln_url(&format!(
                    "/client/v4/accounts/{ACCOUNT_ID}/ai-gateway/gateways"
                )),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, authorization",
            )
            .send()
            .await
            .expect("sent")
    };
    let allowed = preflight(format!("http://127.0.0.1:{page_port}")).await;
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        format!("http://127.0.0.1:{page_port}").as_str()
    );
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .expect("text")
        .contains("POST"));
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type, authorization"
    );
    let refused = preflight("https://evil.example".into()).await;
    assert_eq!(refused.status(), 403);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// Serves `html` on `listener` for as long as the test runs.
fn serve_page(listener: &std::net::TcpListener, html: String) {
    let listener = listener.try_clone().expect("listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let app = axum::Router::new().fallback(move || {
        let html = html.clone();
        async move { axum::response::Html(html) }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// A page that POSTs JSON to Kiln with `fetch` and writes what happened into its body.
fn page_creating(gateway: &str) -> String {
    let kiln = kiln_url(&format!(
        "/client/v4/accounts/{ACCOUNT_ID}/ai-gateway/gateways"
    ));
    format!(
        r#"<!doctype html><html><body>waiting<script>
(async () => {{
  const out = {{}};
  try {{
    const response = await fetch("{kiln}", {{
      method: "POST",
      headers: {{"content-type": "application/json"}},
      body: JSON.stringify({{id: "{gateway}"}}),
    }});
    out.status = response.status;
    out.body = await response.json();
  }} catch (error) {{
    out.error = String(error);
  }}
  document.body.textContent = "RESULT:" + JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// Loads `url` in headless Chromium and returns the JSON the page wrote.
fn chromium_result(url: &str) -> Value {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("Chromium is installed by scripts/install-deps (Debian package chromium)");
    let profile = tempfile::tempdir().expect("profile dir");
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    let result = dom
        .split_once("RESULT:")
        .map(|(_, rest)| rest.split('<').next().unwrap_or_default())
        .unwrap_or_else(|| {
            panic!(
                "the page wrote no result: {dom}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    // The DOM escapes `&`, `<`, `>` and quotes only in attributes; text keeps JSON intact but
    // for `&amp;`-style entities, which these answers do not contain.
    serde_json::from_str(result).unwrap_or_else(|_| panic!("not JSON: {result}"))
}

#[tokio::test]
async fn a_browser_app_on_an_allowed_origin_calls_kiln_and_others_cannot() {
    let s = setup();
    serve_page(&s.allowed_page, page_creating("from-allowed-page"));
    serve_page(&s.other_page, page_creating("from-other-page"));
    let page = |listener: &std::net::TcpListener| {
        format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().expect("address").port()
        )
    };
    let (allowed_url, other_url) = (page(&s.allowed_page), page(&s.other_page));
    let allowed = tokio::task::spawn_blocking(move || chromium_result(&allowed_url))
        .await
        .expect("chromium");
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(
        allowed["body"]["result"]["id"], "from-allowed-page",
        "{allowed}"
    );
    let other = tokio::task::spawn_blocking(move || chromium_result(&other_url))
        .await
        .expect("chromium");
    assert!(
        other["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{other}"
    );
    let ids = gateway_ids().await;
    assert!(ids.contains(&"from-allowed-page".to_owned()));
    assert!(!ids.contains(&"from-other-page".to_owned()), "{ids:?}");
}
